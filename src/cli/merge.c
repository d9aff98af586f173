/* SPDX-License-Identifier: MIT */
/* merge.c - dare-stream merge: options to a recipe, plan, run, summary */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "cli.h"

#define MAX_EXCLUDE 64

struct mopts {
	const char *out, *base, *config;
	const char *models[DS_MAX_MODELS];
	int nmodels;
	int method;                     /* -1: unset */
	double weights[DS_MAX_MODELS], ps[DS_MAX_MODELS];
	int nweights, nps;              /* -1: unset; 0: one value for all */
	bool ps_density;                /* ps holds densities, not drop rates */
	double gammas[DS_MAX_MODELS], epsilons[DS_MAX_MODELS];
	int ngammas, nepsilons;
	double param[DS_P_COUNT];
	bool param_set[DS_P_COUNT];
	double lambda;
	int lambda_set, normalize, rescale, dtype;
	uint64_t seed;
	int seed_set;
	const char *exclude[MAX_EXCLUDE];
	int nexclude;
	struct ds_merge_opts mo;
	bool dry_run, quiet;
	int progress;                   /* -1: when stderr is a terminal */
	int argc;                       /* the command line, for the hint */
	char **argv;
};

static void merge_usage(void)
{
	printf("Usage: dare-stream merge -o OUT --base B --model M [--model M]... [OPTION]...\n"
	       "       dare-stream merge -o OUT --config RECIPE.yml [OPTION]...\n\n"
	       "Inputs and method:\n"
	       "  -o, --output DIR        output directory (must be empty or absent)\n"
	       "      --base PATH         base model (directory, .safetensors, index, org/name)\n"
	       "      --model PATH        fine-tuned model; repeat, in order (model index j);\n"
	       "                          PATH+ADAPTER applies a PEFT LoRA adapter directory\n"
	       "      --config FILE       read the recipe from YAML (dare-stream.yml, mergekit)\n"
	       "      --method NAME       linear, task_arithmetic, dare_linear (default), dare_ties,\n"
	       "                          ties, breadcrumbs, breadcrumbs_ties, della, della_linear,\n"
	       "                          slerp, nuslerp, model_stock, sce, karcher, passthrough\n"
	       "      --weight W          weight of every model (default 1)\n"
	       "      --weights W0,W1,..  weight of each model, in --model order\n"
	       "  -p, --drop-rate P       DARE drop probability of every model, 0 <= P <= 1\n"
	       "      --drop-rates P0,..  drop probability of each model\n"
	       "      --density D         1 - P for every model\n"
	       "      --densities D0,..   1 - P of each model (ties, breadcrumbs: fraction kept)\n"
	       "      --gamma G, --gammas G0,..  breadcrumbs: largest fraction removed (0.01)\n"
	       "      --epsilon E, --epsilons E0,..  della: keep-probability spread (0.15)\n"
	       "      --t T               slerp: 0 gives the base, 1 the model (0.5)\n"
	       "      --filter-wise       model_stock: one ratio per row\n"
	       "      --select-topk K     sce: fraction of highest-variance elements kept (1)\n"
	       "      --max-iter N, --tol X  karcher: iterations (10), tolerance (1e-5)\n"
	       "      --no-nuslerp-flatten   nuslerp per row; --nuslerp-row-wise: per column\n"
	       "      --scale S           passthrough: multiply by S (1)\n"
	       "      --lambda L          scale of the merged delta (default 1)\n"
	       "      --normalize         divide by the sum of the weights (default: linear only)\n"
	       "      --no-normalize      do not\n"
	       "      --rescale MODE      inverse (default: kept deltas times 1/(1-P)), l1 or none\n"
	       "      --seed N            64-bit mask seed, decimal or 0x hex (default 0)\n"
	       "      --dtype T           bf16, f16 or f32 for every merged tensor (default: the base's)\n"
	       "      --exclude GLOB      copy tensors matching GLOB from the base; repeatable\n"
	       "Resources and output:\n"
	       "      --shard-size SIZE   output shards of at most SIZE, Hugging Face names\n"
	       "                          (default: the base's layout; 5G with slices)\n"
	       "      --memory SIZE       window buffer budget, e.g. 64M (default), 1G\n"
	       "      --threads N         compute threads (default: online CPUs)\n"
	       "      --io BACKEND        uring (default when available) or pread\n"
	       "      --force             replace the merge in a non-empty OUT\n"
	       "      --resume            continue an interrupted merge into OUT\n"
	       "      --partition K/N     write only part K of N of the output shards,\n"
	       "                          0 <= K < N: parts count from 0, as Slurm's\n"
	       "                          $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT in a\n"
	       "                          job array of tasks 0 to N-1; the N parts may run\n"
	       "                          at once into one OUT, then dare-stream finalize\n"
	       "                          OUT joins them\n"
	       "      --dry-run           check everything and print the plan and each\n"
	       "                          tensor's parameters; write nothing\n"
	       "      --progress          progress line even when stderr is not a terminal\n"
	       "  -q, --quiet             no progress, notices or summary\n"
	       "  -h, --help              this help\n");
}

enum {
	O_BASE = 256, O_MODEL, O_CONFIG, O_METHOD, O_WEIGHT, O_WEIGHTS,
	O_DROPS, O_DENSITY, O_DENSITIES, O_LAMBDA, O_NORM, O_NONORM,
	O_RESCALE, O_SEED, O_DTYPE, O_EXCLUDE, O_MEMORY, O_THREADS, O_IO,
	O_FORCE, O_DRY, O_PROGRESS, O_RESUME, O_SHARD, O_GAMMA, O_GAMMAS,
	O_EPSILON, O_EPSILONS, O_T, O_FILTER_WISE, O_SELECT_TOPK, O_MAX_ITER,
	O_TOL, O_NO_FLATTEN, O_ROW_WISE, O_SCALE, O_PARTITION,
};

static const struct option longopts[] = {
	{ "output", required_argument, NULL, 'o' },
	{ "base", required_argument, NULL, O_BASE },
	{ "model", required_argument, NULL, O_MODEL },
	{ "config", required_argument, NULL, O_CONFIG },
	{ "method", required_argument, NULL, O_METHOD },
	{ "weight", required_argument, NULL, O_WEIGHT },
	{ "weights", required_argument, NULL, O_WEIGHTS },
	{ "drop-rate", required_argument, NULL, 'p' },
	{ "drop-rates", required_argument, NULL, O_DROPS },
	{ "density", required_argument, NULL, O_DENSITY },
	{ "densities", required_argument, NULL, O_DENSITIES },
	{ "lambda", required_argument, NULL, O_LAMBDA },
	{ "normalize", no_argument, NULL, O_NORM },
	{ "no-normalize", no_argument, NULL, O_NONORM },
	{ "rescale", required_argument, NULL, O_RESCALE },
	{ "gamma", required_argument, NULL, O_GAMMA },
	{ "gammas", required_argument, NULL, O_GAMMAS },
	{ "epsilon", required_argument, NULL, O_EPSILON },
	{ "epsilons", required_argument, NULL, O_EPSILONS },
	{ "t", required_argument, NULL, O_T },
	{ "filter-wise", no_argument, NULL, O_FILTER_WISE },
	{ "select-topk", required_argument, NULL, O_SELECT_TOPK },
	{ "max-iter", required_argument, NULL, O_MAX_ITER },
	{ "tol", required_argument, NULL, O_TOL },
	{ "no-nuslerp-flatten", no_argument, NULL, O_NO_FLATTEN },
	{ "nuslerp-row-wise", no_argument, NULL, O_ROW_WISE },
	{ "scale", required_argument, NULL, O_SCALE },
	{ "seed", required_argument, NULL, O_SEED },
	{ "dtype", required_argument, NULL, O_DTYPE },
	{ "exclude", required_argument, NULL, O_EXCLUDE },
	{ "memory", required_argument, NULL, O_MEMORY },
	{ "shard-size", required_argument, NULL, O_SHARD },
	{ "threads", required_argument, NULL, O_THREADS },
	{ "io", required_argument, NULL, O_IO },
	{ "force", no_argument, NULL, O_FORCE },
	{ "resume", no_argument, NULL, O_RESUME },
	{ "partition", required_argument, NULL, O_PARTITION },
	{ "dry-run", no_argument, NULL, O_DRY },
	{ "progress", no_argument, NULL, O_PROGRESS },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* One finite number (count 0: for every model) or a comma-separated list
 * (one per model); the count, or -1 after a usage message. */
static int opt_values(const char *opt, const char *arg, bool list,
		      double *v)
{
	int n = list ? parse_list(arg, v, DS_MAX_MODELS) :
		parse_double(arg, v) ? -1 : 0;

	if (n < 0)
		usage_error("%s %s: expected %s (finite)", opt, arg, list ?
			    "comma-separated numbers" : "a number");
	return n;
}

/* A drop rate (or 1 - density) list: one value (count 0) or one per model. */
static int opt_rates(struct mopts *m, const char *opt, const char *arg,
		     bool list, bool density)
{
	int n = opt_values(opt, arg, list, m->ps);

	if (n < 0)
		return EXIT_USAGE;
	for (int i = 0; i < (n ? n : 1); i++)
		if (m->ps[i] < 0 || m->ps[i] > 1)
			return usage_error("%s %s: %s must be between 0 and 1",
					   opt, arg, density ? "a density" :
					   "a drop rate");
	m->nps = n;
	m->ps_density = density;
	return 0;
}

static int opt_weights(struct mopts *m, const char *opt, const char *arg,
		       bool list)
{
	int n = opt_values(opt, arg, list, m->weights);

	if (n < 0)
		return EXIT_USAGE;
	m->nweights = n;
	return 0;
}

static int opt_resources(struct mopts *m, int c, const char *arg)
{
	uint64_t v;

	switch (c) {
	case O_SHARD:
		if (parse_size(arg, &m->mo.shard_size) || m->mo.shard_size == 0)
			return usage_error("--shard-size %s: expected a size "
					   "such as 5G or 500M", arg);
		return 0;
	case O_MEMORY:
		if (parse_size(arg, &m->mo.memory) || m->mo.memory == 0)
			return usage_error("--memory %s: expected a size such "
					   "as 64M or 1G", arg);
		return 0;
	case O_THREADS:
		if (parse_u64(arg, &v) || v < 1 || v > 64)
			return usage_error("--threads %s: expected 1 to 64",
					   arg);
		m->mo.threads = (unsigned)v;
		return 0;
	default: /* O_IO */
		if (!strcmp(arg, "pread"))
			m->mo.io = DS_IO_PREAD;
		else if (!strcmp(arg, "uring"))
			m->mo.io = DS_IO_URING;
		else
			return usage_error("--io %s: expected uring or pread",
					   arg);
		return 0;
	}
}

/* --partition K/N: two whole numbers, 0 <= K < N. */
static int opt_partition(struct mopts *m, const char *arg)
{
	const char *slash = strchr(arg, '/');
	char k[32];
	uint64_t vk, vn;

	if (!slash || (size_t)(slash - arg) >= sizeof(k) || slash == arg ||
	    strspn(arg, "0123456789") != (size_t)(slash - arg) ||
	    !slash[1] || strspn(slash + 1, "0123456789") != strlen(slash + 1))
		return usage_error("--partition %s: expected K/N, two whole "
				   "numbers with 0 <= K < N (e.g. "
				   "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)",
				   arg);
	snprintf(k, sizeof(k), "%.*s", (int)(slash - arg), arg);
	if (parse_u64(k, &vk) || parse_u64(slash + 1, &vn) || vn > 1000000)
		return usage_error("--partition %s: K and N must be at most "
				   "1000000", arg);
	if (vn == 0)
		return usage_error("--partition %s: N, the number of parts, "
				   "must be at least 1", arg);
	if (vk >= vn)
		return usage_error("--partition %s: K must be less than N (parts "
				   "count from 0: 0 to %llu)", arg,
				   (unsigned long long)vn - 1);
	m->mo.part = (unsigned)vk;
	m->mo.parts = (unsigned)vn;
	return 0;
}

/* Every method name, comma-separated. */
static const char *method_list(void)
{
	static char list[512];

	list[0] = 0;
	for (unsigned i = 0; i < DS_M_COUNT; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list),
			 "%s%s", i ? ", " : "",
			 ds_method_name((enum ds_method)i));
	return list;
}

/* Per-model values in [0, 1]: gamma, epsilon. */
static int opt_unit_list(const char *opt, const char *arg, bool list,
			 double *v, int *count)
{
	int n = opt_values(opt, arg, list, v);

	if (n < 0)
		return EXIT_USAGE;
	for (int i = 0; i < (n ? n : 1); i++)
		if (v[i] < 0 || v[i] > 1)
			return usage_error("%s %s: must be between 0 and 1",
					   opt, arg);
	*count = n;
	return 0;
}

static int opt_method_name(struct mopts *m, const char *arg)
{
	enum ds_method meth;

	if (!ds_method_parse(arg, &meth)) {
		m->method = (int)meth;
		return 0;
	}
	if (ds_method_mergekit_only(arg))
		return usage_error("--method %s: mergekit's %s is not "
				   "implemented in dare-stream; methods: %s",
				   arg, arg, method_list());
	return usage_error("--method %s: unknown method; expected one of %s",
			   arg, method_list());
}

/* A merge-wide number: t, select_topk, max_iter, tol, scale. */
static int opt_param(struct mopts *m, enum ds_param par, const char *opt,
		     const char *arg)
{
	if (parse_double(arg, &m->param[par]))
		return usage_error("%s %s: expected a finite number", opt, arg);
	m->param_set[par] = true;
	return 0;
}

static void opt_flag(struct mopts *m, enum ds_param par, double v)
{
	m->param[par] = v;
	m->param_set[par] = true;
}

/* Options of the methods' own parameters. */
static int opt_extra(struct mopts *m, int c, const char *arg)
{
	switch (c) {
	case O_GAMMA: case O_GAMMAS:
		return opt_unit_list(c == O_GAMMA ? "--gamma" : "--gammas", arg,
				     c == O_GAMMAS, m->gammas, &m->ngammas);
	case O_EPSILON: case O_EPSILONS:
		return opt_unit_list(c == O_EPSILON ? "--epsilon" : "--epsilons",
				     arg, c == O_EPSILONS, m->epsilons,
				     &m->nepsilons);
	case O_T: return opt_param(m, DS_P_T, "--t", arg);
	case O_SELECT_TOPK:
		return opt_param(m, DS_P_SELECT_TOPK, "--select-topk", arg);
	case O_MAX_ITER: return opt_param(m, DS_P_MAX_ITER, "--max-iter", arg);
	case O_TOL: return opt_param(m, DS_P_TOL, "--tol", arg);
	case O_SCALE: return opt_param(m, DS_P_SCALE, "--scale", arg);
	case O_FILTER_WISE: opt_flag(m, DS_P_FILTER_WISE, 1); return 0;
	case O_NO_FLATTEN: opt_flag(m, DS_P_NUSLERP_FLATTEN, 0); return 0;
	default: /* O_ROW_WISE */
		opt_flag(m, DS_P_NUSLERP_ROW_WISE, 1);
		return 0;
	}
}

/* Options of the method's parameters. */
static int opt_method(struct mopts *m, int c, const char *arg)
{
	switch (c) {
	case O_METHOD:
		return opt_method_name(m, arg);
	case O_LAMBDA:
		m->lambda_set = 1;
		return parse_double(arg, &m->lambda) ?
		       usage_error("--lambda %s: expected a finite number",
				   arg) : 0;
	case O_RESCALE:
		if (!strcmp(arg, "inverse"))
			m->rescale = DS_RESCALE_INVERSE;
		else if (!strcmp(arg, "l1"))
			m->rescale = DS_RESCALE_L1;
		else if (!strcmp(arg, "none"))
			m->rescale = DS_RESCALE_NONE;
		else
			return usage_error("--rescale %s: expected inverse, l1 "
					   "or none", arg);
		return 0;
	case O_SEED:
		m->seed_set = 1;
		return parse_u64(arg, &m->seed) ?
		       usage_error("--seed %s: expected an unsigned 64-bit "
				   "integer", arg) : 0;
	default: /* O_DTYPE */
		m->dtype = parse_dtype(arg);
		return m->dtype < 0 ? usage_error("--dtype %s: expected bf16, "
						  "f16 or f32", arg) : 0;
	}
}

static int one_option(struct mopts *m, int c, const char *arg)
{
	switch (c) {
	case 'o': m->out = arg; return 0;
	case O_BASE: m->base = arg; return 0;
	case O_CONFIG: m->config = arg; return 0;
	case O_MODEL:
		if (m->nmodels == DS_MAX_MODELS)
			return usage_error("at most %d models", DS_MAX_MODELS);
		m->models[m->nmodels++] = arg;
		return 0;
	case O_WEIGHT: return opt_weights(m, "--weight", arg, false);
	case O_WEIGHTS: return opt_weights(m, "--weights", arg, true);
	case 'p': return opt_rates(m, "--drop-rate", arg, false, false);
	case O_DROPS: return opt_rates(m, "--drop-rates", arg, true, false);
	case O_DENSITY: return opt_rates(m, "--density", arg, false, true);
	case O_DENSITIES: return opt_rates(m, "--densities", arg, true, true);
	case O_NORM: m->normalize = 1; return 0;
	case O_NONORM: m->normalize = 0; return 0;
	case O_EXCLUDE:
		if (m->nexclude == MAX_EXCLUDE)
			return usage_error("at most %d --exclude", MAX_EXCLUDE);
		m->exclude[m->nexclude++] = arg;
		return 0;
	case O_MEMORY: case O_THREADS: case O_IO: case O_SHARD:
		return opt_resources(m, c, arg);
	case O_FORCE: m->mo.force = 1; return 0;
	case O_RESUME: m->mo.resume = 1; return 0;
	case O_PARTITION: return opt_partition(m, arg);
	case O_DRY: m->dry_run = true; return 0;
	case O_PROGRESS: m->progress = 1; return 0;
	case 'q': m->quiet = true; return 0;
	case O_GAMMA: case O_GAMMAS: case O_EPSILON: case O_EPSILONS:
	case O_T: case O_FILTER_WISE: case O_SELECT_TOPK: case O_MAX_ITER:
	case O_TOL: case O_NO_FLATTEN: case O_ROW_WISE: case O_SCALE:
		return opt_extra(m, c, arg);
	default:
		return opt_method(m, c, arg);
	}
}

static int parse_args(struct mopts *m, int argc, char **argv)
{
	int c, rc;

	memset(m, 0, sizeof(*m));
	m->method = m->nweights = m->nps = m->rescale = m->dtype = -1;
	m->ngammas = m->nepsilons = -1;
	m->normalize = m->progress = -1;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":o:p:qh", longopts, NULL)) != -1) {
		if (c == 'h') {
			merge_usage();
			return -1;
		}
		if (c == ':')
			return usage_error("option %s needs a value",
					   argv[optind - 1]);
		if (c == '?')
			return usage_error("unknown option %s (see dare-stream "
					   "merge --help)", argv[optind - 1]);
		if ((rc = one_option(m, c, optarg)))
			return rc;
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!m->out)
		return usage_error("no output directory (-o OUT)");
	if (m->config && (m->base || m->nmodels))
		return usage_error("--config names the models; do not also "
				   "give --base or --model");
	return 0;
}

/* Per-model values: one for all (n == 0) or exactly one per model. */
static int apply_list(ds_recipe *r, const char *what, const double *v, int n,
		      int (*set)(ds_recipe *, int, double))
{
	int models = ds_recipe_model_count(r);

	if (n > 0 && n != models)
		return usage_error("%s has %d value%s for %d model%s", what, n,
				   n > 1 ? "s" : "", models,
				   models > 1 ? "s" : "");
	for (int j = 0; j < (n ? n : 1); j++)
		set(r, n ? j : -1, v[j]);
	return 0;
}

static int set_gamma(ds_recipe *r, int j, double v)
{
	return ds_recipe_set_param(r, j, DS_P_GAMMA, v);
}

static int set_epsilon(ds_recipe *r, int j, double v)
{
	return ds_recipe_set_param(r, j, DS_P_EPSILON, v);
}

static int build_recipe(ds_ctx *ctx, struct mopts *m, ds_recipe *r)
{
	int rc;

	if (m->config && (rc = ds_recipe_load(ctx, r, m->config)))
		return report(ctx, rc);
	if (m->base)
		ds_recipe_set_base(r, m->base);
	for (int j = 0; j < m->nmodels; j++)
		ds_recipe_add_model(r, m->models[j]);
	if (m->method >= 0)
		ds_recipe_set_method(r, (enum ds_method)m->method);
	if (m->nweights >= 0 && (rc = apply_list(r, "--weights", m->weights,
						 m->nweights,
						 ds_recipe_set_weight)))
		return rc;
	if (m->nps >= 0 && (rc = apply_list(r, m->ps_density ?
					    "the density list" :
					    "the drop rate list", m->ps, m->nps,
					    m->ps_density ? ds_recipe_set_density :
					    ds_recipe_set_drop_rate)))
		return rc;
	if (m->ngammas >= 0 && (rc = apply_list(r, "the gamma list", m->gammas,
						m->ngammas, set_gamma)))
		return rc;
	if (m->nepsilons >= 0 && (rc = apply_list(r, "the epsilon list",
						  m->epsilons, m->nepsilons,
						  set_epsilon)))
		return rc;
	for (int i = 0; i < DS_P_COUNT; i++)
		if (m->param_set[i])
			ds_recipe_set_param(r, -1, (enum ds_param)i, m->param[i]);
	if (m->lambda_set)
		ds_recipe_set_lambda(r, m->lambda);
	if (m->normalize >= 0)
		ds_recipe_set_normalize(r, m->normalize);
	if (m->rescale >= 0)
		ds_recipe_set_rescale(r, (enum ds_rescale)m->rescale);
	if (m->seed_set)
		ds_recipe_set_seed(r, m->seed);
	if (m->dtype >= 0)
		ds_recipe_set_dtype(r, m->dtype);
	for (int i = 0; i < m->nexclude; i++)
		ds_recipe_add_exclude(r, m->exclude[i]);
	return 0;
}

static void print_plan(const struct ds_plan_info *in, const char *out)
{
	char a[32], b[32], c[32], d[32];

	printf("plan: %zu tensors (%zu merged, %zu copied) in %u shard%s "
	       "into %s\n", in->tensors, in->merged, in->tensors - in->merged,
	       in->shards, in->shards > 1 ? "s" : "", out);
	printf("plan: read %s, write %s; window buffers %s (%llu elements "
	       "per window), %u thread%s, kernel %s, I/O %s\n",
	       human_bytes(in->bytes_read, a, sizeof(a)),
	       human_bytes(in->bytes_written, b, sizeof(b)),
	       human_bytes(in->memory, c, sizeof(c)),
	       (unsigned long long)in->window, in->threads,
	       in->threads > 1 ? "s" : "", in->kernel, in->io);
	if (in->max_passes > 1)
		printf("plan: up to %u passes over a tensor's inputs (later "
		       "ones from the page cache)\n", in->max_passes);
	printf("plan: method tables and scratch %s beyond the window "
	       "buffers\n", human_bytes(in->overhead, d, sizeof(d)));
	fflush(stdout);         /* before the progress line on stderr */
}

/* --dry-run: every output tensor, then the layers and shards. */
static void print_tensors(const ds_merge *mg)
{
	struct ds_plan_info in;
	static char line[16384];

	ds_merge_info(mg, &in);
	for (size_t t = 0; t < in.tensors; t++)
		if (!ds_merge_tensor_text(mg, t, line, sizeof(line)))
			puts(line);
	printf("plan: %u layers, %u shard%s%s\n", in.layers, in.shards,
	       in.shards > 1 ? "s" : "", in.index ? " with index" : "");
	fflush(stdout);
}

static void print_summary(ds_merge *mg, const char *out, double secs)
{
	struct ds_plan_info in;
	struct rusage ru;
	char a[32], b[32], c[32];

	ds_merge_info(mg, &in);
	getrusage(RUSAGE_SELF, &ru);
	fprintf(stderr, "dare-stream: merged %zu tensors (%zu copied) into "
		"%s: read %s, wrote %s in %.1f s (%.0f MB/s), peak memory "
		"%s\n", in.tensors, in.tensors - in.merged, out,
		human_bytes(in.bytes_read, a, sizeof(a)),
		human_bytes(in.bytes_written, b, sizeof(b)), secs,
		secs > 0 ? (double)(in.bytes_read + in.bytes_written) / secs /
			   1e6 : 0.0,
		human_bytes((uint64_t)ru.ru_maxrss * 1024, c, sizeof(c)));
}

/* After a failed or stopped run: how to continue it (what it kept). */
static int run_failed(ds_ctx *ctx, struct mopts *m, int rc)
{
	int code = report(ctx, rc);

	if (rc == DS_E_CANCELED)
		print_resume_hint(m->argc, m->argv, "to continue");
	else if (rc < 0 && rc > -4096)  /* a system error: disk, I/O */
		print_resume_hint(m->argc, m->argv, "once the cause is "
				  "fixed, continue with");
	return code;
}

static int run(ds_ctx *ctx, struct mopts *m, ds_recipe *r)
{
	struct progress pr = { 0 };
	struct ds_plan_info info;
	ds_merge *mg = NULL;
	int rc;

	signals_install();
	rc = ds_merge_create(ctx, r, m->out, &m->mo, &mg);
	if (rc)
		return report(ctx, rc);
	if (signals_caught()) {         /* while planning: nothing written */
		fprintf(stderr, "dare-stream: stopped by %s before the merge "
			"began; nothing written\n",
			signal_name(signals_caught()));
		ds_merge_free(mg);
		return EXIT_SIGNAL + signals_caught();
	}
	ds_merge_info(mg, &info);
	if (m->dry_run)
		print_tensors(mg);
	if (m->dry_run || !m->quiet)
		print_plan(&info, m->out);
	if ((m->dry_run || !m->quiet) && m->mo.parts)
		printf("plan: part %u of %u: the %u shard%s above; dare-stream "
		       "finalize joins the parts\n", m->mo.part,
		       m->mo.parts, info.shards, info.shards == 1 ? "" : "s");
	if (!m->dry_run) {
		pr.on = !m->quiet && (m->progress > 0 ||
				      (m->progress < 0 && isatty(2)));
		pr.start = pr.last = now_seconds();
		signals_watch(mg);
		rc = ds_merge_run(mg, progress_cb, &pr);
		signals_unwatch();
		if (!rc && !m->quiet)
			print_summary(mg, m->out, now_seconds() - pr.start);
		if (!rc && !m->quiet && m->mo.parts)
			fprintf(stderr, "dare-stream: part %u of %u done; once "
				"every part is, run: dare-stream finalize %s\n",
				m->mo.part, m->mo.parts, m->out);
	}
	ds_merge_free(mg);
	return rc ? run_failed(ctx, m, rc) : EXIT_OK;
}

int cli_merge_recipe(ds_ctx *ctx, ds_recipe *r, const char *out,
		     const struct ds_merge_opts *mo, bool quiet)
{
	struct mopts m;

	memset(&m, 0, sizeof(m));
	m.out = out;
	m.mo = *mo;
	m.quiet = quiet;
	m.progress = -1;
	return run(ctx, &m, r);
}

int cmd_merge(int argc, char **argv)
{
	struct mopts m;
	ds_ctx *ctx;
	ds_recipe *r;
	int rc = parse_args(&m, argc, argv);

	if (rc)
		return rc < 0 ? EXIT_OK : rc;
	m.argc = argc;
	m.argv = argv;
	ctx = ds_ctx_create();
	r = ds_recipe_create();
	if (!ctx || !r) {
		fputs("dare-stream: error: out of memory\n", stderr);
		rc = EXIT_RUNTIME;
	} else {
		ds_ctx_set_log(ctx, log_stderr, &m.quiet);
		rc = build_recipe(ctx, &m, r);
		if (!rc)
			rc = run(ctx, &m, r);
	}
	ds_recipe_free(r);
	ds_ctx_free(ctx);
	return rc;
}

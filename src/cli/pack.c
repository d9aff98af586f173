/* SPDX-License-Identifier: MIT */
/* pack.c - dare-stream extract and apply: DARE delta packs */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static void extract_usage(void)
{
	printf("Usage: dare-stream extract --base B --model M -p P -o FILE.dsd [OPTION]...\n"
	       "Store the values of M that the DARE mask keeps (DESIGN 4), zstd-compressed.\n"
	       "      --base PATH       the base model the delta is taken against\n"
	       "      --model PATH      the fine-tuned model\n"
	       "  -p, --drop-rate P     drop probability, 0 <= P <= 1 (or --density D)\n"
	       "      --seed N          64-bit mask seed (default 0)\n"
	       "      --stream J        the mask's model index j (default 0)\n"
	       "      --level N         zstd level, 1 to 19 (default 3)\n"
	       "  -o, --output FILE     the pack (.dsd)\n"
	       "      --force           replace an existing FILE\n"
	       "  -q, --quiet           no summary\n");
}

static const struct option extract_opts[] = {
	{ "base", required_argument, NULL, 'b' },
	{ "model", required_argument, NULL, 'm' },
	{ "drop-rate", required_argument, NULL, 'p' },
	{ "density", required_argument, NULL, 'd' },
	{ "seed", required_argument, NULL, 's' },
	{ "stream", required_argument, NULL, 'j' },
	{ "level", required_argument, NULL, 'l' },
	{ "output", required_argument, NULL, 'o' },
	{ "force", no_argument, NULL, 'f' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

struct xargs {
	const char *base, *model, *out;
	struct ds_extract_opts o;
	bool p_set, quiet;
};

static int extract_opt(struct xargs *a, int c, const char *arg)
{
	uint64_t v;

	switch (c) {
	case 'b': a->base = arg; return 0;
	case 'm': a->model = arg; return 0;
	case 'o': a->out = arg; return 0;
	case 'f': a->o.force = 1; return 0;
	case 'q': a->quiet = true; return 0;
	case 'p': case 'd':
		if (parse_double(arg, &a->o.p) || a->o.p < 0 || a->o.p > 1)
			return usage_error("%s %s: expected a number from 0 to 1",
					   c == 'p' ? "-p" : "--density", arg);
		if (c == 'd')
			a->o.p = 1.0 - a->o.p;
		a->p_set = true;
		return 0;
	case 's':
		return parse_u64(arg, &a->o.seed) ?
		       usage_error("--seed %s: expected an unsigned 64-bit "
				   "integer", arg) : 0;
	case 'j':
		if (parse_u64(arg, &v) || v > UINT32_MAX)
			return usage_error("--stream %s: expected 0 to %u", arg,
					   UINT32_MAX);
		a->o.stream = (uint32_t)v;
		return 0;
	default: /* 'l' */
		if (parse_u64(arg, &v) || v < 1 || v > 19)
			return usage_error("--level %s: expected 1 to 19", arg);
		a->o.level = (int)v;
		return 0;
	}
}

int cmd_extract(int argc, char **argv)
{
	struct xargs a = { .o = { .level = 3 } };
	ds_ctx *ctx;
	int c, rc;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":o:p:qh", extract_opts, NULL)) != -1) {
		if (c == 'h') {
			extract_usage();
			return EXIT_OK;
		}
		if (c == ':' || c == '?')
			return usage_error("%s %s (see dare-stream extract --help)",
					   c == ':' ? "missing value for" :
					   "unknown option", argv[optind - 1]);
		if ((rc = extract_opt(&a, c, optarg)))
			return rc;
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!a.base || !a.model || !a.out || !a.p_set)
		return usage_error("extract needs --base, --model, -p (or "
				   "--density) and -o FILE.dsd");
	if (!(ctx = ds_ctx_create()))
		return report(NULL, -12);
	ds_ctx_set_log(ctx, log_stderr, &a.quiet);
	rc = ds_extract(ctx, a.base, a.model, &a.o, a.out, NULL, NULL);
	if (!rc && !a.quiet)
		fprintf(stderr, "dare-stream: wrote %s (p %g, seed %llu, "
			"stream %u)\n", a.out, a.o.p,
			(unsigned long long)a.o.seed, a.o.stream);
	rc = report(ctx, rc);
	ds_ctx_free(ctx);
	return rc;
}

static void apply_usage(void)
{
	printf("Usage: dare-stream apply --base B FILE.dsd -o OUT [OPTION]...\n"
	       "Rebuild a checkpoint from its base and a delta pack: the same "
	       "bytes as\ndare-stream merge --method dare_linear of the full "
	       "model, with the pack's p,\nseed and stream.\n"
	       "      --base PATH       the base the pack was extracted against\n"
	       "  -o, --output DIR      output directory (empty or absent)\n"
	       "      --memory SIZE     window buffer budget (default 64M)\n"
	       "      --threads N       compute threads\n"
	       "      --force           replace the contents of a non-empty OUT\n"
	       "  -q, --quiet           no progress or summary\n");
}

static const struct option apply_opts[] = {
	{ "base", required_argument, NULL, 'b' },
	{ "output", required_argument, NULL, 'o' },
	{ "memory", required_argument, NULL, 'M' },
	{ "threads", required_argument, NULL, 't' },
	{ "force", no_argument, NULL, 'f' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int apply_opt(struct ds_merge_opts *mo, const char **base,
		     const char **out, bool *quiet, int c, const char *arg)
{
	uint64_t v;

	switch (c) {
	case 'b': *base = arg; return 0;
	case 'o': *out = arg; return 0;
	case 'f': mo->force = 1; return 0;
	case 'q': *quiet = true; return 0;
	case 'M':
		return parse_size(arg, &mo->memory) || !mo->memory ?
		       usage_error("--memory %s: expected a size such as 64M",
				   arg) : 0;
	default: /* 't' */
		if (parse_u64(arg, &v) || v < 1 || v > 64)
			return usage_error("--threads %s: expected 1 to 64", arg);
		mo->threads = (unsigned)v;
		return 0;
	}
}

int cmd_apply(int argc, char **argv)
{
	struct ds_merge_opts mo = { 0 };
	const char *base = NULL, *out = NULL, *pack;
	bool quiet = false;
	uint64_t seed;
	uint32_t stream;
	double p;
	ds_recipe *r;
	ds_ctx *ctx;
	int c, rc;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":o:qh", apply_opts, NULL)) != -1) {
		if (c == 'h') {
			apply_usage();
			return EXIT_OK;
		}
		if (c == ':' || c == '?')
			return usage_error("%s %s (see dare-stream apply --help)",
					   c == ':' ? "missing value for" :
					   "unknown option", argv[optind - 1]);
		if ((rc = apply_opt(&mo, &base, &out, &quiet, c, optarg)))
			return rc;
	}
	if (!base || !out || optind + 1 != argc)
		return usage_error("apply needs --base B, one FILE.dsd and -o OUT");
	pack = argv[optind];
	ctx = ds_ctx_create();
	r = ds_recipe_create();
	if (!ctx || !r) {
		ds_recipe_free(r);
		ds_ctx_free(ctx);
		return report(NULL, -12);
	}
	ds_ctx_set_log(ctx, log_stderr, &quiet);
	rc = ds_pack_params(ctx, pack, &seed, &stream, &p);
	if (!rc) {
		ds_recipe_set_method(r, DS_M_DARE_LINEAR);
		ds_recipe_set_base(r, base);
		ds_recipe_add_model(r, pack);
		ds_recipe_set_drop_rate(r, -1, p);
		ds_recipe_set_seed(r, seed);
		ds_recipe_set_stream(r, 0, stream);
		rc = cli_merge_recipe(ctx, r, out, &mo, quiet);
	} else {
		rc = report(ctx, rc);
	}
	ds_recipe_free(r);
	ds_ctx_free(ctx);
	return rc;
}

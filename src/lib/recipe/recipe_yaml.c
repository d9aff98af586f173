/* SPDX-License-Identifier: MIT */
/* recipe_yaml.c - the recipe as YAML: dare-stream.yml out, --config in
 * (mergekit's MergeConfiguration: every key read or refused by name) */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>
#include "common/ctx.h"
#include "recipe/recipe.h"

/* ---- writing ------------------------------------------------------------ */

/*
 * The code point of the UTF-8 character at s (*len bytes) when YAML would
 * not read it back as written: a C1 control or NEL, the line or paragraph
 * separator (line breaks, folded in a quoted scalar), U+FFFE or U+FFFF
 * (not printable); 0 for any other character.
 */
static unsigned yaml_unsafe(const unsigned char *s, int *len)
{
	*len = s[0] == 0xc2 ? 2 : 3;
	if (s[0] == 0xc2)
		return s[1] >= 0x80 && s[1] <= 0x9f ? s[1] : 0;
	/* Each test of s[1] comes first, so s[2] is read only inside s. */
	if ((s[0] == 0xe2 && s[1] == 0x80 && (s[2] == 0xa8 || s[2] == 0xa9)) ||
	    (s[0] == 0xef && s[1] == 0xbf && (s[2] == 0xbe || s[2] == 0xbf)))
		return (s[0] & 0x0fu) << 12 | (s[1] & 0x3fu) << 6 |
		       (s[2] & 0x3fu);
	return 0;
}

/* A YAML double-quoted scalar: safe for any path or glob. */
static void put_str(FILE *f, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	unsigned cp;
	int len;

	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if (*s < 0x20 || *s == 0x7f)
			fprintf(f, "\\x%02x", *s);
		else if (*s >= 0xc2 && (cp = yaml_unsafe(s, &len))) {
			fprintf(f, "\\u%04X", cp);
			s += len - 1;
		} else {
			fputc(*s, f);
		}
	}
	fputc('"', f);
}


/* Paths are written absolute so the recipe works from any directory; an
 * argument that is not a path (a Hugging Face id) is kept as given. */
static void put_model(FILE *f, const char *arg)
{
	char *abs = realpath(arg, NULL), *base, *ab, *aa;
	const char *plus = strrchr(arg, '+');

	if (!abs && plus && plus != arg && (base = strndup(arg, (size_t)(
	    plus - arg)))) {
		/* BASE+ADAPTER: each side absolute */
		ab = realpath(base, NULL);
		aa = realpath(plus + 1, NULL);
		if (aa && asprintf(&abs, "%s+%s", ab ? ab : base, aa) < 0)
			abs = NULL;
		free(base);
		free(ab);
		free(aa);
	}
	put_str(f, abs ? abs : arg);
	free(abs);
}

/* A parameter as it was given: a number, a gradient or a filter list. */
static void put_value(FILE *f, const struct ds_pcond *c)
{
	if (!c->gradient) {
		ds_fput_double(f, c->g[0]);
		return;
	}
	fputc('[', f);
	for (unsigned i = 0; i < c->ng; i++) {
		if (i)
			fputs(", ", f);
		ds_fput_double(f, c->g[i]);
	}
	fputc(']', f);
}

static void put_pval(FILE *f, const char *name, const struct ds_pval *v,
		     const char *ind)
{
	fprintf(f, "%s%s:", ind, name);
	if (!v->list) {
		fputc(' ', f);
		put_value(f, &v->c[0]);
		fputc('\n', f);
		return;
	}
	fputc('\n', f);
	for (unsigned i = 0; i < v->ncond; i++) {
		fprintf(f, "%s  - ", ind);
		if (v->c[i].filter) {
			fputs("filter: ", f);
			put_str(f, v->c[i].filter);
			fprintf(f, "\n%s    ", ind);
		}
		fputs("value: ", f);
		put_value(f, &v->c[i]);
		fputc('\n', f);
	}
}

/* The parameters of one scope; with_weight: weight 1 where none is given
 * (the command line's default, which a YAML recipe does not have). */
static void put_pset(FILE *f, const struct ds_pset *ps, const char *ind,
		     bool with_weight, int first, int last)
{
	for (int i = first; i < last; i++) {
		if (ps->v[i].ncond)
			put_pval(f, ds_rp_name((enum ds_rp)i), &ps->v[i], ind);
		else if (i == RP_WEIGHT && with_weight)
			fprintf(f, "%sweight: 1\n", ind);
	}
}

static bool pset_empty(const struct ds_pset *ps, int first, int last)
{
	for (int i = first; i < last; i++)
		if (ps->v[i].ncond)
			return false;
	return true;
}

static const char *rescale_word(enum ds_rescale rs)
{
	return rs == DS_RESCALE_NONE ? "none" : rs == DS_RESCALE_L1 ? "l1" :
	       "inverse";
}

static void put_models(FILE *f, const struct ds_recipe *r)
{
	/* No fine-tune (the base alone is the output): an empty list, which
	 * reads back as one; a bare "models:" would be null. */
	fputs(r->n ? "models:\n" : "models: []\n", f);
	for (unsigned j = 0; j < r->n; j++) {
		fputs("  - model: ", f);
		put_model(f, r->models[j]);
		fputc('\n', f);
		if (r->stream[j] != j)  /* a delta pack's own mask stream */
			fprintf(f, "    stream: %u\n", r->stream[j]);
		if (!r->mergekit || !pset_empty(&r->mps[j], 0, RP_NMODEL)) {
			fputs("    parameters:\n", f);
			put_pset(f, &r->mps[j], "      ", !r->mergekit, 0,
				 RP_NMODEL);
		}
	}
}

static void put_slices(FILE *f, const struct ds_recipe *r)
{
	fputs("slices:\n", f);
	for (unsigned s = 0; s < r->nslices; s++) {
		const struct ds_slice *sl = &r->slices[s];

		fputs("  - sources:\n", f);
		for (unsigned i = 0; i < sl->nsrc; i++) {
			const struct ds_source *src = &sl->src[i];

			fputs("      - model: ", f);
			put_model(f, src->m == DS_SRC_BASE ? r->base :
				  r->models[src->m]);
			fprintf(f, "\n        layer_range: [%u, %u]\n", src->a,
				src->b);
			if (!pset_empty(&src->ps, 0, RP_NMODEL)) {
				fputs("        parameters:\n", f);
				put_pset(f, &src->ps, "          ", false, 0,
					 RP_NMODEL);
			}
		}
		if (!pset_empty(&sl->ps, 0, RP_COUNT)) {
			fputs("    parameters:\n", f);
			put_pset(f, &sl->ps, "      ", false, 0, RP_COUNT);
		}
	}
}

static void put_rest(FILE *f, const struct ds_recipe *r)
{
	if (r->dtype >= 0)
		fprintf(f, "dtype: %s\n", r->dtype == DS_DT_BF16 ? "bf16" :
			r->dtype == DS_DT_F16 ? "f16" : "f32");
	if (r->tokenizer >= 0) {
		fputs("tokenizer_source: ", f);
		put_model(f, r->models[r->tokenizer]);
		fputc('\n', f);
	}
	if (r->shard_size)
		fprintf(f, "shard_size: %" PRIu64 "\n", r->shard_size);
	if (r->chat_template) {
		fputs("chat_template: ", f);
		put_str(f, r->chat_template);
		fputc('\n', f);
	}
	if (r->name) {
		fputs("name: ", f);
		put_str(f, r->name);
		fputc('\n', f);
	}
	if (r->nexclude)
		fputs("exclude:\n", f);
	for (unsigned i = 0; i < r->nexclude; i++) {
		fputs("  - ", f);
		put_str(f, r->exclude[i]);
		fputc('\n', f);
	}
}

int ds_recipe_to_yaml(const struct ds_recipe *r, char **out)
{
	size_t len;
	FILE *f = open_memstream(out, &len);

	if (!f)
		return -ENOMEM;
	fprintf(f, "# dare-stream %s recipe; rerun with: dare-stream merge "
		"--config dare-stream.yml -o OUT\n", DS_VERSION_STRING);
	fprintf(f, "merge_method: %s\n", ds_method_name(r->method));
	if (r->base) {
		fputs("base_model: ", f);
		put_model(f, r->base);
		fputc('\n', f);
	}
	if (r->nslices)
		put_slices(f, r);
	else
		put_models(f, r);
	fputs("parameters:\n", f);
	put_pset(f, &r->gps, "  ", false, 0, RP_COUNT);
	if (r->normalize >= 0)
		fprintf(f, "  normalize: %s\n", r->normalize ? "true" : "false");
	/* The resolved word, so a rerun depends on no default. */
	fprintf(f, "  rescale: %s\n", rescale_word(ds_recipe_rescale(r)));
	fprintf(f, "  seed: %" PRIu64 "\n", r->seed);
	put_rest(f, r);
	return fclose(f) ? -ENOMEM : 0;
}

/* ---- reading ------------------------------------------------------------ */

struct yctx {
	ds_ctx *ctx;
	const char *path;
	char *dir;                  /* the recipe's directory */
	yaml_document_t doc;
	ds_recipe *r;
};

static unsigned yline(const yaml_node_t *n)
{
	return n ? (unsigned)n->start_mark.line + 1 : 0;
}

/* An error at node n: "FILE:LINE: what". */
static int ybadc(struct yctx *y, int code, yaml_node_t *n, const char *fmt,
		 ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return ds_fail(y->ctx, code, "%s:%u: %s", y->path, yline(n), msg);
}

#define ybad(y, n, ...) ybadc(y, DS_E_FORMAT, n, __VA_ARGS__)

static const char *yscalar(yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ?
	       (const char *)n->data.scalar.value : NULL;
}

static yaml_node_t *ynode(struct yctx *y, int id)
{
	return yaml_document_get_node(&y->doc, id);
}

/* Each key of a mapping node, with its value node. */
#define YFOR(y, map, k, kn, v)                                               \
	for (yaml_node_pair_t *p_ = (map)->data.mapping.pairs.start;         \
	     p_ < (map)->data.mapping.pairs.top &&                           \
	     ((kn) = ynode(y, p_->key), (k) = yscalar(kn),                   \
	      (v) = ynode(y, p_->value), 1);                                 \
	     p_++)

#define YSEQ(y, seq, it)                                                     \
	for (yaml_node_item_t *it = (seq)->data.sequence.items.start;        \
	     it < (seq)->data.sequence.items.top; it++)

static size_t ylen(yaml_node_t *seq)
{
	return (size_t)(seq->data.sequence.items.top -
			seq->data.sequence.items.start);
}

/* The value of key in mapping map, or NULL. */
static yaml_node_t *yget(struct yctx *y, yaml_node_t *map, const char *key)
{
	yaml_node_t *kn, *v;
	const char *k;

	YFOR(y, map, k, kn, v)
		if (k && !strcmp(k, key))
			return v;
	return NULL;
}

/* A key given twice would silently lose one of its values: refuse it;
 * so is a key that is not a string. */
static int ymapping(struct yctx *y, yaml_node_t *map, const char *what)
{
	yaml_node_pair_t *a, *b, *top;

	if (!map || map->type != YAML_MAPPING_NODE)
		return ybad(y, map, "%s must be a mapping (key: value)", what);
	top = map->data.mapping.pairs.top;
	for (a = map->data.mapping.pairs.start; a < top; a++) {
		const char *ka = yscalar(ynode(y, a->key));

		if (!ka)
			return ybad(y, ynode(y, a->key), "keys of %s must be "
				    "strings", what);
		for (b = a + 1; b < top; b++) {
			const char *kb = yscalar(ynode(y, b->key));

			if (kb && !strcmp(ka, kb))
				return ybad(y, ynode(y, b->key), "key '%s' "
					    "given twice", kb);
		}
	}
	return 0;
}

/* YAML 1.1 booleans, as mergekit's PyYAML reads them. */
static int ybool_str(const char *s)
{
	static const char *const t[] = { "true", "True", "TRUE", "yes", "Yes",
					 "YES", "on", "On", "ON" };
	static const char *const f[] = { "false", "False", "FALSE", "no",
					 "No", "NO", "off", "Off", "OFF" };

	for (size_t i = 0; s && i < sizeof(t) / sizeof(t[0]); i++) {
		if (!strcmp(s, t[i]))
			return 1;
		if (!strcmp(s, f[i]))
			return 0;
	}
	return -1;
}

static int ybool(struct yctx *y, yaml_node_t *n, const char *key, int *out)
{
	*out = ybool_str(yscalar(n));
	return *out < 0 ? ybad(y, n, "%s: expected true or false, not '%s'",
			       key, yscalar(n) ? yscalar(n) : "a list") : 0;
}

/* A number (a boolean counts 0 or 1, as in mergekit). */
static int ynum(struct yctx *y, yaml_node_t *n, const char *key, double *out)
{
	const char *s = yscalar(n);
	char *end;
	int b = ybool_str(s);

	if (b >= 0) {
		*out = b;
		return 0;
	}
	if (!s)
		return ybad(y, n, "%s: expected a number", key);
	errno = 0;
	*out = strtod(s, &end);
	if (end == s || *end || errno == ERANGE)
		return ybad(y, n, "%s: expected a number, not '%s'", key, s);
	return 0;
}

/* Rates are in [0, 1]; everything else finite (exit 2, named by line). */
static int yrange(struct yctx *y, yaml_node_t *n, enum ds_rp rp, double d)
{
	bool rate = rp == RP_DENSITY || rp == RP_DROP_RATE ||
		    rp == RP_GAMMA || rp == RP_EPSILON || rp == RP_SELECT_TOPK;

	if (rate ? d >= 0 && d <= 1 : isfinite(d))
		return 0;
	return ybadc(y, DS_E_USAGE, n, "%s %g %s", ds_rp_name(rp), d,
		     rate ? "is outside [0, 1]" : "is not a finite number");
}

/* One alternative's value: a number or a gradient (list of numbers). */
static int yvalue(struct yctx *y, yaml_node_t *n, enum ds_rp rp,
		  struct ds_pcond *c)
{
	const char *key = ds_rp_name(rp);
	size_t k = 0;
	int rc;

	c->gradient = n->type == YAML_SEQUENCE_NODE;
	c->ng = c->gradient ? (unsigned)ylen(n) : 1;
	if (c->gradient && c->ng == 0)
		return ybad(y, n, "%s: an empty list is neither a value nor a "
			    "gradient", key);
	if (!(c->g = calloc(c->ng, sizeof(*c->g))))
		return -ENOMEM;
	if (!c->gradient)
		return (rc = ynum(y, n, key, c->g)) ? rc :
		       yrange(y, n, rp, c->g[0]);
	YSEQ(y, n, it) {
		yaml_node_t *e = ynode(y, *it);

		if (e->type != YAML_SCALAR_NODE)
			return ybad(y, e, "%s: a gradient is a list of "
				    "numbers", key);
		if ((rc = ynum(y, e, key, &c->g[k])) ||
		    (rc = yrange(y, e, rp, c->g[k])))
			return rc;
		k++;
	}
	return 0;
}

/* One {filter: S, value: V} entry of a filter list. */
static int ycond(struct yctx *y, yaml_node_t *m, enum ds_rp rp,
		 struct ds_pcond *c)
{
	yaml_node_t *kn, *v, *val = NULL;
	const char *k;
	int rc;

	if ((rc = ymapping(y, m, "a filter list entry")))
		return rc;
	YFOR(y, m, k, kn, v) {
		if (!strcmp(k, "filter")) {
			if (!yscalar(v))
				return ybad(y, v, "filter must be a string");
			if (!(c->filter = strdup(yscalar(v))))
				return -ENOMEM;
		} else if (!strcmp(k, "value")) {
			val = v;
		} else {
			return ybad(y, kn, "unknown key '%s' in a filter list "
				    "entry (filter, value)", k);
		}
	}
	if (!val)
		return ybad(y, m, "%s: filter list entry without value:",
			    ds_rp_name(rp));
	if (val->type == YAML_SEQUENCE_NODE && ylen(val) &&
	    ynode(y, *val->data.sequence.items.start)->type !=
	    YAML_SCALAR_NODE)
		return ybad(y, val, "%s: a filter's value is a number or a "
			    "gradient", ds_rp_name(rp));
	return yvalue(y, val, rp, c);
}

/* A parameter: number, gradient or filter list (mergekit's setting). */
static int ypval(struct yctx *y, yaml_node_t *n, enum ds_rp rp,
		 struct ds_pval *v)
{
	bool list = n->type == YAML_SEQUENCE_NODE && ylen(n) &&
		    ynode(y, *n->data.sequence.items.start)->type ==
		    YAML_MAPPING_NODE;
	unsigned nc = list ? (unsigned)ylen(n) : 1, k = 0;
	int rc = 0;

	if (n->type == YAML_MAPPING_NODE)
		return ybad(y, n, "%s: a filtered value goes in a list: "
			    "'- filter: NAME' and 'value: V' per entry",
			    ds_rp_name(rp));
	ds_pval_clear(v);
	if (!(v->c = calloc(nc, sizeof(*v->c))))
		return -ENOMEM;
	v->ncond = nc;
	v->list = list;
	v->line = yline(n);
	if (!list)
		return yvalue(y, n, rp, &v->c[0]);
	YSEQ(y, n, it) {
		if ((rc = ycond(y, ynode(y, *it), rp, &v->c[k++])))
			return rc;
	}
	return 0;
}

enum yscope { YS_MERGE, YS_SLICE, YS_MODEL };

static const char *const known_params =
	"weight, density, drop_rate, gamma, epsilon, scale, lambda, t, "
	"select_topk, max_iter, tol, filter_wise, nuslerp_flatten, "
	"nuslerp_row_wise, normalize, rescale, seed, int8_mask";

/* normalize, rescale, seed: one value for the whole merge. */
static int ymergewide(struct yctx *y, const char *k, yaml_node_t *v)
{
	ds_recipe *r = y->r;
	int b, rc;

	if (!strcmp(k, "normalize")) {
		if ((rc = ybool(y, v, k, &b)))
			return rc;
		r->normalize = b;
	} else if (!strcmp(k, "rescale")) {
		const char *s = yscalar(v);

		b = ybool_str(s);
		r->rescale_set = true;
		if (b >= 0)
			r->rescale = b ? DS_RESCALE_L1 : DS_RESCALE_NONE;
		else if (s && !strcmp(s, "inverse"))
			r->rescale = DS_RESCALE_INVERSE;
		else if (s && !strcmp(s, "l1"))
			r->rescale = DS_RESCALE_L1;
		else if (s && !strcmp(s, "none"))
			r->rescale = DS_RESCALE_NONE;
		else
			return ybad(y, v, "rescale: expected true (l1, as "
				    "mergekit), false (none), or inverse, l1, "
				    "none");
	} else {        /* seed */
		const char *s = yscalar(v);
		char *end;

		errno = 0;
		/* decimal, or hexadecimal after 0x; never octal */
		r->seed = s ? strtoull(s, &end, s[0] == '0' && (s[1] == 'x' ||
				       s[1] == 'X') ? 16 : 10) : 0;
		if (!s || *s == '-' || end == s || *end || errno)
			return ybad(y, v, "seed must be an unsigned 64-bit "
				    "integer");
	}
	return 0;
}

static int yparams(struct yctx *y, struct ds_pset *ps, yaml_node_t *map,
		   enum yscope sc)
{
	yaml_node_t *kn, *v;
	const char *k;
	int rc;

	if (map->type == YAML_SCALAR_NODE && !*yscalar(map))
		return 0;       /* "parameters:" with nothing: none */
	if ((rc = ymapping(y, map, "parameters")))
		return rc;
	YFOR(y, map, k, kn, v) {
		unsigned rp;

		if (!strcmp(k, "int8_mask") || !strcmp(k, "embed_slerp")) {
			ds_notice(y->ctx, "%s:%u: %s ignored: dare-stream "
				  "keeps masks as bits and merges embeddings "
				  "like any tensor", y->path, yline(kn), k);
			continue;
		}
		if (!strcmp(k, "normalize") || !strcmp(k, "rescale") ||
		    !strcmp(k, "seed")) {
			if (sc != YS_MERGE)
				return ybad(y, kn, "%s applies to the whole "
					    "merge: give it in the top-level "
					    "parameters", k);
			if ((rc = ymergewide(y, k, v)))
				return rc;
			continue;
		}
		for (rp = 0; rp < RP_COUNT; rp++)
			if (!strcmp(k, ds_rp_name((enum ds_rp)rp)))
				break;
		if (rp == RP_COUNT)
			return ybad(y, kn, "unknown parameter '%s' (known: "
				    "%s)", k, known_params);
		if (sc == YS_MODEL && rp >= RP_NMODEL)
			return ybad(y, kn, "parameter %s belongs to the merge, "
				    "not to one model: move it to the slice's "
				    "or the top-level parameters", k);
		if ((rc = ypval(y, v, (enum ds_rp)rp, &ps->v[rp])))
			return rc;
	}
	return 0;
}

/* ---- model references --------------------------------------------------- */

static char *join2(const char *a, const char *b)
{
	char *s = malloc(strlen(a) + strlen(b) + 2);

	if (s)
		sprintf(s, "%s/%s", a, b);
	return s;
}

/* The hub directory of the local Hugging Face cache (as model.c finds it). */
static char *hf_hub(void)
{
	const char *v;

	if ((v = getenv("HF_HUB_CACHE")) && *v)
		return strdup(v);
	if ((v = getenv("HF_HOME")) && *v)
		return join2(v, "hub");
	if ((v = getenv("HOME")) && *v)
		return join2(v, ".cache/huggingface/hub");
	return NULL;
}

/* org/name@rev: the snapshot directory of revision rev (a commit, or a
 * branch or tag under refs/) in the local cache. */
static int yrevision(struct yctx *y, yaml_node_t *n, const char *id,
		     const char *rev, char **out)
{
	char *hub = hf_hub(), repo[PATH_MAX], path[PATH_MAX + 256];
	char sha[128] = "";
	const char *org_end = strchr(id, '/');
	struct stat st;
	FILE *f;

	if (!hub || !org_end || strchr(rev, '/') || strstr(rev, ".."))
		goto missing;
	snprintf(repo, sizeof(repo), "%s/models--%.*s--%s", hub,
		 (int)(org_end - id), id, org_end + 1);
	snprintf(path, sizeof(path), "%s/refs/%.200s", repo, rev);
	if ((f = fopen(path, "r"))) {
		if (!fgets(sha, sizeof(sha), f))
			sha[0] = 0;
		fclose(f);
		sha[strcspn(sha, " \t\r\n")] = 0;
	}
	snprintf(path, sizeof(path), "%s/snapshots/%.200s", repo,
		 *sha ? sha : rev);
	if (stat(path, &st) || !S_ISDIR(st.st_mode))
		goto missing;
	free(hub);
	return (*out = strdup(path)) ? 0 : -ENOMEM;
missing:
	ybadc(y, DS_E_NOTFOUND, n, "revision %s of %s is not in the local "
	      "Hugging Face cache (%s); download it with: huggingface-cli "
	      "download %s --revision %s", rev, id, hub ? hub : "no cache",
	      id, rev);
	free(hub);
	return DS_E_NOTFOUND;
}

/* A path as given, else relative to the recipe's directory; NULL when
 * neither exists (*out is then untouched). */
static int ypath(struct yctx *y, const char *s, char **out)
{
	char *rel;

	if (access(s, F_OK) == 0)
		return (*out = strdup(s)) ? 0 : -ENOMEM;
	if (*s != '/' && (rel = join2(y->dir, s))) {
		if (access(rel, F_OK) == 0) {
			*out = rel;
			return 0;
		}
		free(rel);
	}
	return 1;
}

static int ymodelstr(struct yctx *y, yaml_node_t *n, const char *s,
		     char **out);

/*
 * mergekit's MODEL+LORA: the model with a PEFT LoRA adapter applied
 * (DESIGN 7.1), each side resolved on its own; the adapter is a
 * directory.
 */
static int ylora(struct yctx *y, yaml_node_t *n, const char *s,
		 const char *plus, char **out)
{
	char *base = strndup(s, (size_t)(plus - s)), *m = NULL, *a = NULL;
	int rc = base ? ymodelstr(y, n, base, &m) : -ENOMEM;

	/* not a path: a Hugging Face id, for the model layer to find */
	if (!rc && (rc = ypath(y, plus + 1, &a)) > 0)
		rc = (a = strdup(plus + 1)) ? 0 : -ENOMEM;
	if (!rc) {
		size_t len = strlen(m) + strlen(a) + 2;

		if ((*out = malloc(len)))
			snprintf(*out, len, "%s+%s", m, a);
		else
			rc = -ENOMEM;
	}
	free(base);
	free(m);
	free(a);
	return rc;
}

static int ymodelstr(struct yctx *y, yaml_node_t *n, const char *s,
		     char **out)
{
	const char *at, *plus;
	int rc;

	if (!*s)
		return ybad(y, n, "a model is a path or a Hugging Face id "
			    "(org/name or org/name@revision)");
	if ((rc = ypath(y, s, out)) <= 0)
		return rc;
	if ((plus = strrchr(s, '+')) && plus != s && plus[1])
		return ylora(y, n, s, plus, out);
	if ((at = strchr(s, '@'))) {
		char *id = strndup(s, (size_t)(at - s));

		rc = id ? yrevision(y, n, id, at + 1, out) : -ENOMEM;
		free(id);
		return rc;
	}
	return (*out = strdup(s)) ? 0 : -ENOMEM;
}

/* A model as mergekit names it: a path (as given, else relative to the
 * recipe's directory), org/name, org/name@revision, or any of them
 * +ADAPTER. */
static int ymodelref(struct yctx *y, yaml_node_t *n, char **out)
{
	const char *s = yscalar(n);

	if (!s || !*s)
		return ybad(y, n, "a model is a path or a Hugging Face id "
			    "(org/name or org/name@revision)");
	return ymodelstr(y, n, s, out);
}

/* The same model: equal arguments, or paths to the same directory. */
static bool same_model(const char *a, const char *b)
{
	char *ra, *rb;
	bool same;

	if (!strcmp(a, b))
		return true;
	ra = realpath(a, NULL);
	rb = realpath(b, NULL);
	same = ra && rb && !strcmp(ra, rb);
	free(ra);
	free(rb);
	return same;
}

/* Index of model path in the recipe (added when new); DS_SRC_BASE for the
 * base where the method takes it as slot 0. */
static int ymodel_index(struct yctx *y, yaml_node_t *n, char *path,
			unsigned *m)
{
	ds_recipe *r = y->r;
	bool base = r->base && same_model(path, r->base);
	int j;

	if (base && ds_recipe_method_uses_base(r->method)) {
		free(path);
		*m = DS_SRC_BASE;
		return 0;
	}
	r->base_is_model |= base;
	for (unsigned k = 0; k < r->n; k++)
		if (same_model(path, r->models[k])) {
			free(path);
			*m = k;
			return 0;
		}
	j = ds_recipe_add_model(r, path);
	free(path);
	if (j < 0)
		return j == -ENOMEM ? j : ybad(y, n, "more than %d models",
						DS_MAX_MODELS);
	*m = (unsigned)j;
	return 0;
}

/* A model key's value, resolved and indexed. */
static int ymodel(struct yctx *y, yaml_node_t *n, unsigned *m)
{
	char *path;
	int rc = ymodelref(y, n, &path);

	return rc ? rc : ymodel_index(y, n, path, m);
}

/* ---- models: and slices: ------------------------------------------------- */

/* dare-stream's `stream: J`: the mask stream of model j (a pack's). */
static int ystream(struct yctx *y, yaml_node_t *n, unsigned j)
{
	const char *s = yscalar(n);
	unsigned long v;
	char *end;

	if (!n)
		return 0;
	errno = 0;
	v = s ? strtoul(s, &end, 10) : 0;
	if (!s || *s == '-' || end == s || *end || errno || v > UINT32_MAX)
		return ybad(y, n, "stream must be a whole number from 0 to "
			    "4294967295");
	y->r->stream[j] = (unsigned)v;
	return 0;
}

static int ymodels(struct yctx *y, yaml_node_t *seq)
{
	unsigned seen[DS_MAX_MODELS] = { 0 };

	if (seq->type != YAML_SEQUENCE_NODE)
		return ybad(y, seq, "models must be a list of '- model: ...'");
	YSEQ(y, seq, it) {
		yaml_node_t *m = ynode(y, *it), *kn, *v, *mn, *params = NULL;
		const char *k;
		unsigned j;
		int rc;

		if ((rc = ymapping(y, m, "a models entry")))
			return rc;
		YFOR(y, m, k, kn, v)
			if ((void)v, strcmp(k, "model") && strcmp(k, "parameters") &&
			    strcmp(k, "stream"))
				return ybad(y, kn, "unknown key '%s' in a "
					    "models entry (model, parameters; "
					    "and dare-stream's stream)", k);
		if (!(mn = yget(y, m, "model")))
			return ybad(y, m, "models entry without 'model:'");
		params = yget(y, m, "parameters");
		if ((rc = ymodel(y, mn, &j)))
			return rc;
		if (j != DS_SRC_BASE && (rc = ystream(y, yget(y, m, "stream"), j)))
			return rc;
		if (j == DS_SRC_BASE)
			continue;       /* the base: its parameters unused */
		if (seen[j])
			return ybad(y, mn, "model %s is listed twice in models "
				    "(first on line %u)", y->r->models[j],
				    seen[j]);
		seen[j] = yline(mn);
		if (params && (rc = yparams(y, &y->r->mps[j], params,
					    YS_MODEL)))
			return rc;
	}
	return 0;
}

static int yrange_pair(struct yctx *y, yaml_node_t *n, struct ds_source *s)
{
	unsigned long long v[2];
	size_t k = 0;

	if (n->type != YAML_SEQUENCE_NODE || ylen(n) != 2)
		return ybad(y, n, "layer_range is [first, end): two layer "
			    "numbers");
	YSEQ(y, n, it) {
		const char *t = yscalar(ynode(y, *it));
		char *end;

		errno = 0;
		v[k] = t && *t != '-' ? strtoull(t, &end, 10) : 0;
		if (!t || *t == '-' || end == t || *end || errno ||
		    v[k] > 1000000)
			return ybad(y, n, "layer_range: '%s' is not a layer "
				    "number", t ? t : "a list");
		k++;
	}
	if (v[0] >= v[1])
		return ybadc(y, DS_E_USAGE, n, "layer_range [%llu, %llu] is "
			     "empty: the range is half open, [first, end)",
			     v[0], v[1]);
	s->a = (unsigned)v[0];
	s->b = (unsigned)v[1];
	return 0;
}

static int ysource(struct yctx *y, yaml_node_t *m, struct ds_source *s)
{
	yaml_node_t *kn, *v, *mn, *lr, *params;
	const char *k;
	int rc;

	if ((rc = ymapping(y, m, "a slice source")))
		return rc;
	YFOR(y, m, k, kn, v)
		if ((void)v, strcmp(k, "model") && strcmp(k, "layer_range") &&
		    strcmp(k, "parameters"))
			return ybad(y, kn, "unknown key '%s' in a slice source "
				    "(model, layer_range, parameters)", k);
	mn = yget(y, m, "model");
	lr = yget(y, m, "layer_range");
	params = yget(y, m, "parameters");
	s->line = yline(m);
	if (!mn || !lr)
		return ybad(y, m, "a slice source needs model: and "
			    "layer_range:");
	if ((rc = ymodel(y, mn, &s->m)) || (rc = yrange_pair(y, lr, s)))
		return rc;
	return params ? yparams(y, &s->ps, params, YS_MODEL) : 0;
}

static int yslice_keys(struct yctx *y, yaml_node_t *m)
{
	yaml_node_t *kn, *v;
	const char *k;

	YFOR(y, m, k, kn, v) {
		(void)v;
		if (!strcmp(k, "residual_weight"))
			return ybad(y, kn, "residual_weight is not supported "
				    "(mergekit's experimental residual "
				    "mixing); remove it");
		if (!strcmp(k, "base_model"))
			return ybad(y, kn, "a base_model per slice is not "
				    "supported; give one top-level base_model");
		if (strcmp(k, "sources") && strcmp(k, "parameters"))
			return ybad(y, kn, "unknown key '%s' in a slice "
				    "(sources, parameters)", k);
	}
	return 0;
}

static int yslice(struct yctx *y, yaml_node_t *m, struct ds_slice *sl)
{
	yaml_node_t *srcs, *params;
	bool has_base = false;
	int rc;

	if ((rc = ymapping(y, m, "a slice")) || (rc = yslice_keys(y, m)))
		return rc;
	sl->line = yline(m);
	srcs = yget(y, m, "sources");
	params = yget(y, m, "parameters");
	if (!srcs || srcs->type != YAML_SEQUENCE_NODE || !ylen(srcs))
		return ybad(y, m, "a slice needs sources: a list of '- model: "
			    "..., layer_range: [a, b]'");
	if (!(sl->src = calloc(ylen(srcs), sizeof(*sl->src))))
		return -ENOMEM;
	YSEQ(y, srcs, it) {
		struct ds_source *s = &sl->src[sl->nsrc++];

		if ((rc = ysource(y, ynode(y, *it), s)))
			return rc;
		has_base |= s->m == DS_SRC_BASE;
		if (s->b - s->a != sl->src[0].b - sl->src[0].a)
			return ybadc(y, DS_E_USAGE, ynode(y, *it), "this source "
				     "spans %u layers, the slice's first %u: "
				     "every source of a slice spans the same "
				     "number of layers", s->b - s->a,
				     sl->src[0].b - sl->src[0].a);
	}
	if (ds_recipe_method_uses_base(y->r->method) && !has_base)
		return ybadc(y, DS_E_USAGE, m, "%s merges against the base: "
			     "list base_model %s among this slice's sources "
			     "(with its layer_range)",
			     ds_method_name(y->r->method),
			     y->r->base ? y->r->base : "(none given)");
	return params ? yparams(y, &sl->ps, params, YS_SLICE) : 0;
}

static int yslices(struct yctx *y, yaml_node_t *seq)
{
	ds_recipe *r = y->r;
	int rc;

	if (seq->type != YAML_SEQUENCE_NODE || !ylen(seq))
		return ybad(y, seq, "slices must be a list of '- sources: ...'");
	if (!(r->slices = calloc(ylen(seq), sizeof(*r->slices))))
		return -ENOMEM;
	YSEQ(y, seq, it) {
		if ((rc = yslice(y, ynode(y, *it), &r->slices[r->nslices++])))
			return rc;
	}
	return 0;
}

/* ---- the rest of the top level -------------------------------------------- */

/* Output dtype names of dare-stream and of mergekit. */
static int ydtype(struct yctx *y, yaml_node_t *n, int *out)
{
	static const struct { const char *name; int dt; } names[] = {
		{ "bf16", DS_DT_BF16 }, { "bfloat16", DS_DT_BF16 },
		{ "f16", DS_DT_F16 }, { "float16", DS_DT_F16 },
		{ "fp16", DS_DT_F16 }, { "half", DS_DT_F16 },
		{ "f32", DS_DT_F32 }, { "float32", DS_DT_F32 },
		{ "fp32", DS_DT_F32 }, { "float", DS_DT_F32 },
	};
	const char *s = yscalar(n);

	for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(s, names[i].name)) {
			*out = names[i].dt;
			return 0;
		}
	return ybad(y, n, "dtype '%s': expected bfloat16, float16 or float32 "
		    "(or bf16, f16, f32)", s ? s : "(a list)");
}

static int ytokenizer_src(struct yctx *y, yaml_node_t *n)
{
	const char *s = yscalar(n);
	unsigned j;
	int rc;

	if (s && !strcmp(s, "base"))
		return 0;
	if (s && !strcmp(s, "union"))
		return ybadc(y, DS_E_USAGE, n, "tokenizer source 'union' "
			     "builds a new vocabulary from every model; "
			     "dare-stream does not: use base, or a model of "
			     "the recipe whose vocabulary extends the base's");
	if ((rc = ymodelref(y, n, (char **)&s)))
		return rc;
	for (j = 0; j < y->r->n; j++)
		if (same_model(s, y->r->models[j]))
			break;
	if (y->r->base && same_model(s, y->r->base))
		j = UINT32_MAX;
	free((char *)s);
	if (j == UINT32_MAX)
		return 0;               /* the base's own */
	if (j == y->r->n)
		return ybadc(y, DS_E_USAGE, n, "tokenizer source '%s' is not a "
			     "model of this recipe", yscalar(n));
	y->r->tokenizer = (int)j;
	return 0;
}

static int ytokenizer(struct yctx *y, yaml_node_t *n)
{
	yaml_node_t *kn, *v, *src = NULL;
	const char *k;
	int rc;

	if ((rc = ymapping(y, n, "tokenizer")))
		return rc;
	YFOR(y, n, k, kn, v) {
		if (!strcmp(k, "source"))
			src = v;
		else if (!strcmp(k, "tokens") || !strcmp(k,
							 "pad_to_multiple_of"))
			return ybadc(y, DS_E_USAGE, kn, "tokenizer: %s is not "
				     "supported (dare-stream adds no tokens "
				     "and pads no embeddings); remove it", k);
		else
			return ybad(y, kn, "unknown key '%s' in tokenizer "
				    "(source)", k);
	}
	if (!src)
		return ybadc(y, DS_E_USAGE, n, "tokenizer without source: "
			     "mergekit's default, union, is not supported; "
			     "give source: base or a model");
	return ytokenizer_src(y, src);
}

/*
 * The named templates a mergekit recipe may ask for, written here from the
 * formats themselves.  "auto" is kept as the word: the plan picks the
 * template most of the recipe's models carry.
 */
static const struct {
	const char *name, *jinja;
} chat_named[] = {
	{ "chatml",
	  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + "
	  "'\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
	  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
	  "{% endif %}" },
	{ "llama3",
	  "{{ bos_token }}{% for message in messages %}"
	  "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>"
	  "\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
	  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
	  "<|end_header_id|>\\n\\n' }}{% endif %}" },
	{ "mistral",
	  "{{ bos_token }}{% for message in messages %}"
	  "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] "
	  "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
	  "{{ message['content'] + eos_token }}{% else %}"
	  "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}" },
	{ "alpaca",
	  "{% for message in messages %}{% if message['role'] == 'system' %}"
	  "{{ message['content'] + '\\n\\n' }}"
	  "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + "
	  "message['content'] + '\\n\\n' }}{% elif message['role'] == "
	  "'assistant' %}{{ '### Response:\\n' + message['content'] + "
	  "eos_token + '\\n\\n' }}{% endif %}{% endfor %}"
	  "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}" },
	{ "exaone",
	  "{% for message in messages %}{% if message['role'] == 'system' %}"
	  "{{ '[|system|]' + message['content'] + '[|endofturn|]\\n' }}"
	  "{% elif message['role'] == 'user' %}{{ '[|user|]' + "
	  "message['content'] + '\\n' }}{% elif message['role'] == "
	  "'assistant' %}{{ '[|assistant|]' + message['content'] + "
	  "'[|endofturn|]\\n' }}{% endif %}{% endfor %}"
	  "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}" },
};

/* dare-stream's `shard_size: BYTES` (what --shard-size gave the run). */
static int yshard(struct yctx *y, yaml_node_t *n)
{
	const char *s = yscalar(n);
	char *end;

	errno = 0;
	y->r->shard_size = s ? strtoull(s, &end, 10) : 0;
	if (!s || *s == '-' || end == s || *end || errno || !y->r->shard_size)
		return ybadc(y, DS_E_USAGE, n, "shard_size must be a number of "
			     "bytes above 0");
	return 0;
}

static int ychat(struct yctx *y, yaml_node_t *n)
{
	const char *s = yscalar(n);

	for (size_t i = 0; s && i < sizeof(chat_named) / sizeof(chat_named[0]);
	     i++)
		if (!strcmp(s, chat_named[i].name))
			s = chat_named[i].jinja;
	if (!s || (strcmp(s, "auto") && (strlen(s) < 20 || !strchr(s, '{'))))
		return ybadc(y, DS_E_USAGE, n, "chat_template '%s': expected "
			     "auto, a name (chatml, llama3, mistral, alpaca, "
			     "exaone) or the Jinja text itself",
			     s ? s : "(a list)");
	free(y->r->chat_template);
	return (y->r->chat_template = strdup(s)) ? 0 : -ENOMEM;
}

static int yexclude(struct yctx *y, yaml_node_t *seq)
{
	if (seq->type != YAML_SEQUENCE_NODE)
		return ybad(y, seq, "exclude must be a list of globs");
	YSEQ(y, seq, it) {
		const char *g = yscalar(ynode(y, *it));

		if (!g)
			return ybad(y, ynode(y, *it), "exclude entries are "
				    "globs");
		if (ds_recipe_add_exclude(y->r, g))
			return -ENOMEM;
	}
	return 0;
}

static const char *const top_keys[] = {
	"merge_method", "base_model", "models", "slices", "parameters",
	"dtype", "out_dtype", "tokenizer_source", "tokenizer",
	"chat_template", "name", "exclude", "shard_size",
};

/* Every top-level key is known, or refused with what to do instead. */
static int ytop_keys(struct yctx *y, yaml_node_t *root)
{
	yaml_node_t *kn, *v;
	const char *k;

	YFOR(y, root, k, kn, v) {
		size_t i;

		(void)v;

		for (i = 0; i < sizeof(top_keys) / sizeof(top_keys[0]); i++)
			if (!strcmp(k, top_keys[i]))
				break;
		if (i < sizeof(top_keys) / sizeof(top_keys[0]))
			continue;
		if (!strcmp(k, "modules"))
			return ybad(y, kn, "modules (per-module recipes of "
				    "multimodal models) are not supported; "
				    "use models: or slices: for the text "
				    "model");
		return ybad(y, kn, "unknown key '%s' (mergekit's keys: "
			    "merge_method, base_model, models, slices, "
			    "parameters, dtype, out_dtype, tokenizer_source, "
			    "tokenizer, chat_template, name; and exclude)", k);
	}
	return 0;
}

static int ymethod(struct yctx *y, yaml_node_t *n)
{
	const char *s = yscalar(n);
	enum ds_method m;
	char list[512] = "";

	if (s && !ds_method_parse(s, &m))
		return ds_recipe_set_method(y->r, m);
	for (unsigned i = 0; i < DS_M_COUNT; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list),
			 "%s%s", i ? ", " : "",
			 ds_method_name((enum ds_method)i));
	if (ds_method_mergekit_only(s))
		return ybadc(y, DS_E_USAGE, n, "merge_method '%s': mergekit's "
			     "%s is not implemented in dare-stream (methods: "
			     "%s)", s, s, list);
	return ybadc(y, DS_E_USAGE, n, "unknown merge_method '%s' (methods: "
		     "%s)", s ? s : "(not a name)", list);
}

static int ydtypes(struct yctx *y, yaml_node_t *root)
{
	yaml_node_t *dt = yget(y, root, "dtype"), *od = yget(y, root,
							       "out_dtype");
	int rc = 0, d;

	if (dt && (rc = ydtype(y, dt, &d)))
		return rc;
	if (dt && od)
		ds_notice(y->ctx, "%s:%u: dtype (mergekit's compute type) "
			  "ignored: dare-stream computes in float32 and "
			  "writes out_dtype", y->path, yline(dt));
	else if (dt)
		y->r->dtype = d;
	return od ? ydtype(y, od, &y->r->dtype) : 0;
}

/* The keys in the order their meaning needs: the method and base decide
 * what a listed model is; parameters come after the models. */
static int ytop(struct yctx *y, yaml_node_t *root)
{
	ds_recipe *r = y->r;
	yaml_node_t *n, *models, *slices;
	int rc;

	if (!root || root->type != YAML_MAPPING_NODE)
		return ybad(y, root, "a recipe is a YAML mapping");
	if ((rc = ymapping(y, root, "a recipe")) || (rc = ytop_keys(y, root)))
		return rc;
	r->mergekit = true;
	free(r->file);
	if (!(r->file = strdup(y->path)))
		return -ENOMEM;
	if (!(n = yget(y, root, "merge_method")))
		return ybadc(y, DS_E_USAGE, root, "no merge_method");
	if ((rc = ymethod(y, n)))
		return rc;
	if ((n = yget(y, root, "base_model")) &&
	    (rc = ymodelref(y, n, &r->base)))
		return rc;
	models = yget(y, root, "models");
	slices = yget(y, root, "slices");
	if (!models == !slices)
		return ybadc(y, DS_E_USAGE, root, "give the models to merge in "
			     "exactly one of models: and slices:");
	if ((rc = models ? ymodels(y, models) : yslices(y, slices)))
		return rc;
	if ((n = yget(y, root, "parameters")) &&
	    (rc = yparams(y, &r->gps, n, YS_MERGE)))
		return rc;
	if ((rc = ydtypes(y, root)))
		return rc;
	if (yget(y, root, "tokenizer_source") && yget(y, root, "tokenizer"))
		return ybadc(y, DS_E_USAGE, yget(y, root, "tokenizer"), "give "
			     "tokenizer_source or tokenizer, not both");
	if ((n = yget(y, root, "tokenizer_source")) &&
	    (rc = ytokenizer_src(y, n)))
		return rc;
	if ((n = yget(y, root, "tokenizer")) && (rc = ytokenizer(y, n)))
		return rc;
	if ((n = yget(y, root, "shard_size")) && (rc = yshard(y, n)))
		return rc;
	if ((n = yget(y, root, "chat_template")) && (rc = ychat(y, n)))
		return rc;
	if ((n = yget(y, root, "name")) && yscalar(n) &&
	    !(r->name = strdup(yscalar(n))))
		return -ENOMEM;
	return (n = yget(y, root, "exclude")) ? yexclude(y, n) : 0;
}

int ds_recipe_load(ds_ctx *ctx, ds_recipe *r, const char *path)
{
	struct yctx y = { .ctx = ctx, .path = path, .r = r };
	yaml_parser_t parser;
	FILE *f = fopen(path, "rb");
	char *slash;
	int rc;

	if (!f)
		return ds_fail(ctx, -errno, "%s: %s", path, strerror(errno));
	if (!(y.dir = strdup(path))) {
		fclose(f);
		return -ENOMEM;
	}
	slash = strrchr(y.dir, '/');
	if (slash)
		*slash = 0;
	else
		strcpy(y.dir, ".");
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &y.doc)) {
		rc = ds_fail(ctx, DS_E_FORMAT, "%s:%lu: %s", path,
			     (unsigned long)parser.problem_mark.line + 1,
			     parser.problem ? parser.problem : "bad YAML");
	} else {
		rc = ytop(&y, yaml_document_get_root_node(&y.doc));
		yaml_document_delete(&y.doc);
	}
	if (rc == -ENOMEM)
		ds_fail(ctx, rc, "out of memory");
	yaml_parser_delete(&parser);
	fclose(f);
	free(y.dir);
	return rc;
}

/* SPDX-License-Identifier: MIT */
/* recipe_yaml.c - the recipe as YAML: dare-stream.yml out, --config in */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>
#include "common/ctx.h"
#include "methods/methods.h"
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

/* The shortest decimal that reads back as the same double. */
static void put_num(FILE *f, double v)
{
	char buf[40];

	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	fputs(buf, f);
}

/* Paths are written absolute so the recipe works from any directory; an
 * argument that is not a path (a Hugging Face id) is kept as given. */
static void put_model(FILE *f, const char *arg)
{
	char *abs = realpath(arg, NULL);

	put_str(f, abs ? abs : arg);
	free(abs);
}

/* The method parameter named k (DS_P_COUNT when none is). */
static enum ds_param yparam_index(const char *k)
{
	unsigned i;

	for (i = 0; i < DS_P_COUNT; i++)
		if (!strcmp(k, ds_param_name((enum ds_param)i)))
			break;
	return (enum ds_param)i;
}

static bool yparam_flag(const char *k)
{
	enum ds_param i = yparam_index(k);

	return i == DS_P_FILTER_WISE || i == DS_P_NUSLERP_FLATTEN ||
	       i == DS_P_NUSLERP_ROW_WISE;
}

/*
 * A model's sparsifier values: the drop rate for DARE, which draws with p,
 * else the density, which top-k methods use as given (DESIGN 5).
 */
static void put_model_params(FILE *f, const struct ds_recipe *r, unsigned j)
{
	const struct ds_method_def *def = ds_method_def(r->method);

	if (r->p_set) {
		fputs(def->sp == DS_SP_DARE ? "\n      drop_rate: " :
		      "\n      density: ", f);
		put_num(f, def->sp == DS_SP_DARE ? r->p[j] : r->density[j]);
	}
	if (r->param_set[DS_P_GAMMA]) {
		fputs("\n      gamma: ", f);
		put_num(f, r->gamma[j]);
	}
	if (r->param_set[DS_P_EPSILON]) {
		fputs("\n      epsilon: ", f);
		put_num(f, r->epsilon[j]);
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
	fputs("models:\n", f);
	for (unsigned j = 0; j < r->n; j++) {
		fputs("  - model: ", f);
		put_model(f, r->models[j]);
		fputs("\n    parameters:\n      weight: ", f);
		put_num(f, r->weight[j]);
		put_model_params(f, r, j);
		fputc('\n', f);
	}
	fputs("parameters:\n  lambda: ", f);
	put_num(f, r->lambda);
	fputc('\n', f);
	if (r->normalize >= 0)
		fprintf(f, "  normalize: %s\n", r->normalize ? "true" : "false");
	fprintf(f, "  rescale: %s\n", r->rescale == DS_RESCALE_NONE ? "none" :
		r->rescale == DS_RESCALE_L1 ? "l1" : "inverse");
	for (unsigned i = DS_P_T; i < DS_P_COUNT; i++) {
		if (!r->param_set[i])
			continue;
		fprintf(f, "  %s: ", ds_param_name((enum ds_param)i));
		if (yparam_flag(ds_param_name((enum ds_param)i)))
			fputs(r->param[i] != 0.0 ? "true" : "false", f);
		else
			put_num(f, r->param[i]);
		fputc('\n', f);
	}
	fprintf(f, "  seed: %" PRIu64 "\n", r->seed);
	if (r->dtype >= 0)
		fprintf(f, "dtype: %s\n", r->dtype == DS_DT_BF16 ? "bf16" :
			r->dtype == DS_DT_F16 ? "f16" : "f32");
	if (r->nexclude)
		fputs("exclude:\n", f);
	for (unsigned i = 0; i < r->nexclude; i++) {
		fputs("  - ", f);
		put_str(f, r->exclude[i]);
		fputc('\n', f);
	}
	return fclose(f) ? -ENOMEM : 0;
}

/* ---- reading ------------------------------------------------------------ */

struct yctx {
	ds_ctx *ctx;
	const char *path;
	yaml_document_t doc;
};

static int ybad(struct yctx *y, yaml_node_t *n, const char *what)
{
	return ds_fail(y->ctx, DS_E_FORMAT, "%s:%lu: %s", y->path,
		       n ? (unsigned long)n->start_mark.line + 1 : 0ul, what);
}

static const char *yscalar(yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ?
	       (const char *)n->data.scalar.value : NULL;
}

static int ydouble(struct yctx *y, yaml_node_t *n, double *out)
{
	const char *s = yscalar(n);
	char *end;

	if (!s)
		return ybad(y, n, "expected a number");
	errno = 0;
	*out = strtod(s, &end);
	if (end == s || *end || errno == ERANGE)
		return ybad(y, n, "expected a number");
	return 0;
}

static int ybool(struct yctx *y, yaml_node_t *n, int *out)
{
	const char *s = yscalar(n);

	if (s && (!strcmp(s, "true") || !strcmp(s, "True")))
		*out = 1;
	else if (s && (!strcmp(s, "false") || !strcmp(s, "False")))
		*out = 0;
	else
		return ybad(y, n, "expected true or false");
	return 0;
}

/* Output dtype names of dare-stream and of mergekit. */
static int ydtype(struct yctx *y, yaml_node_t *n, int *out)
{
	static const struct { const char *name; int dt; } names[] = {
		{ "bf16", DS_DT_BF16 }, { "bfloat16", DS_DT_BF16 },
		{ "f16", DS_DT_F16 }, { "float16", DS_DT_F16 },
		{ "f32", DS_DT_F32 }, { "float32", DS_DT_F32 },
	};
	const char *s = yscalar(n);

	for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(s, names[i].name)) {
			*out = names[i].dt;
			return 0;
		}
	return ybad(y, n, "dtype must be bf16, f16 or f32");
}

/* A value out of range is a recipe error (exit 2), named by file and line. */
static int yrange(struct yctx *y, yaml_node_t *n, const char *key, double d)
{
	bool rate = !strcmp(key, "drop_rate") || !strcmp(key, "density");

	if (rate ? d >= 0 && d <= 1 : isfinite(d))
		return 0;
	return ds_fail(y->ctx, DS_E_USAGE, "%s:%lu: %s %g %s", y->path,
		       (unsigned long)n->start_mark.line + 1, key, d,
		       rate ? "is outside [0, 1]" : "is not a finite number");
}

/* Each key of a mapping node, with its value node. */
#define YFOR(y, map, k, v)                                                   \
	for (yaml_node_pair_t *p_ = (map)->data.mapping.pairs.start;         \
	     p_ < (map)->data.mapping.pairs.top &&                           \
	     ((k) = yscalar(yaml_document_get_node(&(y)->doc, p_->key)),     \
	      (v) = yaml_document_get_node(&(y)->doc, p_->value), 1);        \
	     p_++)

/* A key given twice would silently lose one of its values: refuse it. */
static int ydupes(struct yctx *y, yaml_node_t *map)
{
	yaml_node_pair_t *a, *b, *top = map->data.mapping.pairs.top;

	for (a = map->data.mapping.pairs.start; a < top; a++)
		for (b = a + 1; b < top; b++) {
			const char *ka = yscalar(yaml_document_get_node(
						 &y->doc, a->key));
			const char *kb = yscalar(yaml_document_get_node(
						 &y->doc, b->key));

			if (ka && kb && !strcmp(ka, kb))
				return ybad(y, yaml_document_get_node(
					    &y->doc, b->key), "key given twice");
		}
	return 0;
}

/* Per-model (or, at top level, global) weight, density/drop_rate. */
static int yparams(struct yctx *y, ds_recipe *r, yaml_node_t *map, int j)
{
	const char *k;
	yaml_node_t *v;
	double d = 0;
	int rc = 0;

	if (map->type != YAML_MAPPING_NODE)
		return ybad(y, map, "parameters must be a mapping");
	if ((rc = ydupes(y, map)))
		return rc;
	YFOR(y, map, k, v) {
		if (!k)
			return ybad(y, v, "parameter names must be strings");
		if (!strcmp(k, "normalize") && j < 0) {
			int b = 0;
			if ((rc = ybool(y, v, &b)))
				return rc;
			r->normalize = b;
			continue;
		}
		if (!strcmp(k, "rescale") && j < 0) {
			const char *s = yscalar(v);
			if (!s || (strcmp(s, "inverse") && strcmp(s, "none") &&
				   strcmp(s, "l1")))
				return ybad(y, v, "rescale must be inverse, "
					    "l1 or none");
			r->rescale = !strcmp(s, "none") ? DS_RESCALE_NONE :
				     !strcmp(s, "l1") ? DS_RESCALE_L1 :
				     DS_RESCALE_INVERSE;
			continue;
		}
		if (j < 0 && yparam_flag(k)) {
			int b = 0;
			if ((rc = ybool(y, v, &b)))
				return rc;
			ds_recipe_set_param(r, -1, yparam_index(k), b);
			continue;
		}
		if (!strcmp(k, "seed") && j < 0) {
			const char *s = yscalar(v);
			char *end;
			errno = 0;
			r->seed = s ? strtoull(s, &end, 0) : 0;
			if (!s || *s == '-' || end == s || *end || errno)
				return ybad(y, v, "seed must be an unsigned "
					    "64-bit integer");
			continue;
		}
		if ((rc = ydouble(y, v, &d)) || (rc = yrange(y, v, k, d)))
			return rc;
		if (!strcmp(k, "weight"))
			rc = ds_recipe_set_weight(r, j, d);
		else if (!strcmp(k, "drop_rate"))
			rc = ds_recipe_set_drop_rate(r, j, d);
		else if (!strcmp(k, "density"))
			rc = ds_recipe_set_density(r, j, d);
		else if (!strcmp(k, "lambda") && j < 0)
			rc = ds_recipe_set_lambda(r, d);
		else if (yparam_index(k) < DS_P_COUNT &&
			 (j < 0 || yparam_index(k) <= DS_P_EPSILON))
			rc = ds_recipe_set_param(r, j, yparam_index(k), d);
		else
			return ybad(y, v, "unknown parameter");
		if (rc)
			return ybad(y, v, "parameter out of range");
	}
	return 0;
}

static int ymodels(struct yctx *y, ds_recipe *r, yaml_node_t *seq)
{
	if (seq->type != YAML_SEQUENCE_NODE)
		return ybad(y, seq, "models must be a list");
	for (yaml_node_item_t *it = seq->data.sequence.items.start;
	     it < seq->data.sequence.items.top; it++) {
		yaml_node_t *m = yaml_document_get_node(&y->doc, *it);
		yaml_node_t *params = NULL, *v;
		const char *k, *path = NULL;
		int j, rc;

		if (m->type != YAML_MAPPING_NODE)
			return ybad(y, m, "each model must be a mapping");
		if ((rc = ydupes(y, m)))
			return rc;
		YFOR(y, m, k, v) {
			if (k && !strcmp(k, "model"))
				path = yscalar(v);
			else if (k && !strcmp(k, "parameters"))
				params = v;
			else
				return ybad(y, v, "unknown key in model");
		}
		if (!path)
			return ybad(y, m, "model entry without 'model:'");
		if ((j = ds_recipe_add_model(r, path)) < 0)
			return ybad(y, m, "too many models");
		if (params && (rc = yparams(y, r, params, j)))
			return rc;
	}
	return 0;
}

static int yexclude(struct yctx *y, ds_recipe *r, yaml_node_t *seq)
{
	if (seq->type != YAML_SEQUENCE_NODE)
		return ybad(y, seq, "exclude must be a list");
	for (yaml_node_item_t *it = seq->data.sequence.items.start;
	     it < seq->data.sequence.items.top; it++) {
		const char *g = yscalar(yaml_document_get_node(&y->doc, *it));

		if (!g)
			return ybad(y, NULL, "exclude entries are globs");
		if (ds_recipe_add_exclude(r, g))
			return -ENOMEM;
	}
	return 0;
}

static int ytop(struct yctx *y, ds_recipe *r, yaml_node_t *root)
{
	yaml_node_t *v, *params = NULL;
	const char *k;
	int rc = 0;

	if (!root || root->type != YAML_MAPPING_NODE)
		return ybad(y, root, "a recipe is a YAML mapping");
	if ((rc = ydupes(y, root)))
		return rc;
	YFOR(y, root, k, v) {
		enum ds_method m;

		if (!k)
			rc = ybad(y, v, "keys must be strings");
		else if (!strcmp(k, "merge_method"))
			rc = !yscalar(v) || ds_method_parse(yscalar(v), &m) ?
			     ybad(y, v, "unknown merge_method") :
			     ds_recipe_set_method(r, m);
		else if (!strcmp(k, "base_model"))
			rc = yscalar(v) ? ds_recipe_set_base(r, yscalar(v)) :
			     ybad(y, v, "base_model must be a path");
		else if (!strcmp(k, "models"))
			rc = ymodels(y, r, v);
		else if (!strcmp(k, "parameters"))
			params = v;     /* after models: it may set them all */
		else if (!strcmp(k, "dtype"))
			rc = ydtype(y, v, &r->dtype);
		else if (!strcmp(k, "exclude"))
			rc = yexclude(y, r, v);
		else
			rc = ybad(y, v, "unknown key");
		if (rc)
			return rc;
	}
	return params ? yparams(y, r, params, -1) : 0;
}

int ds_recipe_load(ds_ctx *ctx, ds_recipe *r, const char *path)
{
	struct yctx y = { .ctx = ctx, .path = path };
	yaml_parser_t parser;
	FILE *f = fopen(path, "rb");
	int rc;

	if (!f)
		return ds_fail(ctx, -errno, "%s: %s", path, strerror(errno));
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &y.doc)) {
		rc = ds_fail(ctx, DS_E_FORMAT, "%s:%lu: %s", path,
			     (unsigned long)parser.problem_mark.line + 1,
			     parser.problem ? parser.problem : "bad YAML");
	} else {
		rc = ytop(&y, r, yaml_document_get_root_node(&y.doc));
		yaml_document_delete(&y.doc);
	}
	yaml_parser_delete(&parser);
	fclose(f);
	return rc;
}

/* SPDX-License-Identifier: MIT */
/* recipe.c - building and checking recipes; parameters of each tensor */
#include "config.h"

#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/ctx.h"
#include "methods/methods.h"
#include "recipe/recipe.h"

/* Recipe parameters: mergekit's name, the ds_param it fills (-1: none). */
static const struct {
	const char *name;
	int par;
	double def;
} rps[RP_COUNT] = {
	[RP_WEIGHT] = { "weight", -1, 1.0 },
	[RP_DENSITY] = { "density", -1, 1.0 },
	[RP_DROP_RATE] = { "drop_rate", -1, 0.0 },
	[RP_GAMMA] = { "gamma", DS_P_GAMMA, 0.01 },
	[RP_EPSILON] = { "epsilon", DS_P_EPSILON, 0.15 },
	[RP_SCALE] = { "scale", DS_P_SCALE, 1.0 },
	[RP_LAMBDA] = { "lambda", -1, 1.0 },
	[RP_T] = { "t", DS_P_T, 0.5 },
	[RP_SELECT_TOPK] = { "select_topk", DS_P_SELECT_TOPK, 1.0 },
	[RP_MAX_ITER] = { "max_iter", DS_P_MAX_ITER, 10.0 },
	[RP_TOL] = { "tol", DS_P_TOL, 1e-5 },
	[RP_FILTER_WISE] = { "filter_wise", DS_P_FILTER_WISE, 0.0 },
	[RP_NUSLERP_FLATTEN] = { "nuslerp_flatten", DS_P_NUSLERP_FLATTEN, 1.0 },
	[RP_NUSLERP_ROW_WISE] = { "nuslerp_row_wise", DS_P_NUSLERP_ROW_WISE,
				  0.0 },
};

const char *ds_rp_name(enum ds_rp rp)
{
	return (unsigned)rp < RP_COUNT ? rps[rp].name : NULL;
}

bool ds_recipe_method_uses_base(enum ds_method m)
{
	const struct ds_method_def *def = ds_method_def(m);

	/* linear, karcher, passthrough: a listed base is one of the models */
	return def && def->base != DS_BASE_LAYOUT;
}

ds_recipe *ds_recipe_create(void)
{
	ds_recipe *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->method = DS_M_DARE_LINEAR;
	for (unsigned j = 0; j < DS_MAX_MODELS; j++)
		r->stream[j] = j;
	r->normalize = -1;
	r->dtype = -1;
	r->tokenizer = -1;
	return r;
}

void ds_pval_clear(struct ds_pval *v)
{
	for (unsigned i = 0; i < v->ncond; i++) {
		free(v->c[i].filter);
		free(v->c[i].g);
	}
	free(v->c);
	memset(v, 0, sizeof(*v));
}

static void pset_clear(struct ds_pset *ps)
{
	for (unsigned i = 0; i < RP_COUNT; i++)
		ds_pval_clear(&ps->v[i]);
}

void ds_recipe_free(ds_recipe *r)
{
	if (!r)
		return;
	free(r->base);
	for (unsigned j = 0; j < r->n; j++) {
		free(r->models[j]);
		pset_clear(&r->mps[j]);
	}
	pset_clear(&r->gps);
	for (unsigned s = 0; s < r->nslices; s++) {
		for (unsigned i = 0; i < r->slices[s].nsrc; i++)
			pset_clear(&r->slices[s].src[i].ps);
		pset_clear(&r->slices[s].ps);
		free(r->slices[s].src);
	}
	free(r->slices);
	for (unsigned i = 0; i < r->nexclude; i++)
		free(r->exclude[i]);
	free(r->exclude);
	free(r->chat_template);
	free(r->name);
	free(r->file);
	free(r);
}

int ds_recipe_set_method(ds_recipe *r, enum ds_method m)
{
	if ((unsigned)m >= DS_M_COUNT)
		return DS_E_USAGE;
	r->method = m;
	return 0;
}

int ds_recipe_set_base(ds_recipe *r, const char *path)
{
	char *s = strdup(path);

	if (!s)
		return -ENOMEM;
	free(r->base);
	r->base = s;
	return 0;
}

int ds_recipe_add_model(ds_recipe *r, const char *path)
{
	if (r->n >= DS_MAX_MODELS)
		return DS_E_USAGE;
	r->models[r->n] = strdup(path);
	if (!r->models[r->n])
		return -ENOMEM;
	return (int)r->n++;
}

/* v becomes the plain number d. */
static int pval_num(struct ds_pval *v, double d)
{
	struct ds_pcond *c = calloc(1, sizeof(*c));
	double *g = malloc(sizeof(*g));

	if (!c || !g) {
		free(c);
		free(g);
		return -ENOMEM;
	}
	ds_pval_clear(v);
	*g = d;
	c->g = g;
	c->ng = 1;
	v->c = c;
	v->ncond = 1;
	return 0;
}

/*
 * Parameter rp of model j: in the model's own parameters and in every
 * slice source of that model, so that it overrides what a recipe gave.
 * j < 0: every model, and the merge-wide value for models added later.
 */
int ds_recipe_set_num(ds_recipe *r, int j, enum ds_rp rp, double v)
{
	int rc = 0;

	if ((unsigned)rp >= RP_COUNT || j >= (int)r->n)
		return DS_E_USAGE;
	if (j < 0 || rp >= RP_NMODEL)
		rc = pval_num(&r->gps.v[rp], v);
	for (unsigned s = 0; !rc && s < r->nslices; s++) {
		if (rp >= RP_NMODEL || j < 0)
			ds_pval_clear(&r->slices[s].ps.v[rp]);
		for (unsigned i = 0; !rc && i < r->slices[s].nsrc; i++) {
			struct ds_source *src = &r->slices[s].src[i];

			if (rp < RP_NMODEL && (j < 0 || src->m == (unsigned)j))
				rc = pval_num(&src->ps.v[rp], v);
		}
	}
	for (unsigned k = 0; !rc && rp < RP_NMODEL && k < r->n; k++)
		if (j < 0 || (unsigned)j == k)
			rc = pval_num(&r->mps[k].v[rp], v);
	return rc;
}

int ds_recipe_set_weight(ds_recipe *r, int j, double w)
{
	return ds_recipe_set_num(r, j, RP_WEIGHT, w);
}

int ds_recipe_set_drop_rate(ds_recipe *r, int j, double p)
{
	int rc = ds_recipe_set_num(r, j, RP_DROP_RATE, p);

	/* A drop rate given here wins over any density of the recipe. */
	for (unsigned k = 0; !rc && k < r->n; k++)
		if (j < 0 || (unsigned)j == k)
			ds_pval_clear(&r->mps[k].v[RP_DENSITY]);
	if (!rc && j < 0)
		ds_pval_clear(&r->gps.v[RP_DENSITY]);
	for (unsigned s = 0; !rc && s < r->nslices; s++) {
		if (j < 0)
			ds_pval_clear(&r->slices[s].ps.v[RP_DENSITY]);
		for (unsigned i = 0; i < r->slices[s].nsrc; i++)
			if (j < 0 || r->slices[s].src[i].m == (unsigned)j)
				ds_pval_clear(&r->slices[s].src[i].ps.v[RP_DENSITY]);
	}
	return rc;
}

int ds_recipe_set_density(ds_recipe *r, int j, double d)
{
	int rc = ds_recipe_set_num(r, j, RP_DENSITY, d);

	/* A density given here wins over any drop rate of the recipe. */
	for (unsigned k = 0; !rc && k < r->n; k++)
		if (j < 0 || (unsigned)j == k)
			ds_pval_clear(&r->mps[k].v[RP_DROP_RATE]);
	if (!rc && j < 0)
		ds_pval_clear(&r->gps.v[RP_DROP_RATE]);
	for (unsigned s = 0; !rc && s < r->nslices; s++) {
		if (j < 0)
			ds_pval_clear(&r->slices[s].ps.v[RP_DROP_RATE]);
		for (unsigned i = 0; i < r->slices[s].nsrc; i++)
			if (j < 0 || r->slices[s].src[i].m == (unsigned)j)
				ds_pval_clear(&r->slices[s].src[i].ps.v[RP_DROP_RATE]);
	}
	return rc;
}

int ds_recipe_set_stream(ds_recipe *r, int j, unsigned stream)
{
	if (j < 0 || (unsigned)j >= r->n)
		return DS_E_USAGE;
	r->stream[j] = stream;
	return 0;
}

int ds_recipe_set_param(ds_recipe *r, int j, enum ds_param par, double v)
{
	for (unsigned i = 0; i < RP_COUNT; i++)
		if (rps[i].par == (int)par)
			return ds_recipe_set_num(r, i < RP_NMODEL ? j : -1,
						 (enum ds_rp)i, v);
	return DS_E_USAGE;
}

double ds_recipe_x(unsigned i, unsigned L)
{
	return L > 1 ? (double)i / (double)(L - 1) : 1.0;
}

/* mergekit's evaluate_setting: the first alternative whose filter is
 * absent, "*" or a substring of name; a gradient interpolated at x. */
static bool pval_eval(const struct ds_pval *v, const char *name, double x,
		      double *out)
{
	for (unsigned i = 0; i < v->ncond; i++) {
		const struct ds_pcond *c = &v->c[i];
		double f, frac;
		unsigned i0, i1;

		if (c->filter && strcmp(c->filter, "*") &&
		    !(name && strstr(name, c->filter)))
			continue;
		if (!c->gradient) {
			*out = c->g[0];
			return true;
		}
		f = x * (double)(c->ng - 1);
		i0 = (unsigned)f;
		i1 = i0 + 1 < c->ng ? i0 + 1 : c->ng - 1;
		frac = f - (double)i0;
		*out = (1.0 - frac) * c->g[i0] + frac * c->g[i1];
		return true;
	}
	return false;
}

/* The parameter sets a value of position k is looked up in, nearest
 * first: the slice source (or the model), the slice, the whole merge. */
struct scopes {
	const struct ds_pset *s[3];
};

static struct scopes scopes_of(const struct ds_recipe *r, int slice,
			       int src, unsigned j)
{
	struct scopes sc = { { NULL, NULL, &r->gps } };

	if (slice >= 0) {
		const struct ds_slice *sl = &r->slices[slice];

		sc.s[0] = src >= 0 ? &sl->src[src].ps : NULL;
		sc.s[1] = &sl->ps;
	} else if (j < r->n) {
		sc.s[0] = &r->mps[j];
	}
	return sc;
}

static bool lookup(const struct scopes *sc, enum ds_rp rp, const char *name,
		   double x, double *out)
{
	for (unsigned i = 0; i < 3; i++)
		if (sc->s[i] && pval_eval(&sc->s[i]->v[rp], name, x, out))
			return true;
	return false;
}

/*
 * The drop rate: drop_rate or 1 - density, the nearest scope winning; the
 * density as given, or 1 - p (top-k methods use it as given, DESIGN 5).
 */
static double lookup_p(const struct scopes *sc, const char *name, double x,
		       double *density)
{
	double v;

	for (unsigned i = 0; i < 3; i++) {
		if (!sc->s[i])
			continue;
		if (pval_eval(&sc->s[i]->v[RP_DROP_RATE], name, x, &v)) {
			*density = 1.0 - v;
			return v;
		}
		if (pval_eval(&sc->s[i]->v[RP_DENSITY], name, x, &v)) {
			*density = v;
			return 1.0 - v;
		}
	}
	*density = 1.0;     /* mergekit: density 1 */
	return 0.0;
}

unsigned ds_recipe_slice_models(const struct ds_recipe *r, unsigned s,
				unsigned *j, unsigned *srcidx)
{
	const struct ds_slice *sl = &r->slices[s];
	unsigned n = 0;

	for (unsigned i = 0; i < sl->nsrc; i++)
		if (sl->src[i].m != DS_SRC_BASE) {
			if (srcidx)
				srcidx[n] = i;
			j[n++] = sl->src[i].m;
		}
	return n;
}

enum ds_rescale ds_recipe_rescale(const struct ds_recipe *r)
{
	if (r->rescale_set || !r->mergekit)
		return r->rescale;
	return ds_method_def(r->method)->rescale_l1 ? DS_RESCALE_L1 :
						     DS_RESCALE_NONE;
}

/* Per-model parameters of position k. */
static int model_params(ds_ctx *ctx, const struct ds_recipe *r,
			const struct ds_tquery *q, unsigned k, int src,
			struct ds_tparams *tp)
{
	struct scopes sc = scopes_of(r, q->slice, src, tp->j[k]);
	const char *name = q->iname[k] ? q->iname[k] : q->oname;
	double v;

	if (lookup(&sc, RP_WEIGHT, name, q->x, &v))
		tp->weight[k] = v;
	else if (r->mergekit && ds_method_def(r->method)->weight)
		return ds_fail(ctx, DS_E_USAGE, "no weight for model %s (tensor "
			       "'%s'); mergekit's %s needs one: add `weight:` "
			       "to its parameters or to the merge's",
			       r->models[tp->j[k]], name,
			       ds_method_name(r->method));
	else
		tp->weight[k] = 1.0;
	tp->p[k] = lookup_p(&sc, name, q->x, &tp->density[k]);
	tp->gamma[k] = lookup(&sc, RP_GAMMA, name, q->x, &v) ? v : 0.01;
	tp->epsilon[k] = lookup(&sc, RP_EPSILON, name, q->x, &v) ? v : 0.15;
	if (k == 0 && lookup(&sc, RP_SCALE, name, q->x, &v))
		tp->param[DS_P_SCALE] = v;   /* one input per tensor */
	return 0;
}

int ds_recipe_tparams(ds_ctx *ctx, const struct ds_recipe *r,
		      const struct ds_tquery *q, struct ds_tparams *tp)
{
	unsigned srcidx[DS_MAX_MODELS];
	struct scopes sc = scopes_of(r, q->slice, -1, UINT32_MAX);
	double v;
	int rc;

	memset(tp, 0, sizeof(*tp));
	if (q->slice >= 0) {
		tp->n = ds_recipe_slice_models(r, (unsigned)q->slice, tp->j,
					       srcidx);
	} else {
		tp->n = r->n;
		for (unsigned k = 0; k < r->n; k++)
			tp->j[k] = k;
	}
	for (unsigned i = 0; i < DS_P_COUNT; i++)
		tp->param[i] = ds_param_default((enum ds_param)i);
	for (unsigned i = RP_NMODEL; i < RP_COUNT; i++)
		if (rps[i].par >= 0 && lookup(&sc, (enum ds_rp)i, q->oname,
					      q->x, &v))
			tp->param[rps[i].par] = v;
	tp->lambda = lookup(&sc, RP_LAMBDA, q->oname, q->x, &v) ? v : 1.0;
	for (unsigned k = 0; k < tp->n; k++)
		if ((rc = model_params(ctx, r, q, k, q->slice >= 0 ?
				       (int)srcidx[k] : -1, tp)))
			return rc;
	for (unsigned k = 0; k < tp->n; k++)
		tp->sj[k] = r->stream[tp->j[k]];
	tp->has_base = r->base != NULL;
	tp->normalize = r->normalize;
	tp->rescale = ds_recipe_rescale(r);
	tp->seed = r->seed;
	return 0;
}

int ds_recipe_set_lambda(ds_recipe *r, double lambda)
{
	return ds_recipe_set_num(r, -1, RP_LAMBDA, lambda);
}

int ds_recipe_set_normalize(ds_recipe *r, int normalize)
{
	r->normalize = normalize < 0 ? -1 : !!normalize;
	return 0;
}

int ds_recipe_set_rescale(ds_recipe *r, enum ds_rescale rescale)
{
	if (rescale != DS_RESCALE_INVERSE && rescale != DS_RESCALE_NONE &&
	    rescale != DS_RESCALE_L1)
		return DS_E_USAGE;
	r->rescale = rescale;
	r->rescale_set = true;
	return 0;
}

int ds_recipe_set_seed(ds_recipe *r, uint64_t seed)
{
	r->seed = seed;
	return 0;
}

int ds_recipe_set_dtype(ds_recipe *r, int dtype)
{
	if (dtype != -1 && dtype != DS_DT_F16 && dtype != DS_DT_BF16 &&
	    dtype != DS_DT_F32)
		return DS_E_USAGE;
	r->dtype = dtype;
	return 0;
}

int ds_recipe_add_exclude(ds_recipe *r, const char *glob)
{
	char **e = realloc(r->exclude, (r->nexclude + 1) * sizeof(*e));

	if (!e)
		return -ENOMEM;
	r->exclude = e;
	e[r->nexclude] = strdup(glob);
	if (!e[r->nexclude])
		return -ENOMEM;
	r->nexclude++;
	return 0;
}

int ds_recipe_model_count(const ds_recipe *r)
{
	return (int)r->n;
}

bool ds_recipe_excluded(const struct ds_recipe *r, const char *name)
{
	for (unsigned i = 0; i < r->nexclude; i++)
		if (fnmatch(r->exclude[i], name, 0) == 0)
			return true;
	return false;
}

/* Whether rp is given anywhere in the recipe. */
static bool given(const struct ds_recipe *r, enum ds_rp rp)
{
	if (r->gps.v[rp].ncond)
		return true;
	for (unsigned j = 0; j < r->n; j++)
		if (r->mps[j].v[rp].ncond)
			return true;
	for (unsigned s = 0; s < r->nslices; s++) {
		if (r->slices[s].ps.v[rp].ncond)
			return true;
		for (unsigned i = 0; i < r->slices[s].nsrc; i++)
			if (r->slices[s].src[i].ps.v[rp].ncond)
				return true;
	}
	return false;
}

static bool takes_density(enum ds_method m)
{
	return m == DS_M_DARE_LINEAR || m == DS_M_DARE_TIES ||
	       m == DS_M_TIES || m == DS_M_BREADCRUMBS ||
	       m == DS_M_BREADCRUMBS_TIES || m == DS_M_DELLA ||
	       m == DS_M_DELLA_LINEAR;
}

int ds_recipe_check(ds_ctx *ctx, const ds_recipe *r)
{
	bool dare = r->method == DS_M_DARE_LINEAR ||
		    r->method == DS_M_DARE_TIES;
	bool p_set = given(r, RP_DENSITY) || given(r, RP_DROP_RATE);

	if (r->n == 0 && !r->base)
		return ds_fail(ctx, DS_E_USAGE,
			       "no fine-tuned model given (--model)");
	if (r->n == 0)
		return 0;                       /* the base is the output */
	if (ds_method_needs_base(r->method) &&
	    ds_recipe_method_uses_base(r->method) && !r->base)
		return ds_fail(ctx, DS_E_USAGE, "method %s needs a base model "
			       "(--base)", ds_method_name(r->method));
	if (dare && !p_set && !r->mergekit)
		return ds_fail(ctx, DS_E_USAGE, "method %s needs a drop rate: "
			       "-p P or --density D",
			       ds_method_name(r->method));
	if (!takes_density(r->method) && p_set && !r->mergekit)
		return ds_fail(ctx, DS_E_USAGE, "method %s drops nothing; a "
			       "drop rate or density applies to the dare, ties, "
			       "breadcrumbs and della methods",
			       ds_method_name(r->method));
	return 0;
}

/* Notices a mergekit recipe earns once, before its merge is planned. */
void ds_recipe_notices(ds_ctx *ctx, const ds_recipe *r)
{
	bool p_set = given(r, RP_DENSITY) || given(r, RP_DROP_RATE);

	if (!r->mergekit)
		return;
	if (takes_density(r->method) && !p_set)
		ds_notice(ctx, "recipe gives no density: density 1 (nothing "
			  "dropped), as mergekit");
	if (!takes_density(r->method) && p_set)
		ds_notice(ctx, "method %s ignores density (as mergekit)",
			  ds_method_name(r->method));
}

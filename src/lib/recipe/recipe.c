/* SPDX-License-Identifier: MIT */
/* recipe.c - building, checking, writing and reading merge recipes */
#include "config.h"

#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>
#include "common/ctx.h"
#include "methods/methods.h"
#include "recipe/recipe.h"

ds_recipe *ds_recipe_create(void)
{
	ds_recipe *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	for (unsigned i = 0; i < DS_P_COUNT; i++)
		r->param[i] = ds_param_default((enum ds_param)i);
	r->method = DS_M_DARE_LINEAR;
	r->lambda = 1.0;
	r->normalize = -1;
	r->dtype = -1;
	return r;
}

void ds_recipe_free(ds_recipe *r)
{
	if (!r)
		return;
	free(r->base);
	for (unsigned j = 0; j < r->n; j++)
		free(r->models[j]);
	for (unsigned i = 0; i < r->nexclude; i++)
		free(r->exclude[i]);
	free(r->exclude);
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
	r->weight[r->n] = 1.0;
	r->p[r->n] = r->n ? r->p[0] : 0.0;
	r->density[r->n] = r->n ? r->density[0] : 1.0;
	r->stream[r->n] = r->n;
	r->gamma[r->n] = r->n ? r->gamma[0] : r->param[DS_P_GAMMA];
	r->epsilon[r->n] = r->n ? r->epsilon[0] : r->param[DS_P_EPSILON];
	return (int)r->n++;
}

/* Apply v to slot j of a per-model array, or to every slot when j < 0. */
static int set_each(ds_recipe *r, double *a, int j, double v)
{
	if (j >= (int)r->n)
		return DS_E_USAGE;
	for (unsigned k = 0; k < r->n; k++)
		if (j < 0 || (unsigned)j == k)
			a[k] = v;
	return 0;
}

int ds_recipe_set_weight(ds_recipe *r, int j, double w)
{
	return set_each(r, r->weight, j, w);
}

int ds_recipe_set_drop_rate(ds_recipe *r, int j, double p)
{
	int rc = set_each(r, r->p, j, p);

	r->p_set = true;
	return rc ? rc : set_each(r, r->density, j, 1.0 - p);
}

int ds_recipe_set_density(ds_recipe *r, int j, double d)
{
	int rc = set_each(r, r->p, j, 1.0 - d);

	r->p_set = true;
	return rc ? rc : set_each(r, r->density, j, d);
}

int ds_recipe_set_param(ds_recipe *r, int j, enum ds_param par, double v)
{
	if ((unsigned)par >= DS_P_COUNT)
		return DS_E_USAGE;
	r->param_set[par] = true;
	if (par == DS_P_GAMMA || par == DS_P_EPSILON) {
		if (j < 0)
			r->param[par] = v;     /* also for models added later */
		return set_each(r, par == DS_P_GAMMA ? r->gamma : r->epsilon,
				j, v);
	}
	r->param[par] = v;
	return 0;
}

int ds_recipe_tparams(ds_ctx *ctx, const struct ds_recipe *r,
		      const char *name, struct ds_tparams *tp)
{
	(void)ctx;
	(void)name;
	memset(tp, 0, sizeof(*tp));
	tp->n = r->n;
	tp->has_base = r->base != NULL;
	memcpy(tp->weight, r->weight, sizeof(tp->weight));
	memcpy(tp->p, r->p, sizeof(tp->p));
	memcpy(tp->density, r->density, sizeof(tp->density));
	for (unsigned j = 0; j < r->n; j++)
		tp->j[j] = r->stream[j];
	memcpy(tp->gamma, r->gamma, sizeof(tp->gamma));
	memcpy(tp->epsilon, r->epsilon, sizeof(tp->epsilon));
	memcpy(tp->param, r->param, sizeof(tp->param));
	tp->lambda = r->lambda;
	tp->normalize = r->normalize;
	tp->rescale = r->rescale;
	tp->seed = r->seed;
	return 0;
}

int ds_recipe_set_stream(ds_recipe *r, int j, unsigned stream)
{
	if (j < 0 || (unsigned)j >= r->n)
		return DS_E_USAGE;
	r->stream[j] = stream;
	return 0;
}

int ds_recipe_set_lambda(ds_recipe *r, double lambda)
{
	r->lambda = lambda;
	return 0;
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

int ds_recipe_check(ds_ctx *ctx, const ds_recipe *r)
{
	const struct ds_method_def *def = ds_method_def(r->method);
	struct ds_tparams tp;
	struct ds_mparams mp;
	bool drops;
	int rc;

	if (!def)
		return ds_fail(ctx, DS_E_USAGE, "unknown merge method %d",
			       (int)r->method);
	drops = def->sp != DS_SP_NONE;
	if (r->n == 0 && !r->base)
		return ds_fail(ctx, DS_E_USAGE,
			       "no fine-tuned model given (--model)");
	if (ds_method_needs_base(r->method) && !r->base)
		return ds_fail(ctx, DS_E_USAGE, "method %s needs a base model "
			       "(--base)", def->name);
	if (r->n == 0)
		return 0;                       /* the base is the output */
	if (drops && !r->p_set)
		return ds_fail(ctx, DS_E_USAGE, "method %s needs a %s: -p P "
			       "or --density D", def->name,
			       def->sp == DS_SP_DARE ? "drop rate" : "density");
	if (!drops && r->p_set)
		return ds_fail(ctx, DS_E_USAGE, "method %s drops nothing; a "
			       "drop rate or density applies to the dare, "
			       "ties, breadcrumbs and della methods", def->name);
	if (!isfinite(r->lambda))
		return ds_fail(ctx, DS_E_USAGE, "lambda must be finite");
	for (unsigned i = 0; i < DS_P_COUNT; i++)
		if (r->param_set[i] && !(def->params >> i & 1))
			ds_notice(ctx, "%s is not a parameter of method %s: "
				  "ignored", ds_param_name((enum ds_param)i),
				  def->name);
	if ((rc = ds_recipe_tparams(ctx, r, "", &tp)))
		return rc;
	return ds_mparams_from(ctx, &mp, r->method, &tp);
}

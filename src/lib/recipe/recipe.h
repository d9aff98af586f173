/* SPDX-License-Identifier: MIT */
/* recipe.h - what to merge: inputs, method and its parameters */
#ifndef DS_RECIPE_H
#define DS_RECIPE_H

#include <stdbool.h>
#include <stdint.h>
#include "dare-stream.h"

struct ds_recipe {
	enum ds_method method;
	char *base;
	char *models[DS_MAX_MODELS];
	double weight[DS_MAX_MODELS];
	double p[DS_MAX_MODELS];
	double density[DS_MAX_MODELS]; /* as given, or 1 - p when p was */
	unsigned stream[DS_MAX_MODELS]; /* mask stream index (position) */
	bool p_set;                 /* a drop rate was given (any model) */
	unsigned n;
	double gamma[DS_MAX_MODELS];   /* per model, DS_P_GAMMA */
	double epsilon[DS_MAX_MODELS]; /* per model, DS_P_EPSILON */
	double param[DS_P_COUNT];   /* merge-wide parameters (DS_P_T ...) */
	bool param_set[DS_P_COUNT]; /* given, not the default */
	double lambda;
	int normalize;              /* -1: the method's default */
	enum ds_rescale rescale;
	uint64_t seed;
	int dtype;                  /* -1: each base tensor's own */
	char **exclude;
	unsigned nexclude;
};

/*
 * The parameters of one output tensor, resolved from the recipe.  The
 * plan fills one for each merged tensor; the methods read nothing else.
 */
struct ds_tparams {
	unsigned n;                    /* models */
	bool has_base;                 /* a base model is given */
	unsigned j[DS_MAX_MODELS];     /* mask stream index of each model */
	double weight[DS_MAX_MODELS];
	double p[DS_MAX_MODELS];       /* drop rate: 1 - density */
	double density[DS_MAX_MODELS]; /* as given, or 1 - p */
	double gamma[DS_MAX_MODELS];
	double epsilon[DS_MAX_MODELS];
	double param[DS_P_COUNT];      /* DS_P_T ... (per-model slots unused) */
	double lambda;
	int normalize;                 /* -1: the method's default */
	enum ds_rescale rescale;
	uint64_t seed;
};

/* Resolve the parameters of output tensor name (0 or DS_E_USAGE). */
int ds_recipe_tparams(ds_ctx *ctx, const struct ds_recipe *r,
		      const char *name, struct ds_tparams *tp);

/* True when the tensor name matches one of the --exclude globs. */
bool ds_recipe_excluded(const struct ds_recipe *r, const char *name);

/*
 * Write r as YAML (the dare-stream.yml of an output directory) into a
 * malloc'd string; every number printed so that it parses back to the
 * same double.  Returns 0 or -ENOMEM.
 */
int ds_recipe_to_yaml(const struct ds_recipe *r, char **out);

#endif

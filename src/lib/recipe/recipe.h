/* SPDX-License-Identifier: MIT */
/* recipe.h - what to merge: inputs, slices, method and its parameters */
#ifndef DS_RECIPE_H
#define DS_RECIPE_H

#include <stdbool.h>
#include <stdint.h>
#include "dare-stream.h"

/*
 * Parameters a recipe can set, by mergekit's names.  The first RP_NMODEL
 * are per model (mergekit's tensor parameters: their filters match the
 * input tensor's name); the others belong to the merge (their filters
 * match the output tensor's name).
 */
enum ds_rp {
	RP_WEIGHT, RP_DENSITY, RP_DROP_RATE, RP_GAMMA, RP_EPSILON, RP_SCALE,
	RP_LAMBDA, RP_T, RP_SELECT_TOPK, RP_MAX_ITER, RP_TOL, RP_FILTER_WISE,
	RP_NUSLERP_FLATTEN, RP_NUSLERP_ROW_WISE,
	RP_COUNT
};
#define RP_NMODEL (RP_SCALE + 1)

/* One alternative of a parameter: a number or a gradient, under a filter. */
struct ds_pcond {
	char *filter;               /* NULL: no filter (always matches) */
	double *g;                  /* values: 1 for a number, K >= 1 else */
	unsigned ng;
	bool gradient;              /* given as a list (interpolated) */
};

/* A parameter: unset (ncond 0), a number, a gradient or a filter list. */
struct ds_pval {
	struct ds_pcond *c;
	unsigned ncond;
	bool list;                  /* given as a list of {filter, value} */
	unsigned line;              /* in the recipe, for messages; 0: CLI */
};

struct ds_pset {
	struct ds_pval v[RP_COUNT];
};

#define DS_SRC_BASE UINT32_MAX  /* a source that is the base model */

/* One source of a slice: layers [a, b) of a model. */
struct ds_source {
	unsigned m;                 /* model index j, or DS_SRC_BASE */
	unsigned a, b;
	struct ds_pset ps;
	unsigned line;
};

struct ds_slice {
	struct ds_source *src;
	unsigned nsrc;
	struct ds_pset ps;
	unsigned line;
};

struct ds_recipe {
	enum ds_method method;
	char *base;
	char *models[DS_MAX_MODELS];   /* distinct non-base models, j order */
	unsigned stream[DS_MAX_MODELS]; /* mask stream of model j (j) */
	unsigned n;
	struct ds_pset mps[DS_MAX_MODELS]; /* per model (models: form, CLI) */
	struct ds_pset gps;            /* merge-wide `parameters:` */
	struct ds_slice *slices;       /* NULL: every layer of every model */
	unsigned nslices;
	bool base_is_model;            /* linear & co.: base listed = a model */
	bool mergekit;                 /* read from YAML: mergekit's defaults */
	bool rescale_set;              /* else the method's default */
	int normalize;                 /* -1: the method's default */
	enum ds_rescale rescale;
	uint64_t seed;
	int dtype;                     /* -1: each base tensor's own */
	uint64_t shard_size;           /* HF shards of at most this; 0: none */
	char **exclude;
	unsigned nexclude;
	int tokenizer;                 /* -1: the base's; else model j's */
	char *chat_template;           /* literal Jinja text, or NULL */
	char *name;                    /* mergekit's `name:` (informative) */
	char *file;                    /* the YAML it was read from, or NULL */
};

/*
 * The parameters of one output tensor, resolved from the recipe.  The
 * plan fills one for each merged tensor; the methods read nothing else.
 * Position k (0 .. n-1) is the tensor's input slot k + 1.
 */
struct ds_tparams {
	unsigned n;                    /* models */
	bool has_base;                 /* a base model is given */
	double weight[DS_MAX_MODELS];
	double p[DS_MAX_MODELS];       /* drop rate: 1 - density */
	double density[DS_MAX_MODELS]; /* as given, or 1 - p (DESIGN 5) */
	double gamma[DS_MAX_MODELS];
	double epsilon[DS_MAX_MODELS];
	unsigned j[DS_MAX_MODELS];     /* model index j of each position */
	unsigned sj[DS_MAX_MODELS];    /* its mask stream (j unless set) */
	double param[DS_P_COUNT];      /* DS_P_T ... (per-model slots unused) */
	double lambda;
	int normalize;                 /* -1: the method's default */
	enum ds_rescale rescale;
	uint64_t seed;
};

/*
 * Where an output tensor sits: its slice (-1 without slices), the x of
 * its gradients (DESIGN 5.3) and the names of its inputs.  iname[k] is
 * the input tensor of position k, oname the output tensor.
 */
struct ds_tquery {
	int slice;
	double x;
	const char *oname;
	const char *iname[DS_MAX_MODELS];
	unsigned n;
};

/* Resolve the parameters of one output tensor (0 or DS_E_USAGE). */
int ds_recipe_tparams(ds_ctx *ctx, const struct ds_recipe *r,
		      const struct ds_tquery *q, struct ds_tparams *tp);

/* The gradient position of layer i of a span of L layers (DESIGN 5.3). */
double ds_recipe_x(unsigned i, unsigned L);

/* The models of slice s merged into its tensors, in position order: model
 * indices j (sources that are the base are left out).  Returns n. */
unsigned ds_recipe_slice_models(const struct ds_recipe *r, unsigned s,
				unsigned *j, unsigned *srcidx);

/* Whether the method takes a base model as slot 0 (all but linear,
 * passthrough and karcher, where a listed base is one of the models). */
bool ds_recipe_method_uses_base(enum ds_method m);

/* The rescale in force: as set, else the method's (mergekit) or inverse. */
enum ds_rescale ds_recipe_rescale(const struct ds_recipe *r);

/* Notices a mergekit recipe earns (default density, ignored keys). */
void ds_recipe_notices(ds_ctx *ctx, const ds_recipe *r);

/* True when the tensor name matches one of the --exclude globs. */
bool ds_recipe_excluded(const struct ds_recipe *r, const char *name);

/* Set parameter rp of model j (every model and the merge when j < 0). */
int ds_recipe_set_num(ds_recipe *r, int j, enum ds_rp rp, double v);
/* mergekit's name of rp ("weight", "select_topk"). */
const char *ds_rp_name(enum ds_rp rp);
/* Free the contents of a parameter (it becomes unset). */
void ds_pval_clear(struct ds_pval *v);

/*
 * Write r as YAML (the dare-stream.yml of an output directory) into a
 * malloc'd string; every number printed so that it parses back to the
 * same double.  Returns 0 or -ENOMEM.
 */
int ds_recipe_to_yaml(const struct ds_recipe *r, char **out);

#endif

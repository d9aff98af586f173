/* SPDX-License-Identifier: MIT */
/* methods.c - merge methods: parameters in their exact forms, window kernel */
#include "config.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <xxhash.h>
#include "common/ctx.h"
#include "kernels/bits.h"
#include "kernels/convert.h"
#include "kernels/philox.h"
#include "methods/steps.h"
#include "recipe/recipe.h"


#define P(x) (1u << DS_P_##x)
#define ALL DS_MAX_MODELS

/*
 * The method table: each method is its sparsifier, its combine, mergekit's
 * defaults (normalize; rescale l1 for the dare and della families, which a
 * mergekit recipe gets), what the base is for, how many models it takes,
 * the parameters it reads, and whether a mergekit recipe must give each
 * model a weight.
 */
static const struct ds_method_def methods[DS_M_COUNT] = {
	[DS_M_LINEAR] = { "linear", DS_SP_NONE, DS_CB_LINEAR, true, false,
			  DS_BASE_LAYOUT, 1, ALL, 0, true },
	[DS_M_TASK_ARITHMETIC] = { "task_arithmetic", DS_SP_NONE, DS_CB_SUM,
			  false, false, DS_BASE_NEEDED, 1, ALL, 0, true },
	[DS_M_DARE_LINEAR] = { "dare_linear", DS_SP_DARE, DS_CB_SUM, false,
			  true, DS_BASE_NEEDED, 1, ALL, 0, true },
	[DS_M_DARE_TIES] = { "dare_ties", DS_SP_DARE, DS_CB_CONSENSUS, false,
			  true, DS_BASE_NEEDED, 1, ALL, 0, true },
	[DS_M_TIES] = { "ties", DS_SP_MAGNITUDE, DS_CB_CONSENSUS, true, false,
			  DS_BASE_NEEDED, 1, ALL, 0, true },
	[DS_M_BREADCRUMBS] = { "breadcrumbs", DS_SP_OUTLIERS, DS_CB_SUM, false,
			  false, DS_BASE_NEEDED, 1, ALL, P(GAMMA), true },
	[DS_M_BREADCRUMBS_TIES] = { "breadcrumbs_ties", DS_SP_OUTLIERS,
			  DS_CB_CONSENSUS, false, false, DS_BASE_NEEDED, 1, ALL,
			  P(GAMMA), true },
	[DS_M_DELLA] = { "della", DS_SP_DELLA, DS_CB_CONSENSUS, true, true,
			  DS_BASE_NEEDED, 1, ALL, P(EPSILON), true },
	[DS_M_DELLA_LINEAR] = { "della_linear", DS_SP_DELLA, DS_CB_SUM, false,
			  true, DS_BASE_NEEDED, 1, ALL, P(EPSILON), true },
	[DS_M_SLERP] = { "slerp", DS_SP_NONE, DS_CB_SLERP, false, false,
			  DS_BASE_NEEDED, 1, 1, P(T), false },
	[DS_M_NUSLERP] = { "nuslerp", DS_SP_NONE, DS_CB_NUSLERP, false, false,
			  DS_BASE_OPTIONAL, 1, 2,
			  P(NUSLERP_FLATTEN) | P(NUSLERP_ROW_WISE), true },
	[DS_M_MODEL_STOCK] = { "model_stock", DS_SP_NONE, DS_CB_MODEL_STOCK,
			  false, false, DS_BASE_NEEDED, 2, ALL, P(FILTER_WISE), false },
	[DS_M_SCE] = { "sce", DS_SP_NONE, DS_CB_SCE, false, false,
			  DS_BASE_NEEDED, 1, ALL, P(SELECT_TOPK), false },
	[DS_M_KARCHER] = { "karcher", DS_SP_NONE, DS_CB_KARCHER, false, false,
			  DS_BASE_LAYOUT, 1, ALL, P(MAX_ITER) | P(TOL), false },
	[DS_M_PASSTHROUGH] = { "passthrough", DS_SP_NONE, DS_CB_PASSTHROUGH,
			  false, false, DS_BASE_LAYOUT, 1, 1, P(SCALE), false },
};

#undef P
#undef ALL

/* The methods' parameters, by mergekit's names, with mergekit's defaults. */
static const struct {
	const char *name;
	double def;
} params[DS_P_COUNT] = {
	[DS_P_GAMMA] = { "gamma", 0.01 },
	[DS_P_EPSILON] = { "epsilon", 0.15 },
	[DS_P_T] = { "t", 0.5 },
	[DS_P_SELECT_TOPK] = { "select_topk", 1.0 },
	[DS_P_MAX_ITER] = { "max_iter", 10.0 },
	[DS_P_TOL] = { "tol", 1e-5 },
	[DS_P_SCALE] = { "scale", 1.0 },
	[DS_P_FILTER_WISE] = { "filter_wise", 0.0 },
	[DS_P_NUSLERP_FLATTEN] = { "nuslerp_flatten", 1.0 },
	[DS_P_NUSLERP_ROW_WISE] = { "nuslerp_row_wise", 0.0 },
};

const char *ds_param_name(enum ds_param par)
{
	return (unsigned)par < DS_P_COUNT ? params[par].name : NULL;
}

double ds_param_default(enum ds_param par)
{
	return (unsigned)par < DS_P_COUNT ? params[par].def : 0.0;
}

const struct ds_method_def *ds_method_def(enum ds_method m)
{
	return (unsigned)m < DS_M_COUNT ? &methods[m] : NULL;
}

const char *ds_method_name(enum ds_method m)
{
	return (unsigned)m < DS_M_COUNT ? methods[m].name : NULL;
}

int ds_method_parse(const char *name, enum ds_method *out)
{
	unsigned m;

	for (m = 0; name && m < DS_M_COUNT; m++) {
		if (strcmp(name, methods[m].name) == 0) {
			*out = (enum ds_method)m;
			return 0;
		}
	}
	return DS_E_USAGE;
}

int ds_method_mergekit_only(const char *name)
{
	static const char *const missing[] = {
		"arcee_fusion", "multislerp", "nearswap", "ram", "ramplus_tl"
	};

	for (size_t i = 0; name && i < sizeof(missing) / sizeof(*missing); i++)
		if (!strcmp(name, missing[i]))
			return 1;
	return 0;
}

bool ds_method_default_normalize(enum ds_method m)
{
	return (unsigned)m < DS_M_COUNT && methods[m].normalize;
}

bool ds_method_needs_base(enum ds_method m)
{
	return (unsigned)m < DS_M_COUNT && methods[m].base == DS_BASE_NEEDED;
}


/* A value of model j that must lie in [0, 1]; 0 or DS_E_USAGE. */
static int check_unit(ds_ctx *ctx, unsigned j, const char *what, double v)
{
	if (v >= 0.0 && v <= 1.0)
		return 0;
	return ds_fail(ctx, DS_E_USAGE, "model %u: %s %g is outside [0, 1]",
		       j, what, v);
}

/* Check the per-model values; 0 or DS_E_USAGE with the model named. */
static int check_models(ds_ctx *ctx, const struct ds_tparams *tp)
{
	int rc = 0;

	for (unsigned j = 0; !rc && j < tp->n; j++) {
		if (!isfinite(tp->weight[j]))
			return ds_fail(ctx, DS_E_USAGE,
				       "model %u: weight %g is not a finite number",
				       j, tp->weight[j]);
		if (!(tp->p[j] >= 0.0 && tp->p[j] <= 1.0))
			return ds_fail(ctx, DS_E_USAGE,
				       "model %u: drop rate %g is outside [0, 1]",
				       j, tp->p[j]);
		rc = check_unit(ctx, j, "density", tp->density[j]);
		if (!rc)
			rc = check_unit(ctx, j, "gamma", tp->gamma[j]);
		if (!rc)
			rc = check_unit(ctx, j, "epsilon", tp->epsilon[j]);
	}
	return rc;
}

/* della: 0 < d < 1 needs d - epsilon > 0 and d + epsilon < 1 (DESIGN 5.1). */
static int check_della(ds_ctx *ctx, const struct ds_tparams *tp)
{
	for (unsigned j = 0; j < tp->n; j++) {
		double d = tp->density[j], e = tp->epsilon[j];

		if (d > 0.0 && d < 1.0 && (d - e <= 0.0 || d + e >= 1.0))
			return ds_fail(ctx, DS_E_USAGE, "model %u: della with "
				       "density %g and epsilon %g keeps with "
				       "probabilities from %g to %g; both must "
				       "lie strictly between 0 and 1 (lower "
				       "--epsilon)", j, d, e, d - e, d + e);
	}
	return 0;
}

/* How many models the method takes; 0 or DS_E_USAGE. */
static int check_count(ds_ctx *ctx, const struct ds_method_def *def,
		       unsigned n)
{
	if (n == 0 || n > DS_MAX_MODELS)
		return ds_fail(ctx, DS_E_USAGE,
			       "%u models given: between 1 and %d are needed",
			       n, DS_MAX_MODELS);
	if (n < def->min_models || n > def->max_models) {
		if (def->min_models == def->max_models)
			return ds_fail(ctx, DS_E_USAGE, "method %s merges "
				       "exactly %u model%s%s; %u given",
				       def->name, def->min_models,
				       def->min_models > 1 ? "s" : "",
				       def->base == DS_BASE_NEEDED ?
				       " with the base" : "", n);
		if (n < def->min_models)
			return ds_fail(ctx, DS_E_USAGE, "method %s needs at "
				       "least %u models; %u given", def->name,
				       def->min_models, n);
		return ds_fail(ctx, DS_E_USAGE, "method %s merges at most %u "
			       "models; %u given", def->name, def->max_models,
			       n);
	}
	return 0;
}

/* The merge-wide parameters; 0 or DS_E_USAGE. */
static int check_global(ds_ctx *ctx, const struct ds_tparams *tp)
{
	const double *g = tp->param;

	if (!isfinite(tp->lambda))
		return ds_fail(ctx, DS_E_USAGE,
			       "lambda %g is not a finite number", tp->lambda);
	if (!isfinite(g[DS_P_T]))
		return ds_fail(ctx, DS_E_USAGE, "t %g is not a finite number",
			       g[DS_P_T]);
	if (!(g[DS_P_SELECT_TOPK] >= 0.0 && g[DS_P_SELECT_TOPK] <= 1.0))
		return ds_fail(ctx, DS_E_USAGE, "select_topk %g is outside "
			       "[0, 1]", g[DS_P_SELECT_TOPK]);
	if (!(g[DS_P_MAX_ITER] >= 0.0 && g[DS_P_MAX_ITER] <= 1e6) ||
	    g[DS_P_MAX_ITER] != floor(g[DS_P_MAX_ITER]))
		return ds_fail(ctx, DS_E_USAGE, "max_iter %g: expected a whole "
			       "number from 0 to 1000000", g[DS_P_MAX_ITER]);
	if (!(g[DS_P_TOL] >= 0.0) || !isfinite(g[DS_P_TOL]))
		return ds_fail(ctx, DS_E_USAGE, "tol %g: expected a finite "
			       "number >= 0", g[DS_P_TOL]);
	if (!isfinite(g[DS_P_SCALE]))
		return ds_fail(ctx, DS_E_USAGE, "scale %g is not a finite "
			       "number", g[DS_P_SCALE]);
	return 0;
}

/* Rescale factor s_j of DESIGN 4: computed in double, rounded once.  L1
 * factors come from a pass; they start at 1. */
static float rescale_factor(bool dare, enum ds_rescale rescale, double p)
{
	if (!dare || rescale != DS_RESCALE_INVERSE || p >= 1.0)
		return 1.0f;
	return (float)(1.0 / (1.0 - p));
}

static void set_globals(struct ds_mparams *mp, const struct ds_tparams *tp)
{
	const double *g = tp->param;

	mp->lambda = (float)tp->lambda;
	mp->seed = tp->seed;
	mp->rescale = tp->rescale;
	mp->t = g[DS_P_T];
	mp->select_topk = g[DS_P_SELECT_TOPK];
	mp->max_iter = (unsigned)g[DS_P_MAX_ITER];
	mp->tol = g[DS_P_TOL];
	mp->scale = (float)g[DS_P_SCALE];
	mp->filter_wise = g[DS_P_FILTER_WISE] != 0.0;
	mp->flatten = g[DS_P_NUSLERP_FLATTEN] != 0.0;
	mp->row_wise = g[DS_P_NUSLERP_ROW_WISE] != 0.0;
}

int ds_mparams_from(ds_ctx *ctx, struct ds_mparams *mp, enum ds_method m,
		    const struct ds_tparams *tp)
{
	const struct ds_method_def *def = ds_method_def(m);
	int rc;

	if (!def)
		return ds_fail(ctx, DS_E_USAGE, "unknown merge method %d", (int)m);
	if ((rc = check_count(ctx, def, tp->n)) || (rc = check_models(ctx, tp)) ||
	    (rc = check_global(ctx, tp)))
		return rc;
	if (def->sp == DS_SP_DELLA && (rc = check_della(ctx, tp)))
		return rc;
	memset(mp, 0, sizeof(*mp));
	mp->method = m;
	mp->def = def;
	mp->n = tp->n;
	mp->dare = def->sp == DS_SP_DARE;
	mp->ties = def->cb == DS_CB_CONSENSUS;
	mp->uses_base = def->base == DS_BASE_NEEDED ||
			(def->base == DS_BASE_OPTIONAL && tp->has_base);
	mp->normalize = tp->normalize < 0 ? def->normalize : tp->normalize != 0;
	set_globals(mp, tp);
	mp->wsum = 0.0f;
	for (unsigned j = 0; j < tp->n; j++) {
		mp->w[j] = (float)tp->weight[j];
		mp->wsum = mp->wsum + mp->w[j];
		mp->thr[j] = mp->dare ? ds_drop_threshold(tp->p[j]) : 0;
		mp->s[j] = rescale_factor(mp->dare, tp->rescale, tp->p[j]);
		mp->sj[j] = tp->sj[j];
		mp->density[j] = tp->density[j];
		mp->gamma[j] = tp->gamma[j];
		mp->epsilon[j] = tp->epsilon[j];
	}
	if (mp->normalize && mp->wsum == 0.0f &&
	    (def->cb == DS_CB_LINEAR || def->cb == DS_CB_SUM ||
	     def->cb == DS_CB_CONSENSUS))
		return ds_fail(ctx, DS_E_USAGE,
			       "weights sum to zero; use --no-normalize or change --weights");
	return 0;
}

int ds_mparams_init(ds_ctx *ctx, struct ds_mparams *mp, enum ds_method m,
		    unsigned n, const double *w, const double *p,
		    double lambda, int normalize, enum ds_rescale rescale,
		    uint64_t seed)
{
	const struct ds_method_def *def = ds_method_def(m);
	struct ds_tparams tp;
	int rc;

	if (!def)
		return ds_fail(ctx, DS_E_USAGE, "unknown merge method %d", (int)m);
	if ((rc = check_count(ctx, def, n)))
		return rc;                      /* before w and p are read */
	memset(&tp, 0, sizeof(tp));
	for (unsigned i = 0; i < DS_P_COUNT; i++)
		tp.param[i] = params[i].def;
	tp.n = n;
	tp.has_base = true;
	for (unsigned j = 0; j < n; j++) {
		tp.j[j] = tp.sj[j] = j;
		tp.weight[j] = w[j];
		tp.p[j] = p ? p[j] : 0.0;
		tp.density[j] = 1.0 - tp.p[j];
		tp.gamma[j] = tp.param[DS_P_GAMMA];
		tp.epsilon[j] = tp.param[DS_P_EPSILON];
	}
	tp.lambda = lambda;
	tp.normalize = normalize;
	tp.rescale = rescale;
	tp.seed = seed;
	return ds_mparams_from(ctx, mp, m, &tp);
}

void ds_mparams_tensor(struct ds_mparams *mp, const char *name)
{
	mp->name_hash = XXH32(name, strlen(name), 0);
}

size_t ds_method_scratch_floats(unsigned nmodels)
{
	/* acc, base, model, D, one row per model for TIES, then two
	 * temporaries, keys and draws for the multi-pass methods. */
	return (size_t)DS_CHUNK * (8 + (size_t)nmodels);
}

/* The single-pass window needs only the first 4 + n buffers. */
void ds_chunk_carve(struct ds_chunk *c, float *scratch, unsigned n)
{
	float *t = scratch + (4 + (size_t)n) * DS_CHUNK;

	c->acc = scratch;
	c->b = scratch + DS_CHUNK;
	c->x = scratch + 2 * DS_CHUNK;
	c->dsum = scratch + 3 * DS_CHUNK;
	c->e = scratch + 4 * DS_CHUNK;
	c->t1 = t;
	c->t2 = t + DS_CHUNK;
	c->key = (uint32_t *)(t + 2 * DS_CHUNK);
	c->u = (uint32_t *)(t + 3 * DS_CHUNK);
}

void ds_chunk_deltas(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
		     const struct ds_window *win, const struct ds_chunk *c)
{
	k->load(win->bdt, ds_at(win->base, win->bdt, c->off), c->b, c->m);
	for (unsigned j = 0; j < mp->n; j++) {
		float *d = ds_erow(c, j);

		k->load(win->xdt[j], ds_at(win->x[j], win->xdt[j], c->off), d,
			c->m);
		k->delta(c->b, d, d, c->m);
	}
}

/* Model j's DARE stream at this tensor. */
static void dare_of(const struct ds_mparams *mp, unsigned j,
		    struct ds_dare *dp)
{
	dp->seed = mp->seed;
	dp->j = mp->sj[j];
	dp->name_hash = mp->name_hash;
	dp->thr = (uint32_t)mp->thr[j];   /* thr < 2^32 here */
	dp->s = mp->s[j];
	dp->w = mp->w[j];
}

/*
 * dare_axpy (kept_axpy) where the mask keeps: acc[i] = acc[i] +
 * w * ((x_i - b[i]) * s) for the kept i, in element order, x_i the next of
 * the kept values v when v is given, else element i of x (dtype dt); the
 * others are left as they are.  That is dare_axpy's acc when w is finite
 * and no acc[i] is -0: a dropped element adds w * +0 = +-0, and acc + +-0
 * is acc then (a sum that starts at +0 never becomes -0 in
 * round-to-nearest).  A mask at p 0.9 keeps a tenth: a word of it at a
 * time, its set bits one by one, costs a fraction of a dense pass over
 * every element, and reads and converts only the kept values.  Plain C,
 * so one result on every kernel path.
 */
static inline __attribute__((always_inline)) void
scatter_as(float *acc, const float *b, const uint64_t *keep, const float *v,
	   const void *x, enum ds_dtype dt, float s, float w, size_t n)
{
	size_t r = 0;

	for (size_t q = 0; q * 64 < n; q++) {
		uint64_t bits = keep[q];

		if (n - q * 64 < 64)
			bits &= (1ull << (n - q * 64)) - 1;
		for (; bits; bits &= bits - 1) {
			size_t i = q * 64 + (size_t)__builtin_ctzll(bits);
			float xi = v ? v[r++] : ds_cvt_at(x, dt, i);

			acc[i] = acc[i] + w * ((xi - b[i]) * s);
		}
	}
}

/* scatter_as with its loop made for each source. */
static void kept_scatter(float *acc, const float *b, const uint64_t *keep,
			 const float *v, const void *x, enum ds_dtype dt,
			 float s, float w, size_t n)
{
	if (v)
		scatter_as(acc, b, keep, v, NULL, DS_DT_F32, s, w, n);
	else if (dt == DS_DT_BF16)
		scatter_as(acc, b, keep, NULL, x, DS_DT_BF16, s, w, n);
	else if (dt == DS_DT_F16)
		scatter_as(acc, b, keep, NULL, x, DS_DT_F16, s, w, n);
	else
		scatter_as(acc, b, keep, NULL, x, DS_DT_F32, s, w, n);
}

/* acc = acc + w_j * d_j for model j given by its mask and kept values:
 * only those are converted, and no Philox is drawn.  acc is never -0
 * here (the methods' sums start at +0), so with a finite weight only the
 * kept elements are visited. */
static void kept_chunk(const struct ds_kernel_ops *k,
		       const struct ds_mparams *mp, const struct ds_window *win,
		       const struct ds_chunk *c, unsigned j, float *acc)
{
	const uint64_t *keep = win->keep[j] + c->off / 64;

	k->load(win->xdt[j], ds_at(win->x[j], win->xdt[j], c->kv[j]), c->x,
		c->nk[j]);
	if (isfinite(mp->w[j]))
		kept_scatter(acc, c->b, keep, c->x, NULL, DS_DT_F32, mp->s[j],
			     mp->w[j], c->m);
	else
		k->kept_axpy(acc, c->b, c->x, c->nk[j], keep, mp->s[j],
			     mp->w[j], c->m);
}

/*
 * dare_axpy of model j read whole, when its mask drops at least half (p
 * >= 0.5) and its weight is finite: the mask as bits (keep_bits, the same
 * Philox draws), then only the kept elements visited, as for a pack.
 * acc is never -0 here, as above.  Returns false when dare_axpy is the
 * faster way (or the only exact one).
 */
static bool dare_sparse(const struct ds_kernel_ops *k,
			const struct ds_mparams *mp,
			const struct ds_window *win, const struct ds_chunk *c,
			unsigned j, float *acc)
{
	uint64_t bits[DS_CHUNK / 64];

	if (!ds_dare_sparse(mp->thr[j]) || !isfinite(mp->w[j]))
		return false;
	k->keep_bits(mp->seed, mp->sj[j], mp->name_hash, c->i0, c->m,
		     (uint32_t)mp->thr[j], bits);
	kept_scatter(acc, c->b, bits, NULL,
		     ds_at(win->x[j], win->xdt[j], c->off), win->xdt[j],
		     mp->s[j], mp->w[j], c->m);
	return true;
}

/* Model j's values of the chunk in binary32: the window's own where they
 * are binary32 already (a LoRA model's, expanded; an F32 model's) and
 * aligned as floats, which load would only copy, else converted (or
 * copied) into c->x. */
static const float *x_of(const struct ds_kernel_ops *k,
			 const struct ds_window *win, const struct ds_chunk *c,
			 unsigned j)
{
	const void *p = ds_at(win->x[j], win->xdt[j], c->off);

	if (win->xdt[j] == DS_DT_F32 && (uintptr_t)p % sizeof(float) == 0)
		return p;
	k->load(win->xdt[j], p, c->x, c->m);
	return c->x;
}

/* acc += w_j * d_j for every model, d_j as the method defines it. */
static void combine(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
		    const struct ds_window *win, const struct ds_chunk *c)
{
	struct ds_dare dp;
	const float *x;
	unsigned j;

	for (j = 0; j < mp->n; j++) {
		/* p = 1: d_j = +0 everywhere, which leaves acc unchanged. */
		if (mp->dare && mp->thr[j] > UINT32_MAX)
			continue;
		if (mp->dare && win->keep[j]) {
			kept_chunk(k, mp, win, c, j, c->acc);
			continue;
		}
		if (mp->dare && dare_sparse(k, mp, win, c, j, c->acc))
			continue;
		x = x_of(k, win, c, j);
		if (mp->method == DS_M_LINEAR) {
			k->axpy(c->acc, mp->w[j], x, c->m);
		} else if (!mp->dare) {
			k->delta(c->b, x, c->x, c->m);
			k->axpy(c->acc, mp->w[j], c->x, c->m);
		} else {
			dare_of(mp, j, &dp);
			k->dare_axpy(c->acc, c->b, x, &dp, c->i0, c->m);
		}
	}
}

/*
 * dare_ties: row j of e gets e_j = +0 + w_j * d_j (the same as w_j * d_j
 * except that -0 becomes +0, which neither S nor a_j can tell apart), then
 * the election gives acc and D.
 */
static void ties(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
		 const struct ds_window *win, const struct ds_chunk *c)
{
	struct ds_dare dp;
	unsigned j;
	float *ej;

	for (j = 0; j < mp->n; j++) {
		ej = c->e + (size_t)j * DS_CHUNK;
		memset(ej, 0, c->m * sizeof(float));
		if (mp->thr[j] > UINT32_MAX)
			continue;
		if (win->keep[j]) {
			kept_chunk(k, mp, win, c, j, ej);
			continue;
		}
		if (dare_sparse(k, mp, win, c, j, ej))
			continue;
		dare_of(mp, j, &dp);
		k->dare_axpy(ej, c->b, x_of(k, win, c, j), &dp, c->i0, c->m);
	}
	k->ties(c->e, DS_CHUNK, mp->n, mp->w, c->acc, c->dsum, c->m);
}

/*
 * dare_ties of the chunk in the kernel's one pass (ties_kept) when it has
 * one and every weight is finite: a model given by its mask and kept
 * values as it is, a model read whole with its mask drawn here (into the
 * rows' scratch, which the pass does not use), a model at p = 1 left out
 * (its row is +0, which the election's sums never notice).  False when
 * the steps are to run one by one.
 */
static bool ties_fused(const struct ds_kernel_ops *k,
		       const struct ds_mparams *mp,
		       const struct ds_window *win, const struct ds_chunk *c)
{
	uint64_t *bits = (uint64_t *)c->e;
	struct ds_tk t;
	unsigned j;

	if (!k->ties_kept)
		return false;
	for (j = 0; j < mp->n; j++)
		if (!isfinite(mp->w[j]))
			return false;
	t.b = ds_at(win->base, win->bdt, c->off);
	t.bdt = win->bdt;
	t.out = (char *)win->out + c->off * ds_elsize(win->odt);
	t.odt = win->odt;
	t.lambda = mp->lambda;
	t.normalize = mp->normalize;
	t.nm = 0;
	for (j = 0; j < mp->n; j++) {
		struct ds_tk_model *md = &t.m[t.nm];

		if (mp->thr[j] > UINT32_MAX)
			continue;
		md->dt = win->xdt[j];
		md->s = mp->s[j];
		md->w = mp->w[j];
		md->kept = win->keep[j] != NULL;
		if (md->kept) {
			md->keep = win->keep[j] + c->off / 64;
			md->v = ds_at(win->x[j], md->dt, c->kv[j]);
			md->nv = c->nw[j] - c->kv[j];   /* these may be read */
		} else {
			md->v = ds_at(win->x[j], md->dt, c->off);
			md->keep = NULL;
			if (mp->thr[j]) {
				uint64_t *mb = bits + (size_t)t.nm * (DS_CHUNK / 64);

				k->keep_bits(mp->seed, mp->sj[j], mp->name_hash,
					     c->i0, c->m, (uint32_t)mp->thr[j], mb);
				md->keep = mb;
			}
		}
		t.nm++;
	}
	k->ties_kept(&t, c->m);
	return true;
}

/* One chunk: load the base, combine the models, finish, store. */
static void window_chunk(const struct ds_kernel_ops *k,
			 const struct ds_mparams *mp,
			 const struct ds_window *win, struct ds_chunk *c)
{
	const float *b = NULL, *dsum = NULL;
	float div = 0.0f;

	if (mp->ties && mp->uses_base && ties_fused(k, mp, win, c))
		return;

	if (mp->uses_base) {
		k->load(win->bdt, ds_at(win->base, win->bdt, c->off), c->b, c->m);
		b = c->b;
	}
	if (mp->ties) {
		ties(k, mp, win, c);
		dsum = mp->normalize ? c->dsum : NULL;
	} else {
		memset(c->acc, 0, c->m * sizeof(float));
		combine(k, mp, win, c);
		div = mp->normalize ? mp->wsum : 0.0f;
	}
	k->finish(c->acc, b, dsum, div, mp->lambda, c->m);
	k->store(win->odt, c->acc, (char *)win->out + c->off * ds_elsize(win->odt),
		 c->m);
}

/* Kept elements of model j in the chunk of win from off on (0 past the
 * window's end). */
static size_t chunk_kept(const struct ds_kernel_ops *k,
			 const struct ds_window *win, unsigned j, size_t off)
{
	if (off >= win->n)
		return 0;
	return k->bits_count(win->keep[j] + off / 64, win->n - off < DS_CHUNK ?
			     win->n - off : DS_CHUNK);
}

void ds_method_window(const struct ds_kernel_ops *k,
		      const struct ds_mparams *mp,
		      const struct ds_window *win, float *scratch)
{
	struct ds_chunk c;
	size_t next[DS_MAX_MODELS];

	ds_chunk_carve(&c, scratch, mp->n);
	memset(c.kv, 0, mp->n * sizeof(c.kv[0]));
	/*
	 * Each mask word is counted once, a chunk ahead: the next chunk's
	 * count, with this chunk's, bounds the kept values a kernel may read
	 * from this chunk's first on (nw), and its words are then in cache
	 * for the next chunk.  Counting the whole window first read every
	 * mask twice, from memory.
	 */
	for (unsigned j = 0; j < mp->n; j++)
		next[j] = win->keep[j] ? chunk_kept(k, win, j, 0) : 0;
	for (c.off = 0; c.off < win->n; c.off += DS_CHUNK) {
		c.m = win->n - c.off < DS_CHUNK ? win->n - c.off : DS_CHUNK;
		c.i0 = win->i0 + c.off;
		for (unsigned j = 0; j < mp->n; j++) {
			if (!win->keep[j])
				continue;
			c.nk[j] = next[j];
			next[j] = chunk_kept(k, win, j, c.off + DS_CHUNK);
			c.nw[j] = c.kv[j] + c.nk[j] + next[j];
		}
		window_chunk(k, mp, win, &c);
		for (unsigned j = 0; j < mp->n; j++)
			if (win->keep[j])
				c.kv[j] += c.nk[j];
	}
}

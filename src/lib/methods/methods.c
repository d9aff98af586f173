/* SPDX-License-Identifier: MIT */
/* methods.c - merge methods: parameters in their exact forms, window kernel */
#include "config.h"

#include <math.h>
#include <string.h>
#include <xxhash.h>
#include "common/ctx.h"
#include "methods/methods.h"

/*
 * Elements per inner chunk.  A chunk's working set (accumulator, base,
 * one model, D, all in floats: 32 KiB) stays in L1/L2 while every model
 * streams through it.  Chunks are independent of the window size, and every
 * element is computed by the same operations whatever chunk it falls in,
 * so the output does not depend on this number.
 */
#define DS_CHUNK 2048

static const char *const method_names[DS_M_COUNT] = {
	[DS_M_LINEAR] = "linear",
	[DS_M_TASK_ARITHMETIC] = "task_arithmetic",
	[DS_M_DARE_LINEAR] = "dare_linear",
	[DS_M_DARE_TIES] = "dare_ties",
	[DS_M_TIES] = "ties",
	[DS_M_BREADCRUMBS] = "breadcrumbs",
	[DS_M_BREADCRUMBS_TIES] = "breadcrumbs_ties",
	[DS_M_DELLA] = "della",
	[DS_M_DELLA_LINEAR] = "della_linear",
	[DS_M_SLERP] = "slerp",
	[DS_M_NUSLERP] = "nuslerp",
	[DS_M_MODEL_STOCK] = "model_stock",
	[DS_M_SCE] = "sce",
	[DS_M_KARCHER] = "karcher",
	[DS_M_PASSTHROUGH] = "passthrough",
};

const char *ds_method_name(enum ds_method m)
{
	if ((unsigned)m >= DS_M_COUNT)
		return NULL;
	return method_names[m];
}

int ds_method_parse(const char *name, enum ds_method *out)
{
	unsigned m;

	for (m = 0; name && m < DS_M_COUNT; m++) {
		if (strcmp(name, method_names[m]) == 0) {
			*out = (enum ds_method)m;
			return 0;
		}
	}
	return DS_E_USAGE;
}

bool ds_method_default_normalize(enum ds_method m)
{
	return m == DS_M_LINEAR;
}

bool ds_method_needs_base(enum ds_method m)
{
	return m != DS_M_LINEAR;
}

uint64_t ds_drop_threshold(double p)
{
	if (!(p > 0.0))                 /* 0, negative, NaN */
		return 0;
	if (p >= 1.0)
		return 1ull << 32;
	/* p * 2^32 is exact in double; below 2^32 since p < 1. */
	return (uint64_t)floor(p * 4294967296.0);
}

/* Check the per-model values; 0 or DS_E_USAGE with the model named. */
static int check_models(ds_ctx *ctx, unsigned n, const double *w,
			const double *p)
{
	unsigned j;

	for (j = 0; j < n; j++) {
		if (!isfinite(w[j]))
			return ds_fail(ctx, DS_E_USAGE,
				       "model %u: weight %g is not a finite number",
				       j, w[j]);
		if (p && !(p[j] >= 0.0 && p[j] <= 1.0))
			return ds_fail(ctx, DS_E_USAGE,
				       "model %u: drop rate %g is outside [0, 1]",
				       j, p[j]);
	}
	return 0;
}

/* Rescale factor s_j of DESIGN 4: computed in double, rounded once. */
static float rescale_factor(bool dare, enum ds_rescale rescale, double p)
{
	if (!dare || rescale == DS_RESCALE_NONE || p >= 1.0)
		return 1.0f;
	return (float)(1.0 / (1.0 - p));
}

int ds_mparams_init(ds_ctx *ctx, struct ds_mparams *mp, enum ds_method m,
		    unsigned n, const double *w, const double *p,
		    double lambda, int normalize, enum ds_rescale rescale,
		    uint64_t seed)
{
	unsigned j;
	int rc;

	if ((unsigned)m >= DS_M_COUNT)
		return ds_fail(ctx, DS_E_USAGE, "unknown merge method %d", (int)m);
	if ((unsigned)m > DS_M_DARE_TIES)
		return ds_fail(ctx, DS_E_USAGE, "merge method %s is not "
			       "available in this build", ds_method_name(m));
	if (n == 0 || n > DS_MAX_MODELS)
		return ds_fail(ctx, DS_E_USAGE,
			       "%u models given: between 1 and %d are needed",
			       n, DS_MAX_MODELS);
	rc = check_models(ctx, n, w, p);
	if (rc)
		return rc;
	if (!isfinite(lambda))
		return ds_fail(ctx, DS_E_USAGE,
			       "lambda %g is not a finite number", lambda);
	memset(mp, 0, sizeof(*mp));
	mp->method = m;
	mp->n = n;
	mp->dare = m == DS_M_DARE_LINEAR || m == DS_M_DARE_TIES;
	mp->ties = m == DS_M_DARE_TIES;
	mp->uses_base = ds_method_needs_base(m);
	mp->normalize = normalize < 0 ? ds_method_default_normalize(m)
				      : normalize != 0;
	mp->lambda = (float)lambda;
	mp->seed = seed;
	mp->wsum = 0.0f;
	for (j = 0; j < n; j++) {
		mp->w[j] = (float)w[j];
		mp->wsum = mp->wsum + mp->w[j];
		mp->thr[j] = mp->dare && p ? ds_drop_threshold(p[j]) : 0;
		mp->s[j] = rescale_factor(mp->dare, rescale, p ? p[j] : 0.0);
	}
	if (mp->normalize && mp->wsum == 0.0f)
		return ds_fail(ctx, DS_E_USAGE,
			       "weights sum to zero; use --no-normalize or change --weights");
	return 0;
}

void ds_mparams_tensor(struct ds_mparams *mp, const char *name)
{
	mp->name_hash = XXH32(name, strlen(name), 0);
}

size_t ds_method_scratch_floats(unsigned nmodels)
{
	/* acc, base, model, D, then one row per model for TIES. */
	return (size_t)DS_CHUNK * (4 + (size_t)nmodels);
}

/* Bytes per element of a window dtype (F32, F16 or BF16). */
static size_t elsize(enum ds_dtype dt)
{
	return dt == DS_DT_F32 ? 4 : 2;
}

/* Element off of a raw window buffer. */
static const void *at(const void *p, enum ds_dtype dt, size_t off)
{
	return (const char *)p + off * elsize(dt);
}

/* Model j's DARE stream at this tensor. */
static void dare_of(const struct ds_mparams *mp, unsigned j,
		    struct ds_dare *dp)
{
	dp->seed = mp->seed;
	dp->j = j;
	dp->name_hash = mp->name_hash;
	dp->thr = (uint32_t)mp->thr[j];   /* thr < 2^32 here */
	dp->s = mp->s[j];
	dp->w = mp->w[j];
}

/* Per-chunk buffers carved from the caller's scratch. */
struct chunk {
	float *acc, *b, *x, *dsum, *e;
	size_t off, m;                  /* chunk start in the window, length */
	uint64_t i0;                    /* flat index of its first element */
};

/* acc += w_j * d_j for every model, d_j as the method defines it. */
static void combine(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
		    const struct ds_window *win, const struct chunk *c)
{
	struct ds_dare dp;
	unsigned j;

	for (j = 0; j < mp->n; j++) {
		/* p = 1: d_j = +0 everywhere, which leaves acc unchanged. */
		if (mp->dare && mp->thr[j] > UINT32_MAX)
			continue;
		k->load(win->xdt[j], at(win->x[j], win->xdt[j], c->off),
			c->x, c->m);
		if (mp->method == DS_M_LINEAR) {
			k->axpy(c->acc, mp->w[j], c->x, c->m);
		} else if (!mp->dare) {
			k->delta(c->b, c->x, c->x, c->m);
			k->axpy(c->acc, mp->w[j], c->x, c->m);
		} else {
			dare_of(mp, j, &dp);
			k->dare_axpy(c->acc, c->b, c->x, &dp, c->i0, c->m);
		}
	}
}

/*
 * dare_ties: row j of e gets e_j = +0 + w_j * d_j (the same as w_j * d_j
 * except that -0 becomes +0, which neither S nor a_j can tell apart), then
 * the election gives acc and D.
 */
static void ties(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
		 const struct ds_window *win, const struct chunk *c)
{
	struct ds_dare dp;
	unsigned j;
	float *ej;

	for (j = 0; j < mp->n; j++) {
		ej = c->e + (size_t)j * DS_CHUNK;
		memset(ej, 0, c->m * sizeof(float));
		if (mp->thr[j] > UINT32_MAX)
			continue;
		k->load(win->xdt[j], at(win->x[j], win->xdt[j], c->off),
			c->x, c->m);
		dare_of(mp, j, &dp);
		k->dare_axpy(ej, c->b, c->x, &dp, c->i0, c->m);
	}
	k->ties(c->e, DS_CHUNK, mp->n, mp->w, c->acc, c->dsum, c->m);
}

/* One chunk: load the base, combine the models, finish, store. */
static void window_chunk(const struct ds_kernel_ops *k,
			 const struct ds_mparams *mp,
			 const struct ds_window *win, struct chunk *c)
{
	const float *b = NULL, *dsum = NULL;
	float div = 0.0f;

	if (mp->uses_base) {
		k->load(win->bdt, at(win->base, win->bdt, c->off), c->b, c->m);
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
	k->store(win->odt, c->acc, (char *)win->out + c->off * elsize(win->odt),
		 c->m);
}

void ds_method_window(const struct ds_kernel_ops *k,
		      const struct ds_mparams *mp,
		      const struct ds_window *win, float *scratch)
{
	struct chunk c = {
		.acc = scratch,
		.b = scratch + DS_CHUNK,
		.x = scratch + 2 * DS_CHUNK,
		.dsum = scratch + 3 * DS_CHUNK,
		.e = scratch + 4 * DS_CHUNK,
	};

	for (c.off = 0; c.off < win->n; c.off += DS_CHUNK) {
		c.m = win->n - c.off < DS_CHUNK ? win->n - c.off : DS_CHUNK;
		c.i0 = win->i0 + c.off;
		window_chunk(k, mp, win, &c);
	}
}

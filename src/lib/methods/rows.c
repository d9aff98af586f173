/* SPDX-License-Identifier: MIT */
/* rows.c - methods that work row by row: della, model_stock filter_wise,
 * nuslerp per row or per column */
#include "config.h"

#include <math.h>
#include <string.h>
#include "methods/steps.h"

/*
 * Windows of these methods hold whole rows (DESIGN 5.1: a 1-D tensor is
 * one row, a tensor [r, ...] has r rows of n/r elements), so everything a
 * row needs - its ranks, its norms - is computed inside the window.  Sums
 * restart their 65536-element blocks at each row's start.
 */

/* Row buffers carved from a worker's scratch. */
struct rowbuf {
	size_t R;                       /* floats per row buffer */
	float *acc, *b, *x, *dsum, *e;
	uint32_t *u, *rank;
	uint64_t *key, *tmp;
	uint8_t *mask;
	/* della: per model, by ascending rank: threshold, "drop all", 1/pi */
	uint32_t *tthr;
	uint8_t *tall;
	float *tinv;
};

static size_t row_floats(uint64_t maxrow)
{
	size_t R = maxrow > DS_CHUNK ? (size_t)maxrow : DS_CHUNK;

	return (R + 15) & ~(size_t)15;
}

size_t ds_rows_scratch_floats(unsigned nmodels, uint64_t maxrow)
{
	return row_floats(maxrow) * (12 + 4 * (size_t)nmodels);
}

static void carve(struct rowbuf *r, float *s, uint64_t maxrow, unsigned n)
{
	size_t R = row_floats(maxrow);

	r->R = R;
	r->acc = s;
	r->b = s + R;
	r->x = s + 2 * R;
	r->dsum = s + 3 * R;
	r->u = (uint32_t *)(s + 4 * R);
	r->rank = (uint32_t *)(s + 5 * R);
	r->key = (uint64_t *)(s + 6 * R);
	r->tmp = (uint64_t *)(s + 8 * R);
	r->mask = (uint8_t *)(s + 10 * R);
	r->e = s + 12 * R;
	r->tthr = (uint32_t *)(r->e + (size_t)n * R);
	r->tinv = r->e + 2 * (size_t)n * R;
	r->tall = (uint8_t *)(r->e + 3 * (size_t)n * R);
}

static float *erow(const struct rowbuf *r, unsigned j)
{
	return r->e + (size_t)j * r->R;
}

/* sum of f(a, b) over a row, blocks from the row's start (DESIGN 5). */
static double row_dot(const float *a, const float *b, size_t m)
{
	double total = 0.0;

	for (size_t o = 0; o < m; o += DS_BLOCK) {
		size_t end = m - o < DS_BLOCK ? m : o + DS_BLOCK;
		double part = 0.0;

		for (size_t k = o; k < end; k++)
			part += (double)a[k] * (double)b[k];
		total += part;
	}
	return total;
}

static double row_abs(const float *a, const uint8_t *mask, size_t m)
{
	double total = 0.0;

	for (size_t o = 0; o < m; o += DS_BLOCK) {
		size_t end = m - o < DS_BLOCK ? m : o + DS_BLOCK;
		double part = 0.0;

		for (size_t k = o; k < end; k++)
			if (!mask || mask[k])
				part += fabs((double)a[k]);
		total += part;
	}
	return total;
}

/*
 * Sort by the key in the high 32 bits, ascending, keeping the order of
 * equal keys: LSD radix in 11-bit digits (the key has 31 bits), a digit
 * that all keys share skipped.  The low 32 bits ride along.
 */
static void radix_sort(uint64_t *a, uint64_t *tmp, size_t m)
{
	static const unsigned shift[3] = { 32, 43, 54 };
	size_t cnt[2048];

	for (unsigned p = 0; p < 3; p++) {
		unsigned sh = shift[p];
		size_t pos = 0;
		bool same = false;

		memset(cnt, 0, sizeof(cnt));
		for (size_t k = 0; k < m; k++)
			cnt[(a[k] >> sh) & 0x7ff]++;
		for (unsigned d = 0; d < 2048; d++)
			same |= cnt[d] == m;
		if (same)
			continue;
		for (unsigned d = 0; d < 2048; d++) {
			size_t c = cnt[d];

			cnt[d] = pos;
			pos += c;
		}
		for (size_t k = 0; k < m; k++)
			tmp[cnt[(a[k] >> sh) & 0x7ff]++] = a[k];
		memcpy(a, tmp, m * sizeof(*a));
	}
}

/*
 * Ascending rank q of each |delta| in the row: equal magnitudes rank the
 * lower index higher (DESIGN 5.1).  The keys go in from the last index to
 * the first, so the stable sort leaves equal keys in descending index
 * order: the lower index last, with the higher rank.
 */
static void row_ranks(const float *d, size_t m, struct rowbuf *r)
{
	for (size_t i = 0; i < m; i++) {
		size_t e = m - 1 - i;

		r->key[i] = (uint64_t)ds_rank_key(d[e]) << 32 | (uint32_t)e;
	}
	radix_sort(r->key, r->tmp, m);
	for (size_t q = 0; q < m; q++)
		r->rank[(uint32_t)r->key[q]] = (uint32_t)q;
}

/*
 * della's keep threshold and inverse rescale for each ascending rank q of
 * a row of m (DESIGN 5.1), for model j: they depend on q alone, so they
 * are tabulated once per window and model rather than per element.
 */
static void della_table(const struct ds_mparams *mp, unsigned j, size_t m,
			uint32_t *thr_hi, uint8_t *thr_all, float *inv)
{
	double d = mp->density[j], eps = mp->epsilon[j];

	for (size_t q = 0; q < m; q++) {
		double pi = m == 1 ? d : (d - eps) +
			    ((2.0 * eps) * (double)q) / (double)(m - 1);
		double thr = floor((1.0 - pi) * 4294967296.0);

		/* thr < 2^32 since pi > 0; thr_all marks 2^32 for safety */
		thr_all[q] = thr >= 4294967296.0;
		thr_hi[q] = thr_all[q] ? 0 : (uint32_t)thr;
		inv[q] = (float)(1.0 / pi);
	}
}

/* della's d_j of one row into x (the delta there on entry). */
static void della_row(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
		      unsigned j, uint64_t i0, size_t m, struct rowbuf *r)
{
	const uint32_t *thr = r->tthr + (size_t)j * r->R;
	const uint8_t *all = r->tall + (size_t)j * r->R;
	const float *inv = r->tinv + (size_t)j * r->R;
	double d = mp->density[j];
	float *x = r->x, s = 1.0f;

	if (d >= 1.0)
		return;                         /* every delta kept as is */
	if (d <= 0.0) {
		memset(x, 0, m * sizeof(float));
		return;
	}
	row_ranks(x, m, r);
	k->philox(mp->seed, mp->sj[j], mp->name_hash, i0, m, r->u);
	for (size_t i = 0; i < m; i++) {
		uint32_t q = r->rank[i];

		r->mask[i] = !all[q] && r->u[i] >= thr[q];
		/* inverse: each kept delta by (float)(1/pi), the paper's rule */
		r->dsum[i] = inv[q];
	}
	if (mp->rescale == DS_RESCALE_L1) {
		double a = row_abs(x, NULL, m), b = row_abs(x, r->mask, m);

		s = a < 1e-7 || b < 1e-7 ? 1.0f : (float)(a / b);
	}
	for (size_t i = 0; i < m; i++) {
		float si = mp->rescale == DS_RESCALE_INVERSE ? r->dsum[i] : s;

		x[i] = r->mask[i] ? x[i] * si : 0.0f;
	}
}

static void della_rows(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
		       const struct ds_window *win, size_t off, size_t m,
		       struct rowbuf *r)
{
	const float *dsum = NULL;
	float div = 0.0f;

	k->load(win->bdt, ds_at(win->base, win->bdt, off), r->b, m);
	for (unsigned j = 0; j < mp->n; j++) {
		k->load(win->xdt[j], ds_at(win->x[j], win->xdt[j], off), r->x, m);
		k->delta(r->b, r->x, r->x, m);
		della_row(k, mp, j, win->i0 + off, m, r);
		if (mp->ties) {
			memset(erow(r, j), 0, m * sizeof(float));
			k->axpy(erow(r, j), mp->w[j], r->x, m);
		} else {
			if (j == 0)
				memset(r->acc, 0, m * sizeof(float));
			k->axpy(r->acc, mp->w[j], r->x, m);
		}
	}
	if (mp->ties) {
		k->ties(r->e, r->R, mp->n, mp->w, r->acc, r->dsum, m);
		dsum = mp->normalize ? r->dsum : NULL;
	} else {
		div = mp->normalize ? mp->wsum : 0.0f;
	}
	k->finish(r->acc, r->b, dsum, div, mp->lambda, m);
}

/* model_stock with filter_wise: t from the row's own Gram matrix. */
static void stock_row(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
		      const struct ds_window *win, size_t off, size_t m,
		      struct rowbuf *r)
{
	double g[DS_MAX_MODELS * (DS_MAX_MODELS + 1) / 2], t;
	unsigned n = mp->n;
	float ft, fu, fn = (float)n;

	k->load(win->bdt, ds_at(win->base, win->bdt, off), r->b, m);
	memset(r->acc, 0, m * sizeof(float));
	for (unsigned j = 0; j < n; j++) {
		float *o = erow(r, j);

		k->load(win->xdt[j], ds_at(win->x[j], win->xdt[j], off), o, m);
		k->axpy(r->acc, 1.0f, o, m);    /* acc + 1 * x is acc + x */
		k->delta(r->b, o, o, m);
	}
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = i; j < n; j++)
			g[ds_tri(i, j, n)] = row_dot(erow(r, i), erow(r, j), m);
	t = ds_stock_t(g, n);
	ft = (float)t;
	fu = (float)(1.0 - t);
	for (size_t i = 0; i < m; i++) {
		float avg = r->acc[i] / fn;

		r->acc[i] = ds_canon(ft * avg + fu * r->b[i]);
	}
}

/* The two vectors nuslerp interpolates, into rows 0 and 1 of e. */
static void nuslerp_inputs(const struct ds_kernel_ops *k,
			   const struct ds_mparams *mp,
			   const struct ds_window *win, size_t off, size_t m,
			   struct rowbuf *r)
{
	if (mp->uses_base)
		k->load(win->bdt, ds_at(win->base, win->bdt, off), r->b, m);
	for (unsigned j = 0; j < 2; j++) {
		k->load(win->xdt[j], ds_at(win->x[j], win->xdt[j], off),
			erow(r, j), m);
		if (mp->uses_base)
			k->delta(r->b, erow(r, j), erow(r, j), m);
	}
}

/* out = a v0 + b v1 (+ the base), products first, then the sums. */
static void interp_row(const struct ds_mparams *mp, const float *a,
		       const float *b, bool per_elem, size_t m,
		       struct rowbuf *r)
{
	const float *v0 = erow(r, 0), *v1 = erow(r, 1);

	for (size_t i = 0; i < m; i++) {
		float ai = per_elem ? a[i] : a[0], bi = per_elem ? b[i] : b[0];
		float v = ai * v0[i] + bi * v1[i];

		r->acc[i] = ds_canon(mp->uses_base ? r->b[i] + v : v);
	}
}

static void nuslerp_row(const struct ds_kernel_ops *k,
			const struct ds_tstate *ts,
			const struct ds_window *win, size_t off, size_t m,
			struct rowbuf *r)
{
	const struct ds_mparams *mp = &ts->mp;
	float a, b;

	nuslerp_inputs(k, mp, win, off, m, r);
	ds_slerp_coef(row_dot(erow(r, 0), erow(r, 0), m),
		      row_dot(erow(r, 1), erow(r, 1), m),
		      row_dot(erow(r, 0), erow(r, 1), m), ds_nuslerp_t(mp),
		      &a, &b);
	interp_row(mp, &a, &b, false, m, r);
}

/* ---- nuslerp per column ---------------------------------------------------
 *
 * A column runs through every row, so its sums cross windows: they are
 * taken when a window is folded, on the I/O thread in window order, which
 * keeps the block rule exact (blocks of 65536 rows).  The accumulator
 * holds, per column, the open block's three sums and the totals, then the
 * two coefficients, and three row buffers for the conversion.
 */
struct cols {
	double *part, *tot;             /* [3][m] */
	float *a, *b;                   /* [m] */
	float *rb, *r0, *r1;            /* row buffers */
};

static void cols_carve(struct cols *c, void *acc, uint64_t m)
{
	c->part = acc;
	c->tot = c->part + 3 * m;
	c->a = (float *)(c->tot + 3 * m);
	c->b = c->a + m;
	c->rb = c->b + m;
	c->r0 = c->rb + m;
	c->r1 = c->r0 + m;
}

size_t ds_cols_acc_bytes(uint64_t maxrow)
{
	return (size_t)maxrow * (6 * sizeof(double) + 5 * sizeof(float));
}

bool ds_cols(const struct ds_tstate *ts)
{
	const struct ds_mparams *mp = &ts->mp;

	return mp->def->cb == DS_CB_NUSLERP && mp->n == 2 && !mp->flatten &&
	       mp->row_wise && ts->rows > 1;
}

void ds_cols_begin(const struct ds_tstate *ts, void *acc)
{
	memset(acc, 0, 6 * ts->rowlen * sizeof(double));
}

void ds_cols_fold(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		  const struct ds_window *win, void *acc)
{
	const struct ds_mparams *mp = &ts->mp;
	uint64_t m = ts->rowlen, row0 = win->i0 / m;
	struct cols c;

	cols_carve(&c, acc, m);
	for (size_t off = 0; off < win->n; off += m) {
		uint64_t row = row0 + off / m;

		if (mp->uses_base)
			k->load(win->bdt, ds_at(win->base, win->bdt, off), c.rb, m);
		k->load(win->xdt[0], ds_at(win->x[0], win->xdt[0], off), c.r0, m);
		k->load(win->xdt[1], ds_at(win->x[1], win->xdt[1], off), c.r1, m);
		if (mp->uses_base) {
			k->delta(c.rb, c.r0, c.r0, m);
			k->delta(c.rb, c.r1, c.r1, m);
		}
		for (uint64_t i = 0; i < m; i++) {
			c.part[i] += (double)c.r0[i] * (double)c.r0[i];
			c.part[m + i] += (double)c.r1[i] * (double)c.r1[i];
			c.part[2 * m + i] += (double)c.r0[i] * (double)c.r1[i];
		}
		if ((row + 1) % DS_BLOCK == 0 || row + 1 == ts->rows)
			for (uint64_t i = 0; i < 3 * m; i++) {
				c.tot[i] += c.part[i];
				c.part[i] = 0.0;
			}
	}
}

void ds_cols_finalize(const struct ds_tstate *ts, void *acc)
{
	uint64_t m = ts->rowlen;
	double t = ds_nuslerp_t(&ts->mp);
	struct cols c;

	cols_carve(&c, acc, m);
	for (uint64_t i = 0; i < m; i++)
		ds_slerp_coef(c.tot[i], c.tot[m + i], c.tot[2 * m + i], t,
			      &c.a[i], &c.b[i]);
}

static void cols_row(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		     const struct ds_window *win, size_t off, size_t m,
		     struct rowbuf *r, void *acc)
{
	struct cols c;

	cols_carve(&c, acc, m);
	nuslerp_inputs(k, &ts->mp, win, off, m, r);
	interp_row(&ts->mp, c.a, c.b, true, m, r);
}

void ds_rows_write(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		   const struct ds_window *win, float *scratch, void *acc)
{
	const struct ds_mparams *mp = &ts->mp;
	size_t m = (size_t)ts->rowlen;
	struct rowbuf r;

	carve(&r, scratch, ts->maxrow, mp->n);
	if (mp->def->sp == DS_SP_DELLA)
		for (unsigned j = 0; j < mp->n; j++)
			della_table(mp, j, m, r.tthr + (size_t)j * r.R,
				    r.tall + (size_t)j * r.R,
				    r.tinv + (size_t)j * r.R);
	for (size_t off = 0; off < win->n; off += m) {
		if (mp->def->sp == DS_SP_DELLA)
			della_rows(k, mp, win, off, m, &r);
		else if (mp->def->cb == DS_CB_MODEL_STOCK)
			stock_row(k, mp, win, off, m, &r);
		else if (ds_cols(ts))
			cols_row(k, ts, win, off, m, &r, acc);
		else
			nuslerp_row(k, ts, win, off, m, &r);
		k->store(win->odt, r.acc,
			 (char *)win->out + off * ds_elsize(win->odt), m);
	}
}

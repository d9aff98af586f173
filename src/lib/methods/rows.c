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
	/* della: per model, by ascending rank: the least u that keeps
	 * (2^32: none does) and 1/pi */
	uint64_t *tthr;
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
	r->tthr = (uint64_t *)(r->e + (size_t)n * R);
	r->tinv = r->e + 3 * (size_t)n * R;
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
 * The least non-zero key (UINT32_MAX when none), the largest, the or of
 * all and whether a zero is among them, four lanes at a time.  Keys are
 * below 2^31, so signed lanes (which the compiler vectorises) hold them:
 * (key - 1) & INT32_MAX takes a zero to INT32_MAX, above every non-zero
 * key - 1, so the least of it is the least non-zero key - 1; a zero is
 * there iff the least key is 0.
 */
static void row_span(const uint32_t *key, size_t m, uint32_t *lo,
		     uint32_t *hi, uint32_t *all, bool *zero)
{
	int32_t l[4] = { INT32_MAX, INT32_MAX, INT32_MAX, INT32_MAX };
	int32_t n[4] = { INT32_MAX, INT32_MAX, INT32_MAX, INT32_MAX };
	int32_t h[4] = { 0, 0, 0, 0 }, t, v;
	uint32_t o[4] = { 0, 0, 0, 0 };
	size_t i = 0;

	for (; i + 4 <= m; i += 4)
		for (unsigned q = 0; q < 4; q++) {
			v = (int32_t)key[i + q];
			t = (int32_t)((key[i + q] - 1) & INT32_MAX);
			l[q] = t < l[q] ? t : l[q];
			n[q] = v < n[q] ? v : n[q];
			h[q] = v > h[q] ? v : h[q];
			o[q] |= key[i + q];
		}
	for (; i < m; i++) {
		v = (int32_t)key[i];
		t = (int32_t)((key[i] - 1) & INT32_MAX);
		l[0] = t < l[0] ? t : l[0];
		n[0] = v < n[0] ? v : n[0];
		h[0] = v > h[0] ? v : h[0];
		o[0] |= key[i];
	}
	for (unsigned q = 1; q < 4; q++) {
		l[0] = l[q] < l[0] ? l[q] : l[0];
		n[0] = n[q] < n[0] ? n[q] : n[0];
		h[0] = h[q] > h[0] ? h[q] : h[0];
		o[0] |= o[q];
	}
	*lo = l[0] < INT32_MAX ? (uint32_t)l[0] + 1 : UINT32_MAX;
	*hi = (uint32_t)h[0];
	*all = o[0];
	*zero = n[0] == 0;
}

/* Four lanes of 32 bits, in the vector registers of every target. */
typedef uint32_t u32x4 __attribute__((vector_size(16)));

/*
 * Counting sorts of a row, in four quarters: the sequence is cut in four
 * parts, each counted and handed out with its own counters, so that runs
 * of equal digits make four independent chains of increments rather than
 * one; within a digit, the quarters' positions follow in sequence order.
 * Each quarter's counters are an array of their own, so that adding them
 * up goes four digits at a time.  Digits are below 2048.
 */
#define QDIGITS 2048
struct quarters {
	uint32_t c[4][QDIGITS];
	uint32_t p[QDIGITS];            /* each digit's first position */
	size_t L;                       /* quarters 0-2; quarter 3 the rest */
};

/* Digits 0 .. mask in whole groups of four. */
static size_t quad(uint32_t mask)
{
	return ((size_t)mask + 4) & ~(size_t)3;
}

static void quarters_init(struct quarters *qs, size_t m, uint32_t mask)
{
	qs->L = m / 4;
	for (unsigned q = 0; q < 4; q++)
		memset(qs->c[q], 0, quad(mask) * sizeof(qs->c[q][0]));
}

/* The digit (a[t] >> sh) & mask of the m items counted, the quarters
 * apart, so that runs of equal digits do not wait on one counter. */
static void quarters_count(struct quarters *qs, const uint64_t *a, size_t m,
			   unsigned sh, uint32_t mask)
{
	size_t L = qs->L, t;

	for (t = 0; t < L; t++) {
		qs->c[0][(uint32_t)(a[t] >> sh) & mask]++;
		qs->c[1][(uint32_t)(a[L + t] >> sh) & mask]++;
		qs->c[2][(uint32_t)(a[2 * L + t] >> sh) & mask]++;
		qs->c[3][(uint32_t)(a[3 * L + t] >> sh) & mask]++;
	}
	for (t = 4 * L; t < m; t++)
		qs->c[3][(uint32_t)(a[t] >> sh) & mask]++;
}

static u32x4 ld4(const uint32_t *p)
{
	u32x4 v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static void st4(uint32_t *p, u32x4 v)
{
	memcpy(p, &v, sizeof(v));
}

/*
 * Counts into first positions (rev: one past the last ones), in
 * sequence order within a digit (rev: taken from the end): each digit's
 * first position is the sum of the counts of the digits below it, then
 * its quarters follow each other (rev: in the other order).
 */
static void quarters_prefix(struct quarters *qs, uint32_t mask, bool rev)
{
	uint32_t (*c)[QDIGITS] = qs->c, *p = qs->p, s = 0, t;
	size_t n = quad(mask), v;

	for (v = 0; v < n; v += 4)
		st4(p + v, ld4(c[0] + v) + ld4(c[1] + v) + ld4(c[2] + v) +
			   ld4(c[3] + v));
	for (v = 0; v < n; v++) {
		t = p[v];
		p[v] = s;
		s += t;
	}
	for (v = 0; v < n; v += 4) {
		u32x4 a = ld4(c[0] + v), b = ld4(c[1] + v);
		u32x4 x = ld4(c[2] + v), d = ld4(c[3] + v), o = ld4(p + v);

		if (rev) {
			st4(c[3] + v, o + d);
			st4(c[2] + v, o + d + x);
			st4(c[1] + v, o + d + x + b);
			st4(c[0] + v, o + d + x + b + a);
		} else {
			st4(c[0] + v, o);
			st4(c[1] + v, o + a);
			st4(c[2] + v, o + a + b);
			st4(c[3] + v, o + a + b + x);
		}
	}
}

/* Item x to its position in a pass on digit (x >> sh) & mask. */
static inline void put(uint32_t (*c)[QDIGITS], unsigned q, uint64_t x,
		       unsigned sh, uint32_t mask, uint64_t *to)
{
	to[c[q][(uint32_t)(x >> sh) & mask]++] = x;
}

/* One stable pass over the m items of a on digit (x >> sh) & mask. */
static void item_pass(const uint64_t *a, size_t m, unsigned sh,
		      uint32_t mask, uint64_t *to)
{
	struct quarters qs;
	size_t L, t;

	quarters_init(&qs, m, mask);
	L = qs.L;
	quarters_count(&qs, a, m, sh, mask);
	quarters_prefix(&qs, mask, false);
	for (t = 0; t < L; t++) {
		put(qs.c, 0, a[t], sh, mask, to);
		put(qs.c, 1, a[L + t], sh, mask, to);
		put(qs.c, 2, a[2 * L + t], sh, mask, to);
		put(qs.c, 3, a[3 * L + t], sh, mask, to);
	}
	for (t = 4 * L; t < m; t++)
		put(qs.c, 3, a[t], sh, mask, to);
}

/*
 * How many digits to sort bits in: at most 11 bits each, and as many as
 * make the cheapest sort of m keys, each digit costing two passes over
 * the keys and one over its four quarters' counters (clearing and adding
 * up a counter is about a tenth of what a key costs).
 */
static unsigned digits(unsigned bits, size_t m)
{
	unsigned best = (bits + 10) / 11, np;
	double cost, least = 0.0;

	for (np = best; np <= best + 3 && np <= bits; np++) {
		unsigned w = (bits + np - 1) / np;

		cost = np * ((double)m + 0.4 * (double)(1u << w));
		if (np == best || cost < least) {
			least = cost;
			best = np;
		}
	}
	return best;
}

/*
 * Ascending rank q of each |delta| in the row: equal magnitudes rank the
 * lower index higher (DESIGN 5.1), so the ranks are the positions of a
 * stable sort of the keys taken from the last index to the first.
 *
 * The keys are first narrowed to codes that tell them apart in this
 * row: a zero key (a zero delta, common) is code 0, any other key
 * (key - lo) >> z, plus 1 when the row has zeros, with lo the least
 * non-zero key and z the trailing zero bits every key shares: an
 * order-preserving one-to-one map onto 0 .. span.  A row of equal keys
 * is all code 0.  The keys go to r->tmp, to be made codes in place;
 * returns span.
 */
struct narrow {
	uint32_t lo, off;
	unsigned z;
};

static inline uint32_t code_of(uint32_t key, const struct narrow *nw)
{
	return (((key - nw->lo) >> nw->z) + nw->off) & -(uint32_t)(key != 0);
}

static uint32_t row_narrow(const struct ds_kernel_ops *k, const float *d,
			   size_t m, struct rowbuf *r, struct narrow *nw)
{
	uint32_t *key = (uint32_t *)r->tmp, lo, hi, all;
	bool zero;

	k->rank_keys(d, key, m);
	row_span(key, m, &lo, &hi, &all, &zero);
	if (m == 0 || hi == 0 || (!zero && lo == hi)) {
		nw->lo = 0;             /* keys are below 2^31: all code 0 */
		nw->z = 31;
		nw->off = 0;
		return 0;
	}
	nw->lo = lo;
	nw->z = (unsigned)__builtin_ctz(all);
	nw->off = zero;
	return ((hi - lo) >> nw->z) + nw->off;
}

/* x where kept, times (float)(1/pi) (inv), else +0; no inv: the mask. */
static inline void keep_one(struct rowbuf *r, const uint64_t *thr,
			    const float *inv, size_t i, uint32_t q)
{
	uint32_t keep = r->u[i] >= thr[q];

	if (inv)
		r->x[i] = ds_bitsf(ds_fbits(r->x[i] * inv[q]) & -keep);
	else
		r->mask[i] = (uint8_t)keep;
}

/* The last pass of a sort of items: each item's position is its index's
 * rank, which decides its keep at once. */
static void last_pass(const uint64_t *a, size_t m, unsigned sh, uint32_t mask,
		      uint32_t top, const uint64_t *thr, const float *inv,
		      struct rowbuf *r)
{
	struct quarters qs;
	size_t L, t;

	quarters_init(&qs, m, top);     /* digits 0 .. top <= mask */
	L = qs.L;
	quarters_count(&qs, a, m, sh, mask);
	quarters_prefix(&qs, top, false);
#define LAST(q, x) keep_one(r, thr, inv, (uint32_t)(x),			\
			    qs.c[q][(uint32_t)((x) >> sh) & mask]++)
	for (t = 0; t < L; t++) {
		LAST(0, a[t]);
		LAST(1, a[L + t]);
		LAST(2, a[2 * L + t]);
		LAST(3, a[3 * L + t]);
	}
	for (t = 4 * L; t < m; t++)
		LAST(3, a[t]);
#undef LAST
}

/*
 * Codes in place of the keys in code (row_narrow's), counted on digit
 * code & mask into qs, the sequence in four quarters.
 */
/* The codes of m keys, in place: code_of() four lanes at a time. */
static void make_codes(uint32_t *code, size_t m, const struct narrow *nw)
{
	const u32x4 lo = { nw->lo, nw->lo, nw->lo, nw->lo };
	const u32x4 off = { nw->off, nw->off, nw->off, nw->off };
	const unsigned z = nw->z;
	size_t i = 0;

	for (; i + 4 <= m; i += 4) {
		u32x4 k, v;

		memcpy(&k, code + i, sizeof(k));
		v = (((k - lo) >> z) + off) & (u32x4)(k != 0);
		memcpy(code + i, &v, sizeof(v));
	}
	for (; i < m; i++)
		code[i] = code_of(code[i], nw);
}

static void count_codes(struct quarters *qs, uint32_t *code, size_t m,
			const struct narrow *nw, uint32_t mask)
{
	uint32_t (*c)[QDIGITS] = qs->c;
	size_t L = qs->L, t;

	make_codes(code, m, nw);
	for (t = 0; t < L; t++) {
		c[0][code[t] & mask]++;
		c[1][code[L + t] & mask]++;
		c[2][code[2 * L + t] & mask]++;
		c[3][code[3 * L + t] & mask]++;
	}
	for (t = 4 * L; t < m; t++)
		c[3][code[t] & mask]++;
}

/*
 * The first pass of a sort of the codes, on digit code & mask, making
 * the items (the code in the high half, the index in the low) as it
 * places them: each digit's positions are handed out from its top, so
 * equal digits go in reverse index order, which is the order the ranks
 * need (the lower index ranks higher); the later passes are stable.
 */
static void first_pass(uint32_t *code, size_t m, const struct narrow *nw,
		       uint32_t mask, uint64_t *to)
{
	struct quarters qs;
	size_t L, t;

	quarters_init(&qs, m, mask);
	L = qs.L;
	count_codes(&qs, code, m, nw, mask);
	quarters_prefix(&qs, mask, true);
#define FIRST(q, i) (to[--qs.c[q][code[i] & mask]] =			\
		     (uint64_t)code[i] << 32 | (uint32_t)(i))
	for (t = 0; t < L; t++) {
		FIRST(0, t);
		FIRST(1, L + t);
		FIRST(2, 2 * L + t);
		FIRST(3, 3 * L + t);
	}
	for (t = 4 * L; t < m; t++)
		FIRST(3, t);
#undef FIRST
}

/*
 * della's keep of each element of the row, by its rank: a counting sort
 * on the codes' digits, least significant first (as few digits of at
 * most 11 bits as make the cheapest sort), whose last digit's positions
 * are the ranks.  A row whose span fits one digit is ranked with no data
 * movement: the order of the codes with equal ones in reverse index
 * order, each index getting its digit's positions from the top down.
 */
static void sort_keep(uint32_t span, const struct narrow *nw, size_t m,
		      const uint64_t *thr, const float *inv, struct rowbuf *r)
{
	uint32_t *code = (uint32_t *)r->tmp, mask;
	unsigned bits = 32 - (unsigned)__builtin_clz(span | 1), np, w;
	uint64_t *a = r->key, *t = r->tmp, *swap;

	np = digits(bits, m);
	w = (bits + np - 1) / np;
	mask = (1u << w) - 1;
	if (np == 1) {
		struct quarters qs;
		uint32_t (*c)[QDIGITS] = qs.c;
		size_t L, i;

		quarters_init(&qs, m, span);    /* codes 0 .. span */
		L = qs.L;
		count_codes(&qs, code, m, nw, UINT32_MAX);
		quarters_prefix(&qs, span, true);
		for (i = 0; i < L; i++) {
			keep_one(r, thr, inv, i, --c[0][code[i]]);
			keep_one(r, thr, inv, L + i, --c[1][code[L + i]]);
			keep_one(r, thr, inv, 2 * L + i, --c[2][code[2 * L + i]]);
			keep_one(r, thr, inv, 3 * L + i, --c[3][code[3 * L + i]]);
		}
		for (i = 4 * L; i < m; i++)
			keep_one(r, thr, inv, i, --c[3][code[i]]);
		return;
	}
	first_pass(code, m, nw, mask, a);
	for (unsigned p = 1; p + 1 < np; p++) {
		item_pass(a, m, 32 + p * w, mask, t);
		swap = a;
		a = t;
		t = swap;
	}
	last_pass(a, m, 32 + (np - 1) * w, mask, span >> ((np - 1) * w), thr,
		  inv, r);
}

/*
 * della's keep threshold and inverse rescale for each ascending rank q of
 * a row of m (DESIGN 5.1), for model j: they depend on q alone, so they
 * are tabulated once per window and model rather than per element.  The
 * element is kept iff u >= thr[q]: floor((1 - pi) 2^32), which is 2^32
 * (keep none) only if pi were 0.
 */
static void della_table(const struct ds_mparams *mp, unsigned j, size_t m,
			uint64_t *thr, float *inv)
{
	double d = mp->density[j], eps = mp->epsilon[j];

	for (size_t q = 0; q < m; q++) {
		double pi = m == 1 ? d : (d - eps) +
			    ((2.0 * eps) * (double)q) / (double)(m - 1);
		double t = floor((1.0 - pi) * 4294967296.0);

		thr[q] = t >= 4294967296.0 ? (uint64_t)1 << 32 : (uint64_t)t;
		inv[q] = (float)(1.0 / pi);
	}
}

/* della's d_j of one row into x (the delta there on entry). */
static void della_row(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
		      unsigned j, uint64_t i0, size_t m, struct rowbuf *r)
{
	const uint64_t *thr = r->tthr + (size_t)j * r->R;
	const float *inv = r->tinv + (size_t)j * r->R, *ik;
	double d = mp->density[j];
	float *x = r->x, s = 1.0f;
	struct narrow nw;
	uint32_t span;

	if (d >= 1.0)
		return;                         /* every delta kept as is */
	if (d <= 0.0) {
		memset(x, 0, m * sizeof(float));
		return;
	}
	/* x * s where kept, else +0: the product's bits, and all or none;
	 * inverse: each kept delta by (float)(1/pi), the paper's rule */
	ik = mp->rescale == DS_RESCALE_INVERSE ? inv : NULL;
	span = row_narrow(k, x, m, r, &nw);
	k->philox(mp->seed, mp->sj[j], mp->name_hash, i0, m, r->u);
	sort_keep(span, &nw, m, thr, ik, r);
	if (ik)
		return;
	if (mp->rescale == DS_RESCALE_L1) {
		double a = row_abs(x, NULL, m), b = row_abs(x, r->mask, m);

		s = a < 1e-7 || b < 1e-7 ? 1.0f : (float)(a / b);
	}
	for (size_t i = 0; i < m; i++)
		x[i] = ds_bitsf(ds_fbits(x[i] * s) & -(uint32_t)r->mask[i]);
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

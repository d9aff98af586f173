/* SPDX-License-Identifier: MIT */
/* select.c - exact rank selection in constant memory (ties, breadcrumbs, sce) */
#include "config.h"

#include <math.h>
#include <string.h>
#include "methods/steps.h"

/*
 * Ranks order keys descending, equal keys by flat index (DESIGN 5.1).  The
 * kept ranks of a channel lie between two cuts, each found in streaming
 * passes: a histogram of the keys' high 16 bits finds the bin of the cut's
 * last element, a histogram of the low 15 bits inside that bin finds its
 * key K.  What is left is where the cut falls among the keys equal to K,
 * in index order; the writing pass finds that itself.  Each window of it
 * is computed with a budget per cut, how many of its equal keys are above
 * the cut, and counts its equal keys as it goes (per chunk, into the
 * slot's ds_wsel).  The budget is exact when every window before it has
 * been checked (the first window, or the only one); otherwise it is a
 * guess, from the checked windows' count and the equal keys left spread
 * evenly over the elements left.  The I/O thread checks each window in
 * window order (ds_write_check), when the count of the windows before it
 * is exact: a window whose budget was wrong is computed again from the
 * data still in its slot, only the chunks whose decisions change.  Nothing
 * is written before its check, so no result depends on the guesses.
 * Histograms are fixed-size; nothing depends on the tensor's size, and
 * integer counts are exact in any order.
 *
 * The first pass also counts, per bin, the keys whose low bits are all
 * zero: magnitudes of at most 9 significant bits, the bin's smallest key.
 * Deltas of BF16 checkpoints mostly have that few, so a bin holds that one
 * key and some above it.  When the cut falls among those zero keys (more
 * of the bin above the cut than there are others), or the whole bin is
 * above the cut, the cut's key is known without the second pass, and the
 * tensor takes two passes.  Finalizing a pass marks the passes it found
 * unneeded (ts->skip).
 *
 * A sums pass that needs the kept elements (--rescale l1, sce's weights)
 * comes before the writing pass, so there a third pass, count_eq, counts
 * each window's equal keys first and finds the window where the cut falls
 * (wc) and how many of its equal keys are above (rc).
 */

static bool partial(const struct ds_tstate *ts, const struct ds_cut *c)
{
	return c->x > 0 && c->x < ts->n;
}

/* k = min(n, floor(f * n + 0.5)) in double. */
static uint64_t count_of(double f, uint64_t n)
{
	double k = floor(f * (double)n + 0.5);

	return k >= (double)n ? n : k <= 0.0 ? 0 : (uint64_t)k;
}

static void set_cut(struct ds_cut *c, uint64_t x)
{
	memset(c, 0, sizeof(*c));
	c->x = x;
	c->wc = UINT64_MAX;
}

void ds_select_begin(struct ds_tstate *ts)
{
	const struct ds_mparams *mp = &ts->mp;
	uint64_t n = ts->n;

	ts->nchan = mp->def->cb == DS_CB_SCE ? 1 : mp->n;
	ts->select = false;
	for (unsigned ch = 0; ch < ts->nchan; ch++) {
		uint64_t k = n, t = 0;

		if (mp->def->sp == DS_SP_MAGNITUDE ||
		    mp->def->sp == DS_SP_OUTLIERS)
			k = count_of(mp->density[ch], n);
		if (mp->def->sp == DS_SP_OUTLIERS) {
			t = count_of(mp->gamma[ch], n);
			if (k + t > n)
				t = n - k;
		}
		set_cut(&ts->cut[ch][0], t);
		set_cut(&ts->cut[ch][1], t + k);
		ts->select |= partial(ts, &ts->cut[ch][0]) ||
			      partial(ts, &ts->cut[ch][1]);
	}
	/* sce: the cut is known once the non-zero variances are counted. */
	if (mp->def->cb == DS_CB_SCE && mp->select_topk < 1.0)
		ts->select = true;
}

/* Per-element population variance of the deltas, binary32, model order. */
static void variance(const struct ds_mparams *mp, const struct ds_chunk *c,
		     float *var)
{
	float fn = (float)mp->n;

	for (size_t k = 0; k < c->m; k++) {
		float mean = 0.0f, v = 0.0f, d;

		for (unsigned j = 0; j < mp->n; j++)
			mean = mean + ds_erow(c, j)[k];
		mean = mean / fn;
		for (unsigned j = 0; j < mp->n; j++) {
			d = ds_erow(c, j)[k] - mean;
			v = v + d * d;
		}
		var[k] = v / fn;
	}
}

/* The values channel ch ranks: model ch's deltas, or sce's variances. */
static const float *ranked(const struct ds_tstate *ts, unsigned ch,
			   const struct ds_chunk *c)
{
	if (ts->mp.def->cb != DS_CB_SCE)
		return ds_erow(c, ch);
	variance(&ts->mp, c, c->t1);
	return c->t1;
}

void ds_select_keys(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		    unsigned ch, const struct ds_chunk *c, uint32_t *key)
{
	k->rank_keys(ranked(ts, ch, c), key, c->m);
}

/* Does cut c need its equal keys counted (some above it, some not)? */
static bool counts(const struct ds_tstate *ts, const struct ds_cut *c)
{
	return partial(ts, c) && c->wc != UINT64_MAX;
}

/* Equal keys above cut c in the window at i0, from the count_eq pass. */
static uint64_t budget_counted(const struct ds_cut *c, uint64_t i0)
{
	if (c->wc == UINT64_MAX || i0 < c->wc)
		return UINT64_MAX;
	return i0 == c->wc ? c->rc : 0;
}

void ds_select_run(const struct ds_tstate *ts, uint64_t win_i0,
		   const struct ds_wsel *ws, struct ds_eqrun *run)
{
	for (unsigned ch = 0; ch < ts->nchan; ch++)
		for (unsigned w = 0; w < 2; w++) {
			const struct ds_cut *c = &ts->cut[ch][w];

			run->n[ch][w] = 0;
			run->at[ch][w] = 0;
			run->tally[ch][w] = counts(ts, c) && ts->wcount &&
					    !(ws->settled[ch][w] &&
					      ws->r[ch][w] == 0);
			if (!counts(ts, c))
				run->r[ch][w] = UINT64_MAX;
			else if (ts->wcount)
				run->r[ch][w] = ws->r[ch][w];
			else
				run->r[ch][w] = budget_counted(c, win_i0);
		}
}

/* Is the element above cut c?  r of the window's keys equal to the cut's
 * are above it; cnt counts them in index order. */
static inline bool above(const struct ds_cut *c, uint64_t n, uint32_t key,
			 uint64_t r, uint64_t *cnt)
{
	if (c->x == 0)
		return false;
	if (c->x >= n)
		return true;
	if (key != c->key)
		return key > c->key;
	return (*cnt)++ < r;
}

/*
 * The smallest key above cut c, for every element of a chunk of v: all
 * keys from it up are above, all below are not.  -1 in a chunk where the
 * cut falls among equal keys (cnt of them before it in the window, r of
 * the window's above), which only the element-wise test of
 * ds_select_mask() decides; *add is the chunk's count of equal keys
 * otherwise (0 when not needed).
 */
static int64_t cut_floor(const struct ds_kernel_ops *k,
			 const struct ds_tstate *ts, const struct ds_cut *c,
			 const float *v, size_t m, uint64_t r, uint64_t cnt,
			 bool tally, uint64_t *add)
{
	uint64_t eq;

	*add = 0;
	if (c->x == 0)
		return (int64_t)1 << 31;        /* above every key */
	if (c->x >= ts->n)
		return 0;
	/* every equal key above, or none: counted only where the writing
	 * pass counts them for its check */
	if (r == UINT64_MAX && !tally)
		return c->key;
	if (cnt >= r && !tally)
		return (int64_t)c->key + 1;
	eq = k->count_range(v, (int32_t)c->key - 1, (int32_t)c->key, m);
	if (cnt < r && cnt + eq > r)
		return -1;
	*add = eq;
	return cnt >= r ? (int64_t)c->key + 1 : c->key;
}

bool ds_select_keep(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		    unsigned ch, const struct ds_chunk *c, const float *v,
		    float s, struct ds_eqrun *run, float *x)
{
	uint64_t add[2];
	int64_t lo, hi;

	hi = cut_floor(k, ts, &ts->cut[ch][1], v, c->m, run->r[ch][1],
		       run->n[ch][1], run->tally[ch][1], &add[1]);
	lo = cut_floor(k, ts, &ts->cut[ch][0], v, c->m, run->r[ch][0],
		       run->n[ch][0], run->tally[ch][0], &add[0]);
	if (hi < 0 || lo < 0)
		return false;
	run->n[ch][1] += add[1];
	run->n[ch][0] += add[0];
	/* kept: above hi and not above lo, hi <= key < lo */
	k->keep_range(v, (int32_t)(hi - 1), (int32_t)(lo - 1), s, x, c->m);
	return true;
}

void ds_select_mask(const struct ds_tstate *ts, unsigned ch,
		    const uint32_t *key, size_t n, struct ds_eqrun *run,
		    uint8_t *mask)
{
	const struct ds_cut *lo = &ts->cut[ch][0], *hi = &ts->cut[ch][1];
	uint64_t rlo = run->r[ch][0], rhi = run->r[ch][1];

	for (size_t k = 0; k < n; k++) {
		bool a = above(hi, ts->n, key[k], rhi, &run->n[ch][1]);
		bool b = above(lo, ts->n, key[k], rlo, &run->n[ch][0]);

		mask[k] = a && !b;
	}
}

/* ---- the writing pass's counts and checks ------------------------------- */

/* Cut (ch, w) of chunk ci in the records: one per cut and chunk. */
static size_t rec(const struct ds_tstate *ts, size_t ci, unsigned ch,
		  unsigned w)
{
	return (ci * ts->nchan + ch) * 2 + w;
}

size_t ds_wsel_bytes(unsigned nchan, uint64_t window)
{
	return sizeof(struct ds_wsel) + (size_t)((window + DS_CHUNK - 1) /
		DS_CHUNK) * nchan * 2 * sizeof(uint16_t);
}

/*
 * What a chunk with cnt equal keys before it and eq in it decides with
 * budget r: none above (0), all above (1), or the first r - cnt (2 + that).
 */
static uint64_t decision(uint64_t cnt, uint64_t eq, uint64_t r)
{
	if (cnt >= r)
		return 0;
	return cnt + eq <= r ? 1 : 2 + (r - cnt);
}

bool ds_select_chunk_needed(const struct ds_tstate *ts,
			    const struct ds_wsel *ws, size_t ci,
			    struct ds_eqrun *run)
{
	if (!ts->wcount || !ws->redo)
		return true;
	for (unsigned ch = 0; ch < ts->nchan; ch++)
		for (unsigned w = 0; w < 2; w++) {
			uint64_t eq = ws->cnt[rec(ts, ci, ch, w)];
			uint64_t cnt = run->n[ch][w];

			if (counts(ts, &ts->cut[ch][w]) && eq &&
			    decision(cnt, eq, ws->g[ch][w]) !=
			    decision(cnt, eq, run->r[ch][w]))
				return true;
		}
	/* its output stands: only its counts move the run on */
	for (unsigned ch = 0; ch < ts->nchan; ch++)
		for (unsigned w = 0; w < 2; w++) {
			run->n[ch][w] += ws->cnt[rec(ts, ci, ch, w)];
			run->at[ch][w] = run->n[ch][w];
		}
	return false;
}

void ds_select_chunk_done(const struct ds_tstate *ts, struct ds_wsel *ws,
			  size_t ci, struct ds_eqrun *run)
{
	if (!ts->wcount)
		return;
	for (unsigned ch = 0; ch < ts->nchan; ch++)
		for (unsigned w = 0; w < 2; w++) {
			uint64_t eq = run->n[ch][w] - run->at[ch][w];

			ws->cnt[rec(ts, ci, ch, w)] =
				counts(ts, &ts->cut[ch][w]) ? (uint16_t)eq : 0;
			run->at[ch][w] = run->n[ch][w];
		}
}

void ds_select_window_done(const struct ds_tstate *ts, struct ds_wsel *ws,
			   const struct ds_eqrun *run)
{
	if (!ts->wcount)
		return;
	for (unsigned ch = 0; ch < ts->nchan; ch++)
		for (unsigned w = 0; w < 2; w++) {
			ws->eq[ch][w] = run->n[ch][w];
			ws->g[ch][w] = run->r[ch][w];
		}
	ws->redo = false;
}

/* The exact budget of the window after the checked ones. */
static uint64_t budget_exact(const struct ds_cut *c)
{
	return c->q > c->seen ? c->q - c->seen : 0;
}

/*
 * The budget of a window starting at i0, when the windows up to ts->wnext
 * are checked: exact when i0 is there, or when the checked ones already
 * hold every equal key above the cut; else the equal keys left, spread
 * evenly over the elements left, give a guess.
 */
static uint64_t budget_guess(const struct ds_tstate *ts, const struct ds_cut *c,
			     uint64_t i0)
{
	double before;

	if (i0 == ts->wnext || c->seen >= c->q)
		return budget_exact(c);
	before = (double)(c->eq - c->seen) * (double)(i0 - ts->wnext) /
		 (double)(ts->n - ts->wnext);
	before += (double)c->seen;
	return before < (double)c->q ? (uint64_t)((double)c->q - before) : 0;
}

void ds_write_begin(const struct ds_tstate *ts, const struct ds_window *win,
		    void *red)
{
	struct ds_wsel *ws = red;

	if (!ts->wcount)
		return;
	/* once the checked windows hold every equal key above a cut, the
	 * windows after them have none above it, and need not count */
	for (unsigned ch = 0; ch < ts->nchan; ch++)
		for (unsigned w = 0; w < 2; w++) {
			const struct ds_cut *c = &ts->cut[ch][w];

			ws->r[ch][w] = !counts(ts, c) ? UINT64_MAX :
				       budget_guess(ts, c, win->i0);
			ws->settled[ch][w] = counts(ts, c) && c->seen >= c->q;
		}
	ws->redo = false;
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

bool ds_write_check(struct ds_tstate *ts, const struct ds_window *win,
		    void *red)
{
	struct ds_wsel *ws = red;
	bool redo = false;

	if (!ts->wcount)
		return false;
	for (unsigned ch = 0; ch < ts->nchan; ch++)
		for (unsigned w = 0; w < 2; w++) {
			const struct ds_cut *c = &ts->cut[ch][w];
			uint64_t e = budget_exact(c), eq = ws->eq[ch][w];

			if (!counts(ts, c))
				continue;
			/* budgets decide the same up to the window's count */
			if (min64(e, eq) != min64(ws->g[ch][w], eq))
				redo = true;
			ws->r[ch][w] = e;
		}
	if (redo) {
		ws->redo = true;
		return true;
	}
	for (unsigned ch = 0; ch < ts->nchan; ch++)
		for (unsigned w = 0; w < 2; w++)
			if (counts(ts, &ts->cut[ch][w]))
				ts->cut[ch][w].seen += ws->eq[ch][w];
	ts->wnext = win->i0 + win->n;
	return false;
}

/* ---- the reducing passes ------------------------------------------------ */

struct hist_hi {
	uint64_t nz;
	uint32_t h[];                  /* [nchan][DS_HIST_HI], then the zeros */
};

/* 1 when the key's low bits are all zero. */
static inline uint32_t low_zero(uint32_t key)
{
	return (key & 0x7fff) == 0;
}

/* The counts of zero low bits in red, channel ch. */
static uint32_t *red_zeros(struct hist_hi *hh, unsigned nchan, unsigned ch)
{
	return hh->h + ((size_t)nchan + ch) * DS_HIST_HI;
}

/*
 * Accumulators of a merge, per channel: the high-bits histogram, then, in
 * the same place once it is used up, the two cuts' low-bits histograms.
 */
static uint64_t *acc_hi(void *acc, unsigned ch)
{
	return (uint64_t *)acc + (size_t)ch * DS_HIST_HI;
}

static uint64_t *acc_lo(void *acc, unsigned ch, unsigned cut)
{
	return acc_hi(acc, ch) + (size_t)cut * DS_HIST_LO;
}

/* The counts of zero low bits of the merge, after every histogram. */
static uint64_t *acc_zeros(void *acc, unsigned nchan, unsigned ch)
{
	return acc_hi(acc, nchan + ch);
}

/*
 * High-bits histograms and counts of zero low bits (o0, o1) of two
 * channels' keys at once (h1 and k1 NULL for one): the two streams of
 * updates do not wait on each other.
 */
static void hist_hi2(uint32_t *h0, uint32_t *o0, const uint32_t *k0,
		     uint32_t *h1, uint32_t *o1, const uint32_t *k1, size_t m)
{
	size_t k;

	if (!h1) {
		for (k = 0; k < m; k++) {
			h0[k0[k] >> 15]++;
			o0[k0[k] >> 15] += low_zero(k0[k]);
		}
		return;
	}
	for (k = 0; k < m; k++) {
		h0[k0[k] >> 15]++;
		o0[k0[k] >> 15] += low_zero(k0[k]);
		h1[k1[k] >> 15]++;
		o1[k1[k] >> 15] += low_zero(k1[k]);
	}
}

/* Low-bits histogram of the keys in bin: the keys gathered first, without
 * a branch, then counted. */
static void hist_lo(uint32_t *h, const uint32_t *key, uint32_t bin,
		    uint32_t *tmp, size_t m)
{
	size_t k, t = 0;

	for (k = 0; k < m; k++) {
		tmp[t] = key[k] & 0x7fff;
		t += key[k] >> 15 == bin;
	}
	for (k = 0; k < t; k++)
		h[tmp[k]]++;
}

static void reduce_hi(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		      const struct ds_chunk *c, struct hist_hi *hh)
{
	for (unsigned ch = 0; ch < ts->nchan; ch += 2) {
		uint32_t *h = hh->h + (size_t)ch * DS_HIST_HI;
		uint32_t *o = red_zeros(hh, ts->nchan, ch);
		const float *v = ranked(ts, ch, c);
		bool two = ch + 1 < ts->nchan;

		k->rank_keys(v, c->key, c->m);
		if (ts->mp.def->cb == DS_CB_SCE)     /* non-zero variances */
			hh->nz += k->count_range(v, 0, 0x7fffffff, c->m);
		if (two)
			k->rank_keys(ds_erow(c, ch + 1), c->u, c->m);
		hist_hi2(h, o, c->key, two ? h + DS_HIST_HI : NULL,
			 o + DS_HIST_HI, c->u, c->m);
	}
}

static void reduce_chunk(const struct ds_kernel_ops *k,
			 const struct ds_tstate *ts, enum ds_pass pass,
			 const struct ds_chunk *c, void *red)
{
	if (pass == DS_PASS_HIST_HI) {
		reduce_hi(k, ts, c, red);
		return;
	}
	for (unsigned ch = 0; ch < ts->nchan; ch++) {
		const float *v = NULL;

		for (unsigned w = 0; w < 2; w++) {
			const struct ds_cut *cut = &ts->cut[ch][w];

			if (!partial(ts, cut))
				continue;
			if (!v)
				v = ranked(ts, ch, c);
			if (pass == DS_PASS_HIST_LO) {
				uint32_t *h = (uint32_t *)red +
					      ((size_t)ch * 2 + w) * DS_HIST_LO;

				if (w == 0 || !partial(ts, &ts->cut[ch][0]))
					k->rank_keys(v, c->key, c->m);
				hist_lo(h, c->key, cut->bin, c->u, c->m);
			} else if (cut->wc != UINT64_MAX) {
				uint64_t *cnt = (uint64_t *)red + ch * 2 + w;

				*cnt += k->count_range(v, (int32_t)cut->key - 1,
						       (int32_t)cut->key, c->m);
			}
		}
	}
}

static size_t red_size(const struct ds_tstate *ts, enum ds_pass pass)
{
	if (pass == DS_PASS_HIST_HI)
		return sizeof(struct hist_hi) +
		       (size_t)ts->nchan * 2 * DS_HIST_HI * sizeof(uint32_t);
	if (pass == DS_PASS_HIST_LO)
		return (size_t)ts->nchan * 2 * DS_HIST_LO * sizeof(uint32_t);
	return (size_t)ts->nchan * 2 * sizeof(uint64_t);
}

/* Does any cut still need its equal keys counted (DESIGN 5.1)? */
static bool counting(const struct ds_tstate *ts)
{
	for (unsigned ch = 0; ch < ts->nchan; ch++)
		for (unsigned w = 0; w < 2; w++)
			if (counts(ts, &ts->cut[ch][w]))
				return true;
	return false;
}

void ds_select_reduce(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		      enum ds_pass pass, const struct ds_window *win, void *red,
		      float *scratch)
{
	struct ds_chunk c;

	ds_chunk_carve(&c, scratch, ts->mp.n);
	memset(red, 0, red_size(ts, pass));
	/* Every cut keeps all its equal keys: nothing to count. */
	if (pass == DS_PASS_COUNT_EQ && !counting(ts))
		return;
	for (c.off = 0; c.off < win->n; c.off += DS_CHUNK) {
		c.m = win->n - c.off < DS_CHUNK ? win->n - c.off : DS_CHUNK;
		c.i0 = win->i0 + c.off;
		ds_chunk_deltas(k, &ts->mp, win, &c);
		reduce_chunk(k, ts, pass, &c, red);
	}
}

void ds_select_fold(struct ds_tstate *ts, enum ds_pass pass,
		    const struct ds_window *win, const void *red, void *acc)
{
	for (unsigned ch = 0; ch < ts->nchan; ch++) {
		if (pass == DS_PASS_HIST_HI) {
			const struct hist_hi *hh = red;
			const uint32_t *h = hh->h + (size_t)ch * DS_HIST_HI;
			const uint32_t *o = h + (size_t)ts->nchan * DS_HIST_HI;
			uint64_t *a = acc_hi(acc, ch);
			uint64_t *az = acc_zeros(acc, ts->nchan, ch);

			for (unsigned b = 0; b < DS_HIST_HI; b++)
				a[b] += h[b];
			for (unsigned b = 0; b < DS_HIST_HI; b++)
				az[b] += o[b];
			if (ch == 0)
				ts->nz += hh->nz;
			continue;
		}
		for (unsigned w = 0; w < 2; w++) {
			struct ds_cut *cut = &ts->cut[ch][w];

			if (!partial(ts, cut))
				continue;
			if (pass == DS_PASS_HIST_LO) {
				const uint32_t *h = (const uint32_t *)red +
					((size_t)ch * 2 + w) * DS_HIST_LO;
				uint64_t *a = acc_lo(acc, ch, w);

				for (unsigned b = 0; b < DS_HIST_LO; b++)
					a[b] += h[b];
			} else if (cut->wc != UINT64_MAX) {
				uint64_t cnt = ((const uint64_t *)red)[ch * 2 + w];

				if (cut->seen < cut->q && cut->seen + cnt >= cut->q) {
					cut->wc = win->i0;
					cut->rc = cut->q - cut->seen;
				}
				cut->seen += cnt;
			}
		}
	}
}

/*
 * A cut whose equal keys are q of eq, above gt larger ones: every equal
 * key is above it (the window counts are not needed), or the count pass
 * finds the window where the q-th one falls.
 */
static void set_key(struct ds_cut *c, uint32_t key, uint64_t gt, uint64_t eq)
{
	c->key = key;
	c->gt = gt;
	c->eq = eq;
	c->q = c->x - gt;
	c->wc = c->q == c->eq ? UINT64_MAX : 0;
	c->seen = 0;
}

/*
 * The bin of the cut's x-th element, scanning from the largest keys; the
 * key too when all of the bin is above the cut, or when the cut falls
 * among the bin's z keys of zero low bits, its smallest (the other keys
 * of the bin are all above them).  Either way that key, the bin's
 * lowest, divides the bin.
 */
static void find_bin(struct ds_cut *c, const uint64_t *h, const uint64_t *z)
{
	uint64_t cum = 0;

	for (unsigned b = DS_HIST_HI; b-- > 0;) {
		if (cum + h[b] >= c->x) {
			uint64_t others = h[b] - z[b];

			c->bin = b;
			c->gt = cum;
			if (cum + h[b] == c->x) {
				set_key(c, b << 15, cum, h[b]);
				c->exact = true;
			} else if (z[b] && c->x - cum > others) {
				set_key(c, b << 15, cum + others, z[b]);
				c->exact = true;
			}
			return;
		}
		cum += h[b];
	}
}

/* The cut's key inside its bin, the counts around it. */
static void find_key(struct ds_cut *c, const uint64_t *h)
{
	uint64_t cum = c->gt;

	for (unsigned l = DS_HIST_LO; l-- > 0;) {
		if (cum + h[l] >= c->x) {
			set_key(c, c->bin << 15 | l, cum, h[l]);
			return;
		}
		cum += h[l];
	}
}

/* Mark pass p of the tensor unneeded. */
static void skip(struct ds_tstate *ts, enum ds_pass p)
{
	for (unsigned i = 0; i < ts->npass; i++)
		if (ts->pass[i] == p)
			ts->skip |= 1u << i;
}

void ds_select_finalize(struct ds_tstate *ts, enum ds_pass pass, void *acc)
{
	bool exact = true;

	if (pass == DS_PASS_HIST_HI && ts->mp.def->cb == DS_CB_SCE)
		set_cut(&ts->cut[0][1], (uint64_t)floor(ts->mp.select_topk *
							(double)ts->nz));
	for (unsigned ch = 0; ch < ts->nchan; ch++)
		for (unsigned w = 0; w < 2; w++) {
			struct ds_cut *cut = &ts->cut[ch][w];

			if (!partial(ts, cut))
				continue;
			if (pass == DS_PASS_HIST_HI)
				find_bin(cut, acc_hi(acc, ch),
					 acc_zeros(acc, ts->nchan, ch));
			else if (pass == DS_PASS_HIST_LO && !cut->exact)
				find_key(cut, acc_lo(acc, ch, w));
			exact &= pass != DS_PASS_HIST_HI || cut->exact;
		}
	/* Every key known after the first pass: no low-bits histogram. */
	if (pass == DS_PASS_HIST_HI && exact)
		skip(ts, DS_PASS_HIST_LO);
	/* Every cut keeps all of its equal keys: nothing to count. */
	if ((pass == DS_PASS_HIST_LO || (pass == DS_PASS_HIST_HI && exact)) &&
	    !counting(ts))
		skip(ts, DS_PASS_COUNT_EQ);
}

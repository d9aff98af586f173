/* SPDX-License-Identifier: MIT */
/* test_passes.c - multi-pass methods on hand-computed cases, every path */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "methods/methods.h"
#include "recipe/recipe.h"
#include "testutil.h"

#define NAME "model.layers.0.mlp.up_proj.weight"
#define MAXN 64

static const char *const paths[] = { "scalar", "avx2", "avx512", "neon" };

/* mergekit's defaults of every parameter, no model yet. */
static void defaults(struct ds_tparams *tp)
{
	memset(tp, 0, sizeof(*tp));
	for (unsigned i = 0; i < DS_P_COUNT; i++)
		tp->param[i] = ds_param_default((enum ds_param)i);
	tp->lambda = 1.0;
	tp->normalize = -1;
	tp->has_base = true;
}

/* Parameters of method m for n models with the recipe's defaults. */
static void params(struct ds_mparams *mp, enum ds_method m, unsigned n,
		   const double *density, void (*tweak)(struct ds_tparams *))
{
	struct ds_tparams tp;

	defaults(&tp);
	tp.n = n;
	tp.has_base = true;
	for (unsigned j = 0; j < n; j++) {
		tp.j[j] = tp.sj[j] = j;
		tp.weight[j] = 1.0;
		tp.density[j] = density ? density[j] : 1.0;
		tp.p[j] = 1.0 - tp.density[j];
		tp.gamma[j] = tp.param[DS_P_GAMMA];
		tp.epsilon[j] = tp.param[DS_P_EPSILON];
	}
	if (tweak)
		tweak(&tp);
	ck_assert_int_eq(ds_mparams_from(NULL, mp, m, &tp), 0);
	ds_mparams_tensor(mp, NAME);
}

/* Passes the last stream() took, skipped ones not counted. */
static unsigned ran;
/* Windows of the writing pass computed again, over every stream(). */
static unsigned long redos;

/*
 * How the writing pass's windows are scheduled (the pipeline runs any mix
 * of these): each computed and checked before the next is begun (budgets
 * exact); all begun, then computed last to first, then checked in order
 * (every budget after the first guessed); the same with the budgets
 * replaced by wrong ones (0, all, 1, the window's index) before computing.
 */
enum order { SEQUENTIAL, ALL_BEGUN, WRONG_GUESS, ORDERS };

/* Write windows [0, nw) of wins in order ord, each with its own red. */
static void write_pass(const struct ds_kernel_ops *k, struct ds_tstate *ts,
		       const struct ds_window *wins, size_t nw, char *red,
		       size_t rb, float *scratch, void *acc, enum order ord)
{
	for (size_t i = 0; i < nw; i++) {
		void *r = red + (ord == SEQUENTIAL ? 0 : i * rb);

		ds_write_begin(ts, &wins[i], r);
		if (ord == WRONG_GUESS && ts->wcount) {
			static const uint64_t bad[] = { 0, UINT64_MAX, 1 };
			struct ds_wsel *ws = r;

			uint64_t g = i % 4 < 3 ? bad[i % 4] : i;

			for (unsigned ch = 0; ch < ts->nchan; ch++)
				for (unsigned c = 0; c < 2; c++)
					ws->r[ch][c] = g;
		}
		if (ord != SEQUENTIAL)
			continue;
		ds_pass_write(k, ts, &wins[i], scratch, acc, r);
		ck_assert(!ds_write_check(ts, &wins[i], r));
	}
	if (ord == SEQUENTIAL)
		return;
	for (size_t i = nw; i-- > 0;)
		ds_pass_write(k, ts, &wins[i], scratch, acc, red + i * rb);
	for (size_t i = 0; i < nw; i++) {
		void *r = red + i * rb;

		if (ds_write_check(ts, &wins[i], r)) {
			redos++;
			ds_pass_write(k, ts, &wins[i], scratch, acc, r);
			ck_assert_msg(!ds_write_check(ts, &wins[i], r),
				      "window %zu: wrong after its redo", i);
		}
	}
}

/*
 * Stream one F32 tensor of n elements through every pass of mp's method,
 * in windows of w elements, as the pipeline does: reduce, fold in order,
 * finalize (passes found unneeded are left out); then write in order ord.
 * out gets the result on kernel path k.
 */
static void stream(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
		   const uint64_t *shape, unsigned ndim, const float *b,
		   const float *const *x, size_t n, size_t w, float *out,
		   enum order ord)
{
	struct ds_tstate *ts = calloc(1, sizeof(*ts));
	struct ds_method_needs nd;
	uint64_t rows = ndim >= 2 ? shape[0] : 1;
	size_t nw = (n + w - 1) / w, rb;
	struct ds_window *wins = calloc(nw, sizeof(*wins));
	char *red;
	void *acc;
	float *scratch;

	ck_assert_ptr_nonnull(ts);
	ds_method_needs(mp, w, n / rows, &nd);
	rb = (nd.red_bytes + 63) & ~(size_t)63;
	red = calloc(nw, rb + 64);
	acc = calloc(1, nd.acc_bytes + 64);
	scratch = aligned_alloc(64, (nd.scratch_floats + 16) * sizeof(float));
	ck_assert(wins && red && acc && scratch);
	ck_assert_int_eq(ds_tensor_begin(NULL, ts, mp, shape, ndim, n, w,
					 n / rows), 0);
	for (size_t i = 0; i < nw; i++) {
		size_t i0 = i * w;

		wins[i] = (struct ds_window){
			.base = b + i0, .bdt = DS_DT_F32,
			.out = out + i0, .odt = DS_DT_F32,
			.i0 = i0, .n = n - i0 < w ? n - i0 : w,
		};
		for (unsigned j = 0; j < mp->n; j++) {
			wins[i].x[j] = x[j] + i0;
			wins[i].xdt[j] = DS_DT_F32;
		}
	}
	ran = 0;
	for (unsigned p = 0; p < ts->npass; p++) {
		if (ds_pass_skipped(ts, p))
			continue;
		ran++;
		if (ts->pass[p] == DS_PASS_WRITE) {
			write_pass(k, ts, wins, nw, red, rb, scratch, acc, ord);
			continue;
		}
		for (size_t i = 0; i < nw; i++) {
			ds_pass_reduce(k, ts, p, &wins[i], red, scratch);
			ds_pass_fold(k, ts, p, &wins[i], red, acc);
		}
		ds_pass_finalize(ts, p, acc);
		ts->ready = ds_pass_ready(ts, p);
	}
	free(ts);
	free(wins);
	free(red);
	free(acc);
	free(scratch);
}

/* Every path, windows of w: out equals want bit for bit. */
static void expect(const struct ds_mparams *mp, const uint64_t *shape,
		   unsigned ndim, const float *b, const float *const *x,
		   size_t n, size_t w, const float *want)
{
	float *out = calloc(n, sizeof(float));

	ck_assert_ptr_nonnull(out);
	for (unsigned p = 0; p < 4; p++) {
		const struct ds_kernel_ops *k = ds_kernel_get(paths[p]);

		if (!k)
			continue;
		for (unsigned o = 0; o < ORDERS; o++) {
			memset(out, 0xff, n * sizeof(float));
			stream(k, mp, shape, ndim, b, x, n, w, out, o);
			for (size_t i = 0; i < n; i++)
				ck_assert_msg(!memcmp(&out[i], &want[i],
						      sizeof(float)),
					      "%s, window %zu, order %u: "
					      "element %zu is %a, expected %a",
					      paths[p], w, o, i,
					      (double)out[i], (double)want[i]);
		}
	}
	free(out);
}

static const float zero8[8];
/* |delta| 1 3 3 2 3 0.5 3 1: the four 3s rank 0..3 by index (1, 2, 4, 6). */
static const float xt[8] = { 1, -3, 3, 2, -3, 0.5f, 3, 1 };

/* ties keeps exactly k = 3 of four equal magnitudes, lowest index first,
 * whichever window the cut falls in. */
START_TEST(ties_index_rule)
{
	static const float want[8] = { 0, -3, 3, 0, -3, 0, 0, 0 };
	const float *x[1] = { xt };
	double d[1] = { 0.375 };       /* k = floor(0.375 * 8 + 0.5) = 3 */
	uint64_t shape[1] = { 8 };
	struct ds_mparams mp;

	params(&mp, DS_M_TIES, 1, d, NULL);
	for (size_t w = 1; w <= 8; w++)
		expect(&mp, shape, 1, zero8, x, 8, w, want);
}
END_TEST

/*
 * ties of one model (out = the kept deltas) on n elements, every window
 * size: out is want, after exactly npass passes.
 */
static void ties_passes(const float *xs, size_t n, double density,
			const float *want, unsigned npass)
{
	static const float b[8];
	const float *x[1] = { xs };
	uint64_t shape[1] = { n };
	double d[1] = { density };
	struct ds_mparams mp;

	params(&mp, DS_M_TIES, 1, d, NULL);
	for (size_t w = 1; w <= n; w++) {
		expect(&mp, shape, 1, b, x, n, w, want);
		ck_assert_msg(ran == npass, "density %g, window %zu: %u passes, "
			      "expected %u", density, w, ran, npass);
	}
}

/*
 * Which passes ties takes.  The first pass's histogram bins a key by its
 * high 16 bits: 1 and e = 1 + 2^-20 share a bin, 0.25, 2 and 3 each have
 * their own; all but e have zero low bits.  The low-bits histogram runs
 * only when the cut's bin is not all kept and the cut falls among its
 * keys of non-zero low bits (here e).  Where the cut falls among keys
 * equal to its own the writing pass finds itself.
 */
START_TEST(ties_passes_taken)
{
	const float e = 1.0f + 0x1p-20f;
	static const float w_run[8] = { 0, -3, 3, 0, -3, 0, 0, 0 };
	static const float w_all3[8] = { 0, -3, 3, 0, -3, 0, 3, 0 };
	const float mix[4] = { 1, e, 1, 0.25f };
	const float w_mix1[4] = { 0, e, 0, 0 };
	const float w_mix3[4] = { 1, e, 1, 0 };
	const float mix2[5] = { 1, e, 1, e, 0.25f };
	const float w_mix2[5] = { 0, e, 0, 0, 0 };
	const float low[5] = { e, 1, 1, 1, 0.25f };
	const float w_low2[5] = { e, 1 };
	const float w_low4[5] = { e, 1, 1, 1 };
	static const float twos[8] = { 2, 2, 2, 2, 2, 2, 2, 2 };
	static const float w_twos[8] = { 2, 2, 2 };
	static const float none[8];

	/* k = 3 of the four 3s, alone in their bin: hist_hi, write */
	ties_passes(xt, 8, 0.375, w_run, 2);
	/* k = 4, all four 3s (the cut between 3 and 2): hist_hi, write */
	ties_passes(xt, 8, 0.5, w_all3, 2);
	/* k = 1: the bin of 1 and e decides nothing; e is the only one of
	 * its key: hist_hi, hist_lo, write */
	ties_passes(mix, 4, 0.25, w_mix1, 3);
	/* k = 1 of the two es: hist_hi, hist_lo, write */
	ties_passes(mix2, 5, 0.2, w_mix2, 3);
	/* k = 3: the whole bin of 1 and e is kept: hist_hi, write */
	ties_passes(mix, 4, 0.75, w_mix3, 2);
	/* k = 2: e, then one of the three 1s below it; k = 4: all of them:
	 * hist_hi, write */
	ties_passes(low, 5, 0.4, w_low2, 2);
	ties_passes(low, 5, 0.8, w_low4, 2);
	/* all equal, k = 3 of 8: hist_hi, write */
	ties_passes(twos, 8, 0.375, w_twos, 2);
	/* the same cuts in two models: model 0's known after the first
	 * pass, model 1's not; (1 + e) / 2 = 1 + 2^-21 */
	{
		const float *x2[2] = { low, mix2 };
		const float want2[5] = { e, 1.0f + 0x1p-21f };
		double d2[2] = { 0.4, 0.2 };
		uint64_t shape[1] = { 5 };
		struct ds_mparams mp;

		params(&mp, DS_M_TIES, 2, d2, NULL);
		for (size_t w = 1; w <= 5; w++) {
			expect(&mp, shape, 1, none, x2, 5, w, want2);
			ck_assert_uint_eq(ran, 3);
		}
	}
	/* k = 0 and k = n: no rank is needed, the writing pass only */
	ties_passes(xt, 8, 0.0, none, 1);
	ties_passes(xt, 8, 1.0, xt, 1);
}
END_TEST

/*
 * ties with the cut among many equal magnitudes, 1, in the middle of a
 * window of several chunks: the larger magnitudes (2, and the next float
 * above 1, whose key is the cut's plus one) are kept, then the first q
 * ones in index order, whatever the window.
 */
START_TEST(ties_equal_run)
{
	enum { N = 20000 };
	static float xs[N], b[N], want[N];
	const float above1 = nextafterf(1.0f, 2.0f);
	const float *x[1] = { xs };
	uint64_t shape[1] = { N };
	size_t larger = 0, ones = 0, q = 0;
	static const size_t ws[] = { 2048, 5000, 8192, 12345, N };
	struct ds_mparams mp;
	double d[1];

	for (size_t i = 0; i < N; i++) {
		if (i % 97 == 0)
			xs[i] = -2.0f;
		else if (i % 89 == 5)
			xs[i] = above1;
		else if (i % 7 == 3)
			xs[i] = 0.25f;
		else
			xs[i] = i % 2 ? -1.0f : 1.0f;
		larger += fabsf(xs[i]) > 1.0f;
	}
	/* the q-th one at index 13001 or so: window 2 of 5000, chunk 2 */
	for (size_t i = 0; i < N; i++)
		if (fabsf(xs[i]) == 1.0f && i <= 13001)
			q++;
	for (size_t i = 0; i < N; i++) {
		int kept = fabsf(xs[i]) > 1.0f;

		if (fabsf(xs[i]) == 1.0f)
			kept = ++ones <= q;
		want[i] = kept ? xs[i] : 0.0f;
	}
	d[0] = ((double)(larger + q) + 0.25) / N;    /* k = larger + q */
	params(&mp, DS_M_TIES, 1, d, NULL);
	for (size_t w = 0; w < sizeof(ws) / sizeof(ws[0]); w++) {
		expect(&mp, shape, 1, b, x, N, ws[w], want);
		ck_assert_uint_eq(ran, 2);
	}
}
END_TEST

/*
 * Every cut of a run of equal magnitudes (n = 48 ones): ties keeps the
 * first k in index order, for every k and every window size, so the cut
 * falls inside windows, on their first and last elements and between
 * them, in one window and in 48.  The writing pass alone finds it: two
 * passes.  The windows computed again after a wrong budget are counted.
 */
START_TEST(ties_run_every_cut)
{
	enum { N = 48 };
	static float ones[N], want[N], b[N];
	const float *x[1] = { ones };
	uint64_t shape[1] = { N };
	struct ds_mparams mp;
	unsigned long before = redos;

	for (size_t i = 0; i < N; i++)
		ones[i] = i % 3 ? 1.0f : -1.0f;
	for (size_t k = 1; k < N; k++) {
		double d[1] = { ((double)k + 0.25) / N };
		static const size_t ws[] = { 1, 2, 5, 7, 16, 24, 47, 48 };

		for (size_t i = 0; i < N; i++)
			want[i] = i < k ? ones[i] : 0.0f;
		params(&mp, DS_M_TIES, 1, d, NULL);
		for (size_t w = 0; w < sizeof(ws) / sizeof(ws[0]); w++) {
			expect(&mp, shape, 1, b, x, N, ws[w], want);
			ck_assert_uint_eq(ran, 2);
		}
	}
	ck_assert_uint_gt(redos, before);
}
END_TEST

/*
 * Two models, each its own run of equal magnitudes (1 and 2, all of
 * them positive) cut at its own place: element i is kept by model 0 for
 * i < 17 and by model 1 for i < 30, so ties gives (1 + 2) / 2, then 2,
 * then 0.  Both cuts are decided in the writing pass, in every window.
 */
START_TEST(ties_two_runs)
{
	enum { N = 40 };
	static float x0[N], x1[N], b[N], want[N];
	const float *x[2] = { x0, x1 };
	double d[2] = { 17.25 / N, 30.25 / N };
	uint64_t shape[1] = { N };
	struct ds_mparams mp;

	for (size_t i = 0; i < N; i++) {
		x0[i] = 1.0f;
		x1[i] = 2.0f;
		want[i] = i < 17 ? 1.5f : i < 30 ? 2.0f : 0.0f;
	}
	params(&mp, DS_M_TIES, 2, d, NULL);
	for (size_t w = 1; w <= N; w++) {
		expect(&mp, shape, 1, b, x, N, w, want);
		ck_assert_uint_eq(ran, 2);
	}
}
END_TEST

static void rescale_l1(struct ds_tparams *tp)
{
	tp->rescale = DS_RESCALE_L1;
}

/*
 * ties with --rescale l1: the sums pass needs the kept elements, so the
 * count_eq pass comes before it (hist_hi, count_eq, sums, write).  k = 3
 * of the four 3s; s = (float)(16.5 / 9), the L1 norm over the kept one.
 */
START_TEST(ties_l1_counts_first)
{
	const float s = (float)(16.5 / 9.0);
	const float want[8] = { 0, -3.0f * s, 3.0f * s, 0, -3.0f * s, 0, 0, 0 };
	const float *x[1] = { xt };
	double d[1] = { 0.375 };
	uint64_t shape[1] = { 8 };
	struct ds_mparams mp;

	params(&mp, DS_M_TIES, 1, d, rescale_l1);
	for (size_t w = 1; w <= 8; w++) {
		expect(&mp, shape, 1, zero8, x, 8, w, want);
		ck_assert_uint_eq(ran, 4);
	}
}
END_TEST

static void gamma_18(struct ds_tparams *tp)
{
	tp->gamma[0] = 0.125;          /* t = floor(0.125 * 8 + 0.5) = 1 */
}

/* breadcrumbs: the top rank removed, the next k = 2 kept (ranks 1, 2). */
START_TEST(breadcrumbs_ranks)
{
	static const float want[8] = { 0, 0, 3, 0, -3, 0, 0, 0 };
	const float *x[1] = { xt };
	double d[1] = { 0.25 };
	uint64_t shape[1] = { 8 };
	struct ds_mparams mp;

	params(&mp, DS_M_BREADCRUMBS, 1, d, gamma_18);
	for (size_t w = 1; w <= 8; w++)
		expect(&mp, shape, 1, zero8, x, 8, w, want);
}
END_TEST

/* A NaN delta ranks above infinity: density 1/4 keeps NaN and inf
 * (breadcrumbs, whose sum passes both on; gamma 0.01 removes none of 8). */
START_TEST(nan_ranks_first)
{
	float xs[8] = { 1, 0, 2, 0, 0, 7, 0, 0 }, want[8] = { 0 };
	const float *x[1] = { xs };
	double d[1] = { 0.25 };
	uint64_t shape[1] = { 8 };
	struct ds_mparams mp;

	xs[1] = NAN;
	xs[3] = -INFINITY;
	want[1] = NAN;                  /* the canonical quiet NaN */
	want[3] = -INFINITY;
	params(&mp, DS_M_BREADCRUMBS, 1, d, NULL);
	expect(&mp, shape, 1, zero8, x, 8, 3, want);
}
END_TEST

/* ties of two models: sign election over the trimmed deltas. */
START_TEST(ties_two_models)
{
	/* model 0 keeps 4, -3 (k = 2); model 1 keeps -5, 2 at index 0, 3. */
	static const float x0[4] = { 4, -3, 1, 0.5f }, x1[4] = { -5, 1, 0, 2 };
	/* i0: S = 4 - 5 < 0, only -5 agrees: -5 / 1; i1: -3; i2: 0; i3: 2. */
	static const float want[4] = { -5, -3, 0, 2 };
	const float *x[2] = { x0, x1 };
	double d[2] = { 0.5, 0.5 };
	uint64_t shape[1] = { 4 };
	struct ds_mparams mp;

	params(&mp, DS_M_TIES, 2, d, NULL);
	expect(&mp, shape, 1, zero8, x, 4, 2, want);
	expect(&mp, shape, 1, zero8, x, 4, 4, want);
}
END_TEST

static void t_half(struct ds_tparams *tp)
{
	tp->param[DS_P_T] = 0.5;
}

/* slerp of orthogonal unit vectors at t = 1/2: sin(pi/4) each. */
START_TEST(slerp_orthogonal)
{
	static const float b[2] = { 1, 0 }, x1[2] = { 0, 1 };
	const float *x[1] = { x1 };
	float want[2];
	uint64_t shape[1] = { 2 };
	struct ds_mparams mp;

	want[0] = want[1] = 0x1.6a09e6p-1f;     /* (float)sqrt(0.5) */
	params(&mp, DS_M_SLERP, 1, NULL, t_half);
	expect(&mp, shape, 1, b, x, 2, 65536, want);
}
END_TEST

static void t_quarter(struct ds_tparams *tp)
{
	tp->param[DS_P_T] = 0.25;
}

/* Colinear inputs fall back to the linear blend: 0.75 v0 + 0.25 v1. */
START_TEST(slerp_colinear)
{
	static const float b[3] = { 1, 2, -4 }, x1[3] = { 2, 4, -8 };
	static const float want[3] = { 1.25f, 2.5f, -5 };
	const float *x[1] = { x1 };
	uint64_t shape[1] = { 3 };
	struct ds_mparams mp;

	params(&mp, DS_M_SLERP, 1, NULL, t_quarter);
	expect(&mp, shape, 1, b, x, 3, 65536, want);
}
END_TEST

/* model_stock: orthogonal deltas give t = 0 (the base), equal ones t = 1. */
START_TEST(model_stock_extremes)
{
	static const float b[2] = { 0.5f, -1 };
	static const float xa[2] = { 1.5f, -1 }, xb[2] = { 0.5f, 1 };
	static const float xc[2] = { 2, 3 };
	const float *orth[2] = { xa, xb }, *same[2] = { xc, xc };
	uint64_t shape[1] = { 2 };
	struct ds_mparams mp;

	params(&mp, DS_M_MODEL_STOCK, 2, NULL, NULL);
	expect(&mp, shape, 1, b, orth, 2, 65536, b);
	expect(&mp, shape, 1, b, same, 2, 65536, xc);
}
END_TEST

/* karcher of two equal models is that model. */
START_TEST(karcher_equal)
{
	static const float xs[4] = { 0.25f, -2, 3, 0.5f };
	const float *x[2] = { xs, xs };
	uint64_t shape[1] = { 4 };
	struct ds_mparams mp;

	params(&mp, DS_M_KARCHER, 2, NULL, NULL);
	expect(&mp, shape, 1, zero8, x, 4, 65536, xs);
}
END_TEST

/* sce, select_topk 1: weights from mean squared deltas, TIES consensus. */
START_TEST(sce_weights)
{
	static const float x0[2] = { 1, -2 }, x1[2] = { 3, 2 };
	const float *x[2] = { x0, x1 };
	/* w0 = 2.5 / 9, w1 = 6.5 / 9; element 1: only +2 agrees with S >= 0 */
	float w0 = (float)(2.5 / 9.0), w1 = (float)(6.5 / 9.0), want[2];
	uint64_t shape[1] = { 2 };
	struct ds_mparams mp;

	want[0] = (((0.0f + w0 * 1.0f) + w1 * 3.0f)) / ((0.0f + w0) + w1);
	want[1] = 0.0f + ((0.0f + w1 * 2.0f) / (0.0f + w1));
	params(&mp, DS_M_SCE, 2, NULL, NULL);
	expect(&mp, shape, 1, zero8, x, 2, 65536, want);
}
END_TEST

static void eps0(struct ds_tparams *tp)
{
	tp->epsilon[0] = 0.0;
}

/* della with epsilon 0 is DARE with p = 1 - d, element for element. */
START_TEST(della_eps0_is_dare)
{
	enum { N = 4096 };
	static float b[N], xs[N], want[N];
	const float *x[1] = { xs };
	double d[1] = { 0.375 };
	uint64_t shape[2] = { 8, N / 8 };
	struct ds_mparams mp, dare;
	struct ds_window win = { 0 };
	float *scr = aligned_alloc(64, ds_method_scratch_floats(1) * 4);

	for (unsigned i = 0; i < N; i++) {
		b[i] = (float)(i % 17) / 8;
		xs[i] = b[i] + (float)((int)(i % 29) - 14) / 64;
	}
	params(&dare, DS_M_DARE_LINEAR, 1, d, NULL);
	win = (struct ds_window){ .base = b, .bdt = DS_DT_F32, .x = { xs },
		.xdt = { DS_DT_F32 }, .out = want, .odt = DS_DT_F32,
		.i0 = 0, .n = N };
	ds_method_window(ds_kernel_get("scalar"), &dare, &win, scr);
	free(scr);
	params(&mp, DS_M_DELLA_LINEAR, 1, d, eps0);
	expect(&mp, shape, 2, b, x, N, 1024, want);
}
END_TEST

/* passthrough with scale 2 doubles every element. */
static void scale2(struct ds_tparams *tp)
{
	tp->param[DS_P_SCALE] = 2;
}

START_TEST(passthrough_scale)
{
	static const float xs[3] = { 1.5f, -0.25f, 3 };
	static const float want[3] = { 3, -0.5f, 6 };
	const float *x[1] = { xs };
	uint64_t shape[1] = { 3 };
	struct ds_mparams mp;

	params(&mp, DS_M_PASSTHROUGH, 1, NULL, scale2);
	expect(&mp, shape, 1, zero8, x, 3, 2, want);
}
END_TEST

/* Parameters the methods refuse before anything is read. */
START_TEST(refused)
{
	ds_ctx *ctx = ds_ctx_create();
	struct ds_tparams tp;
	struct ds_mparams mp;

	defaults(&tp);
	tp.n = 2;
	tp.j[1] = tp.sj[1] = 1;
	tp.weight[0] = tp.weight[1] = 1;
	tp.density[0] = tp.density[1] = 0.1;
	tp.epsilon[0] = tp.epsilon[1] = 0.15;   /* 0.1 - 0.15 <= 0 */
	ck_assert_int_eq(ds_mparams_from(ctx, &mp, DS_M_DELLA, &tp), DS_E_USAGE);
	ck_assert_ptr_nonnull(strstr(ds_ctx_error(ctx), "epsilon"));
	ck_assert_int_eq(ds_mparams_from(ctx, &mp, DS_M_SLERP, &tp), DS_E_USAGE);
	ck_assert_ptr_nonnull(strstr(ds_ctx_error(ctx), "exactly 1 model"));
	tp.n = 1;
	ck_assert_int_eq(ds_mparams_from(ctx, &mp, DS_M_MODEL_STOCK, &tp),
			 DS_E_USAGE);
	ck_assert_ptr_nonnull(strstr(ds_ctx_error(ctx), "at least 2"));
	tp.gamma[0] = 1.5;
	ck_assert_int_eq(ds_mparams_from(ctx, &mp, DS_M_BREADCRUMBS, &tp),
			 DS_E_USAGE);
	ck_assert_ptr_nonnull(strstr(ds_ctx_error(ctx), "gamma 1.5"));
	ds_ctx_free(ctx);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("passes");
	TCase *tc = tcase_create("methods");

	tcase_add_test(tc, ties_index_rule);
	tcase_add_test(tc, ties_equal_run);
	tcase_add_test(tc, ties_passes_taken);
	tcase_add_test(tc, ties_run_every_cut);
	tcase_add_test(tc, ties_two_runs);
	tcase_add_test(tc, ties_l1_counts_first);
	tcase_add_test(tc, breadcrumbs_ranks);
	tcase_add_test(tc, nan_ranks_first);
	tcase_add_test(tc, ties_two_models);
	tcase_add_test(tc, slerp_orthogonal);
	tcase_add_test(tc, slerp_colinear);
	tcase_add_test(tc, model_stock_extremes);
	tcase_add_test(tc, karcher_equal);
	tcase_add_test(tc, sce_weights);
	tcase_add_test(tc, della_eps0_is_dare);
	tcase_add_test(tc, passthrough_scale);
	tcase_add_test(tc, refused);
	suite_add_tcase(s, tc);
	return run_suite(s);
}

/* SPDX-License-Identifier: MIT */
/* test_stats.c - the |delta| histogram and delta scans, hand-computed (Check) */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/ctx.h"
#include "inputs/model.h"
#include "stats/stats.h"
#include "testutil.h"

static struct ds_hist *h;

static void hist_setup(void)
{
	h = calloc(1, sizeof(*h));
	ck_assert_ptr_nonnull(h);
	ds_hist_reset(h);
}

static void hist_teardown(void)
{
	free(h);
}

static float u2f(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

static uint32_t f2u(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

/* The figures of the deltas d[0..n). */
static struct ds_delta_stats of(const float *d, size_t n)
{
	struct ds_delta_stats s;

	ds_hist_reset(h);
	ds_hist_add(h, d, n);
	ds_hist_stats(h, &s);
	return s;
}

/* ---- the histogram ------------------------------------------------------ */

/*
 * 1..100: nearest rank r = ceil(q N) gives 50, 99, 100.  An integer k
 * below 512 is the lower edge of its bin, whose width is 2^(e-8) for
 * 2^e <= k < 2^(e+1): 50 -> 50.125, 99 -> 99.25, 100 -> 100.25, clamped
 * to the maximum 100.
 */
START_TEST(percentiles_of_1_to_100)
{
	float d[100];
	struct ds_delta_stats s;

	for (int k = 0; k < 100; k++)
		d[k] = (float)(k % 2 ? -(k + 1) : k + 1);   /* sign is dropped */
	s = of(d, 100);
	ck_assert_uint_eq(s.n, 100);
	ck_assert_uint_eq(s.nan, 0);
	ck_assert_uint_eq(s.zeros, 0);
	ck_assert(s.max == 100.0f);
	ck_assert(s.sum == 5050.0);
	ck_assert(s.mean == 50.5);
	ck_assert(s.p50 == 50.125f);
	ck_assert(s.p99 == 99.25f);
	ck_assert(s.p999 == 100.0f);
}
END_TEST

/* A value inside its bin reports the bin's upper edge: 1.003 lies in
 * [1, 1 + 1/256), so it is reported as 1.00390625. */
START_TEST(upper_edge_of_the_bin)
{
	float d[3] = { 1.003f, 0.5f, 7.0f };
	struct ds_delta_stats s = of(d, 3);

	ck_assert(s.p50 == 1.00390625f);
	ck_assert(s.p99 == 7.0f);       /* 7.0 is the maximum: clamped */
	ck_assert(s.max == 7.0f);
}
END_TEST

START_TEST(one_value)
{
	float d = -0.0123f;
	struct ds_delta_stats s = of(&d, 1);

	ck_assert(s.max == 0.0123f);
	ck_assert(s.p50 == 0.0123f && s.p99 == 0.0123f && s.p999 == 0.0123f);
	ck_assert(s.mean == (double)0.0123f);
}
END_TEST

/* Exact zeros (either sign) are counted; a percentile that falls on one
 * is 0, not the top of bin 0 (which also holds the smallest subnormals). */
START_TEST(zeros)
{
	float d[10] = { 0.0f, -0.0f, 0.0f, 0.0f, -0.0f, 0.0f, 0.0f, 0.0f,
			0.25f, -0.5f };
	struct ds_delta_stats s = of(d, 10);

	ck_assert_uint_eq(s.zeros, 8);
	ck_assert(s.p50 == 0.0f);
	ck_assert(!signbit(s.p50));
	ck_assert(s.p99 == 0.5f);
	ck_assert(s.mean == 0.075);
	/* rank 9 of 10 (p = 0.9 exactly): 0.25, the lower edge of its bin */
	ck_assert(ds_hist_percentile(h, 9, 10) == 0.25f + 1.0f / 1024);
	ck_assert(ds_hist_percentile(h, 8, 10) == 0.0f);
}
END_TEST

/* Subnormal deltas are not zeros: bin 0 holds them, clamped to the max. */
START_TEST(subnormals)
{
	float d[3] = { u2f(1), u2f(2), 0.0f };
	struct ds_delta_stats s = of(d, 3);

	ck_assert_uint_eq(s.zeros, 1);
	ck_assert(s.max == u2f(2));
	ck_assert(s.p50 == u2f(2));     /* the top of bin 0, clamped */
	ck_assert(s.p99 == u2f(2));
}
END_TEST

/* NaN deltas are counted apart and left out of everything else. */
START_TEST(nan_is_left_out)
{
	float d[5] = { NAN, 1.0f, -NAN, 3.0f, u2f(0x7fc12345) };
	struct ds_delta_stats s = of(d, 5);

	ck_assert_uint_eq(s.n, 5);
	ck_assert_uint_eq(s.nan, 3);
	ck_assert(s.mean == 2.0);
	ck_assert(s.max == 3.0f);
	ck_assert(s.p50 == 1.0f + 1.0f / 256);
	ck_assert(s.p99 == 3.0f);
	ck_assert_int_eq(ds_delta_verdict(&s), DS_DELTA_CPT);
}
END_TEST

START_TEST(all_nan)
{
	float d[2] = { NAN, NAN };
	struct ds_delta_stats s = of(d, 2);

	ck_assert_uint_eq(s.n, 2);
	ck_assert_uint_eq(s.nan, 2);
	ck_assert(s.max == 0 && s.mean == 0 && s.p99 == 0);
	ck_assert_int_eq(ds_delta_verdict(&s), DS_DELTA_NONE);
}
END_TEST

/* An infinite |delta| is a value: the max, the mean and the top ranks. */
START_TEST(infinity_is_a_value)
{
	float d[4] = { 1.0f, -INFINITY, 2.0f, 4.0f };
	struct ds_delta_stats s = of(d, 4);

	ck_assert_uint_eq(s.nan, 0);
	ck_assert(isinf(s.max) && s.max > 0);
	ck_assert(isinf(s.mean));
	ck_assert(isinf(s.p99) && isinf(s.p999));
	ck_assert(s.p50 == 2.0f + 1.0f / 128);
	/* the bin below +inf: its upper edge is +inf, clamped to the max */
	{
		float e[2] = { u2f(0x7f7fffff), 1.0f };

		s = of(e, 2);
		ck_assert(s.p99 == u2f(0x7f7fffff));
	}
}
END_TEST

/* d = x - b in binary32: inf - inf and NaN inputs are NaN deltas. */
START_TEST(deltas_from_inputs)
{
	float b[6] = { 1.0f, INFINITY, NAN, 0.5f, 1e30f, 3.0f };
	float x[6] = { 1.0f, INFINITY, 2.0f, 0.25f, -1e30f, 3.0f + 1.0f / 4 };
	struct ds_delta_stats s;

	ds_hist_reset(h);
	ds_hist_add_delta(h, b, x, 6);
	ds_hist_stats(h, &s);
	ck_assert_uint_eq(s.n, 6);
	ck_assert_uint_eq(s.nan, 2);
	ck_assert_uint_eq(s.zeros, 1);
	ck_assert(s.max == 2e30f);
	ck_assert(s.sum == 0.0 + 0.25 + (double)2e30f + 0.25);   /* in order */
}
END_TEST

/* Merging per-tensor histograms is adding them up. */
START_TEST(merge_is_concatenation)
{
	struct ds_hist *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	struct ds_delta_stats s1, s2;
	float d[300];
	uint32_t x = 12345;

	ck_assert(a && b);
	for (int k = 0; k < 300; k++) {
		x = x * 1664525u + 1013904223u;
		d[k] = ldexpf((float)(x >> 8) / 16777216.0f, -(int)(x % 20));
	}
	ds_hist_reset(a);
	ds_hist_reset(b);
	ds_hist_add(a, d, 100);
	ds_hist_add(b, d + 100, 200);
	ds_hist_reset(h);
	ds_hist_merge(h, a);
	ds_hist_merge(h, b);
	ds_hist_stats(h, &s1);
	ds_hist_reset(a);
	ds_hist_add(a, d, 300);
	ds_hist_stats(a, &s2);
	ck_assert(s1.max == s2.max && s1.p50 == s2.p50 && s1.p99 == s2.p99 &&
		  s1.p999 == s2.p999 && s1.zeros == s2.zeros);
	ck_assert_uint_eq(s1.n, 300);
	/* sums of parts, then added: within a rounding of the single sum */
	ck_assert(fabs(s1.sum - s2.sum) <= 1e-15 * s2.sum);
	/* reset clears the bins in use: a fresh start */
	ds_hist_reset(h);
	ds_hist_stats(h, &s1);
	ck_assert_uint_eq(s1.n, 0);
	ck_assert(ds_hist_percentile(h, 1, 2) == 0.0f);
	for (uint32_t k = 0; k < DS_HIST_BINS; k++)
		ck_assert_uint_eq(h->bin[k], 0);
	free(a);
	free(b);
}
END_TEST

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? -1 : x > y;
}

/* The documented resolution: t <= reported <= t (1 + 2^-8) for the true
 * nearest-rank percentile t, over many magnitudes and ranks. */
START_TEST(resolution_holds)
{
	enum { N = 10007 };
	float *d = malloc(N * sizeof(float));
	uint32_t x = 99;
	static const unsigned q[][2] = { { 1, 2 }, { 99, 100 }, { 999, 1000 },
					 { 1, 10 }, { 1, 1000 }, { 1, 1 } };

	ck_assert_ptr_nonnull(d);
	for (int k = 0; k < N; k++) {
		x = x * 1664525u + 1013904223u;
		d[k] = ldexpf(1.0f + (float)(x >> 9) / 8388608.0f,
			      -(int)(x % 17) - 3);
	}
	ds_hist_reset(h);
	ds_hist_add(h, d, N);
	qsort(d, N, sizeof(float), cmp_float);
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		uint64_t r = ((uint64_t)N * q[i][0] + q[i][1] - 1) / q[i][1];
		float t = d[r - 1], p = ds_hist_percentile(h, q[i][0], q[i][1]);

		ck_assert_msg(t <= p && (double)p <= (double)t * (1 + 1.0 / 256),
			      "q %u/%u: true %a, reported %a", q[i][0], q[i][1],
			      (double)t, (double)p);
		/* and exactly the documented value: the bin's upper edge */
		ck_assert(f2u(p) == (((f2u(t) >> 15) + 1) << 15) ||
			  p == d[N - 1]);
	}
	free(d);
}
END_TEST

/* ---- the verdict -------------------------------------------------------- */

START_TEST(verdict_limits)
{
	struct ds_delta_stats s = { .n = 10 };

	s.p99 = 0.0f;
	ck_assert_int_eq(ds_delta_verdict(&s), DS_DELTA_SFT);
	s.p99 = (float)DS_DELTA_SFT_P99;        /* 0.00999999977 <= 0.01 */
	ck_assert_int_eq(ds_delta_verdict(&s), DS_DELTA_SFT);
	s.p99 = nextafterf((float)DS_DELTA_SFT_P99, 1);  /* 0.0100000007 */
	ck_assert_int_eq(ds_delta_verdict(&s), DS_DELTA_BETWEEN);
	s.p99 = 0.02f;
	ck_assert_int_eq(ds_delta_verdict(&s), DS_DELTA_BETWEEN);
	s.p99 = 0.0301f;
	ck_assert_int_eq(ds_delta_verdict(&s), DS_DELTA_CPT);
	s.p99 = INFINITY;
	ck_assert_int_eq(ds_delta_verdict(&s), DS_DELTA_CPT);
	s.nan = 10;
	ck_assert_int_eq(ds_delta_verdict(&s), DS_DELTA_NONE);
	ck_assert_str_eq(ds_delta_verdict_name(DS_DELTA_SFT), "sft");
	ck_assert_str_eq(ds_delta_verdict_name(DS_DELTA_BETWEEN), "between");
	ck_assert_str_eq(ds_delta_verdict_name(DS_DELTA_CPT), "cpt");
	ck_assert_str_eq(ds_delta_verdict_name(DS_DELTA_NONE), "none");
	ck_assert_ptr_null(ds_delta_verdict_name((enum ds_delta_verdict)9));
	ck_assert_str_eq(ds_delta_skip_name(DS_DELTA_SHAPE), "shape");
	ck_assert_ptr_null(ds_delta_skip_name((enum ds_delta_skip)99));
}
END_TEST

/* ---- scans of small models ---------------------------------------------- */

static ds_ctx *ctx;
static char warned[4096];

static void log_fn(void *user, enum ds_log_level lv, const char *msg)
{
	size_t n = strlen(warned);

	(void)user;
	snprintf(warned + n, sizeof(warned) - n, "%s%s\n",
		 lv == DS_LOG_WARNING ? "warning: " : "", msg);
}

static void scan_setup(void)
{
	hist_setup();
	ck_assert_ptr_nonnull(scratch_make("ds-test-stats-"));
	ctx = ds_ctx_create();
	ck_assert_ptr_nonnull(ctx);
	ds_ctx_set_log(ctx, log_fn, NULL);
	warned[0] = '\0';
}

static void scan_teardown(void)
{
	ds_ctx_free(ctx);
	scratch_remove();
	hist_teardown();
}

struct tdef {
	const char *name;
	enum ds_dtype dt;
	uint64_t d0, d1;          /* d1 0: one dimension */
	const void *data;
};

/* A one-file model at path holding the tensors t[0..n). */
static void write_model(const char *path, const struct tdef *t, size_t n)
{
	struct ds_tensor *ts = calloc(n, sizeof(*ts));
	uint64_t off = 0;
	char *hdr;
	size_t hlen;

	ck_assert_ptr_nonnull(ts);
	for (size_t i = 0; i < n; i++) {
		ts[i].name = (char *)t[i].name;
		ts[i].dtype = t[i].dt;
		ts[i].ndim = t[i].d1 ? 2 : 1;
		ts[i].shape[0] = t[i].d0;
		ts[i].shape[1] = t[i].d1;
		ts[i].numel = t[i].d0 * (t[i].d1 ? t[i].d1 : 1);
		ts[i].begin = off;
		off += ts[i].numel * ds_dtype_size(t[i].dt);
		ts[i].end = off;
	}
	ck_assert_int_eq(ds_st_build(ts, n, NULL, &hdr, &hlen), 0);
	write_raw(path, hdr, hlen);
	for (size_t i = 0; i < n; i++)
		append_raw(path, t[i].data, ts[i].end - ts[i].begin);
	free(hdr);
	free(ts);
}

#define BIG 5000                /* more than one window at --memory 64K */

static float fb[BIG], fx[BIG];
static uint16_t hb[BIG];
static int64_t ids[4] = { 0, 1, 2, 3 };
static double f64[2] = { 1, 2 };

/* Results of one scan, by tensor. */
struct got {
	char name[8][64];
	enum ds_delta_skip skip[8];
	struct ds_delta_stats s[8];
	int n;
};

static void collect(void *user, const struct ds_delta_tensor *t)
{
	struct got *g = user;

	ck_assert_int_lt(g->n, 8);
	snprintf(g->name[g->n], sizeof(g->name[0]), "%s", t->name);
	g->skip[g->n] = t->skip;
	g->s[g->n++] = t->s;
}

static uint16_t bf16_of(float f)        /* exact for these values */
{
	return (uint16_t)(f2u(f) >> 16);
}

/*
 * base: w F32 [5000] (k / 1024), e BF16 [50, 100], pos I64 [4], big F64
 * [2], gone F32 [2]; model: w F32 (k / 1024 + 1/256 for k even), e BF16
 * equal to the base, pos, big, and shape-changed "n" and a new "extra".
 */
static void make_pair(void)
{
	static float gone[2] = { 1, 2 }, nb[6], nm[8], extra[2];
	static uint16_t hm[BIG];
	struct tdef base[] = {
		{ "w", DS_DT_F32, BIG, 0, fb }, { "e", DS_DT_BF16, 50, 100, hb },
		{ "pos", DS_DT_I64, 4, 0, ids }, { "big", DS_DT_F64, 2, 0, f64 },
		{ "gone", DS_DT_F32, 2, 0, gone }, { "n", DS_DT_F32, 6, 0, nb },
	};
	struct tdef model[] = {
		{ "e", DS_DT_BF16, 50, 100, hm }, { "w", DS_DT_F32, BIG, 0, fx },
		{ "pos", DS_DT_I64, 4, 0, ids }, { "big", DS_DT_F64, 2, 0, f64 },
		{ "n", DS_DT_F32, 8, 0, nm }, { "extra", DS_DT_F32, 2, 0, extra },
	};

	for (int k = 0; k < BIG; k++) {
		fb[k] = (float)k / 1024;
		fx[k] = fb[k] + (k % 2 ? 0.0f : 1.0f / 256);
		hb[k] = hm[k] = bf16_of((float)(k % 64) / 8);
	}
	write_model(P("base.safetensors"), base, 6);
	write_model(P("ft.safetensors"), model, 6);
}

static void run_scan(uint64_t memory, enum ds_io_backend io, struct got *g,
		     struct ds_delta_stats *all)
{
	struct ds_delta_opts o = { .memory = memory, .io = io };
	ds_delta_scan *sc;
	uint64_t w;

	memset(g, 0, sizeof(*g));
	ck_assert_int_eq(ds_delta_scan_create(ctx, P("base.safetensors"), &o,
					      &sc), 0);
	ds_delta_scan_info(sc, &w, NULL, NULL);
	if (memory == 64 << 10)
		ck_assert_uint_lt(w, BIG);      /* w spans several windows */
	ck_assert_int_eq(ds_delta_scan_run(sc, P("ft.safetensors"), collect, g,
					   all), 0);
	ds_delta_scan_free(sc);
}

START_TEST(scan_reports_every_tensor)
{
	struct got g;
	struct ds_delta_stats all;

	make_pair();
	run_scan(64 << 10, DS_IO_PREAD, &g, &all);
	ck_assert_int_eq(g.n, 7);
	/* the base's order, then the model's extra tensor */
	ck_assert_str_eq(g.name[0], "w");
	ck_assert_int_eq(g.skip[0], DS_DELTA_COMPARED);
	ck_assert_uint_eq(g.s[0].n, BIG);
	ck_assert_uint_eq(g.s[0].zeros, BIG / 2);
	ck_assert(g.s[0].max == 1.0f / 256);
	ck_assert(g.s[0].mean == 1.0 / 512);
	ck_assert(g.s[0].p50 == 0.0f);
	ck_assert(g.s[0].p99 == 1.0f / 256);
	ck_assert_str_eq(g.name[1], "e");
	ck_assert_int_eq(g.skip[1], DS_DELTA_COMPARED);
	ck_assert_uint_eq(g.s[1].zeros, 5000);
	ck_assert_str_eq(g.name[2], "pos");
	ck_assert_int_eq(g.skip[2], DS_DELTA_NOT_FLOAT);
	ck_assert_str_eq(g.name[3], "big");
	ck_assert_int_eq(g.skip[3], DS_DELTA_DTYPE);
	ck_assert_str_eq(g.name[4], "gone");
	ck_assert_int_eq(g.skip[4], DS_DELTA_MISSING);
	ck_assert_str_eq(g.name[5], "n");
	ck_assert_int_eq(g.skip[5], DS_DELTA_SHAPE);
	ck_assert_str_eq(g.name[6], "extra");
	ck_assert_int_eq(g.skip[6], DS_DELTA_EXTRA);
	ck_assert_uint_eq(all.n, 2 * BIG);
	ck_assert_uint_eq(all.zeros, BIG + BIG / 2);
	ck_assert(all.sum == g.s[0].sum + g.s[1].sum);
	ck_assert(all.p99 == 1.0f / 256);
	ck_assert_int_eq(ds_delta_verdict(&all), DS_DELTA_SFT);
	/* the warnings name the model and the tensor */
	ck_assert_ptr_nonnull(strstr(warned, "warning: "));
	ck_assert_ptr_nonnull(strstr(warned, "'gone' of the base is missing"));
	ck_assert_ptr_nonnull(strstr(warned, "'n' has shape [8], the base's [6]"));
	ck_assert_ptr_nonnull(strstr(warned, "'big' is F64"));
	ck_assert_ptr_nonnull(strstr(warned, "ft.safetensors: tensor 'extra'"));
}
END_TEST

/* The figures do not depend on the window size or the I/O backend. */
START_TEST(scan_is_window_invariant)
{
	struct got a, b;
	struct ds_delta_stats sa, sb;

	make_pair();
	run_scan(64 << 10, DS_IO_PREAD, &a, &sa);
	run_scan(0, DS_IO_AUTO, &b, &sb);
	ck_assert_int_eq(a.n, b.n);
	for (int i = 0; i < a.n; i++)
		ck_assert(!memcmp(&a.s[i], &b.s[i], sizeof(a.s[i])));
	ck_assert(!memcmp(&sa, &sb, sizeof(sa)));
}
END_TEST

START_TEST(scan_errors)
{
	struct ds_delta_opts o = { .memory = 1000 };
	struct tdef only[] = { { "pos", DS_DT_I64, 4, 0, ids } };
	struct ds_delta_stats all;
	ds_delta_scan *sc;

	make_pair();
	ck_assert_int_eq(ds_delta_scan_create(ctx, P("base.safetensors"), &o,
					      &sc), DS_E_USAGE);
	ck_assert_ptr_nonnull(strstr(ds_ctx_error(ctx), "too small"));
	ck_assert_int_eq(ds_delta_scan_create(ctx, P("nope"), NULL, &sc),
			 DS_E_NOTFOUND);
	ck_assert_ptr_nonnull(strstr(ds_ctx_error(ctx), "nope"));
	ck_assert_int_eq(ds_delta_scan_create(ctx, P("base.safetensors"), NULL,
					      &sc), 0);
	ck_assert_int_eq(ds_delta_scan_run(sc, P("missing"), NULL, NULL, &all),
			 DS_E_NOTFOUND);
	/* nothing in common that is a float: an error, not a verdict */
	write_model(P("ints.safetensors"), only, 1);
	ck_assert_int_eq(ds_delta_scan_run(sc, P("ints.safetensors"), NULL,
					   NULL, &all), DS_E_MISMATCH);
	ck_assert_ptr_nonnull(strstr(ds_ctx_error(ctx), "ints.safetensors"));
	/* the scan is still usable after an error */
	ck_assert_int_eq(ds_delta_scan_run(sc, P("ft.safetensors"), NULL, NULL,
					   &all), 0);
	ck_assert_uint_eq(all.n, 2 * BIG);
	ds_delta_scan_free(sc);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("stats");
	TCase *hist = tcase_create("histogram"), *scan = tcase_create("scan");

	tcase_add_checked_fixture(hist, hist_setup, hist_teardown);
	tcase_add_checked_fixture(scan, scan_setup, scan_teardown);
	suite_add_tcase(s, hist);
	suite_add_tcase(s, scan);
	tcase_add_test(hist, percentiles_of_1_to_100);
	tcase_add_test(hist, upper_edge_of_the_bin);
	tcase_add_test(hist, one_value);
	tcase_add_test(hist, zeros);
	tcase_add_test(hist, subnormals);
	tcase_add_test(hist, nan_is_left_out);
	tcase_add_test(hist, all_nan);
	tcase_add_test(hist, infinity_is_a_value);
	tcase_add_test(hist, deltas_from_inputs);
	tcase_add_test(hist, merge_is_concatenation);
	tcase_add_test(hist, resolution_holds);
	tcase_add_test(hist, verdict_limits);
	tcase_add_test(scan, scan_reports_every_tensor);
	tcase_add_test(scan, scan_is_window_invariant);
	tcase_add_test(scan, scan_errors);
	return s;
}

int main(void)
{
	return run_suite(suite());
}

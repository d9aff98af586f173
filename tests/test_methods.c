/* SPDX-License-Identifier: MIT */
/* test_methods.c - merge methods on hand-computed cases; parameter checks */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "common/ctx.h"
#include "methods/methods.h"
#include "testutil.h"

#define NAME1 "model.layers.0.mlp.up_proj.weight"
#define NAME2 "lm_head.weight"
#define SEED2 0x123456789abcdef0ull

static float *scratch;
static ds_ctx *ctx;

/* Scratch for up to DS_MAX_MODELS models, and a context. */
static void setup(void)
{
	scratch = aligned_alloc(64, ds_method_scratch_floats(DS_MAX_MODELS) *
				    sizeof(float));
	ctx = ds_ctx_create();
	ck_assert_ptr_nonnull(scratch);
	ck_assert_ptr_nonnull(ctx);
}

/* Free what setup made. */
static void teardown(void)
{
	free(scratch);
	ds_ctx_free(ctx);
}

/* Bits of a float. */
static uint32_t fb(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

/* Run a window of F32 inputs on every path; out from the scalar one. */
static void run(const struct ds_mparams *mp, const float *b,
		const float *const *x, uint64_t i0, size_t n, float *out)
{
	static const char *const names[] = {
		"scalar", "avx2", "avx512", "neon"
	};
	struct ds_window win = { 0 };
	static float other[5000];
	unsigned j, p;

	win.base = b;
	win.bdt = DS_DT_F32;
	for (j = 0; j < mp->n; j++) {
		win.x[j] = x[j];
		win.xdt[j] = DS_DT_F32;
	}
	win.odt = DS_DT_F32;
	win.i0 = i0;
	win.n = n;
	win.out = out;
	ds_method_window(ds_kernel_get("scalar"), mp, &win, scratch);
	for (p = 1; p < sizeof(names) / sizeof(names[0]) && n <= 5000; p++) {
		if (!ds_kernel_get(names[p]))
			continue;
		win.out = other;
		ds_method_window(ds_kernel_get(names[p]), mp, &win, scratch);
		ck_assert_mem_eq(other, out, n * sizeof(float));
	}
}

/* Bits of got[0..n) equal want[0..n). */
static void expect(const float *got, const float *want, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		ck_assert_msg(fb(got[k]) == fb(want[k]),
			      "element %zu: got %a, want %a", k, got[k], want[k]);
}

/* run() a window of n elements from i0; the result is want, bit for bit. */
static void expect_window(const struct ds_mparams *mp, const float *b,
			  const float *const *x, uint64_t i0, size_t n,
			  const float *want)
{
	float out[16];

	ck_assert_uint_le(n, 16);
	run(mp, b, x, i0, n, out);
	expect(out, want, n);
}

/* Parameters that must be accepted. */
static void init_ok(struct ds_mparams *mp, enum ds_method m, unsigned n,
		    const double *w, const double *p, double lambda,
		    int normalize, uint64_t seed, const char *name)
{
	ck_assert_msg(ds_mparams_init(ctx, mp, m, n, w, p, lambda, normalize,
				      DS_RESCALE_INVERSE, seed) == 0,
		      "%s", ds_ctx_error(ctx));
	ds_mparams_tensor(mp, name);
}

/* ---- methods ---------------------------------------------------------- */

START_TEST(linear)
{
	static const float x0[4] = { 1, 2, -4, 0.5f }, x1[4] = { 3, 6, 8, -0.5f };
	static const float norm[4] = { 2.5f, 5, 5, -0.25f };
	static const float sum[4] = { 10, 20, 20, -1 };
	const float *x[2] = { x0, x1 };
	double w[2] = { 1, 3 };
	struct ds_mparams mp;

	init_ok(&mp, DS_M_LINEAR, 2, w, NULL, 1, -1, 0, "t");
	ck_assert(mp.normalize);
	expect_window(&mp, NULL, x, 0, 4, norm);        /* no base needed */
	init_ok(&mp, DS_M_LINEAR, 2, w, NULL, 1, 0, 0, "t");
	expect_window(&mp, NULL, x, 0, 4, sum);
}
END_TEST

/* out = b + lambda * sum w (x - b), normalize off (default) and on. */
START_TEST(task_arithmetic)
{
	static const float b[4] = { 1, 1, 0, -2 };
	static const float x0[4] = { 2, 0, 0.5f, -2 }, x1[4] = { 3, 5, -1, -1 };
	static const float plain[4] = { 5, 3, 0, -1 };
	static const float norm[4] = { 4, 4, -0.5f, -1 };
	const float *x[2] = { x0, x1 };
	double w[2] = { 1, 0.5 }, w1[2] = { 1, 1 };
	struct ds_mparams mp;

	/* d0 = 1 -1 .5 0, d1 = 2 4 -1 1; acc = 2 1 0 .5; out = b + 2 acc */
	init_ok(&mp, DS_M_TASK_ARITHMETIC, 2, w, NULL, 2, -1, 0, "t");
	ck_assert(!mp.normalize);
	expect_window(&mp, b, x, 0, 4, plain);
	/* acc = 3 3 -.5 1, / 2, out = b + 2 (acc / 2) */
	init_ok(&mp, DS_M_TASK_ARITHMETIC, 2, w1, NULL, 2, 1, 0, "t");
	expect_window(&mp, b, x, 0, 4, norm);
}
END_TEST

/* The ends of p: 0 is task arithmetic, 1 gives the base back. */
START_TEST(dare_p0_p1)
{
	static const float b[4] = { 1, 1, 0, -2 };
	static const float x0[4] = { 2, 0, 0.5f, -2 }, x1[4] = { 3, 5, -1, -1 };
	static const float plain[4] = { 5, 3, 0, -1 };
	const float *x[2] = { x0, x1 };
	double w[2] = { 1, 0.5 }, p0[2] = { 0, 0 }, p1[2] = { 1, 1 };
	struct ds_mparams mp;

	/* p = 0 keeps everything with s = 1: task arithmetic. */
	init_ok(&mp, DS_M_DARE_LINEAR, 2, w, p0, 2, -1, 7, "t");
	expect_window(&mp, b, x, 0, 4, plain);
	/* p = 1 drops everything: out is the base, bit for bit. */
	init_ok(&mp, DS_M_DARE_LINEAR, 2, w, p1, 3, -1, 7, "t");
	expect_window(&mp, b, x, 0, 4, b);
	init_ok(&mp, DS_M_DARE_TIES, 2, w, p1, 3, 1, 7, "t");
	expect_window(&mp, b, x, 0, 4, b);
}
END_TEST

/*
 * DESIGN 4, first worked example: seed 0, j 0, NAME1, p 0.5 keeps
 * 1000111100010110, s = 2.  b = 1, x = 1 + (k + 1) / 4.
 */
START_TEST(dare_worked_example)
{
	static const float want[16] = { 1.5f, 1, 1, 1, 3.5f, 4, 4.5f, 5,
					1, 1, 1, 7, 1, 8, 8.5f, 1 };
	float b[16], x0[16];
	const float *x[1] = { x0 }, *x5[1] = { x0 + 5 };
	double w[1] = { 1 }, p[1] = { 0.5 };
	struct ds_mparams mp;
	int k;

	for (k = 0; k < 16; k++) {
		b[k] = 1;
		x0[k] = 1 + (float)(k + 1) / 4;
	}
	init_ok(&mp, DS_M_DARE_LINEAR, 1, w, p, 1, -1, 0, NAME1);
	ck_assert_uint_eq(mp.name_hash, 0xda893b3c);
	ck_assert(mp.s[0] == 2.0f);
	expect_window(&mp, b, x, 0, 16, want);
	/* The same elements in a window that starts at i0 = 5. */
	expect_window(&mp, b + 5, x5, 5, 11, want + 5);
}
END_TEST

/* Second worked example: seed SEED2, j 2 (models 0, 1 dropped), NAME2. */
START_TEST(dare_worked_example_j2)
{
	static const float want[16] = { 1, 1, 1, 0, 0, 0, 1, 0,
					1, 1, 1, 1, 0, 1, 0, 0 };
	float b[16], xa[16], x2[16];
	const float *x[3] = { xa, xa, x2 };
	double w[3] = { 1, 1, 1 }, p[3] = { 1, 1, 0.5 };
	struct ds_mparams mp;
	int k;

	for (k = 0; k < 16; k++) {
		b[k] = 0;
		xa[k] = 100;
		x2[k] = 0.5f;
	}
	init_ok(&mp, DS_M_DARE_LINEAR, 3, w, p, 1, -1, SEED2, NAME2);
	expect_window(&mp, b, x, 0, 16, want);
}
END_TEST

/*
 * dare_ties at p = 0, w = 1 .5 .25, lambda 2.  d per element (models 0 1 2):
 * (1 -4 2) (-1 -1 4) (2 -1 -.5) (0 0 0) (-3 4 -8) (1 -2 0); e = w d;
 * S signs - - + 0 - 0, so the elected e sum to -2 -1.5 2 0 -5 1 with
 * D = .5 1.5 1 0 1.25 1.
 */
START_TEST(dare_ties_election)
{
	static const float b[6] = { 0.5f, 1, -1, 2, 0, 0.25f };
	static const float x0[6] = { 1.5f, 0, 1, 2, -3, 1.25f };
	static const float x1[6] = { -3.5f, 0, -2, 2, 4, -1.75f };
	static const float x2[6] = { 2.5f, 5, -1.5f, 2, -8, 0.25f };
	static const float plain[6] = { -3.5f, -2, 3, 2, -10, 2.25f };
	static const float norm[6] = { -7.5f, -1, 3, 2, -8, 2.25f };
	static const float drop0[6] = { -3.5f, 3, -2.25f, 2, 4, -1.75f };
	const float *x[3] = { x0, x1, x2 };
	double w[3] = { 1, 0.5, 0.25 }, p[3] = { 0, 0, 0 };
	double p1[3] = { 1, 0, 0 };
	struct ds_mparams mp;

	init_ok(&mp, DS_M_DARE_TIES, 3, w, p, 2, -1, 0, "t");
	ck_assert(!mp.normalize);
	expect_window(&mp, b, x, 0, 6, plain);
	init_ok(&mp, DS_M_DARE_TIES, 3, w, p, 2, 1, 0, "t");
	expect_window(&mp, b, x, 0, 6, norm);
	/* Model 0 dropped: e = (0 -2 .5) (0 -.5 1) (0 -.5 -.125) (0 0 0)
	 * (0 2 -2) (0 -1 0); elected sums -2 1 -.625 0 2 -1. */
	init_ok(&mp, DS_M_DARE_TIES, 3, w, p1, 2, 0, 0, "t");
	expect_window(&mp, b, x, 0, 6, drop0);
}
END_TEST

/* BF16 base, F16 model, F32/BF16/F16 out; lambda .5: b + (x - b) / 2. */
START_TEST(mixed_dtypes)
{
	static const uint16_t b[4] = { 0x3f80, 0xc000, 0x3f00, 0x0000 };
	static const uint16_t x0[4] = { 0x3e00, 0xbc00, 0x3a00, 0x0001 };
	static const float want[4] = { 1.25f, -1.5f, 0.625f, 0x1p-25f };
	static const uint16_t want_bf16[4] = { 0x3fa0, 0xbfc0, 0x3f20, 0x3300 };
	static const uint16_t want_f16[4] = { 0x3d00, 0xbe00, 0x3900, 0x0000 };
	struct ds_window win = { .base = b, .bdt = DS_DT_BF16, .n = 4 };
	const struct ds_kernel_ops *k = ds_kernel_select();
	double w[1] = { 1 };
	struct ds_mparams mp;
	uint16_t h[4];
	float out[4];

	/* The process's path (DARE_STREAM_KERNEL may force one). */
	if (!k)
		k = ds_kernel_get("scalar");
	init_ok(&mp, DS_M_TASK_ARITHMETIC, 1, w, NULL, 0.5, -1, 0, "t");
	win.x[0] = x0;
	win.xdt[0] = DS_DT_F16;
	win.out = out;
	win.odt = DS_DT_F32;
	ds_method_window(k, &mp, &win, scratch);
	expect(out, want, 4);
	win.out = h;
	win.odt = DS_DT_BF16;
	ds_method_window(k, &mp, &win, scratch);
	ck_assert_mem_eq(h, want_bf16, sizeof(h));
	win.odt = DS_DT_F16;
	ds_method_window(k, &mp, &win, scratch);
	ck_assert_mem_eq(h, want_f16, sizeof(h));
}
END_TEST

/* Any NaN result is stored as the canonical quiet NaN 0x7fc00000. */
START_TEST(nan_canonical)
{
	float b[2], x0[2], out[2];
	const float *x[1] = { x0 };
	double w[1] = { 1 };
	struct ds_mparams mp;
	uint32_t u = 0xffa00001;        /* a negative signaling NaN */

	memcpy(&x0[0], &u, 4);
	x0[1] = INFINITY;
	b[0] = 0;
	b[1] = INFINITY;                /* inf - inf */
	init_ok(&mp, DS_M_LINEAR, 1, w, NULL, 1, -1, 0, "t");
	run(&mp, NULL, x, 0, 1, out);
	ck_assert_uint_eq(fb(out[0]), 0x7fc00000);
	init_ok(&mp, DS_M_TASK_ARITHMETIC, 1, w, NULL, 1, -1, 0, "t");
	run(&mp, b, x, 0, 2, out);
	ck_assert_uint_eq(fb(out[0]), 0x7fc00000);
	ck_assert_uint_eq(fb(out[1]), 0x7fc00000);
}
END_TEST

/* A long window equals the same elements computed as two windows. */
START_TEST(window_split)
{
	enum { N = 5000, CUT = 1234 };
	static float b[N], x0[N], x1[N], whole[N], parts[N];
	const float *x[2] = { x0, x1 }, *xs[2] = { x0 + CUT, x1 + CUT };
	double w[2] = { 0.5, 1.5 }, p[2] = { 0.9, 0.3 };
	struct ds_mparams mp;
	int k, m;

	for (k = 0; k < N; k++) {
		b[k] = (float)k / 64;
		x0[k] = b[k] + (float)(k % 13) - 6;
		x1[k] = b[k] - (float)(k % 7) + 3;
	}
	for (m = DS_M_TASK_ARITHMETIC; m <= DS_M_DARE_TIES; m++) {
		init_ok(&mp, (enum ds_method)m, 2, w, p, 0.75, 1, 99, NAME1);
		run(&mp, b, x, 1000, N, whole);
		run(&mp, b, x, 1000, CUT, parts);
		run(&mp, b + CUT, xs, 1000 + CUT, N - CUT, parts + CUT);
		ck_assert_mem_eq(whole, parts, sizeof(whole));
	}
}
END_TEST

/* ---- parameters ------------------------------------------------------- */

START_TEST(mparams_values)
{
	double w[3] = { 0.1, 0.2, -0.3 }, p[3] = { 0.9, 0.5, 1 };
	struct ds_mparams mp;

	init_ok(&mp, DS_M_DARE_TIES, 3, w, p, 0.3, -1, 0x100000002ull, "t");
	ck_assert(mp.dare && mp.ties && mp.uses_base && !mp.normalize);
	ck_assert(mp.w[0] == (float)0.1 && mp.w[2] == (float)-0.3);
	ck_assert(mp.wsum == ((float)0.1 + (float)0.2) + (float)-0.3);
	ck_assert(mp.lambda == (float)0.3);
	ck_assert(mp.s[0] == 10.0f && mp.s[1] == 2.0f && mp.s[2] == 1.0f);
	ck_assert_uint_eq(mp.thr[0], 3865470566ull);
	ck_assert_uint_eq(mp.thr[2], 1ull << 32);
	ck_assert_uint_eq(mp.seed, 0x100000002ull);
	ck_assert_int_eq(ds_mparams_init(ctx, &mp, DS_M_DARE_LINEAR, 3, w, p,
					 1, -1, DS_RESCALE_NONE, 0), 0);
	ck_assert(mp.s[0] == 1.0f && mp.s[1] == 1.0f);
	init_ok(&mp, DS_M_TASK_ARITHMETIC, 3, w, p, 1, -1, 0, "t");
	ck_assert(!mp.dare && mp.thr[0] == 0 && mp.s[0] == 1.0f);
	ck_assert(mp.wsum == 0.0f);     /* the binary32 sum cancels */
	init_ok(&mp, DS_M_LINEAR, 3, p, NULL, 1, -1, 0, "t");
	ck_assert(mp.normalize && !mp.uses_base && mp.wsum == 2.4f);
}
END_TEST

/* Rejected with DS_E_USAGE and a message containing what. */
static void init_bad(enum ds_method m, unsigned n, const double *w,
		     const double *p, double lambda, int normalize,
		     const char *what)
{
	struct ds_mparams mp;

	ck_assert_int_eq(ds_mparams_init(ctx, &mp, m, n, w, p, lambda,
					 normalize, DS_RESCALE_INVERSE, 0),
			 DS_E_USAGE);
	ck_assert_msg(strstr(ds_ctx_error(ctx), what), "'%s' lacks '%s'",
		      ds_ctx_error(ctx), what);
}

/* Every invalid parameter is refused with a message naming it. */
START_TEST(mparams_reject)
{
	double ok[2] = { 1, 1 }, pw[2] = { 0.5, 0.5 }, w[2], p[2];

	w[0] = 1;
	w[1] = NAN;
	init_bad(DS_M_LINEAR, 2, w, NULL, 1, -1, "model 1: weight nan");
	w[1] = -INFINITY;
	init_bad(DS_M_LINEAR, 2, w, NULL, 1, -1, "model 1: weight -inf");
	p[0] = -0.1;
	p[1] = 0.5;
	init_bad(DS_M_DARE_LINEAR, 2, ok, p, 1, -1, "model 0: drop rate -0.1");
	p[0] = 0.5;
	p[1] = 1.5;
	init_bad(DS_M_DARE_LINEAR, 2, ok, p, 1, -1, "model 1: drop rate 1.5");
	p[1] = NAN;
	init_bad(DS_M_DARE_TIES, 2, ok, p, 1, -1, "model 1: drop rate nan");
	init_bad(DS_M_DARE_LINEAR, 2, ok, pw, INFINITY, -1, "lambda inf");
	init_bad(DS_M_DARE_LINEAR, 2, ok, pw, NAN, -1, "lambda nan");
	init_bad(DS_M_LINEAR, 0, ok, NULL, 1, -1, "0 models");
	init_bad(DS_M_LINEAR, DS_MAX_MODELS + 1, ok, NULL, 1, -1, "65 models");
	w[0] = 1;
	w[1] = -1;
	init_bad(DS_M_LINEAR, 2, w, NULL, 1, -1,
		 "weights sum to zero; use --no-normalize or change --weights");
	init_bad(DS_M_DARE_LINEAR, 2, w, pw, 1, 1, "weights sum to zero");
	init_bad(DS_M_COUNT, 2, ok, NULL, 1, -1, "unknown merge method");
}
END_TEST

/* Method names both ways; base and normalize defaults. */
START_TEST(method_names)
{
	static const char *const names[] = { "linear", "task_arithmetic",
		"dare_linear", "dare_ties", "ties", "breadcrumbs",
		"breadcrumbs_ties", "della", "della_linear", "slerp", "nuslerp",
		"model_stock", "sce", "karcher", "passthrough" };
	enum ds_method m;
	int i;

	for (i = 0; i < DS_M_COUNT; i++) {
		ck_assert_str_eq(ds_method_name((enum ds_method)i), names[i]);
		ck_assert_int_eq(ds_method_parse(names[i], &m), 0);
		ck_assert_int_eq(m, i);
	}
	ck_assert_ptr_null(ds_method_name(DS_M_COUNT));
	ck_assert_int_eq(ds_method_parse("arcee_fusion", &m), DS_E_USAGE);
	ck_assert_int_eq(ds_method_parse("", &m), DS_E_USAGE);
	/* mergekit's methods dare-stream lacks are told from unknown names */
	ck_assert_int_eq(ds_method_mergekit_only("arcee_fusion"), 1);
	ck_assert_int_eq(ds_method_mergekit_only("multislerp"), 1);
	ck_assert_int_eq(ds_method_mergekit_only("nearswap"), 1);
	ck_assert_int_eq(ds_method_mergekit_only("ram"), 1);
	ck_assert_int_eq(ds_method_mergekit_only("ramplus_tl"), 1);
	ck_assert_int_eq(ds_method_mergekit_only("RAM"), 0);
	ck_assert_int_eq(ds_method_mergekit_only("dare_ties"), 0);
	ck_assert_int_eq(ds_method_mergekit_only(""), 0);
	ck_assert_int_eq(ds_method_mergekit_only(NULL), 0);
	ck_assert(!ds_method_needs_base(DS_M_LINEAR));
	ck_assert(ds_method_needs_base(DS_M_DARE_TIES));
	ck_assert(ds_method_default_normalize(DS_M_LINEAR));
	ck_assert(!ds_method_default_normalize(DS_M_DARE_LINEAR));
}
END_TEST

/* One suite, one case per method or property. */
static Suite *methods_suite(void)
{
	Suite *s = suite_create("methods");
	TCase *tc = tcase_create("methods");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, linear);
	tcase_add_test(tc, task_arithmetic);
	tcase_add_test(tc, dare_p0_p1);
	tcase_add_test(tc, dare_worked_example);
	tcase_add_test(tc, dare_worked_example_j2);
	tcase_add_test(tc, dare_ties_election);
	tcase_add_test(tc, mixed_dtypes);
	tcase_add_test(tc, nan_canonical);
	tcase_add_test(tc, window_split);
	tcase_add_test(tc, mparams_values);
	tcase_add_test(tc, mparams_reject);
	tcase_add_test(tc, method_names);
	suite_add_tcase(s, tc);
	return s;
}

/* Exit status: failure if any check failed. */
int main(void)
{
	return run_suite(methods_suite());
}

/* SPDX-License-Identifier: MIT */
/* neon_selftest.c - one kernel path against DESIGN 4 known answers and scalar */

/*
 * A plain program (no Check: it is cross-compiled for aarch64 and run under
 * qemu by tests/neon-cross.sh).  It checks the path named by argv[1]
 * (default "neon") against the known answers of DESIGN 4 and, bit for
 * bit, against the scalar reference on odd lengths, odd starts, unaligned
 * buffers and inputs full of NaN, infinities, zeros and subnormals.
 * Exit 0: all passed; 1: a failure (each printed); 77: no such path here.
 * Built natively against the library it checks any path this CPU runs,
 * e.g. from a build tree on x86-64:
 *
 *   ./libtool --mode=link cc -O2 -ffp-contract=off -I. -I../include \
 *       -I../src/lib -o selftest ../tests/neon_selftest.c \
 *       libdare-stream.la -lxxhash -lm
 *   ./libtool --mode=execute ./selftest avx512     (or avx2, scalar)
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include "methods/methods.h"
#include "kernels/kernels.h"

#define SEED2 0x123456789abcdef0ull
#define MAXN 1100

static const struct ds_kernel_ops *K, *R;
static int checks, failures;

/* Count a check; print it when it fails. */
static void check(int ok, const char *what, long a, long b)
{
	checks++;
	if (!ok) {
		failures++;
		fprintf(stderr, "FAIL %s (%ld, %ld)\n", what, a, b);
	}
}

/* Bits of a float. */
static uint32_t fb(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

/* Test-local generator (splitmix64). */
static uint64_t rng = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A float bit pattern, often a special one. */
static uint32_t special(void)
{
	static const uint32_t sp[] = {
		0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000,
		0xffc00000, 0x7f800001, 0xffbfffff, 0x00000001, 0x807fffff,
		0x3f800000, 0x7f7fffff, 0x477ff000, 0x33000000, 0x3f808000,
	};
	uint64_t r = rnd();

	if ((r & 3) == 0)
		return sp[(r >> 8) % (sizeof(sp) / sizeof(sp[0]))];
	if ((r & 3) == 1)
		return 0x3f000000u + (uint32_t)((r >> 16) & 0x00ffffffu);
	return (uint32_t)(r >> 32);
}

/* n raw elements of dt full of special values. */
static void fill(enum ds_dtype dt, void *p, size_t n)
{
	uint32_t u;
	uint16_t h;
	size_t k;

	for (k = 0; k < n; k++) {
		u = special();
		h = (rnd() & 1) ? (uint16_t)(u >> 16) : (uint16_t)u;
		if (dt == DS_DT_F32)
			memcpy((char *)p + 4 * k, &u, 4);
		else
			memcpy((char *)p + 2 * k, &h, 2);
	}
}

/* Same bits, or both NaN (intermediate steps; see kernels.h). */
static void same_f(const float *a, const float *b, size_t n, const char *what)
{
	size_t k;

	for (k = 0; k < n; k++)
		if (fb(a[k]) != fb(b[k]) && !(isnan(a[k]) && isnan(b[k])))
			break;
	check(k == n, what, (long)k, (long)n);
}

/* The three Philox known answers, the XXH32 values, the worked examples. */
static void known_answers(void)
{
	static const uint32_t ctr[3][4] = { { 0, 0, 0, 0 },
		{ 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff },
		{ 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344 } };
	static const uint32_t key[3][2] = { { 0, 0 },
		{ 0xffffffff, 0xffffffff }, { 0xa4093822, 0x299f31d0 } };
	static const uint32_t want[3][4] = {
		{ 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 },
		{ 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd },
		{ 0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1 } };
	uint32_t x[4];
	int t;

	for (t = 0; t < 3; t++) {
		ds_philox4x32_10(ctr[t], key[t], x);
		check(!memcmp(x, want[t], 16), "philox kat", t, 0);
	}
	check(XXH32("lm_head.weight", 14, 0) == 0x60b84adf, "xxh32", 0, 0);
	check(XXH32("model.layers.0.mlp.up_proj.weight", 33, 0) == 0xda893b3c,
	      "xxh32", 1, 0);
}

/* u of both worked examples at every start 0..7 and at 2^36, 16 lanes. */
static void worked_examples(void)
{
	static const uint32_t u1[12] = { 0xe55b5e47, 0x7bcbef69, 0x68b3149d,
		0x4fe5907c, 0xd546b733, 0xcf31041c, 0xd6805b37, 0xc51dd972,
		0xd9e3c4eb, 0xa6f445b7, 0x6b556811, 0x06af7bde };
	static const uint32_t u2[12] = { 0xa9d9a09a, 0xd7345699, 0xf617dc17,
		0x0451dde1, 0x4f6871ef, 0x5a84003a, 0x9eee1426, 0x74c7cfa7,
		0x20750172, 0x68bff788, 0xbf8a26d0, 0xa83cbecc };
	uint32_t u[40], ref[40];
	int k;

	for (k = 0; k < 8; k++) {
		K->philox(0, 0, 0xda893b3c, (uint64_t)k, 8 - (size_t)k, u);
		check(!memcmp(u, u1 + k, 4 * (8 - (size_t)k)), "example 1", k, 0);
		K->philox(SEED2, 2, 0x60b84adf, (uint64_t)k, 8 - (size_t)k, u);
		check(!memcmp(u, u2 + k, 4 * (8 - (size_t)k)), "example 2", k, 0);
	}
	K->philox(0, 0, 0xda893b3c, 1ull << 36, 4, u);
	check(!memcmp(u, u1 + 8, 16), "example 1 at 2^36", 0, 0);
	K->philox(SEED2, 2, 0x60b84adf, 1ull << 36, 40, u);
	R->philox(SEED2, 2, 0x60b84adf, 1ull << 36, 40, ref);
	check(!memcmp(u, u2 + 8, 16) && !memcmp(u, ref, sizeof(u)),
	      "example 2 at 2^36", 0, 0);
}

/* Keep patterns of elements 0..15 at p = 0.5 through dare_axpy. */
static void keep_patterns(void)
{
	struct ds_dare d1 = { 0, 0, 0xda893b3c, 0x80000000u, 1.0f, 1.0f };
	struct ds_dare d2 = { SEED2, 2, 0x60b84adf, 0x80000000u, 1.0f, 1.0f };
	float b[16] = { 0 }, x[16], a1[16] = { 0 }, a2[16] = { 0 };
	char s1[17] = { 0 }, s2[17] = { 0 };
	int k;

	for (k = 0; k < 16; k++)
		x[k] = 1.0f;
	K->dare_axpy(a1, b, x, &d1, 0, 16);
	K->dare_axpy(a2, b, x, &d2, 0, 16);
	for (k = 0; k < 16; k++) {
		s1[k] = a1[k] == 1.0f ? '1' : '0';
		s2[k] = a2[k] == 1.0f ? '1' : '0';
	}
	check(!strcmp(s1, "1000111100010110"), "keep pattern 1", 0, 0);
	check(!strcmp(s2, "1110001011110100"), "keep pattern 2", 0, 0);
}

/* Every F16 loads like scalar; stores of specials and 2^20 random floats. */
static void conversions(void)
{
	static uint16_t h[65536], o0[65536], o1[65536];
	static float f0[65536], f1[65536];
	enum ds_dtype dt;
	uint32_t k, r;

	for (k = 0; k < 65536; k++)
		h[k] = (uint16_t)k;
	for (dt = DS_DT_F16; dt <= DS_DT_BF16; dt++) {
		R->load(dt, h, f0, 65536);
		K->load(dt, h, f1, 65536);
		check(!memcmp(f0, f1, sizeof(f0)), "load all halves", dt, 0);
	}
	for (r = 0; r < 16; r++) {
		for (k = 0; k < 65536; k++) {
			uint32_t u = special();

			memcpy(&f0[k], &u, 4);
		}
		for (dt = DS_DT_F16; dt <= DS_DT_BF16; dt++) {
			R->store(dt, f0, o0, 65536);
			K->store(dt, f0, o1, 65536);
			check(!memcmp(o0, o1, sizeof(o0)), "store", dt, r);
		}
	}
}

static const enum ds_dtype dts[3] = { DS_DT_F32, DS_DT_F16, DS_DT_BF16 };
static const size_t lens[] = { 0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31,
	32, 33, 47, 63, 64, 65, 69, 70, 1003, 1099 };
#define NLENS (sizeof(lens) / sizeof(lens[0]))

/* load/store at every misalignment; philox at odd and boundary starts. */
static void cross_basic(void)
{
	static const uint64_t starts[] = { 0, 1, 3, 4097, (1ull << 34) - 37,
		(1ull << 36) + 3 };
	static char raw[4 * MAXN + 8], o0[4 * MAXN + 8], o1[4 * MAXN + 8];
	static float f0[MAXN], f1[MAXN];
	static uint32_t u0[MAXN], u1[MAXN];
	size_t t, d, s, n;

	for (t = 0; t < NLENS; t++) {
		n = lens[t];
		for (d = 0; d < 3; d++) {
			fill(dts[d], raw + t % 4, n);
			R->load(dts[d], raw + t % 4, f0, n);
			K->load(dts[d], raw + t % 4, f1, n);
			check(!memcmp(f0, f1, 4 * n), "load", (long)d, (long)n);
			memset(o0, 0, sizeof(o0));
			memset(o1, 0, sizeof(o1));
			R->store(dts[d], f0, o0 + t % 4, n);
			K->store(dts[d], f0, o1 + t % 4, n);
			check(!memcmp(o0, o1, sizeof(o0)), "store", (long)d, (long)n);
		}
		for (s = 0; s < sizeof(starts) / sizeof(starts[0]); s++) {
			R->philox(SEED2, (uint32_t)s, 77, starts[s], n, u0);
			K->philox(SEED2, (uint32_t)s, 77, starts[s], n, u1);
			check(!memcmp(u0, u1, 4 * n), "philox", (long)s, (long)n);
		}
	}
}

/* The arithmetic steps on special values, at odd offsets and starts. */
static void cross_steps(void)
{
	static const uint32_t thrs[] = { 0, 1, 0x80000000u, 3865470566u,
		0xffffffffu };
	static float b[MAXN + 1], x[MAXN + 1], a0[MAXN + 1], a1[MAXN + 1];
	static float e[3 * MAXN], d0[MAXN], d1[MAXN];
	static uint32_t u[MAXN + 1];
	float w[3] = { 1.0f, -0.5f, 0.0f };
	struct ds_dare dp;
	size_t t, h, n;

	for (t = 0; t < NLENS; t++) {
		n = lens[t];
		fill(DS_DT_F32, b, n + 1);
		fill(DS_DT_F32, x, n + 1);
		R->philox(5, 6, 7, 9, n + 1, u);
		for (h = 0; h < 5; h++) {
			R->sparsify(b + 1, x + 1, u + 1, thrs[h], 3.0f, a0, n);
			K->sparsify(b + 1, x + 1, u + 1, thrs[h], 3.0f, a1, n);
			same_f(a0, a1, n, "sparsify");
			fill(DS_DT_F32, a0, n + 1);
			memcpy(a1, a0, sizeof(a0));
			dp = (struct ds_dare){ SEED2 + t, (uint32_t)h, 0x60b84adf,
				thrs[h], 10.0f, h ? -0.75f : 2.0f };
			R->dare_axpy(a0 + 1, b + 1, x + 1, &dp, 1001 + t, n);
			K->dare_axpy(a1 + 1, b + 1, x + 1, &dp, 1001 + t, n);
			same_f(a0, a1, n + 1, "dare_axpy");
		}
		R->delta(b + 1, x + 1, a0, n);
		K->delta(b + 1, x + 1, a1, n);
		same_f(a0, a1, n, "delta");
		R->axpy(a0, 0.5f, x + 1, n);
		K->axpy(a1, 0.5f, x + 1, n);
		same_f(a0, a1, n, "axpy");
		fill(DS_DT_F32, e, 3 * MAXN - 1);
		R->ties(e + 1, MAXN, 3, w, a0, d0, n);
		K->ties(e + 1, MAXN, 3, w, a1, d1, n);
		same_f(a0, a1, n, "ties acc");
		same_f(d0, d1, n, "ties D");
		R->finish(a0, b + 1, t & 1 ? d0 : NULL, t & 2 ? 0.0f : 3.0f, 0.5f, n);
		K->finish(a1, b + 1, t & 1 ? d0 : NULL, t & 2 ? 0.0f : 3.0f, 0.5f, n);
		check(!memcmp(a0, a1, 4 * n), "finish", (long)t, (long)n);
	}
}

/* keep_bits against u >= thr of the scalar Philox, at odd starts. */
static void cross_keep_bits(void)
{
	static const uint32_t thrs[] = { 1, 0x80000000u, 3865470566u,
		0xffffffffu };
	static uint32_t u[MAXN];
	static uint64_t bits[MAXN / 64 + 2];
	size_t t, h, k, n, want, got;

	for (t = 0; t < NLENS; t++)
		for (h = 0; h < 4; h++) {
			n = lens[t];
			R->philox(SEED2, (uint32_t)h, 99, 4093 + t, n, u);
			memset(bits, 0xa5, sizeof(bits));
			got = K->keep_bits(SEED2, (uint32_t)h, 99, 4093 + t, n,
					   thrs[h], bits);
			for (k = 0, want = 0; k < (n + 63) / 64 * 64; k++) {
				int should = k < n && u[k] >= thrs[h];

				want += (size_t)should;
				if ((int)(bits[k / 64] >> k % 64 & 1) != should)
					break;
			}
			check(k == (n + 63) / 64 * 64 && got == want &&
			      bits[(n + 63) / 64] == 0xa5a5a5a5a5a5a5a5ull,
			      "keep_bits", (long)h, (long)n);
		}
}

/*
 * kept_axpy (the mask as bits, only the kept values, in a buffer of
 * exactly their number) against the scalar one, and the scalar one
 * against dare_axpy given every value and that mask's Philox stream.
 */
static void cross_kept(void)
{
	static const uint32_t thrs[] = { 0, 1, 0x80000000u, 3865470566u,
		0xffffffffu };
	static float b[MAXN + 1], x[MAXN + 1], a0[MAXN + 1], a1[MAXN + 1];
	static float r0[MAXN + 1];
	static uint32_t u[MAXN + 1];
	uint64_t keep[MAXN / 64 + 2];
	struct ds_dare dp;
	size_t t, h, n, k, nv;
	float *v;

	for (t = 0; t < NLENS; t++)
		for (h = 0; h < 5; h++) {
			n = lens[t];
			dp = (struct ds_dare){ SEED2 + t, (uint32_t)h, 0x60b84adf,
				thrs[h], 10.0f, h ? -0.75f : 2.0f };
			R->philox(dp.seed, dp.j, dp.name_hash, 77 + t, n, u);
			fill(DS_DT_F32, b, n + 1);
			fill(DS_DT_F32, x, n + 1);
			for (k = 0; k < MAXN / 64 + 2; k++)
				keep[k] = rnd();        /* bits past n */
			for (k = 0, nv = 0; k < n; k++) {
				keep[k / 64] &= ~(1ull << (k % 64));
				if (u[k] >= dp.thr) {
					keep[k / 64] |= 1ull << (k % 64);
					nv++;
				}
			}
			v = malloc((nv ? nv : 1) * sizeof(float));
			if (!v) {
				check(0, "kept_axpy malloc", (long)t, (long)nv);
				return;
			}
			for (k = 0, nv = 0; k < n; k++)
				if (u[k] >= dp.thr)
					v[nv++] = x[k + 1];
			fill(DS_DT_F32, a0, n + 1);
			memcpy(a1, a0, sizeof(a0));
			memcpy(r0, a0, sizeof(a0));
			R->dare_axpy(r0 + 1, b + 1, x + 1, &dp, 77 + t, n);
			R->kept_axpy(a0 + 1, b + 1, v, nv, keep, dp.s, dp.w, n);
			K->kept_axpy(a1 + 1, b + 1, v, nv, keep, dp.s, dp.w, n);
			same_f(r0, a0, n + 1, "kept_axpy = dare_axpy");
			same_f(a0, a1, n + 1, "kept_axpy");
			free(v);
		}
}

/* The rank selection steps on special values and a shared magnitude,
 * with bounds at the edges and at that magnitude's key. */
static void cross_select(void)
{
	static const int32_t bounds[][2] = {
		{ -1, 0x7fffffff }, { -1, -1 }, { -1, 0 }, { 0, 0x7fffffff },
		{ 0x3f7fffff, 0x3f800000 }, { 0x3f800000, 0x7fffffff },
		{ -1, 0x3f7fffff }, { 0x7f7fffff, 0x7f800000 },
		{ 0x7f800000, 0x7fffffff }, { 0x7ffffffe, 0x7fffffff },
	};
	static float x[MAXN + 1], a0[MAXN + 1], a1[MAXN + 1];
	static uint32_t k0[MAXN + 1], k1[MAXN + 1];
	size_t t, h, n;

	for (t = 0; t < NLENS; t++) {
		n = lens[t];
		fill(DS_DT_F32, x, n + 1);
		for (h = 1; h < n + 1; h += 3)
			x[h] = h & 1 ? -1.0f : 1.0f;
		R->rank_keys(x + 1, k0, n);
		K->rank_keys(x + 1, k1, n);
		check(!memcmp(k0, k1, 4 * n), "rank_keys", (long)t, (long)n);
		for (h = 0; h < sizeof(bounds) / sizeof(bounds[0]); h++) {
			R->keep_range(x + 1, bounds[h][0], bounds[h][1], 0.5f,
				      a0, n);
			K->keep_range(x + 1, bounds[h][0], bounds[h][1], 0.5f,
				      a1, n);
			same_f(a0, a1, n, "keep_range");
			check(R->count_range(x + 1, bounds[h][0], bounds[h][1], n)
			      == K->count_range(x + 1, bounds[h][0],
						bounds[h][1], n),
			      "count_range", (long)h, (long)n);
		}
	}
}

/* Whole windows: every method, every base/model/output dtype mix. */
static void cross_methods(void)
{
	static char raw[3][4 * 3000 + 4], o0[4 * 3000], o1[4 * 3000];
	static float scratch[2048 * 6] __attribute__((aligned(64)));
	double w[2] = { 0.75, -1.5 }, p[2] = { 0.9, 0.3 };
	struct ds_window win;
	struct ds_mparams mp;
	int m, c, nz;

	/* The single-pass methods' window; the others are built from the
	 * same kernel steps (test_passes checks them on every host path). */
	for (m = 0; m <= DS_M_DARE_TIES; m++)
		for (nz = 0; nz < 2; nz++) {
			if (ds_mparams_init(NULL, &mp, (enum ds_method)m, 2, w, p,
					    0.5, nz, DS_RESCALE_INVERSE, SEED2))
				check(0, "mparams", m, nz);
			ds_mparams_tensor(&mp, "lm_head.weight");
			for (c = 0; c < 81; c++) {
				memset(&win, 0, sizeof(win));
				win.bdt = dts[c % 3];
				win.xdt[0] = dts[c / 3 % 3];
				win.xdt[1] = dts[c / 9 % 3];
				win.odt = dts[c / 27];
				win.base = raw[2] + c % 4;
				win.x[0] = raw[0] + (c + 1) % 4;
				win.x[1] = raw[1] + (c + 2) % 4;
				fill(win.bdt, raw[2] + c % 4, 3000);
				fill(win.xdt[0], raw[0] + (c + 1) % 4, 3000);
				fill(win.xdt[1], raw[1] + (c + 2) % 4, 3000);
				win.i0 = (uint64_t)c * 7919;
				win.n = c % 8 == 7 ? 3000 - (size_t)c : (size_t)(c * 37) % 71;
				win.out = o0;
				ds_method_window(R, &mp, &win, scratch);
				win.out = o1;
				ds_method_window(K, &mp, &win, scratch);
				check(!memcmp(o0, o1, win.n * (win.odt == DS_DT_F32 ? 4 : 2)),
				      "method window", m * 1000 + nz, c);
			}
		}
}

/*
 * dare windows where model 0 comes as its mask and kept values (methods.h,
 * ds_window.keep): the bytes of the same window with every value.
 */
static void cross_kept_methods(void)
{
	static char raw[3][4 * 3000 + 4], kv[4 * 3000], o0[4 * 3000];
	static char o1[4 * 3000];
	static float scratch[2048 * 6] __attribute__((aligned(64)));
	static uint64_t keep[3000 / 64 + 1];
	static uint32_t u[3000];
	double w[2] = { 0.75, -1.5 }, p[2] = { 0.9, 0.3 };
	struct ds_window win, wk;
	struct ds_mparams mp;
	size_t k, nv, es;
	int m, c;

	for (m = DS_M_DARE_LINEAR; m <= DS_M_DARE_TIES; m++) {
		if (ds_mparams_init(NULL, &mp, (enum ds_method)m, 2, w, p, 0.5,
				    -1, DS_RESCALE_INVERSE, SEED2))
			check(0, "mparams", m, 0);
		ds_mparams_tensor(&mp, "lm_head.weight");
		for (c = 0; c < 27; c++) {
			memset(&win, 0, sizeof(win));
			win.bdt = dts[c % 3];
			win.xdt[0] = dts[c / 3 % 3];
			win.xdt[1] = dts[c / 9 % 3];
			win.odt = dts[(c + 1) % 3];
			win.base = raw[2];
			win.x[0] = raw[0];
			win.x[1] = raw[1];
			win.n = c % 2 ? 3000 - (size_t)c : (size_t)c * 37 % 71;
			win.i0 = (uint64_t)c * 7919;
			fill(win.bdt, raw[2], win.n);
			fill(win.xdt[0], raw[0], win.n);
			fill(win.xdt[1], raw[1], win.n);
			es = win.xdt[0] == DS_DT_F32 ? 4 : 2;
			R->philox(SEED2, 0, mp.name_hash, win.i0, win.n, u);
			memset(keep, 0, sizeof(keep));
			for (k = 0, nv = 0; k < win.n; k++)
				if (u[k] >= (uint32_t)mp.thr[0]) {
					keep[k / 64] |= 1ull << (k % 64);
					memcpy(kv + nv++ * es, raw[0] + k * es, es);
				}
			wk = win;
			wk.x[0] = kv;
			wk.keep[0] = keep;
			win.out = o0;
			ds_method_window(R, &mp, &win, scratch);
			wk.out = o1;
			ds_method_window(K, &mp, &wk, scratch);
			check(!memcmp(o0, o1, win.n * (win.odt == DS_DT_F32 ? 4 : 2)),
			      "kept method window", m, c);
		}
	}
}

/* The path of argv[1] (default neon): every check, then the count. */
/* The LoRA row update of the path against the scalar one (kernels.h). */
static void cross_lora(void)
{
	static const unsigned rs[] = { 1, 3, 16, 17 };
	static float w[MAXN + 1], v[17 * (MAXN + 3) + 1], u[18];
	static float x0[MAXN], x1[MAXN];
	size_t t, b, n;

	for (t = 0; t < NLENS; t++)
		for (b = 0; b < sizeof(rs) / sizeof(rs[0]); b++) {
			n = lens[t];
			fill(DS_DT_F32, w, n + 1);
			fill(DS_DT_F32, v, rs[b] * (n + 3) + 1);
			fill(DS_DT_F32, u, rs[b]);
			ds_lora_row_scalar(w + 1, v + 1, n + 3, u, rs[b], 0.75f,
					   x0, n);
			ds_lora_kernel(K)(w + 1, v + 1, n + 3, u, rs[b], 0.75f,
					  x1, n);
			same_f(x0, x1, n, "lora");
		}
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "neon";

	R = ds_kernel_get("scalar");
	K = ds_kernel_get(name);
	if (!K) {
		printf("skip: no %s path here\n", name);
		return 77;
	}
	known_answers();
	worked_examples();
	keep_patterns();
	conversions();
	cross_basic();
	cross_steps();
	cross_keep_bits();
	cross_kept();
	cross_select();
	cross_methods();
	cross_kept_methods();
	cross_lora();
	printf("%s: %d checks, %d failures\n", K->name, checks, failures);
	return failures ? 1 : 0;
}

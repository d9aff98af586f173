/* SPDX-License-Identifier: MIT */
/* test_kernels.c - Philox and conversion known answers; every path == scalar */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include "methods/methods.h"
#include "kernels/kernels.h"
#include "kernels/philox.h"
#include "kernels/xxh.h"
#include "testutil.h"

#define NAME1 "model.layers.0.mlp.up_proj.weight"
#define NAME2 "lm_head.weight"
#define SEED2 0x123456789abcdef0ull
#define BIG (1ull << 36)

/* ---- helpers --------------------------------------------------------- */

static uint32_t fb(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

/* Float of given bits. */
static float bf(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

/* Test-local generator (splitmix64), independent of the code under test. */
static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A float bit pattern, often a special one: NaNs, inf, zeros, subnormals. */
static uint32_t special_bits(void)
{
	static const uint32_t sp[] = {
		0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000,
		0xffc00000, 0x7f800001, 0xffbfffff, 0x7fa00000, 0x00000001,
		0x807fffff, 0x00400000, 0x3f800000, 0xbf800000, 0x7f7fffff,
		0xff7fffff, 0x477ff000, 0x33000000, 0x387fe000, 0x3f808000,
	};
	uint64_t r = rnd();

	if ((r & 3) == 0)
		return sp[(r >> 8) % (sizeof(sp) / sizeof(sp[0]))];
	if ((r & 3) == 1)               /* near 1: realistic weights */
		return 0x3f000000u + (uint32_t)((r >> 16) & 0x00ffffffu);
	return (uint32_t)(r >> 32);
}

/* Fill a raw buffer of n elements of dt with special values. */
static void fill_raw(enum ds_dtype dt, void *p, size_t n)
{
	uint32_t u;
	uint16_t h;
	size_t k;

	for (k = 0; k < n; k++) {
		u = special_bits();
		if (dt == DS_DT_F32) {
			memcpy((char *)p + 4 * k, &u, 4);
			continue;
		}
		h = (rnd() & 1) ? (uint16_t)(u >> 16) : (uint16_t)u;
		memcpy((char *)p + 2 * k, &h, 2);
	}
}

/* Every path this build and CPU can run, scalar first. */
static const struct ds_kernel_ops *paths[DS_KPATH_COUNT];
static int npaths;

static void find_paths(void)
{
	static const char *const names[] = { "scalar", "avx2", "avx512",
		"neon" };
	int i;

	npaths = 0;
	for (i = 0; i < DS_KPATH_COUNT; i++)
		if (ds_kernel_get(names[i]))
			paths[npaths++] = ds_kernel_get(names[i]);
}

static const enum ds_dtype dts[3] = { DS_DT_F32, DS_DT_F16, DS_DT_BF16 };

/* ---- Philox ----------------------------------------------------------- */

START_TEST(philox_kat)
{
	static const uint32_t ctr[3][4] = {
		{ 0, 0, 0, 0 },
		{ 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff },
		{ 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344 },
	};
	static const uint32_t key[3][2] = {
		{ 0, 0 }, { 0xffffffff, 0xffffffff }, { 0xa4093822, 0x299f31d0 },
	};
	static const uint32_t want[3][4] = {
		{ 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 },
		{ 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd },
		{ 0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1 },
	};
	uint32_t x[4];
	int t;

	for (t = 0; t < 3; t++) {
		ds_philox4x32_10(ctr[t], key[t], x);
		ck_assert_mem_eq(x, want[t], sizeof(x));
	}
}
END_TEST

/* XXH32 of the two example names (DESIGN 4). */
START_TEST(xxh32_names)
{
	ck_assert_uint_eq(XXH32(NAME1, strlen(NAME1), 0), 0xda893b3c);
	ck_assert_uint_eq(XXH32(NAME2, strlen(NAME2), 0), 0x60b84adf);
}
END_TEST

/*
 * The XXH3 updates of every vector build (kernels/xxh.h) against the
 * library's one-shot digests, fed in pieces that cross its 64-byte stripes
 * and 1024-byte blocks at odd places; and the known digest of no bytes.
 */
typedef void xxh_upd(void *state, const void *p, size_t n);

static void check_xxh(xxh_upd *u64, xxh_upd *u128, const unsigned char *d,
		      size_t n)
{
	static const size_t cuts[] = { 1, 7, 64, 65, 240, 1000, 1024, 4099 };
	XXH3_state_t *a = XXH3_createState(), *b = XXH3_createState();
	XXH128_hash_t h, w = XXH3_128bits(d, n);

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
		size_t step = cuts[c];

		XXH3_64bits_reset(a);
		XXH3_128bits_reset(b);
		for (size_t o = 0, k; o < n; o += k) {
			k = n - o < step ? n - o : step;
			u64(a, d + o, k);
			u128(b, d + o, k);
			step = step * 3 + 1;    /* pieces of many sizes */
		}
		ck_assert_uint_eq(XXH3_64bits_digest(a), XXH3_64bits(d, n));
		h = XXH3_128bits_digest(b);
		ck_assert(XXH128_isEqual(h, w));
	}
	XXH3_freeState(a);
	XXH3_freeState(b);
}

START_TEST(xxh3_paths)
{
	static const size_t lens[] = { 0, 1, 16, 17, 128, 129, 240, 241,
				       1023, 1024, 1025, 70001, 1u << 20 };
	size_t max = 1u << 20;
	unsigned char *d = malloc(max);
	XXH3_state_t *e = XXH3_createState();
	uint64_t x = 0x9e3779b97f4a7c15ull;

	ck_assert_ptr_nonnull(d);
	for (size_t i = 0; i < max; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		d[i] = (unsigned char)(x >> 24);
	}
	/* XXH3-64 of the empty input, from the xxHash specification */
	XXH3_64bits_reset(e);
	ds_xxh3_64_update(e, d, 0);
	ck_assert_uint_eq(XXH3_64bits_digest(e), 0x2D06800538D394C2ull);
	XXH3_freeState(e);
	for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
		check_xxh(ds_xxh3_64_update, ds_xxh3_128_update, d, lens[l]);
#ifdef DS_HAVE_AVX2
		if (ds_kernel_get("avx2"))
			check_xxh(ds_xxh3_64_update_avx2,
				  ds_xxh3_128_update_avx2, d, lens[l]);
#endif
#ifdef DS_HAVE_AVX512
		if (ds_kernel_get("avx512"))
			check_xxh(ds_xxh3_64_update_avx512,
				  ds_xxh3_128_update_avx512, d, lens[l]);
#endif
	}
	free(d);
}
END_TEST

/* The u values of a worked example on every path, with odd starts. */
static void check_example(uint64_t seed, uint32_t j, uint32_t hash,
			  const uint32_t want[8], const uint32_t want_big[4])
{
	uint32_t u[8];
	int p, k;

	for (p = 0; p < npaths; p++) {
		paths[p]->philox(seed, j, hash, 0, 8, u);
		ck_assert_mem_eq(u, want, 8 * sizeof(uint32_t));
		paths[p]->philox(seed, j, hash, BIG, 4, u);
		ck_assert_mem_eq(u, want_big, 4 * sizeof(uint32_t));
		for (k = 1; k < 8; k++) {
			paths[p]->philox(seed, j, hash, (uint64_t)k, 8 - k, u);
			ck_assert_mem_eq(u, want + k, (8 - k) * sizeof(uint32_t));
		}
	}
}

/* Both worked examples of DESIGN 4 on every path. */
START_TEST(philox_examples)
{
	static const uint32_t u1[8] = { 0xe55b5e47, 0x7bcbef69, 0x68b3149d,
		0x4fe5907c, 0xd546b733, 0xcf31041c, 0xd6805b37, 0xc51dd972 };
	static const uint32_t b1[4] = { 0xd9e3c4eb, 0xa6f445b7, 0x6b556811,
		0x06af7bde };
	static const uint32_t u2[8] = { 0xa9d9a09a, 0xd7345699, 0xf617dc17,
		0x0451dde1, 0x4f6871ef, 0x5a84003a, 0x9eee1426, 0x74c7cfa7 };
	static const uint32_t b2[4] = { 0x20750172, 0x68bff788, 0xbf8a26d0,
		0xa83cbecc };

	check_example(0, 0, 0xda893b3c, u1, b1);
	check_example(SEED2, 2, 0x60b84adf, u2, b2);
}
END_TEST

/* Keep pattern of elements 0..15 at p = 0.5 through dare_axpy. */
static void check_keep(uint64_t seed, uint32_t j, uint32_t hash,
		       const char *want)
{
	struct ds_dare dp = { seed, j, hash, 0, 1.0f, 1.0f };
	float b[16], x[16], acc[16];
	char got[17];
	int p, k;

	dp.thr = (uint32_t)ds_drop_threshold(0.5);
	for (p = 0; p < npaths; p++) {
		for (k = 0; k < 16; k++) {
			b[k] = 0.0f;
			x[k] = 1.0f;
			acc[k] = 0.0f;
		}
		paths[p]->dare_axpy(acc, b, x, &dp, 0, 16);
		for (k = 0; k < 16; k++)
			got[k] = acc[k] == 1.0f ? '1' : '0';
		got[16] = 0;
		ck_assert_str_eq(got, want);
	}
}

/* Keep patterns of both worked examples at p = 0.5. */
START_TEST(keep_patterns)
{
	check_keep(0, 0, 0xda893b3c, "1000111100010110");
	check_keep(SEED2, 2, 0x60b84adf, "1110001011110100");
}
END_TEST

/* The same patterns as keep_bits, bit k of the word for element k. */
START_TEST(keep_bits_patterns)
{
	static const char *const want[2] = { "1000111100010110",
					     "1110001011110100" };
	const uint64_t seed[2] = { 0, SEED2 };
	const uint32_t j[2] = { 0, 2 }, hash[2] = { 0xda893b3c, 0x60b84adf };
	const size_t ones[2] = { 8, 9 };
	uint32_t thr = (uint32_t)ds_drop_threshold(0.5);
	uint64_t bits;
	char got[17];
	int p, e, k;

	for (p = 0; p < npaths; p++)
		for (e = 0; e < 2; e++) {
			bits = ~0ull;
			ck_assert_uint_eq(paths[p]->keep_bits(seed[e], j[e],
				hash[e], 0, 16, thr, &bits), ones[e]);
			for (k = 0; k < 16; k++)
				got[k] = bits >> k & 1 ? '1' : '0';
			got[16] = 0;
			ck_assert_str_eq(got, want[e]);
			ck_assert_uint_eq(bits >> 16, 0);
		}
}
END_TEST

/* T = floor(p * 2^32); T(0.5), T(0.9) from DESIGN 4, and the ends. */
START_TEST(thresholds)
{
	ck_assert_uint_eq(ds_drop_threshold(0.5), 2147483648ull);
	ck_assert_uint_eq(ds_drop_threshold(0.9), 3865470566ull);
	ck_assert_uint_eq(ds_drop_threshold(0.0), 0);
	ck_assert_uint_eq(ds_drop_threshold(1.0), 4294967296ull);
	ck_assert_uint_eq(ds_drop_threshold(0x1p-32), 1);
	ck_assert_uint_eq(ds_drop_threshold(1.0 - 0x1p-53), 4294967295ull);
}
END_TEST

/* Fraction kept of 1e6 elements is 1 - p within 5 sigma. */
START_TEST(keep_rate)
{
	static const double ps[] = { 0.1, 0.5, 0.9, 0.99 };
	static uint32_t u[1000000];
	const size_t n = 1000000;
	double p, sigma, kept;
	uint64_t thr;
	size_t k, i;

	for (i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
		p = ps[i];
		thr = ds_drop_threshold(p);
		ds_kernel_scalar_ops.philox(42 + i, (uint32_t)i, 0x60b84adf,
					    12345, n, u);
		kept = 0;
		for (k = 0; k < n; k++)
			kept += u[k] >= thr;
		sigma = sqrt(n * p * (1 - p));
		ck_assert_msg(fabs(kept - n * (1 - p)) < 5 * sigma,
			      "p %g: kept %.0f of %zu", p, kept, n);
	}
}
END_TEST

/* ---- conversions ------------------------------------------------------ */

START_TEST(bf16_round)
{
	static const uint32_t in[][2] = {
		{ 0x3f800000, 0x3f80 }, { 0x3f808000, 0x3f80 }, /* tie: even */
		{ 0x3f818000, 0x3f82 }, { 0x3f808001, 0x3f81 }, /* tie: up */
		{ 0x3f807fff, 0x3f80 }, { 0xbf818000, 0xbf82 },
		{ 0x00000000, 0x0000 }, { 0x80000000, 0x8000 },
		{ 0x7f800000, 0x7f80 }, { 0xff800000, 0xff80 },
		{ 0x7f7fffff, 0x7f80 }, { 0xff7fffff, 0xff80 }, /* overflow */
		{ 0x7f7f0000, 0x7f7f }, { 0x7f7f7fff, 0x7f7f }, /* largest */
		{ 0x7f7f8000, 0x7f80 }, { 0x00000001, 0x0000 },
		{ 0x00008000, 0x0000 }, { 0x00018000, 0x0002 }, /* subnormal */
		{ 0x7f800001, 0x7fc0 }, { 0xffc00000, 0xffc0 }, /* NaN quiet */
		{ 0x7f810000, 0x7fc1 }, { 0x7fffffff, 0x7fff },
		{ 0xff80ffff, 0xffc0 },
	};
	size_t t;

	for (t = 0; t < sizeof(in) / sizeof(in[0]); t++)
		ck_assert_msg(ds_f32_to_bf16(bf(in[t][0])) == in[t][1],
			      "%08x -> %04x, want %04x", in[t][0],
			      ds_f32_to_bf16(bf(in[t][0])), in[t][1]);
	ck_assert_uint_eq(fb(ds_bf16_to_f32(0x7f81)), 0x7f810000); /* as is */
	ck_assert_uint_eq(fb(ds_bf16_to_f32(0x0001)), 0x00010000);
	ck_assert_uint_eq(fb(ds_bf16_to_f32(0xc2f7)), 0xc2f70000);
}
END_TEST

/* F32 to F16 by hand: ties both ways, overflow, subnormals, NaN. */
START_TEST(f16_round)
{
	static const uint32_t in[][2] = {
		{ 0x3f800000, 0x3c00 }, { 0x477fe000, 0x7bff }, /* 1, 65504 */
		{ 0x477fefff, 0x7bff }, { 0x477ff000, 0x7c00 }, /* 65520: inf */
		{ 0xc77ff000, 0xfc00 }, { 0x7f800000, 0x7c00 },
		{ 0xff800000, 0xfc00 }, { 0x7f7fffff, 0x7c00 },
		{ 0x3f801000, 0x3c00 }, { 0x3f803000, 0x3c02 }, /* ties */
		{ 0x3f801001, 0x3c01 }, { 0x00000000, 0x0000 },
		{ 0x80000000, 0x8000 }, { 0x33800000, 0x0001 }, /* 2^-24 */
		{ 0x33000000, 0x0000 }, { 0x33000001, 0x0001 }, /* 2^-25 */
		{ 0x33c00000, 0x0002 }, { 0x34200000, 0x0002 }, /* 1.5, 2.5 */
		{ 0x387fc000, 0x03ff }, { 0x387fe000, 0x0400 }, /* top sub */
		{ 0x38800000, 0x0400 }, { 0xb3800000, 0x8001 },
		{ 0x00000001, 0x0000 }, { 0x32ffffff, 0x0000 },
		{ 0x7f802000, 0x7e01 }, { 0xff800001, 0xfe00 }, /* NaN */
		{ 0x7fc00000, 0x7e00 }, { 0x7fffffff, 0x7fff },
	};
	size_t t;

	for (t = 0; t < sizeof(in) / sizeof(in[0]); t++)
		ck_assert_msg(ds_f32_to_f16(bf(in[t][0])) == in[t][1],
			      "%08x -> %04x, want %04x", in[t][0],
			      ds_f32_to_f16(bf(in[t][0])), in[t][1]);
}
END_TEST

/* F16 to F32 by hand: subnormals, infinities, NaN quieted. */
START_TEST(f16_load)
{
	static const uint32_t in[][2] = {
		{ 0x0001, 0x33800000 }, { 0x03ff, 0x387fc000 },
		{ 0x8001, 0xb3800000 }, { 0x0400, 0x38800000 },
		{ 0x7bff, 0x477fe000 }, { 0x7c00, 0x7f800000 },
		{ 0xfc00, 0xff800000 }, { 0x7c01, 0x7fc02000 }, /* quieted */
		{ 0xfe00, 0xffc00000 }, { 0x7fff, 0x7fffe000 },
		{ 0x8000, 0x80000000 }, { 0x3c00, 0x3f800000 },
	};
	size_t t;

	for (t = 0; t < sizeof(in) / sizeof(in[0]); t++)
		ck_assert_uint_eq(fb(ds_f16_to_f32((uint16_t)in[t][0])),
				  in[t][1]);
}
END_TEST

/* Every half: exact value by ldexp, and back to the same bits. */
START_TEST(f16_exhaustive)
{
	uint32_t h, e, m;
	float f, v;

	for (h = 0; h < 65536; h++) {
		f = ds_f16_to_f32((uint16_t)h);
		e = (h >> 10) & 31;
		m = h & 1023;
		if (e == 31 && m) {
			ck_assert(isnan(f));
			ck_assert_uint_eq(ds_f32_to_f16(f), h | 0x200);
			continue;
		}
		v = e == 31 ? INFINITY :
		    e ? ldexpf((float)(1024 + m), (int)e - 25) :
			ldexpf((float)m, -24);
		if (h & 0x8000)
			v = -v;
		ck_assert_uint_eq(fb(f), fb(v));
		ck_assert_uint_eq(ds_f32_to_f16(f), h);
	}
}
END_TEST

/* Store then load through the ops keeps the bits of every BF16. */
START_TEST(bf16_exhaustive)
{
	uint16_t h[256], back[256];
	float f[256];
	uint32_t base, k;

	for (base = 0; base < 65536; base += 256) {
		for (k = 0; k < 256; k++)
			h[k] = (uint16_t)(base + k);
		ds_kernel_scalar_ops.load(DS_DT_BF16, h, f, 256);
		ds_kernel_scalar_ops.store(DS_DT_BF16, f, back, 256);
		for (k = 0; k < 256; k++) {
			ck_assert_uint_eq(fb(f[k]), (base + k) << 16);
			if ((h[k] & 0x7fff) > 0x7f80)
				ck_assert_uint_eq(back[k], h[k] | 0x40);
			else
				ck_assert_uint_eq(back[k], h[k]);
		}
	}
}
END_TEST

/* ---- cross-path equality --------------------------------------------- */

#define MAXN 1100
/* Lengths 0 .. 70, then 1003 and 1099 (several vector steps, odd tail). */
#define NLENS 73
#define LEN(t) ((t) < 71 ? (size_t)(t) : (t) == 71 ? (size_t)1003 : (size_t)1099)
#define FOR_LENS(t) for (t = 0; t < NLENS; t++)

/* load and store for every dtype, from and to unaligned addresses. */
START_TEST(cross_load_store)
{
	static char raw[4 * MAXN + 8], o0[4 * MAXN + 8], o1[4 * MAXN + 8];
	static float f0[MAXN + 1], f1[MAXN + 1];
	size_t t, n, d, mis;
	int p;

	for (p = 1; p < npaths; p++)
		for (d = 0; d < 3; d++)
			FOR_LENS(t) {
				n = LEN(t);
				mis = t % 4;    /* byte misalignment of raw data */
				fill_raw(dts[d], raw + mis, n);
				fill_raw(DS_DT_F32, f0, n + 1);
				memcpy(f1, f0, sizeof(f0));
				ds_kernel_scalar_ops.load(dts[d], raw + mis,
							  f0 + 1, n);
				paths[p]->load(dts[d], raw + mis, f1 + 1, n);
				ck_assert_mem_eq(f0, f1, (n + 1) * 4);
				memset(o0, 0x5a, sizeof(o0));
				memset(o1, 0x5a, sizeof(o1));
				fill_raw(DS_DT_F32, f0, n + 1);
				ds_kernel_scalar_ops.store(dts[d], f0 + 1,
							   o0 + mis, n);
				paths[p]->store(dts[d], f0 + 1, o1 + mis, n);
				ck_assert_mem_eq(o0, o1, sizeof(o0));
			}
}
END_TEST

/* Philox lanes at starts that are not multiples of 4, and across the
 * 2^32-block boundary where counter word 1 changes (1 to 250 blocks
 * ahead, so that vector steps of every size meet it). */
START_TEST(cross_philox)
{
	static const uint64_t starts[] = { 0, 1, 2, 3, 5, 4097,
		(1ull << 34) - 37, (1ull << 34) - 2, (1ull << 34) - 201,
		(1ull << 34) - 1001, BIG + 3, ~0ull >> 2 };
	static uint32_t u0[MAXN + 1], u1[MAXN + 1];
	size_t t, s;
	int p;

	for (p = 1; p < npaths; p++)
		for (s = 0; s < sizeof(starts) / sizeof(starts[0]); s++)
			FOR_LENS(t) {
				memset(u0, 0xa5, sizeof(u0));
				memset(u1, 0xa5, sizeof(u1));
				ds_kernel_scalar_ops.philox(SEED2 + s, (uint32_t)s,
					0xda893b3c, starts[s], LEN(t), u0);
				paths[p]->philox(SEED2 + s, (uint32_t)s, 0xda893b3c,
						 starts[s], LEN(t), u1);
				ck_assert_mem_eq(u0, u1, sizeof(u0));
			}
}
END_TEST

/*
 * Intermediate results of the arithmetic steps: the same bits, except that
 * a NaN may carry another payload or sign (which NaN operand an add
 * propagates is the compiler's choice and the CPU's; finish() makes every
 * NaN canonical before anything is stored).
 */
static void same_f(const float *a, const float *b, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		ck_assert_msg(fb(a[k]) == fb(b[k]) || (isnan(a[k]) && isnan(b[k])),
			      "element %zu: %08x != %08x", k, fb(a[k]), fb(b[k]));
}

/* Fill n floats (plus one guard) with special values. */
static void fill_f(float *f, size_t n)
{
	fill_raw(DS_DT_F32, f, n + 1);
}

/* sparsify, delta and axpy on special values, misaligned by one float. */
START_TEST(cross_elementwise)
{
	static const uint32_t thrs[] = { 0, 1, 0x80000000u, 3865470566u,
		0xffffffffu };
	static float b[MAXN + 2], x[MAXN + 2], d0[MAXN + 2], d1[MAXN + 2];
	static uint32_t u[MAXN + 2];
	size_t t, n, h;
	float w;
	int p;

	for (p = 1; p < npaths; p++)
		FOR_LENS(t) {
			n = LEN(t);
			fill_f(b, n + 1);
			fill_f(x, n + 1);
			ds_kernel_scalar_ops.philox(7, 1, 2, 3, n + 1, u);
			for (h = 0; h < 5; h++) {
				w = bf(special_bits());
				ds_kernel_scalar_ops.sparsify(b + 1, x + 1, u + 1,
					thrs[h], w, d0 + 1, n);
				paths[p]->sparsify(b + 1, x + 1, u + 1, thrs[h],
						   w, d1 + 1, n);
				same_f(d0 + 1, d1 + 1, n);
			}
			ds_kernel_scalar_ops.delta(b + 1, x + 1, d0 + 1, n);
			paths[p]->delta(b + 1, x + 1, d1 + 1, n);
			same_f(d0 + 1, d1 + 1, n);
			memcpy(d1, d0, sizeof(d0));
			w = bf(special_bits());
			ds_kernel_scalar_ops.axpy(d0 + 1, w, x + 1, n);
			paths[p]->axpy(d1 + 1, w, x + 1, n);
			same_f(d0, d1, MAXN + 2);
		}
}
END_TEST

/*
 * keep_bits against u >= thr from the scalar Philox, on every path: odd
 * and aligned starts, counter word 1 changing inside, lengths from 0 to
 * several steps, every kind of threshold; nothing past the last word.
 */
START_TEST(cross_keep_bits)
{
	static const uint32_t thrs[] = { 1, 0x80000000u, 3865470566u,
		0xfffffffeu, 0xffffffffu };
	static const size_t ns[] = { 0, 1, 63, 64, 65, 255, 256, 257, 300,
		511, 512, 1000, 4096, 4099 };
	static uint32_t u[4099];
	static uint64_t bits[4099 / 64 + 2];
	uint64_t i0;
	size_t a, t, h, k, n, want;
	int p;

	for (a = 0; a < 4; a++)
		for (t = 0; t < sizeof(ns) / sizeof(ns[0]); t++)
			for (h = 0; h < 5; h++) {
				n = ns[t];
				i0 = a == 0 ? 65536 * 3 : a == 1 ? 4097 + t :
				     a == 2 ? (1ull << 34) - 4 * (h + 1) * 64 :
				     (1ull << 34) - 130 + t;
				ds_kernel_scalar_ops.philox(SEED2 ^ h, (uint32_t)t,
							    0x60b84adf, i0, n, u);
				for (k = 0, want = 0; k < n; k++)
					want += u[k] >= thrs[h];
				for (p = 0; p < npaths; p++) {
					memset(bits, 0xa5, sizeof(bits));
					ck_assert_uint_eq(paths[p]->keep_bits(
						SEED2 ^ h, (uint32_t)t, 0x60b84adf,
						i0, n, thrs[h], bits), want);
					for (k = 0; k < (n + 63) / 64 * 64; k++)
						if ((bits[k / 64] >> k % 64 & 1) !=
						    (k < n && u[k] >= thrs[h]))
							break;
					ck_assert_msg(k == (n + 63) / 64 * 64,
						      "%s: bit %zu of %zu",
						      paths[p]->name, k, n);
					ck_assert_uint_eq(bits[(n + 63) / 64],
							  0xa5a5a5a5a5a5a5a5ull);
				}
			}
}
END_TEST

/* bits_count on every path: a bit-by-bit count of random words of every
 * density, at lengths that end inside, at and past a word; the words
 * after the n bits are all ones and must not be counted. */
START_TEST(cross_bits_count)
{
	static const size_t ns[] = { 0, 1, 63, 64, 65, 127, 128, 2048, 2049,
		4095 };
	static uint64_t w[4096 / 64 + 2];
	size_t t, d, k, n, want;
	int p;

	for (d = 0; d < 4; d++)
		for (t = 0; t < sizeof(ns) / sizeof(ns[0]); t++) {
			n = ns[t];
			for (k = 0; k < sizeof(w) / sizeof(w[0]); k++) {
				uint64_t r = rnd();

				/* about 1/2, 1/8, none and all set */
				w[k] = d == 0 ? r : d == 1 ? r & rnd() & rnd() :
				       d == 2 ? 0 : ~0ull;
			}
			for (k = n; k < (n + 63) / 64 * 64 + 64; k++)
				w[k / 64] |= 1ull << k % 64;
			for (k = 0, want = 0; k < n; k++)
				want += w[k / 64] >> k % 64 & 1;
			for (p = 0; p < npaths; p++)
				ck_assert_msg(paths[p]->bits_count(w, n) == want,
					      "%s: n %zu density %zu",
					      paths[p]->name, n, d);
		}
}
END_TEST

/* The fused DARE step, at odd starts and every kind of threshold, with
 * counter word 1 changing 10 or 75 blocks after the start. */
START_TEST(cross_dare_axpy)
{
	static const uint32_t thrs[] = { 0, 1, 0x80000000u, 3865470566u,
		0xffffffffu };
	static float b[MAXN + 2], x[MAXN + 2], a0[MAXN + 2], a1[MAXN + 2];
	struct ds_dare dp;
	uint64_t i0;
	size_t t, n, h;
	int p;

	for (p = 1; p < npaths; p++)
		FOR_LENS(t)
			for (h = 0; h < 5; h++) {
				n = LEN(t);
				i0 = (1ull << 34) - (h & 1 ? 300 : 40) + t;
				fill_f(b, n + 1);
				fill_f(x, n + 1);
				fill_f(a0, n + 1);
				memcpy(a1, a0, sizeof(a0));
				dp = (struct ds_dare){ SEED2 ^ t, (uint32_t)h,
					0x60b84adf, thrs[h], bf(special_bits()),
					h ? bf(special_bits()) : -0.5f };
				ds_kernel_scalar_ops.dare_axpy(a0 + 1, b + 1, x + 1,
					&dp, i0, n);
				paths[p]->dare_axpy(a1 + 1, b + 1, x + 1, &dp, i0, n);
				same_f(a0, a1, MAXN + 2);
			}
}
END_TEST

/*
 * kept_axpy by hand: elements 1, 2 and 4 of 5 kept (bits 10110), values
 * 3, -1, 0.5 for them, base 1..5, s 2.  A dropped element adds w * +0:
 * +0 for w = 0.5, which turns an accumulator of -0 into +0, and -0 for
 * w = -0.5, which leaves it -0.  A set bit past n is not an element.
 */
START_TEST(kept_axpy_known)
{
	const uint64_t keep = 0x16 | 1ull << 5 | 1ull << 63;
	const float v[3] = { 3.0f, -1.0f, 0.5f };
	const float b[5] = { 1.0f, 2.0f, 3.0f, 4.0f, 5.0f };
	/* w 0.5: +0, 1 + 0.5 * 2, -0 + 0.5 * -8, inf + 0, 10 + 0.5 * -9 */
	const uint32_t want_pos[5] = { 0x00000000, 0x40000000, 0xc0800000,
				       0x7f800000, 0x40b00000 };
	/* w -0.5: -0, 1 - 0.5 * 2, -0 - 0.5 * -8, inf - 0, 10 - 0.5 * -9 */
	const uint32_t want_neg[5] = { 0x80000000, 0x00000000, 0x40800000,
				       0x7f800000, 0x41680000 };
	float acc[6];
	int p, k;

	for (p = 0; p < npaths; p++)
		for (k = 0; k < 2; k++) {
			acc[0] = -0.0f;
			acc[1] = 1.0f;
			acc[2] = -0.0f;
			acc[3] = INFINITY;
			acc[4] = 10.0f;
			acc[5] = 42.0f;
			paths[p]->kept_axpy(acc, b, v, 3, &keep, 2.0f,
					    k ? -0.5f : 0.5f, 5);
			for (int e = 0; e < 5; e++)
				ck_assert_msg(fb(acc[e]) == (k ? want_neg :
							     want_pos)[e],
					      "%s w %s element %d: %08x",
					      paths[p]->name, k ? "-0.5" : "0.5",
					      e, fb(acc[e]));
			ck_assert(acc[5] == 42.0f);
		}
}
END_TEST

/*
 * kept_axpy against dare_axpy (the scalar references, one fed the mask's
 * bits and the kept values, the other Philox and every value), then every
 * path against the scalar one, at odd starts and lengths, with random
 * bits past n, and the kept values in a buffer of exactly their number
 * (ASan sees a read past them).
 */
START_TEST(cross_kept_axpy)
{
	static const uint32_t thrs[] = { 0, 1, 0x80000000u, 3865470566u,
		0xffffffffu };
	static float b[MAXN + 2], x[MAXN + 2], a0[MAXN + 2], a1[MAXN + 2];
	static float ref[MAXN + 2];
	static uint32_t u[MAXN + 2];
	uint64_t keep[MAXN / 64 + 2];
	struct ds_dare dp;
	size_t t, n, h, k, nv;
	float *v;
	int p;

	FOR_LENS(t)
		for (h = 0; h < 5; h++) {
			n = LEN(t);
			dp = (struct ds_dare){ SEED2 ^ t, (uint32_t)h, 0x60b84adf,
				thrs[h], bf(special_bits()),
				h ? bf(special_bits()) : -0.5f };
			ds_kernel_scalar_ops.philox(dp.seed, dp.j, dp.name_hash,
						    1001 + t, n, u);
			for (k = 0; k < MAXN / 64 + 2; k++)
				keep[k] = rnd();        /* bits past n */
			fill_f(b, n + 1);
			fill_f(x, n + 1);
			nv = 0;
			for (k = 0; k < n; k++) {
				uint64_t bit = 1ull << (k % 64);

				keep[k / 64] &= ~bit;
				if (u[k] >= thrs[h]) {
					keep[k / 64] |= bit;
					nv++;
				}
			}
			v = malloc((nv ? nv : 1) * sizeof(float));
			ck_assert_ptr_nonnull(v);
			for (k = 0, nv = 0; k < n; k++)
				if (u[k] >= thrs[h])
					v[nv++] = x[k + 1];
			fill_f(ref, n + 1);
			memcpy(a0, ref, sizeof(a0));
			ds_kernel_scalar_ops.dare_axpy(ref + 1, b + 1, x + 1, &dp,
						       1001 + t, n);
			ds_kernel_scalar_ops.kept_axpy(a0 + 1, b + 1, v, nv, keep,
						       dp.s, dp.w, n);
			same_f(ref, a0, MAXN + 2);
			for (p = 1; p < npaths; p++) {
				fill_f(a0, n + 1);
				memcpy(a1, a0, sizeof(a0));
				ds_kernel_scalar_ops.kept_axpy(a0 + 1, b + 1, v, nv,
							       keep, dp.s, dp.w, n);
				paths[p]->kept_axpy(a1 + 1, b + 1, v, nv, keep,
						    dp.s, dp.w, n);
				same_f(a0, a1, MAXN + 2);
			}
			free(v);
		}
}
END_TEST

/* TIES election and finish, 1 to 5 rows, with and without D. */
START_TEST(cross_ties_finish)
{
	static float e[5 * MAXN], b[MAXN + 2], a0[MAXN + 2], a1[MAXN + 2];
	static float d0[MAXN + 2], d1[MAXN + 2];
	float w[5] = { 1.0f, -0.5f, 2.0f, 0.0f, 0.25f };
	size_t t, n, k;
	unsigned nm;
	int p;

	for (p = 1; p < npaths; p++)
		FOR_LENS(t)
			for (nm = 1; nm <= 5; nm++) {
				n = LEN(t);
				for (k = 0; k < 5 * MAXN; k++)  /* many zeros */
					e[k] = rnd() & 1 ? bf(special_bits()) :
					       (rnd() & 1 ? 0.0f : -0.0f);
				ds_kernel_scalar_ops.ties(e + 1, MAXN, nm, w,
							  a0 + 1, d0 + 1, n);
				paths[p]->ties(e + 1, MAXN, nm, w, a1 + 1,
					       d1 + 1, n);
				same_f(a0 + 1, a1 + 1, n);
				same_f(d0 + 1, d1 + 1, n);
				fill_f(b, n + 1);
				ds_kernel_scalar_ops.finish(a0 + 1,
					nm & 1 ? b + 1 : NULL,
					nm & 2 ? d0 + 1 : NULL,
					nm == 4 ? 3.0f : 0.0f, 0.75f, n);
				paths[p]->finish(a1 + 1, nm & 1 ? b + 1 : NULL,
					nm & 2 ? d0 + 1 : NULL,
					nm == 4 ? 3.0f : 0.0f, 0.75f, n);
				ck_assert_mem_eq(a0 + 1, a1 + 1, n * 4);
			}
}
END_TEST

/*
 * ties_kept (on every path that has one, and the element-by-element
 * reference the paths finish with) against the steps it fuses, run here
 * one by one on the scalar path: load the base, per model a row set to +0
 * and kept_axpy'd with its mask and kept values, ties, finish, store.
 * 1 to 5 models, all given by their kept values, all read whole with a
 * mask, or mixed (one with no mask, keeping all); BF16 throughout, a BF16
 * base and output with F32 models (LoRA models), or dtypes mixed; with
 * and without normalize; lengths crossing the vector
 * steps; masks of several densities, special values everywhere; each
 * model's kept values in a buffer of exactly their number (ASan sees a
 * read past them).
 */
START_TEST(cross_ties_kept)
{
	static char braw[4 * MAXN], xraw[5][4 * MAXN], o0[4 * MAXN];
	static char o1[4 * MAXN];
	static float b[MAXN], e[5 * MAXN], acc[MAXN], D[MAXN];
	static float kv[MAXN];
	static uint64_t keep[5][MAXN / 64 + 1], all[MAXN / 64 + 1];
	static const size_t lens[] = { 0, 7, 31, 32, 33, 64, 95, 257, 1003,
				       1099 };
	static const float ws[5] = { 1.0f, -0.5f, 2.0f, 0.25f, 3.0f };
	static const unsigned dens[4] = { 10, 2, 1, 100 };  /* 1 in d kept */
	void *cv[5] = { NULL };
	struct ds_tk t;
	size_t n, k, nv, es;
	unsigned c, j, mode, nm, dtm;
	int p;

	memset(all, 0xff, sizeof(all));
	for (c = 0; c < 5 * 3 * 3 * 2 * 10; c++) {
		nm = 1 + c % 5;
		mode = c / 5 % 3;               /* kept, whole, mixed */
		dtm = c / 15 % 3;               /* BF16, F32 models, mixed */
		n = lens[c / 90];
		memset(&t, 0, sizeof(t));
		t.bdt = dtm == 2 ? dts[rnd() % 3] : DS_DT_BF16;
		t.odt = dtm == 2 ? dts[rnd() % 3] : DS_DT_BF16;
		t.normalize = c / 45 % 2;
		t.lambda = c % 7 ? 1.0f : -0.75f;
		t.b = braw;
		t.nm = nm;
		fill_raw(t.bdt, braw, n);
		ds_kernel_scalar_ops.load(t.bdt, braw, b, n);
		for (j = 0; j < nm; j++) {
			struct ds_tk_model *md = &t.m[j];

			md->dt = dtm == 2 ? dts[rnd() % 3] :
				 dtm == 1 ? DS_DT_F32 : DS_DT_BF16;
			es = md->dt == DS_DT_F32 ? 4 : 2;
			md->s = j == 1 ? bf(special_bits()) : 10.0f;
			md->w = ws[j];
			md->kept = mode == 0 || (mode == 2 && j % 2 == 0);
			fill_raw(md->dt, xraw[j], n);
			for (k = 0; k < MAXN / 64 + 1; k++)
				keep[j][k] = rnd();     /* bits past n */
			for (k = 0, nv = 0; k < n; k++) {
				uint64_t bit = 1ull << (k % 64);

				keep[j][k / 64] &= ~bit;
				if (rnd() % dens[(c + j) % 4] == 0) {
					keep[j][k / 64] |= bit;
					nv++;
				}
			}
			md->keep = mode == 2 && j == 1 ? NULL : keep[j];
			if (!md->keep)
				nv = n;
			cv[j] = malloc(nv ? nv * es : 1);
			ck_assert_ptr_nonnull(cv[j]);
			for (k = 0, nv = 0; k < n; k++)
				if (!md->keep || md->keep[k / 64] >> (k % 64) & 1)
					memcpy((char *)cv[j] + nv++ * es,
					       xraw[j] + k * es, es);
			md->v = md->kept ? cv[j] : xraw[j];
			md->nv = nv;
			/* the steps */
			ds_kernel_scalar_ops.load(md->dt, cv[j], kv, nv);
			memset(e + j * MAXN, 0, n * sizeof(float));
			ds_kernel_scalar_ops.kept_axpy(e + j * MAXN, b, kv, nv,
						       md->keep ? md->keep : all,
						       md->s, md->w, n);
		}
		{
			float w[5];

			for (j = 0; j < nm; j++)
				w[j] = t.m[j].w;
			ds_kernel_scalar_ops.ties(e, MAXN, nm, w, acc, D, n);
		}
		ds_kernel_scalar_ops.finish(acc, b, t.normalize ? D : NULL, 0.0f,
					    t.lambda, n);
		ds_kernel_scalar_ops.store(t.odt, acc, o0, n);
		es = t.odt == DS_DT_F32 ? 4 : 2;
		memset(o1, 0x5a, sizeof(o1));
		t.out = o1;
		ds_ties_kept_ref(&t, 0, n);
		ck_assert_msg(!memcmp(o0, o1, n * es), "reference, case %u", c);
		for (p = 0; p < npaths; p++) {
			if (!paths[p]->ties_kept)
				continue;
			memset(o1, 0x5a, sizeof(o1));
			paths[p]->ties_kept(&t, n);
			ck_assert_msg(!memcmp(o0, o1, n * es), "%s, case %u",
				      paths[p]->name, c);
			ck_assert_int_eq((unsigned char)o1[n * es], 0x5a);
		}
		for (j = 0; j < nm; j++) {
			free(cv[j]);
			cv[j] = NULL;
		}
	}
}
END_TEST

/* Whole windows of every method, dtype mix and option, chunked oddly. */
static void cross_window(enum ds_method m, int normalize, double p_drop)
{
	static char raw[4][4 * 5000 + 8], o0[4 * 5000 + 8], o1[4 * 5000 + 8];
	static float scratch[2048 * 8] __attribute__((aligned(64)));
	static const unsigned digit[3] = { 3, 9, 27 };
	double w[3] = { 0.75, -1.5, 2.0 }, pp[3] = { p_drop, 0.5, 1.0 };
	struct ds_mparams mp;
	struct ds_window win;
	unsigned c, j;
	int p;

	ck_assert_int_eq(ds_mparams_init(NULL, &mp, m, 3, w, pp, 0.5,
					 normalize, DS_RESCALE_INVERSE, SEED2), 0);
	ds_mparams_tensor(&mp, NAME1);
	/* c's base-3 digits: base, model 0, 1, 2 and output dtypes. */
	for (c = 0; c < 243; c++) {
		memset(&win, 0, sizeof(win));
		win.bdt = dts[c % 3];
		win.odt = dts[c / 81];
		win.base = raw[3] + c % 4;
		fill_raw(win.bdt, raw[3] + c % 4, 5000);
		for (j = 0; j < 3; j++) {
			win.xdt[j] = dts[c / digit[j] % 3];
			win.x[j] = raw[j] + (c + j) % 4;
			fill_raw(win.xdt[j], raw[j] + (c + j) % 4, 5000);
		}
		win.i0 = (c * 7919ull) % 100003;
		win.n = c % 9 == 8 ? 5000 - c % 7 : (c * 37) % 71;
		for (p = 1; p < npaths; p++) {
			win.out = o0 + c % 3;
			ds_method_window(&ds_kernel_scalar_ops, &mp, &win, scratch);
			win.out = o1 + c % 3;
			ds_method_window(paths[p], &mp, &win, scratch);
			ck_assert_mem_eq(o0 + c % 3, o1 + c % 3,
					 win.n * (win.odt == DS_DT_F32 ? 4 : 2));
		}
	}
}

/* Every method with and without normalize, dropping or not. */
START_TEST(cross_methods)
{
	cross_window(DS_M_LINEAR, 1, 0.0);
	cross_window(DS_M_LINEAR, 0, 0.0);
	cross_window(DS_M_TASK_ARITHMETIC, 0, 0.0);
	cross_window(DS_M_TASK_ARITHMETIC, 1, 0.0);
	cross_window(DS_M_DARE_LINEAR, 0, 0.9);
	cross_window(DS_M_DARE_LINEAR, 1, 0.0);
	cross_window(DS_M_DARE_TIES, 0, 0.3);
	cross_window(DS_M_DARE_TIES, 1, 0.9);
}
END_TEST

/*
 * A window where models 0 and 2 come as their masks and kept values
 * (methods.h, ds_window.keep), as a delta pack whose mask is the merge's
 * does, gives the bytes of the same window with every value, on every
 * path.  The mask is written out here from Philox (DESIGN 4); dropped
 * elements of the full windows hold NaN, inf and the rest, which must not
 * matter; window lengths cross chunk and word boundaries.
 */
static void cross_kept_window(enum ds_method m, int normalize, double p0)
{
	static char raw[4][4 * 5000 + 8], kv[3][4 * 5000 + 8];
	static char o0[4 * 5000 + 8], o1[4 * 5000 + 8];
	static float scratch[2048 * 8] __attribute__((aligned(64)));
	static uint64_t keep[3][5000 / 64 + 2];
	static uint32_t u[5000];
	static const size_t lens[] = { 1, 63, 64, 65, 2047, 2048, 2049, 4159,
				       5000 };
	double w[3] = { 0.75, -1.5, 2.0 }, pp[3] = { p0, 0.5, 0.99 };
	struct ds_mparams mp;
	struct ds_window win, wk;
	unsigned c, j;
	size_t k, es, nv;
	int p;

	ck_assert_int_eq(ds_mparams_init(NULL, &mp, m, 3, w, pp, 0.5,
					 normalize, DS_RESCALE_INVERSE, SEED2), 0);
	ds_mparams_tensor(&mp, NAME1);
	for (c = 0; c < 27 * sizeof(lens) / sizeof(lens[0]); c++) {
		memset(&win, 0, sizeof(win));
		win.bdt = dts[c % 3];
		win.odt = dts[c / 3 % 3];
		win.n = lens[c / 27];
		win.i0 = (c * 7919ull) % 100003;
		win.base = raw[3];
		fill_raw(win.bdt, raw[3], win.n);
		for (j = 0; j < 3; j++) {
			win.xdt[j] = dts[(c / 9 + j) % 3];
			win.x[j] = raw[j];
			fill_raw(win.xdt[j], raw[j], win.n);
		}
		wk = win;
		for (j = 0; j < 3; j += 2) {
			es = win.xdt[j] == DS_DT_F32 ? 4 : 2;
			ds_kernel_scalar_ops.philox(SEED2, j, mp.name_hash,
						    win.i0, win.n, u);
			memset(keep[j], 0, sizeof(keep[j]));
			for (k = 0, nv = 0; k < win.n; k++)
				if (u[k] >= (uint32_t)mp.thr[j]) {
					keep[j][k / 64] |= 1ull << (k % 64);
					memcpy(kv[j] + nv++ * es,
					       raw[j] + k * es, es);
				}
			wk.x[j] = kv[j];
			wk.keep[j] = keep[j];
		}
		win.out = o0;
		ds_method_window(&ds_kernel_scalar_ops, &mp, &win, scratch);
		for (p = 0; p < npaths; p++) {
			wk.out = o1;
			ds_method_window(paths[p], &mp, &wk, scratch);
			ck_assert_msg(!memcmp(o0, o1, win.n * (win.odt ==
							       DS_DT_F32 ? 4 : 2)),
				      "%s, case %u", paths[p]->name, c);
		}
	}
}

/* dare_linear and dare_ties, with and without normalize, p from 0. */
START_TEST(cross_kept_methods)
{
	cross_kept_window(DS_M_DARE_LINEAR, 0, 0.9);
	cross_kept_window(DS_M_DARE_LINEAR, 1, 0.0);
	cross_kept_window(DS_M_DARE_TIES, 0, 0.3);
	cross_kept_window(DS_M_DARE_TIES, 1, 0.9);
}
END_TEST

/* ---- rank selection steps ------------------------------------------- */

/* DESIGN 5.1's key, written out here: |v|'s bits, every NaN above inf. */
static int32_t key_of(float v)
{
	uint32_t a = fb(v) & 0x7fffffffu;

	return (int32_t)(a > 0x7f800000u ? 0x7fffffffu : a);
}

/* Known keys: zeros of both signs, subnormals, infinities, NaNs of every
 * sign and kind, at every start of a 16-lane vector. */
START_TEST(rank_keys_known)
{
	static const uint32_t in[17] = {
		0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x3f800000,
		0xbf800000, 0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000,
		0x7f800001, 0xffbfffff, 0x7fc00000, 0xffc00000, 0x7fffffff,
		0xffffffff, 0x00800000,
	};
	static const uint32_t want[17] = {
		0, 0, 1, 0x007fffff, 0x3f800000, 0x3f800000, 0x7f7fffff,
		0x7f7fffff, 0x7f800000, 0x7f800000, 0x7fffffff, 0x7fffffff,
		0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff, 0x00800000,
	};
	float d[40];
	uint32_t key[40];

	for (int p = 0; p < npaths; p++)
		for (size_t o = 0; o < 16; o++) {
			for (size_t k = 0; k < 17; k++)
				d[o + k] = bf(in[k]);
			memset(key, 0xee, sizeof(key));
			paths[p]->rank_keys(d + o, key + o, 17);
			for (size_t k = 0; k < 17; k++)
				ck_assert_msg(key[o + k] == want[k],
					      "%s: key of %08x is %08x, not %08x",
					      paths[p]->name, in[k], key[o + k],
					      want[k]);
			ck_assert_uint_eq(key[o + 17], 0xeeeeeeeeu);
			if (o)
				ck_assert_uint_eq(key[o - 1], 0xeeeeeeeeu);
		}
}
END_TEST

/*
 * Values for the range steps: specials, and one magnitude m of both
 * signs in every third element, so that many keys equal a cut's.
 */
static void fill_ranked(float *d, size_t n, float m)
{
	fill_f(d, n);
	for (size_t k = 0; k < n; k += 3)
		d[k] = (k & 1) ? -m : m;
}

/* keep_range and count_range on every path: the scalar path's bits, and
 * the count of keys in range this file computes itself. */
static void check_range(const float *d, size_t n, int32_t lo, int32_t hi,
			float s)
{
	static float x0[MAXN + 2], x1[MAXN + 2];
	size_t want = 0;

	for (size_t k = 0; k < n; k++)
		want += lo < key_of(d[k]) && key_of(d[k]) <= hi;
	ds_kernel_scalar_ops.keep_range(d, lo, hi, s, x0 + 1, n);
	for (size_t k = 0; k < n; k++) {
		int in = lo < key_of(d[k]) && key_of(d[k]) <= hi;

		ck_assert_msg(in ? fb(x0[1 + k]) == fb(d[k] * s) ||
				   isnan(d[k] * s) : fb(x0[1 + k]) == 0,
			      "element %zu (%08x) in %d .. %d: %08x", k,
			      fb(d[k]), lo, hi, fb(x0[1 + k]));
	}
	for (int p = 0; p < npaths; p++) {
		x1[0] = x1[n + 1] = 7.0f;
		paths[p]->keep_range(d, lo, hi, s, x1 + 1, n);
		same_f(x0 + 1, x1 + 1, n);
		ck_assert(x1[0] == 7.0f && x1[n + 1] == 7.0f);
		ck_assert_msg(paths[p]->count_range(d, lo, hi, n) == want,
			      "%s: %zu elements in %d .. %d, not %zu",
			      paths[p]->name,
			      paths[p]->count_range(d, lo, hi, n), lo, hi, want);
	}
}

/* Bounds at the edges (-1, 0, inf, NaN's key) and at a key many elements
 * share, odd lengths, misaligned by one float. */
START_TEST(cross_range)
{
	static float d[MAXN + 3];
	const float m = bf(0x3c123000);
	const int32_t km = key_of(m);
	const int32_t bounds[][2] = {
		{ -1, 0x7fffffff }, { -1, -1 }, { -1, 0 }, { 0, 0x7fffffff },
		{ km - 1, km }, { km - 1, 0x7fffffff }, { km, 0x7fffffff },
		{ -1, km - 1 }, { -1, km }, { 0x7f7fffff, 0x7f800000 },
		{ 0x7f800000, 0x7fffffff }, { 0x7ffffffe, 0x7fffffff },
		{ 0x7fffffff, 0x7fffffff }, { 0, 0x007fffff },
	};
	size_t t, n, b;

	FOR_LENS(t) {
		n = LEN(t);
		fill_ranked(d + 1, n, m);
		for (b = 0; b < sizeof(bounds) / sizeof(bounds[0]); b++)
			check_range(d + 1, n, bounds[b][0], bounds[b][1],
				    b & 1 ? 1.0f : bf(special_bits()));
	}
}
END_TEST

/* A count longer than the vector paths' lane counters run before they
 * are folded (2^20 vectors of 16). */
START_TEST(count_range_long)
{
	size_t n = ((size_t)16 << 20) + 21, want = 0;
	float *d = calloc(n, sizeof(*d));

	ck_assert_ptr_nonnull(d);
	for (size_t k = 0; k < n; k += 5) {
		d[k] = k & 2 ? -2.0f : 2.0f;
		want++;
	}
	for (int p = 0; p < npaths; p++) {
		ck_assert_uint_eq(paths[p]->count_range(d, 0x3fffffff,
							0x40000000, n), want);
		ck_assert_uint_eq(paths[p]->count_range(d, -1, 0, n),
				  n - want);
	}
	free(d);
}
END_TEST

/* The chosen path is one of the paths, and the override is obeyed. */
/* ---- LoRA row update (DESIGN 7.1) -------------------------------------- */

/* The rule of kernels.h written out here, not taken from lora.c. */
static void lora_ref(const float *w, const float *v, size_t vs,
		     const float *u, unsigned r, float s, float *x, size_t n)
{
	for (size_t c = 0; c < n; c++) {
		float acc = 0.0f, prod;

		for (unsigned k = 0; k < r; k++) {
			prod = u[k] * v[k * vs + c];
			acc = acc + prod;
		}
		prod = s * acc;
		x[c] = w[c] + prod;
	}
}

/* Hand-computed answers: k order from +0, and no fused multiply-add. */
START_TEST(lora_known)
{
	const float u2[2] = { 1.0f, 2.0f }, v2[2] = { 3.0f, 4.0f }, w1 = 1.0f;
	const float e = 1.0f + 0x1p-12f, w2 = -(1.0f + 0x1p-11f), one = 1.0f;
	float x;

	for (int p = 0; p < npaths; p++) {
		ds_lora_row_fn *row = ds_lora_kernel(paths[p]);

		/* acc = 0 + 1*3 + 2*4 = 11; x = 1 + 0.5*11 */
		row(&w1, v2, 1, u2, 2, 0.5f, &x, 1);
		ck_assert_float_eq(x, 6.5f);
		/* s*acc = (1+2^-12)^2 rounds to 1+2^-11: x = +0 (an FMA
		 * would give 2^-24) */
		row(&w2, &one, 1, &e, 1, e, &x, 1);
		ck_assert_uint_eq(fb(x), 0);
	}
}
END_TEST

/* The picked-column sums of kernels.h written out here: v by columns of
 * rp floats. */
static float pick_ref(const float *v, size_t rp, uint32_t c, const float *u,
		      unsigned r)
{
	float acc = 0.0f, prod;

	for (unsigned k = 0; k < r; k++) {
		prod = u[k] * v[c * rp + k];
		acc = acc + prod;
	}
	return acc;
}

/* Hand-computed: 0 + 1*3 + 2*4 = 11 at column 1 (column 0 and the 6
 * unused values of column 1 hold what must not be summed). */
START_TEST(lora_pick_known)
{
	float v[16] = { 100.0f, 100.0f, 0, 0, 0, 0, 0, 0,
			3.0f, 4.0f, 1e30f, 1e30f, 1e30f, 1e30f, 1e30f, 1e30f };
	const float u[2] = { 1.0f, 2.0f };
	const uint32_t idx[1] = { 1 };
	float acc[2];

	for (int p = 0; p < npaths; p++) {
		acc[1] = 7.0f;
		ds_lora_pick_kernel(paths[p])(v, idx, 1, u, 2, acc);
		ck_assert_float_eq(acc[0], 11.0f);
		ck_assert_float_eq(acc[1], 7.0f);
	}
}
END_TEST

/* Every path against pick_ref: ranks around multiples of 8, any number
 * of columns picked in any order (repeats too), nothing past acc[m - 1]
 * written. */
START_TEST(cross_lora_pick)
{
	static const size_t ms[] = { 0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100 };
	static const unsigned rs[] = { 1, 2, 3, 5, 7, 8, 9, 12, 16, 17, 24 };
	enum { NCOL = 40 };
	static float v[NCOL * 24 + 1], u[25], acc[101];   /* fill_f: +1 */
	static uint32_t idx[100];

	for (size_t a = 0; a < sizeof(ms) / sizeof(ms[0]); a++)
		for (size_t b = 0; b < sizeof(rs) / sizeof(rs[0]); b++) {
			size_t m = ms[a];
			unsigned r = rs[b];
			size_t rp = (r + 7) / 8 * 8;

			fill_f(v, NCOL * rp);
			fill_f(u, r);
			for (size_t l = 0; l < m; l++)
				idx[l] = (uint32_t)rnd() % NCOL;
			for (int p = 0; p < npaths; p++) {
				memset(acc, 0x5a, sizeof(acc));
				ds_lora_pick_kernel(paths[p])(v, idx, m, u, r,
							      acc);
				for (size_t l = 0; l < m; l++) {
					float e = pick_ref(v, rp, idx[l], u, r);

					if (!(e != e && acc[l] != acc[l]))
						ck_assert_msg(fb(e) == fb(acc[l]),
							      "%s m %zu r %u l %zu"
							      ": %08x, expected "
							      "%08x", paths[p]->name,
							      m, r, l, fb(acc[l]),
							      fb(e));
				}
				ck_assert_uint_eq(fb(acc[m]), 0x5a5a5a5au);
			}
		}
}
END_TEST

/* Every path against lora_ref on odd widths, ranks, strides, starts. */
START_TEST(cross_lora)
{
	static const size_t ns[] = { 0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100,
		257 };
	static const unsigned rs[] = { 1, 2, 3, 5, 16, 17 };
	static float w[300], v[17 * 300], u[18], x0[300], x1[300];

	for (size_t a = 0; a < sizeof(ns) / sizeof(ns[0]); a++)
		for (size_t b = 0; b < sizeof(rs) / sizeof(rs[0]); b++) {
			size_t n = ns[a], vs = n + 3;
			unsigned r = rs[b];
			float sc = bf((uint32_t)rnd() & 0x3fffffffu);

			fill_f(w, n + 1);
			fill_f(v, r * vs + 1);
			fill_f(u, r);
			lora_ref(w + 1, v + 1, vs, u, r, sc, x0, n);
			for (int p = 0; p < npaths; p++) {
				memset(x1, 0x5a, sizeof(x1));
				ds_lora_kernel(paths[p])(w + 1, v + 1, vs, u, r,
							 sc, x1, n);
				for (size_t c = 0; c < n; c++)
					if (!(x0[c] != x0[c] && x1[c] != x1[c]))
						ck_assert_msg(fb(x0[c]) ==
							      fb(x1[c]),
							      "%s n %zu r %u c %zu"
							      ": %08x, expected "
							      "%08x", paths[p]->name,
							      n, r, c, fb(x1[c]),
							      fb(x0[c]));
				ck_assert_uint_eq(fb(x1[n]), 0x5a5a5a5au);
			}
		}
}
END_TEST

START_TEST(dispatch)
{
	const struct ds_kernel_ops *k = ds_kernel_select();
	const char *env = getenv("DARE_STREAM_KERNEL");

	ck_assert_ptr_nonnull(ds_kernel_get("scalar"));
	ck_assert_ptr_null(ds_kernel_get("sse9"));
	ck_assert_ptr_null(ds_kernel_get(NULL));
	if (env && *env)
		ck_assert_ptr_eq(k, ds_kernel_get(env));
	else
		ck_assert_ptr_eq(k, paths[npaths - 1]);
}
END_TEST

/* Same random inputs in every test; the paths of this CPU. */
static void setup(void)
{
	rng_state = 0x243f6a8885a308d3ull;
	find_paths();
}

/* One suite, one case per property. */
static Suite *kernels_suite(void)
{
	Suite *s = suite_create("kernels");
	TCase *tc = tcase_create("kernels");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, philox_kat);
	tcase_add_test(tc, xxh32_names);
	tcase_add_test(tc, xxh3_paths);
	tcase_add_test(tc, philox_examples);
	tcase_add_test(tc, keep_patterns);
	tcase_add_test(tc, keep_bits_patterns);
	tcase_add_test(tc, thresholds);
	tcase_add_test(tc, keep_rate);
	tcase_add_test(tc, bf16_round);
	tcase_add_test(tc, f16_round);
	tcase_add_test(tc, f16_load);
	tcase_add_test(tc, f16_exhaustive);
	tcase_add_test(tc, bf16_exhaustive);
	tcase_add_test(tc, cross_load_store);
	tcase_add_test(tc, cross_philox);
	tcase_add_test(tc, cross_keep_bits);
	tcase_add_test(tc, cross_bits_count);
	tcase_add_test(tc, cross_elementwise);
	tcase_add_test(tc, cross_dare_axpy);
	tcase_add_test(tc, kept_axpy_known);
	tcase_add_test(tc, cross_kept_axpy);
	tcase_add_test(tc, cross_ties_finish);
	tcase_add_test(tc, rank_keys_known);
	tcase_add_test(tc, cross_range);
	tcase_add_test(tc, count_range_long);
	tcase_add_test(tc, cross_methods);
	tcase_add_test(tc, cross_kept_methods);
	tcase_add_test(tc, cross_ties_kept);
	tcase_add_test(tc, lora_known);
	tcase_add_test(tc, cross_lora);
	tcase_add_test(tc, lora_pick_known);
	tcase_add_test(tc, cross_lora_pick);
	tcase_add_test(tc, dispatch);
	suite_add_tcase(s, tc);
	return s;
}

/* Exit status: failure if any check failed. */
int main(void)
{
	return run_suite(kernels_suite());
}

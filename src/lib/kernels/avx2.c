/* SPDX-License-Identifier: MIT */
/* avx2.c - the AVX2 + F16C path: the scalar reference's bits, 8 lanes wide */
#include "config.h"

#include <immintrin.h>
#include <string.h>
#include "kernels/kernels.h"
#include "kernels/bits.h"
#include "kernels/convert.h"
#include "kernels/philox.h"

/*
 * Built with -mavx2 -mf16c and nothing else (no FMA: a fused multiply-add
 * would round once where the reference rounds twice).  Only dispatch.c
 * hands these functions out, after checking CPU and OS support.  Every
 * loop runs 8 (or 32) elements at a time, then the scalar reference
 * finishes the tail from the same index, so both give the same bits.
 */
#define REF (&ds_kernel_scalar_ops)

/* ---- conversions ------------------------------------------------------ */

/* 8 BF16 to F32: bits << 16. */
static inline __m256 ld_bf16(const void *p)
{
	__m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));

	return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
}

/* 8 F16 to F32 with VCVTPH2PS: exact, NaN quieted with its payload. */
static inline __m256 ld_f16(const void *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* The integer rounding of convert.h lane by lane, for lanes that are not
 * NaN: add 0x7fff plus the lowest kept bit. */
static inline __m256i bf16_round_num(__m256 v)
{
	__m256i x = _mm256_castps_si256(v);
	__m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16),
				       _mm256_set1_epi32(1));

	return _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)),
				lsb);
}

/*
 * 8 F32 rounded to BF16 in the upper halves of the dwords: bf16_round_num,
 * but NaN lanes get x | 0x00400000 instead, i.e. upper half | 0x40.
 */
static inline __m256i bf16_round(__m256 v)
{
	__m256i x = _mm256_castps_si256(v);
	__m256i r = bf16_round_num(v);
	__m256i q = _mm256_or_si256(x, _mm256_set1_epi32(0x00400000));

	return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r),
		_mm256_castsi256_ps(q), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}

/* 8 F32 to BF16; packus is exact: every lane is < 2^16 after the shift. */
static inline __m128i st_bf16(__m256 v)
{
	__m256i r = _mm256_srli_epi32(bf16_round(v), 16);

	return _mm_packus_epi32(_mm256_castsi256_si128(r),
				_mm256_extracti128_si256(r, 1));
}

/* 16 F32 to BF16: one packus for both halves (it interleaves their
 * 128-bit lanes), then the 64-bit quarters put back in order. */
static inline __m256i st_bf16x16(__m256 a, __m256 b)
{
	__m256i p = _mm256_packus_epi32(_mm256_srli_epi32(bf16_round(a), 16),
					_mm256_srli_epi32(bf16_round(b), 16));

	return _mm256_permute4x64_epi64(p, 0xd8);
}

/* 8 F32 to F16 with VCVTPS2PH, imm 0: nearest-even, NaN as convert.h. */
static inline __m128i st_f16(__m256 v)
{
	return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
}

/* Convert n elements of dt to floats. */
static void load_avx2(enum ds_dtype dt, const void *src, float *dst, size_t n)
{
	const char *s = src;
	size_t i = 0;

	if (dt == DS_DT_BF16)
		for (; i + 8 <= n; i += 8)
			_mm256_storeu_ps(dst + i, ld_bf16(s + 2 * i));
	else if (dt == DS_DT_F16)
		for (; i + 8 <= n; i += 8)
			_mm256_storeu_ps(dst + i, ld_f16(s + 2 * i));
	REF->load(dt, s + i * (dt == DS_DT_BF16 || dt == DS_DT_F16 ? 2 : 4),
		  dst + i, n - i);
}

/* Round n floats to dt. */
static void store_avx2(enum ds_dtype dt, const float *src, void *dst, size_t n)
{
	char *d = dst;
	size_t i = 0;

	if (dt == DS_DT_BF16) {
		for (; i + 16 <= n; i += 16)
			_mm256_storeu_si256((__m256i *)(d + 2 * i),
					    st_bf16x16(_mm256_loadu_ps(src + i),
						       _mm256_loadu_ps(src + i + 8)));
		for (; i + 8 <= n; i += 8)
			_mm_storeu_si128((__m128i *)(d + 2 * i),
					 st_bf16(_mm256_loadu_ps(src + i)));
	} else if (dt == DS_DT_F16)
		for (; i + 8 <= n; i += 8)
			_mm_storeu_si128((__m128i *)(d + 2 * i),
					 st_f16(_mm256_loadu_ps(src + i)));
	REF->store(dt, src + i,
		   d + i * (dt == DS_DT_BF16 || dt == DS_DT_F16 ? 2 : 4), n - i);
}

/* ---- Philox: 4 blocks per register, NCHAIN registers (chains) per step - */

/*
 * Each state word of 4 blocks lives in the low halves of the 4 64-bit
 * lanes of a register, so _mm256_mul_epu32 gives the full 32x32->64
 * products with no shuffling: lo is the product as is (its upper half is
 * never read: mul_epu32 reads only low halves, the last round swaps it
 * out), hi is the product >> 32 (vpsrlq or vpshufd, alternately, to
 * spread the work over the vector ports).
 *
 * Counter words 2 and 3 (j, name hash) are the same for every block and
 * word 1 (block div 2^32) is the same for all blocks of a step but once
 * in 2^34 elements, so round 1's second product, round 2's first and the
 * c3 that round 3 reads are constants of the stream: struct pk holds them
 * for the current word 1, which leaves 1 product in round 1 and 1 in
 * round 2 instead of 2 each.  A step whose blocks straddle a change of
 * word 1 goes to the scalar reference.
 */
struct pk {
	uint32_t k0[DS_PHILOX_ROUNDS], k1[DS_PHILOX_ROUNDS];
	uint32_t j, hash;
	uint64_t hi;    /* counter word 1 the constants below are for */
	uint32_t r1b;   /* round 1: c2 = hi(M0 ctr) ^ r1b */
	uint32_t r2a;   /* round 2: c0 = hi(M1 c2) ^ r2a */
	uint32_t r2c;   /* round 2: c2 = lo(M0 ctr) ^ r2c */
	uint32_t r3c;   /* round 3: c2 = hi(M0 c0) ^ r3c */
	/* Round 10: (key ^ bias, bias) in each 64-bit lane, see p4_last. */
	__m256i last0, last1;
};

/* The constants of rounds 1 to 3 for counter word 1 = hi. */
static void pk_hi(struct pk *pk, uint64_t hi)
{
	uint64_t p1 = (uint64_t)DS_PHILOX_M1 * pk->j;
	uint32_t c0 = (uint32_t)(p1 >> 32) ^ (uint32_t)hi ^ pk->k0[0];
	uint64_t p0 = (uint64_t)DS_PHILOX_M0 * c0;      /* round 2, constant */

	pk->hi = hi;
	pk->r1b = pk->hash ^ pk->k1[0];
	pk->r2a = (uint32_t)p1 ^ pk->k0[1];
	pk->r2c = (uint32_t)(p0 >> 32) ^ pk->k1[1];
	pk->r3c = (uint32_t)p0 ^ pk->k1[2];
}

/* (key ^ bias, bias) in each 64-bit lane. */
static inline __m256i key_bias(uint32_t key, uint32_t bias)
{
	return _mm256_set1_epi64x((long long)(((uint64_t)bias << 32) |
					      (key ^ bias)));
}

/*
 * Round keys of the stream (seed, j, name hash) and the constants for
 * word 1 = 0.  Every output lane comes out XORed with bias (0, or the
 * sign bit that lets a signed compare test u >= thr: see dare8_acc).
 */
static void pk_init(struct pk *pk, uint64_t seed, uint32_t j, uint32_t hash,
		    uint32_t bias)
{
	uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
	int r;

	for (r = 0; r < DS_PHILOX_ROUNDS; r++) {
		pk->k0[r] = k0;
		pk->k1[r] = k1;
		k0 += DS_PHILOX_W0;
		k1 += DS_PHILOX_W1;
	}
	pk->j = j;
	pk->hash = hash;
	pk->last0 = key_bias(pk->k0[DS_PHILOX_ROUNDS - 1], bias);
	pk->last1 = key_bias(pk->k1[DS_PHILOX_ROUNDS - 1], bias);
	pk_hi(pk, 0);
}

/* A stream constant in every dword. */
#define BC(v) _mm256_set1_epi32((int)(v))
#define M0V BC(DS_PHILOX_M0)
#define M1V BC(DS_PHILOX_M1)

/* High halves of the 64-bit products, in the low halves. */
#define HI_SHIFT(p) _mm256_srli_epi64((p), 32)
#define HI_SHUF(p) _mm256_shuffle_epi32((p), 0xf5)

/* Philox state of 4 blocks. */
struct p4 {
	__m256i c0, c1, c2, c3;
};

/*
 * Rounds 1 and 2 of 4 blocks whose counter word 0 is in the low halves
 * of ctr (word 1 is pk->hi); c3 after round 2 is the constant in r3c.
 */
static inline void p4_start(const struct pk *pk, __m256i ctr, struct p4 *s)
{
	__m256i q0 = _mm256_mul_epu32(ctr, M0V);        /* round 1; c3 */
	__m256i c2 = _mm256_xor_si256(HI_SHUF(q0), BC(pk->r1b));
	__m256i p1 = _mm256_mul_epu32(c2, M1V);         /* round 2 */

	s->c0 = _mm256_xor_si256(HI_SHIFT(p1), BC(pk->r2a));
	s->c1 = p1;
	s->c2 = _mm256_xor_si256(q0, BC(pk->r2c));
}

/* Round 3, where c3 is a constant (folded into r3c with the key). */
static inline void p4_round3(const struct pk *pk, struct p4 *s)
{
	__m256i p0 = _mm256_mul_epu32(s->c0, M0V);
	__m256i p1 = _mm256_mul_epu32(s->c2, M1V);

	s->c0 = _mm256_xor_si256(_mm256_xor_si256(s->c1, BC(pk->k0[2])),
				 HI_SHIFT(p1));
	s->c2 = _mm256_xor_si256(HI_SHUF(p0), BC(pk->r3c));
	s->c1 = p1;
	s->c3 = p0;
}

/* One generic round r (3 .. 8, 0-based) of 4 blocks. */
static inline void p4_round(const struct pk *pk, int r, struct p4 *s)
{
	__m256i p0 = _mm256_mul_epu32(s->c0, M0V);
	__m256i p1 = _mm256_mul_epu32(s->c2, M1V);

	s->c0 = _mm256_xor_si256(_mm256_xor_si256(s->c1, BC(pk->k0[r])),
				 HI_SHIFT(p1));
	s->c2 = _mm256_xor_si256(_mm256_xor_si256(s->c3, BC(pk->k1[r])),
				 HI_SHUF(p0));
	s->c1 = p1;
	s->c3 = p0;
}

/*
 * Round 10 and the 16 lanes in element order.  Swapping the halves of a
 * product puts hi where x0 (x2) goes and lo where x1 (x3) goes; one XOR
 * with (c1 ^ key ^ bias, bias) then gives the pair (x0, x1) of each
 * block, biased.  The counter layout (see ctr_offsets) makes the 64-bit
 * interleave of the pairs the element order: blocks 0, 1, then 2, 3.
 */
static inline void p4_last(const struct pk *pk, const struct p4 *s,
			   __m256i u[2])
{
	__m256i p0 = _mm256_mul_epu32(s->c0, M0V);
	__m256i p1 = _mm256_mul_epu32(s->c2, M1V);
	__m256i y01 = _mm256_blend_epi32(_mm256_xor_si256(s->c1, pk->last0),
					 pk->last0, 0xaa);
	__m256i y23 = _mm256_blend_epi32(_mm256_xor_si256(s->c3, pk->last1),
					 pk->last1, 0xaa);
	__m256i t01 = _mm256_xor_si256(_mm256_shuffle_epi32(p1, 0xb1), y01);
	__m256i t23 = _mm256_xor_si256(_mm256_shuffle_epi32(p0, 0xb1), y23);

	u[0] = _mm256_unpacklo_epi64(t01, t23);
	u[1] = _mm256_unpackhi_epi64(t01, t23);
}

/* Block offsets of the 4 64-bit lanes: lanes 0, 1 of 128-bit half L hold
 * blocks L and L+2, so unpacklo/hi give blocks 0, 1 and then 2, 3. */
static inline __m256i ctr_offsets(void)
{
	return _mm256_setr_epi64x(0, 2, 1, 3);
}

/*
 * Independent 4-block chains per step, enough to cover a round's latency
 * (multiply, shift, two XORs) with the other chains' work.  Their 16
 * state words fill the 16 registers, so some live in memory between
 * rounds; measured, that costs less than the latency left uncovered by
 * 3 chains (and 64 elements divide the 2048 of a methods.c chunk).
 */
#define NCHAIN 4
#define STEP (16 * NCHAIN)      /* elements per full step */

/*
 * The 16 * nc lanes of blocks lo .. lo + 4 nc - 1 (counter word 0; word
 * 1 is pk->hi) in element order, the nc chains advanced round by round
 * side by side.
 */
static inline __attribute__((always_inline)) void
philox_step(const struct pk *pk, uint32_t lo, int nc, __m256i *u)
{
	__m256i ctr = _mm256_add_epi64(_mm256_set1_epi64x((long long)lo),
				       ctr_offsets());
	struct p4 s[NCHAIN];
	int r, c;

	/* Keep the keys as memory operands rather than letting them be
	 * hoisted into more registers than there are, then spilled. */
	__asm__("" : "+r"(pk));
#pragma GCC unroll 4
	for (c = 0; c < nc; c++)
		p4_start(pk, _mm256_add_epi64(ctr, _mm256_set1_epi64x(4 * c)),
			 &s[c]);
#pragma GCC unroll 4
	for (c = 0; c < nc; c++)
		p4_round3(pk, &s[c]);
#pragma GCC unroll 8
	for (r = 3; r < DS_PHILOX_ROUNDS - 1; r++)
#pragma GCC unroll 4
		for (c = 0; c < nc; c++)
			p4_round(pk, r, &s[c]);
#pragma GCC unroll 4
	for (c = 0; c < nc; c++)
		p4_last(pk, &s[c], u + 2 * c);
}


/*
 * How many of the m elements from block blk on a vector step can do: a
 * full step (STEP), one chain (16), or 0 when fewer than 16 are left or
 * the 4 blocks of a chain straddle a change of counter word 1.  Makes
 * pk's constants those of blk's word 1.
 */
static inline size_t step_len(struct pk *pk, uint64_t blk, size_t m)
{
	if ((blk >> 32) != pk->hi)
		pk_hi(pk, blk >> 32);
	if (m >= STEP && ((blk + STEP / 4 - 1) >> 32) == pk->hi)
		return STEP;
	if (m < 16 || ((blk + 3) >> 32) != pk->hi)
		return 0;
	return 16;
}

/* u[k] for elements i0 .. i0+n-1. */
static void philox_avx2(uint64_t seed, uint32_t j, uint32_t name_hash,
			uint64_t i0, size_t n, uint32_t *u)
{
	size_t i = ds_philox_head_len(i0, n), m;
	__m256i v[2 * NCHAIN];
	struct pk pk;
	uint64_t blk;
	int q;

	REF->philox(seed, j, name_hash, i0, i, u);
	pk_init(&pk, seed, j, name_hash, 0);
	for (; i < n; i += m) {
		blk = (i0 + i) >> 2;
		m = step_len(&pk, blk, n - i);
		if (m == STEP) {
			philox_step(&pk, (uint32_t)blk, NCHAIN, v);
			for (q = 0; q < 2 * NCHAIN; q++)
				_mm256_storeu_si256((__m256i *)(u + i + 8 * q),
						    v[q]);
		} else if (m) {
			philox_step(&pk, (uint32_t)blk, 1, v);
			_mm256_storeu_si256((__m256i *)(u + i), v[0]);
			_mm256_storeu_si256((__m256i *)(u + i + 8), v[1]);
		} else {
			m = n - i < 16 ? n - i : 16;
			REF->philox(seed, j, name_hash, i0 + i, m, u + i);
		}
	}
}

/*
 * The mask of u >= thr: a full step's 8 vectors (biased, so a signed
 * compare is the unsigned one) compared as they come out of the
 * generator, one movemask byte each, a word a step; a step that is not
 * full (the end, an odd start, a change of counter word 1) draws into u.
 */
static size_t keep_bits_avx2(uint64_t seed, uint32_t j, uint32_t name_hash,
			     uint64_t i0, size_t n, uint32_t thr,
			     uint64_t *bits)
{
	const uint32_t bias = 0x80000000u;
	const __m256i tb = BC((thr - 1) ^ bias);
	__m256i v[2 * NCHAIN];
	uint32_t u[STEP];
	size_t i, c, kept = 0;
	struct pk pk;
	uint64_t blk, w;
	int q;

	pk_init(&pk, seed, j, name_hash, bias);
	for (i = 0; i < n; i += c) {
		c = n - i < STEP ? n - i : STEP;
		blk = (i0 + i) >> 2;
		if (i0 % 4 || c < STEP || step_len(&pk, blk, c) != STEP) {
			philox_avx2(seed, j, name_hash, i0 + i, c, u);
			kept += ds_keep_bits(u, c, thr, bits + i / 64);
			continue;
		}
		philox_step(&pk, (uint32_t)blk, NCHAIN, v);
		for (w = 0, q = 0; q < 2 * NCHAIN; q++)
			w |= (uint64_t)(uint32_t)_mm256_movemask_ps(
				_mm256_castsi256_ps(_mm256_cmpgt_epi32(v[q], tb)))
			     << 8 * q;
		bits[i / 64] = w;
		kept += ds_popcount64(w);
	}
	return kept;
}

/* ---- elementwise steps ------------------------------------------------ */

/* All-ones lanes where u >= thr (unsigned; thr >= 1): u > thr - 1. */
static inline __m256i keep_mask(__m256i u, __m256i thr_m1_biased)
{
	const __m256i bias = _mm256_set1_epi32((int)0x80000000u);

	return _mm256_cmpgt_epi32(_mm256_xor_si256(u, bias), thr_m1_biased);
}

/* (u >= thr) ? (x - b) * s : +0 for 8 lanes (thr >= 1). */
static inline __m256 dare8(__m256 b, __m256 x, __m256i u, __m256i thrb,
			   __m256 s)
{
	__m256 d = _mm256_mul_ps(_mm256_sub_ps(x, b), s);

	return _mm256_and_ps(d, _mm256_castsi256_ps(keep_mask(u, thrb)));
}

/* thr - 1 with the sign bit flipped, for keep_mask. */
static inline __m256i thr_biased(uint32_t thr)
{
	return _mm256_set1_epi32((int)((thr - 1) ^ 0x80000000u));
}

/* d = kept ? (x - b) * s : +0 */
static void sparsify_avx2(const float *b, const float *x, const uint32_t *u,
			  uint32_t thr, float s, float *d, size_t n)
{
	const __m256 sv = _mm256_set1_ps(s);
	const __m256i tb = thr_biased(thr);
	size_t i = 0;
	__m256i uv;

	for (; thr && i + 8 <= n; i += 8) {
		uv = _mm256_loadu_si256((const __m256i *)(u + i));
		_mm256_storeu_ps(d + i, dare8(_mm256_loadu_ps(b + i),
					      _mm256_loadu_ps(x + i), uv, tb, sv));
	}
	REF->sparsify(b + i, x + i, u + i, thr, s, d + i, n - i);
}

/* d = x - b */
static void delta_avx2(const float *b, const float *x, float *d, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(d + i, _mm256_sub_ps(_mm256_loadu_ps(x + i),
						      _mm256_loadu_ps(b + i)));
	REF->delta(b + i, x + i, d + i, n - i);
}

/* acc = acc + w * d */
static void axpy_avx2(float *acc, float w, const float *d, size_t n)
{
	const __m256 wv = _mm256_set1_ps(w);
	size_t i = 0;
	__m256 t;

	for (; i + 8 <= n; i += 8) {
		t = _mm256_mul_ps(wv, _mm256_loadu_ps(d + i));
		_mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), t));
	}
	REF->axpy(acc + i, w, d + i, n - i);
}

/* thr = 0 keeps all: acc = acc + w * ((x - b) * s), no Philox. */
static size_t keep_all_axpy(float *acc, const float *b, const float *x,
			    float s, float w, size_t n)
{
	const __m256 sv = _mm256_set1_ps(s), wv = _mm256_set1_ps(w);
	size_t i = 0;
	__m256 d;

	for (; i + 8 <= n; i += 8) {
		d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i),
						_mm256_loadu_ps(b + i)), sv);
		d = _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_mul_ps(wv, d));
		_mm256_storeu_ps(acc + i, d);
	}
	return i;
}

/* The constants of one dare_axpy call. */
struct dv {
	__m256 s, w;
	__m256i thrb;   /* thr - 1, biased as the Philox lanes are */
};

/*
 * acc = acc + w * (kept ? (x - b) * s : +0) for 8 lanes.  ub is u with
 * its sign bit flipped, so the signed compare ub > thrb is the unsigned
 * u > thr - 1, i.e. u >= thr (thr >= 1 here).
 */
static inline void dare8_acc(float *acc, const float *b, const float *x,
			     __m256i ub, const struct dv *c)
{
	__m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(ub, c->thrb));
	__m256 d = _mm256_sub_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(b));

	d = _mm256_and_ps(_mm256_mul_ps(d, c->s), keep);
	d = _mm256_add_ps(_mm256_loadu_ps(acc), _mm256_mul_ps(c->w, d));
	_mm256_storeu_ps(acc, d);
}

/* One vector step of dare_axpy: m (STEP or 16) elements. */
static inline void dare_step(float *acc, const float *b, const float *x,
			     const struct pk *pk, uint64_t blk,
			     const struct dv *c, size_t m)
{
	__m256i u[2 * NCHAIN];
	int q;

	if (m == STEP) {
		philox_step(pk, (uint32_t)blk, NCHAIN, u);
#pragma GCC unroll 8
		for (q = 0; q < 2 * NCHAIN; q++)
			dare8_acc(acc + 8 * q, b + 8 * q, x + 8 * q, u[q], c);
		return;
	}
	philox_step(pk, (uint32_t)blk, 1, u);
	dare8_acc(acc, b, x, u[0], c);
	dare8_acc(acc + 8, b + 8, x + 8, u[1], c);
}

/* acc = acc + w * sparsify(x - b): scalar head to a block start, vector
 * steps (Philox, mask, rescale and accumulate fused), scalar tail. */
static void dare_axpy_avx2(float *acc, const float *b, const float *x,
			   const struct ds_dare *dp, uint64_t i0, size_t n)
{
	const uint32_t bias = 0x80000000u;
	const struct dv c = { _mm256_set1_ps(dp->s), _mm256_set1_ps(dp->w),
			      BC((dp->thr - 1) ^ bias) };
	size_t i = ds_philox_head_len(i0, n), m;
	struct pk pk;
	uint64_t blk;

	if (!dp->thr) {
		i = keep_all_axpy(acc, b, x, dp->s, dp->w, n);
		REF->dare_axpy(acc + i, b + i, x + i, dp, i0 + i, n - i);
		return;
	}
	REF->dare_axpy(acc, b, x, dp, i0, i);
	pk_init(&pk, dp->seed, dp->j, dp->name_hash, bias);
	for (; i < n; i += m) {
		blk = (i0 + i) >> 2;
		m = step_len(&pk, blk, n - i);
		if (m) {
			dare_step(acc + i, b + i, x + i, &pk, blk, &c, m);
			continue;
		}
		m = n - i < 16 ? n - i : 16;    /* tail, or word 1 changes */
		REF->dare_axpy(acc + i, b + i, x + i, dp, i0 + i, m);
	}
}

/* How many of the low 7 bits of x are set. */
#define POP7(x) (((x) & 1) + ((x) >> 1 & 1) + ((x) >> 2 & 1) + \
		 ((x) >> 3 & 1) + ((x) >> 4 & 1) + ((x) >> 5 & 1) + \
		 ((x) >> 6 & 1))

/*
 * For each 8-bit mask m, lane l of lanes[m] is where lane l's value sits
 * among the kept ones (vpermps reads only the low 3 bits), with the sign
 * bit set where lane l is dropped (a blendv selector); nkept8[m] is how
 * many lanes m keeps.
 */
#define LANE(m, l) ((m) >> (l) & 1 ? (int32_t)POP7((m) & ((1u << (l)) - 1)) : \
		    INT32_MIN)
#define LANES(m) { LANE(m, 0), LANE(m, 1), LANE(m, 2), LANE(m, 3), \
		   LANE(m, 4), LANE(m, 5), LANE(m, 6), LANE(m, 7) }
#define LN4(m) LANES(m), LANES((m) + 1), LANES((m) + 2), LANES((m) + 3)
#define LN16(m) LN4(m), LN4((m) + 4), LN4((m) + 8), LN4((m) + 12)
#define LN64(m) LN16(m), LN16((m) + 16), LN16((m) + 32), LN16((m) + 48)
static const int32_t lanes[256][8] __attribute__((aligned(32))) = {
	LN64(0), LN64(64), LN64(128), LN64(192)
};
#define KC(m) (POP7(m) + ((m) >> 7))
#define KC4(m) KC(m), KC((m) + 1), KC((m) + 2), KC((m) + 3)
#define KC16(m) KC4(m), KC4((m) + 4), KC4((m) + 8), KC4((m) + 12)
#define KC64(m) KC16(m), KC16((m) + 16), KC16((m) + 32), KC16((m) + 48)
static const uint8_t nkept8[256] = { KC64(0), KC64(64), KC64(128), KC64(192) };

/* The constants of one kept_axpy call. */
struct kv {
	__m256 s, w;
	__m256i lane;   /* lane */
};

/*
 * dare8_acc with the mask given (m) and only the kept values: the kept
 * ones at v are loaded (vmaskmovps: no lane past them is read) and put
 * in their lanes by vpermps.  Returns how many were read.
 */
static inline unsigned kept8(float *acc, const float *b, const float *v,
			     unsigned m, const struct kv *c)
{
	__m256i ln = _mm256_load_si256((const __m256i *)lanes[m]);
	unsigned pc = nkept8[m];
	__m256 x = _mm256_maskload_ps(v, _mm256_cmpgt_epi32(
		_mm256_set1_epi32((int)pc), c->lane));
	__m256 d;

	x = _mm256_permutevar8x32_ps(x, ln);
	d = _mm256_sub_ps(x, _mm256_loadu_ps(b));
	/* +0 where lane l is dropped: the sign bit of ln's lane l */
	d = _mm256_blendv_ps(_mm256_mul_ps(d, c->s), _mm256_setzero_ps(),
			     _mm256_castsi256_ps(ln));
	d = _mm256_add_ps(_mm256_loadu_ps(acc), _mm256_mul_ps(c->w, d));
	_mm256_storeu_ps(acc, d);
	return pc;
}

/* dare_axpy with the mask as bits and v the kept values (kernels.h);
 * the scalar reference takes the last n % 8, from the rest of a word. */
static void kept_axpy_avx2(float *acc, const float *b, const float *v,
			   size_t nv, const uint64_t *keep, float s, float w,
			   size_t n)
{
	const struct kv c = {
		_mm256_set1_ps(s), _mm256_set1_ps(w),
		_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
	};
	size_t i, r = 0;
	uint64_t rest;

	for (i = 0; i + 8 <= n; i += 8)
		r += kept8(acc + i, b + i, v + r,
			   (unsigned)(keep[i / 64] >> (i % 64)) & 0xff, &c);
	if (i < n) {
		rest = keep[i / 64] >> (i % 64);
		REF->kept_axpy(acc + i, b + i, v + r, nv - r, &rest, s, w,
			       n - i);
	}
}

/*
 * TIES for 8 elements.  The elected terms are added as (a ? e : +0):
 * acc and D start at +0 and are never -0, so adding +0 leaves them as the
 * reference leaves them when it skips.  e > 0 already implies e != 0.
 */
static inline void ties8(const float *e, size_t stride, unsigned nm,
			 const float *w, float *acc, float *dsum)
{
	const __m256 z = _mm256_setzero_ps();
	__m256 S = z, a = z, D = z, v, pos, sel;
	unsigned j;

	for (j = 0; j < nm; j++)
		S = _mm256_add_ps(S, _mm256_loadu_ps(e + j * stride));
	pos = _mm256_cmp_ps(S, z, _CMP_GE_OQ);      /* NaN: -1 */
	for (j = 0; j < nm; j++) {
		v = _mm256_loadu_ps(e + j * stride);
		sel = _mm256_blendv_ps(_mm256_cmp_ps(v, z, _CMP_LT_OQ),
				       _mm256_cmp_ps(v, z, _CMP_GT_OQ), pos);
		a = _mm256_add_ps(a, _mm256_and_ps(v, sel));
		D = _mm256_add_ps(D, _mm256_and_ps(_mm256_set1_ps(w[j]), sel));
	}
	_mm256_storeu_ps(acc, a);
	_mm256_storeu_ps(dsum, D);
}

/* TIES over n elements. */
static void ties_avx2(const float *e, size_t stride, unsigned nm,
		      const float *w, float *acc, float *dsum, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		ties8(e + i, stride, nm, w, acc + i, dsum + i);
	REF->ties(e + i, stride, nm, w, acc + i, dsum + i, n - i);
}

/* The canonical NaN where v is NaN, else v. */
static inline __m256 canon8(__m256 v)
{
	const __m256 canon = _mm256_castsi256_ps(
		_mm256_set1_epi32((int)DS_CANON_NAN_BITS));

	return _mm256_blendv_ps(v, canon, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

/* acc = canon(b + lambda * acc): finish without a division, the case of
 * dare_linear and dare_ties, in a loop of its own.  Returns the count
 * done. */
static size_t finish_base(float *acc, const float *b, float lambda, size_t n)
{
	const __m256 lam = _mm256_set1_ps(lambda);
	size_t i = 0;
	__m256 v;

	for (; i + 8 <= n; i += 8) {
		v = _mm256_mul_ps(lam, _mm256_loadu_ps(acc + i));
		v = _mm256_add_ps(_mm256_loadu_ps(b + i), v);
		_mm256_storeu_ps(acc + i, canon8(v));
	}
	return i;
}

/* Normalize, add the base scaled by lambda, canonicalize NaN. */
static void finish_avx2(float *acc, const float *b, const float *dsum,
			float div, float lambda, size_t n)
{
	const __m256 one = _mm256_set1_ps(1.0f), dv = _mm256_set1_ps(div);
	const __m256 lam = _mm256_set1_ps(lambda);
	size_t i = 0;
	__m256 v, d;

	if (b && !dsum && div == 0.0f)
		i = finish_base(acc, b, lambda, n);
	for (; i + 8 <= n; i += 8) {
		v = _mm256_loadu_ps(acc + i);
		if (dsum) {
			d = _mm256_loadu_ps(dsum + i);
			d = _mm256_blendv_ps(d, one, _mm256_cmp_ps(d, _mm256_setzero_ps(),
								   _CMP_EQ_OQ));
			v = _mm256_div_ps(v, d);
		} else if (div != 0.0f) {
			v = _mm256_div_ps(v, dv);
		}
		if (b)
			v = _mm256_add_ps(_mm256_loadu_ps(b + i), _mm256_mul_ps(lam, v));
		_mm256_storeu_ps(acc + i, canon8(v));
	}
	REF->finish(acc + i, b ? b + i : NULL, dsum ? dsum + i : NULL, div,
		    lambda, n - i);
}

/* 8 elements of dt at element i of p. */
static inline __m256 ld8(enum ds_dtype dt, const void *p, size_t i)
{
	if (dt == DS_DT_BF16)
		return ld_bf16((const char *)p + 2 * i);
	if (dt == DS_DT_F16)
		return ld_f16((const char *)p + 2 * i);
	return _mm256_loadu_ps((const float *)p + i);
}

/* 8 floats rounded to dt into element i of p. */
static inline void st8(enum ds_dtype dt, void *p, size_t i, __m256 v)
{
	if (dt == DS_DT_BF16)
		_mm_storeu_si128((__m128i *)((char *)p + 2 * i), st_bf16(v));
	else if (dt == DS_DT_F16)
		_mm_storeu_si128((__m128i *)((char *)p + 2 * i), st_f16(v));
	else
		_mm256_storeu_ps((float *)p + i, v);
}

/* The last kept values of a model, fewer than 8 from v[r] on, into tail. */
static __attribute__((noinline)) const void *
kept_tail(const char *v, size_t nv, size_t es, size_t r, char *tail)
{
	memset(tail, 0, 32);
	memcpy(tail, v + r * es, (nv - r) * es);
	return tail;
}

/* 8 F32 to BF16 as st_bf16 where no lane is a NaN but the canonical one
 * (whose rounding gives its upper half as the NaN rule does). */
static inline __m128i st_bf16_canon(__m256 v)
{
	__m256i r = _mm256_srli_epi32(bf16_round_num(v), 16);

	return _mm_packus_epi32(_mm256_castsi256_si128(r),
				_mm256_extracti128_si256(r, 1));
}

/* Vectors of 8 per ties_kept step: enough independent work in flight
 * to cover the latency of one element's chain (expand, row, sums,
 * election, finish, rounding), which one vector alone leaves exposed. */
#define TKV 4

/* How a ties_kept step reads its models: each as it says, or all of them
 * given by their kept values, or all read whole with a mask. */
enum tk_mode { TK_ANY, TK_KEPT, TK_WHOLE };

/* A ties_kept call's models as its steps read them, in locals the
 * output's stores cannot alias. */
struct tk_in {
	const uint64_t *keep[DS_MAX_MODELS];
	const char *v[DS_MAX_MODELS];
	size_t nv[DS_MAX_MODELS], r[DS_MAX_MODELS];
	enum ds_dtype dt[DS_MAX_MODELS];
	bool kept[DS_MAX_MODELS];
	__m256 s[DS_MAX_MODELS], w[DS_MAX_MODELS];
};

/*
 * One ties_kept step of 8 * TKV elements from i (a multiple of 8 * TKV,
 * so the lanes are 4 bytes of one word of each mask), lane by lane the
 * reference's steps:
 *   - row e_j = w_j * ((x - b) * s_j), +0 where dropped (blendv on
 *     lanes[m]), x expanded from the kept values by vpermps on lanes[m];
 *     the reference's +0 + in front only turns -0 into +0, which neither
 *     S nor the election can tell apart;
 *   - the election: e_j has S's sign (S >= 0 counts as +) and is not
 *     zero or NaN iff (e_j ^ sign) > 0, sign the sign bit where S is
 *     not >= 0; D only when it divides;
 *   - finish as finish_avx2, the store as store_avx2.
 * xdt is every model's dtype, or -1 to read each one's.
 */
static inline __attribute__((always_inline)) void
tk_step(struct tk_in *in, unsigned nm, const void *bp, void *out, size_t i,
	bool norm, __m256 lam, enum ds_dtype bdt, int xdt, enum ds_dtype odt,
	enum tk_mode mode)
{
	const __m256 z = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
	const __m256 sgn = _mm256_set1_ps(-0.0f);
	__m256 e[DS_MAX_MODELS][TKV], b[TKV], S[TKV], a[TKV], D[TKV];
	__m256 x, v, ns, sel, lm;
	unsigned j, q, m;

#pragma GCC unroll 4
	for (q = 0; q < TKV; q++) {
		b[q] = ld8(bdt, bp, i + 8 * q);
		S[q] = z;
	}
	for (j = 0; j < nm; j++) {
		enum ds_dtype dt = xdt < 0 ? in->dt[j] : (enum ds_dtype)xdt;
		size_t es = dt == DS_DT_F32 ? 4 : 2;
		bool kept = mode == TK_ANY ? in->kept[j] : mode == TK_KEPT;
		bool all = mode == TK_ANY ? !in->keep[j] : false;
		uint32_t m32 = all ? 0 :
			       (uint32_t)(in->keep[j][i / 64] >> (i % 64));
		size_t rj = in->r[j];

#pragma GCC unroll 4
		for (q = 0; q < TKV; q++) {
			m = m32 >> 8 * q & 0xff;
			lm = _mm256_load_ps((const float *)lanes[m]);
			if (kept) {
				const void *src = in->v[j] + rj * es;
				char tail[32] __attribute__((aligned(32)));

				if (__builtin_expect(rj + 8 > in->nv[j], 0))
					src = kept_tail(in->v[j], in->nv[j], es,
							rj, tail);
				x = _mm256_permutevar8x32_ps(ld8(dt, src, 0),
					_mm256_castps_si256(lm));
				rj += nkept8[m];
			} else {
				x = ld8(dt, in->v[j], i + 8 * q);
			}
			x = _mm256_mul_ps(_mm256_sub_ps(x, b[q]), in->s[j]);
			x = _mm256_mul_ps(in->w[j], x);
			if (!all)
				x = _mm256_blendv_ps(x, z, lm);
			e[j][q] = x;
			S[q] = _mm256_add_ps(S[q], x);
		}
		in->r[j] = rj;
	}
#pragma GCC unroll 4
	for (q = 0; q < TKV; q++) {
		ns = _mm256_andnot_ps(_mm256_cmp_ps(S[q], z, _CMP_GE_OQ), sgn);
		a[q] = z;
		D[q] = z;
		for (j = 0; j < nm; j++) {
			v = e[j][q];
			sel = _mm256_cmp_ps(_mm256_xor_ps(v, ns), z, _CMP_GT_OQ);
			a[q] = _mm256_add_ps(a[q], _mm256_and_ps(v, sel));
			if (norm)
				D[q] = _mm256_add_ps(D[q],
						     _mm256_and_ps(in->w[j], sel));
		}
	}
#pragma GCC unroll 4
	for (q = 0; q < TKV; q++) {
		v = a[q];
		if (norm)
			v = _mm256_div_ps(v, _mm256_blendv_ps(D[q], one,
				_mm256_cmp_ps(D[q], z, _CMP_EQ_OQ)));
		v = canon8(_mm256_add_ps(b[q], _mm256_mul_ps(lam, v)));
		if (odt == DS_DT_BF16)
			_mm_storeu_si128((__m128i *)((char *)out +
						     2 * (i + 8 * q)),
					 st_bf16_canon(v));
		else
			st8(odt, out, i + 8 * q, v);
	}
}

/* The steps of one case, with what the compiler may know of it. */
#define TK_LOOP(norm, bdt, xdt, odt, mode) \
	for (; i + 8 * TKV <= n; i += 8 * TKV) \
		tk_step(&in, t->nm, t->b, t->out, i, norm, lam, bdt, xdt, \
			odt, mode)

/* The BF16 base and output cases of models all of dtype xdt, read as
 * mode says, normalize or not. */
#define TK_BF16(xdt, mode) \
	do { \
		if (t->normalize) \
			TK_LOOP(true, DS_DT_BF16, xdt, DS_DT_BF16, mode); \
		else \
			TK_LOOP(false, DS_DT_BF16, xdt, DS_DT_BF16, mode); \
	} while (0)

/*
 * ties_kept: whole steps, with what the compiler may know of the usual
 * cases: a BF16 base and output and models all BF16 (checkpoints) or all
 * F32 (LoRA models, whose values stay binary32), all given by their kept
 * values or all read whole with a mask; the reference for the tail.
 */
void ds_ties_kept_avx2(const struct ds_tk *t, size_t n)
{
	const __m256 lam = _mm256_set1_ps(t->lambda);
	bool bf = t->bdt == DS_DT_BF16 && t->odt == DS_DT_BF16;
	unsigned j, nkept = 0, nmask = 0, nbf = 0, nf32 = 0;
	struct tk_in in;
	size_t i = 0;

	for (j = 0; j < t->nm; j++) {
		in.keep[j] = t->m[j].keep;
		in.v[j] = t->m[j].v;
		in.nv[j] = t->m[j].nv;
		in.r[j] = 0;
		in.dt[j] = t->m[j].dt;
		in.kept[j] = t->m[j].kept;
		in.s[j] = _mm256_set1_ps(t->m[j].s);
		in.w[j] = _mm256_set1_ps(t->m[j].w);
		nbf += t->m[j].dt == DS_DT_BF16;
		nf32 += t->m[j].dt == DS_DT_F32;
		nkept += t->m[j].kept;
		nmask += !t->m[j].kept && t->m[j].keep;
	}
	if (bf && nbf == t->nm && nkept == t->nm)
		TK_BF16(DS_DT_BF16, TK_KEPT);
	else if (bf && nbf == t->nm && nmask == t->nm)
		TK_BF16(DS_DT_BF16, TK_WHOLE);
	else if (bf && nf32 == t->nm && nkept == t->nm)
		TK_BF16(DS_DT_F32, TK_KEPT);
	else if (bf && nf32 == t->nm && nmask == t->nm)
		TK_BF16(DS_DT_F32, TK_WHOLE);
	else
		TK_LOOP(t->normalize, t->bdt, -1, t->odt, TK_ANY);
	ds_ties_kept_ref(t, i, n);
}

/* ---- rank selection ----------------------------------------------------- */

/* Rank keys of 8 floats: |d|'s bits, 0x7fffffff for a NaN (a NaN's bits
 * are above the infinity's, and or-ing the mask in gives all ones). */
static inline __m256i key8(const float *d)
{
	const __m256i abs = _mm256_set1_epi32(0x7fffffff);
	__m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)d),
				     abs);
	__m256i nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f800000));

	return _mm256_or_si256(a, _mm256_and_si256(nan, abs));
}

/* All ones where lo < key <= hi (keys and bounds fit int32). */
static inline __m256i range8(__m256i key, __m256i lo, __m256i hi)
{
	return _mm256_andnot_si256(_mm256_cmpgt_epi32(key, hi),
				   _mm256_cmpgt_epi32(key, lo));
}

/* key = rank key of d */
static void rank_keys_avx2(const float *d, uint32_t *key, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_si256((__m256i *)(key + i), key8(d + i));
	REF->rank_keys(d + i, key + i, n - i);
}

/* x = key in range ? d * s : +0 */
static void keep_range_avx2(const float *d, int32_t lo, int32_t hi, float s,
			    float *x, size_t n)
{
	const __m256i lv = _mm256_set1_epi32(lo), hv = _mm256_set1_epi32(hi);
	const __m256 sv = _mm256_set1_ps(s);
	size_t i = 0;
	__m256 t;

	for (; i + 8 <= n; i += 8) {
		t = _mm256_mul_ps(_mm256_loadu_ps(d + i), sv);
		t = _mm256_and_ps(t, _mm256_castsi256_ps(range8(key8(d + i),
								lv, hv)));
		_mm256_storeu_ps(x + i, t);
	}
	REF->keep_range(d + i, lo, hi, s, x + i, n - i);
}

/* How many keys are in range: lanes count down from 0 by their masks,
 * folded into c every 2^20 vectors, long before a lane could wrap. */
static size_t count_range_avx2(const float *d, int32_t lo, int32_t hi,
			       size_t n)
{
	const __m256i lv = _mm256_set1_epi32(lo), hv = _mm256_set1_epi32(hi);
	uint32_t l[8];
	size_t i = 0, c = 0, end;
	__m256i acc;

	while (i + 8 <= n) {
		end = n - i > ((size_t)8 << 20) ? i + ((size_t)8 << 20) : n;
		acc = _mm256_setzero_si256();
		for (; i + 8 <= end; i += 8)
			acc = _mm256_sub_epi32(acc, range8(key8(d + i), lv, hv));
		_mm256_storeu_si256((__m256i *)l, acc);
		for (unsigned q = 0; q < 8; q++)
			c += l[q];
	}
	return c + REF->count_range(d + i, lo, hi, n - i);
}

/* The bits.h count, built here for the POPCNT instruction. */
static size_t bits_count_avx2(const uint64_t *bits, size_t n)
{
	return ds_bits_count(bits, n);
}

const struct ds_kernel_ops ds_kernel_avx2_ops = {
	.name = "avx2",
	.load = load_avx2,
	.store = store_avx2,
	.philox = philox_avx2,
	.keep_bits = keep_bits_avx2,
	.bits_count = bits_count_avx2,
	.sparsify = sparsify_avx2,
	.delta = delta_avx2,
	.axpy = axpy_avx2,
	.dare_axpy = dare_axpy_avx2,
	.kept_axpy = kept_axpy_avx2,
	.ties = ties_avx2,
	.finish = finish_avx2,
	.rank_keys = rank_keys_avx2,
	.keep_range = keep_range_avx2,
	.count_range = count_range_avx2,
	.ties_kept = ds_ties_kept_avx2,
};

/* SPDX-License-Identifier: MIT */
/* avx512.c - the AVX-512 F/BW/VL path: the scalar reference's bits, 16 wide */
#include "config.h"

#include <immintrin.h>
#include "kernels/kernels.h"
#include "kernels/bits.h"
#include "kernels/convert.h"
#include "kernels/philox.h"

/*
 * Built with -mavx512f -mavx512bw -mavx512vl -mf16c -mavx2 -mpopcnt and,
 * like every file, -ffp-contract=off: AVX-512F has fused multiply-adds,
 * and only that flag keeps the compiler from fusing a product and a sum
 * the reference rounds apart.  Nothing here needs AVX512DQ or later
 * extensions (NaN
 * tests use vcmpps, not vfpclassps).  Only dispatch.c hands these
 * functions out, after checking CPU and OS support.  Loops run 16 or 32
 * elements a step (Philox: 256); the last partial vector uses masked
 * loads and stores, which neither read nor write a masked-off lane (no
 * fault, no slack needed), so every element goes through the same
 * operations and the scalar reference is left only the few elements
 * before a Philox block boundary.
 */
#define REF (&ds_kernel_scalar_ops)

/* Lanes 0 .. m-1 of 16 (all 16 when m >= 16). */
static inline __mmask16 lanes16(size_t m)
{
	return m >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << m) - 1);
}

/*
 * The loops below call a 16-lane step with ALL16 for full vectors, which
 * the compiler folds into plain loads and stores (a masked load costs an
 * extra uop), then once with lanes16() for the tail.
 */
#define ALL16 ((__mmask16)0xffff)

/* ---- conversions ------------------------------------------------------ */

/*
 * vpermw indexes that put BF16 k (lo) or 16 + k (hi) of a vector in the
 * upper half of dword k; zero-masking the even words makes the lower half
 * 0, so one shuffle is the whole exact "bits << 16" conversion.
 */
static const uint16_t bf16_widx[32] __attribute__((aligned(64))) = {
	0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7,
	0, 8, 0, 9, 0, 10, 0, 11, 0, 12, 0, 13, 0, 14, 0, 15,
};
#define ODD_WORDS ((__mmask32)0xaaaaaaaau)

/* Index of the lower 16 BF16 of a vector. */
static inline __m512i bf16_lo_idx(void)
{
	return _mm512_load_si512(bf16_widx);
}

/* 16 BF16 (words 0..15 of h) to F32. */
static inline __m512 bf16_cvt(__m512i h, __m512i idx)
{
	return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(ODD_WORDS,
								  idx, h));
}

/* Convert n BF16 to floats: 32 per load, then a masked tail. */
static void load_bf16(const uint16_t *s, float *dst, size_t n)
{
	const __m512i lo = bf16_lo_idx();
	const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
	size_t i = 0;
	__m512i h;
	__mmask16 k;

	for (; i + 32 <= n; i += 32) {
		h = _mm512_loadu_si512(s + i);
		_mm512_storeu_ps(dst + i, bf16_cvt(h, lo));
		_mm512_storeu_ps(dst + i + 16, bf16_cvt(h, hi));
	}
	for (; i < n; i += 16) {
		k = lanes16(n - i);
		h = _mm512_castsi256_si512(_mm256_maskz_loadu_epi16(k, s + i));
		_mm512_mask_storeu_ps(dst + i, k, bf16_cvt(h, lo));
	}
}

/* 16 F16 with VCVTPH2PS (exact, NaN quieted with its payload), lanes k. */
static inline void f16_cvt(const uint16_t *s, float *dst, __mmask16 k)
{
	_mm512_mask_storeu_ps(dst, k, _mm512_cvtph_ps(
		_mm256_maskz_loadu_epi16(k, s)));
}

/* Convert n F16 to floats. */
static void load_f16(const uint16_t *s, float *dst, size_t n)
{
	size_t i;

	for (i = 0; i + 16 <= n; i += 16)
		f16_cvt(s + i, dst + i, ALL16);
	if (i < n)
		f16_cvt(s + i, dst + i, lanes16(n - i));
}

/* Convert n elements of dt to floats (F32 is a copy). */
static void load_avx512(enum ds_dtype dt, const void *src, float *dst,
			size_t n)
{
	if (dt == DS_DT_BF16)
		load_bf16(src, dst, n);
	else if (dt == DS_DT_F16)
		load_f16(src, dst, n);
	else
		REF->load(dt, src, dst, n);
}

/*
 * 16 F32 rounded to BF16 in the upper halves of the dwords (convert.h
 * lane by lane): add 0x7fff plus the lowest kept bit (vptestmd makes that
 * bit a mask for the +1); NaN lanes get x | 0x00400000 instead, i.e. the
 * upper half | 0x40.
 */
static inline __m512i bf16_round(__m512 v)
{
	__m512i x = _mm512_castps_si512(v);
	__mmask16 odd = _mm512_test_epi32_mask(x, _mm512_set1_epi32(0x10000));
	__mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
	__m512i r = _mm512_add_epi32(x, _mm512_set1_epi32(0x7fff));

	r = _mm512_mask_add_epi32(r, odd, r, _mm512_set1_epi32(1));
	return _mm512_mask_or_epi32(r, nan, x, _mm512_set1_epi32(0x00400000));
}

/* vpermt2w index: the upper word of each dword of a, then of b. */
static const uint16_t bf16_hidx[32] __attribute__((aligned(64))) = {
	1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
	33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63,
};

/* Round n floats to BF16: 32 per store, then a masked tail. */
static void store_bf16(const float *src, uint16_t *d, size_t n)
{
	const __m512i idx = _mm512_load_si512(bf16_hidx);
	size_t i = 0;
	__m512i r0, r1;
	__mmask16 k;

	for (; i + 32 <= n; i += 32) {
		r0 = bf16_round(_mm512_loadu_ps(src + i));
		r1 = bf16_round(_mm512_loadu_ps(src + i + 16));
		_mm512_storeu_si512(d + i,
				    _mm512_permutex2var_epi16(r0, idx, r1));
	}
	for (; i < n; i += 16) {
		k = lanes16(n - i);
		r0 = bf16_round(_mm512_maskz_loadu_ps(k, src + i));
		_mm256_mask_storeu_epi16(d + i, k, _mm512_cvtepi32_epi16(
			_mm512_srli_epi32(r0, 16)));
	}
}

/* 16 floats to F16 with VCVTPS2PH, imm 0 (nearest-even, NaN as
 * convert.h), lanes k. */
static inline void f16_round(const float *src, uint16_t *d, __mmask16 k)
{
	_mm256_mask_storeu_epi16(d, k, _mm512_cvtps_ph(
		_mm512_maskz_loadu_ps(k, src), _MM_FROUND_TO_NEAREST_INT));
}

/* Round n floats to F16. */
static void store_f16(const float *src, uint16_t *d, size_t n)
{
	size_t i;

	for (i = 0; i + 16 <= n; i += 16)
		f16_round(src + i, d + i, ALL16);
	if (i < n)
		f16_round(src + i, d + i, lanes16(n - i));
}

/* Round n floats to dt (F32 is a copy). */
static void store_avx512(enum ds_dtype dt, const float *src, void *dst,
			 size_t n)
{
	if (dt == DS_DT_BF16)
		store_bf16(src, dst, n);
	else if (dt == DS_DT_F16)
		store_f16(src, dst, n);
	else
		REF->store(dt, src, dst, n);
}

/* ---- Philox: 8 blocks per register, NCHAIN registers (chains) a step --- */

/*
 * Each state word of 8 blocks lives in the low halves of the 8 64-bit
 * lanes of a register, so _mm512_mul_epu32 gives the 8 full 32x32->64
 * products: lo is the product as is (its upper half is never read:
 * mul_epu32 reads low halves only, the last round swaps it out), hi is
 * the product >> 32 (vpsrlq on port 0 or vpshufd on port 5, alternately,
 * so both vector ports stay busy).  The 3-way XOR is one vpternlogd.
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
	uint32_t r1b;   /* round 1: c2' = hi(M0 ctr) ^ r1b */
	uint32_t r2a;   /* round 2: c0'' = hi(M1 c2') ^ r2a */
	uint32_t r2c;   /* round 2: c2'' = lo(M0 ctr) ^ r2c */
	uint32_t r3c;   /* round 3: c2''' = hi(M0 c0'') ^ r3c */
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

/* Round keys of the stream (seed, j, name hash); constants for word 1 = 0. */
static void pk_init(struct pk *pk, uint64_t seed, uint32_t j, uint32_t hash)
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
	pk_hi(pk, 0);
}

/* A stream constant in every dword. */
#define BC(v) _mm512_set1_epi32((int)(v))
#define M0V BC(DS_PHILOX_M0)
#define M1V BC(DS_PHILOX_M1)
#define XOR3 0x96       /* vpternlogd truth table of a ^ b ^ c */
#define EVEN_DWORDS ((__mmask16)0x5555)
#define LAST (DS_PHILOX_ROUNDS - 1)

/* High halves of the 64-bit products, in the low halves. */
#define HI_SHIFT(p) _mm512_srli_epi64((p), 32)
#define HI_SHUF(p) _mm512_shuffle_epi32((p), (_MM_PERM_ENUM)0xf5)

/* Philox state of 8 blocks. */
struct p8 {
	__m512i c0, c1, c2, c3;
};

/*
 * Rounds 1 and 2 of 8 blocks whose counter word 0 is in the low halves
 * of ctr (word 1 is pk->hi); c3 after round 2 is the constant in r3c.
 */
static inline void p8_start(const struct pk *pk, __m512i ctr, struct p8 *s)
{
	__m512i q0 = _mm512_mul_epu32(ctr, M0V);        /* round 1; c3' */
	__m512i c2 = _mm512_xor_si512(HI_SHUF(q0), BC(pk->r1b));
	__m512i p1 = _mm512_mul_epu32(c2, M1V);         /* round 2 */

	s->c0 = _mm512_xor_si512(HI_SHIFT(p1), BC(pk->r2a));
	s->c1 = p1;
	s->c2 = _mm512_xor_si512(q0, BC(pk->r2c));
}

/* Round 3, where c3 is a constant (folded into r3c with the key). */
static inline void p8_round3(const struct pk *pk, struct p8 *s)
{
	__m512i p0 = _mm512_mul_epu32(s->c0, M0V);
	__m512i p1 = _mm512_mul_epu32(s->c2, M1V);

	s->c0 = _mm512_ternarylogic_epi32(s->c1, BC(pk->k0[2]), HI_SHIFT(p1),
					  XOR3);
	s->c2 = _mm512_xor_si512(HI_SHUF(p0), BC(pk->r3c));
	s->c1 = p1;
	s->c3 = p0;
}

/* One generic round r (3 .. 8, 0-based) of 8 blocks. */
static inline void p8_round(const struct pk *pk, int r, struct p8 *s)
{
	__m512i p0 = _mm512_mul_epu32(s->c0, M0V);
	__m512i p1 = _mm512_mul_epu32(s->c2, M1V);

	s->c0 = _mm512_ternarylogic_epi32(s->c1, BC(pk->k0[r]), HI_SHIFT(p1),
					  XOR3);
	s->c2 = _mm512_ternarylogic_epi32(s->c3, BC(pk->k1[r]), HI_SHUF(p0),
					  XOR3);
	s->c1 = p1;
	s->c3 = p0;
}

/*
 * Round 10 and the 32 lanes in element order.  Swapping the halves of a
 * product puts hi where x0 (x2) goes and lo where x1 (x3) goes, so one
 * XOR on the even dwords only gives the pair (x0, x1) of each block.  The
 * counter layout (see ctr_offsets) makes the 64-bit interleave of the
 * pairs the element order: blocks 0..3, then blocks 4..7.
 */
static inline void p8_last(const struct pk *pk, const struct p8 *s,
			   __m512i u[2])
{
	__m512i p0 = _mm512_mul_epu32(s->c0, M0V);
	__m512i p1 = _mm512_mul_epu32(s->c2, M1V);
	__m512i t01 = _mm512_mask_ternarylogic_epi32(_mm512_rol_epi64(p1, 32),
		EVEN_DWORDS, s->c1, BC(pk->k0[LAST]), XOR3);
	__m512i t23 = _mm512_mask_ternarylogic_epi32(
		_mm512_shuffle_epi32(p0, (_MM_PERM_ENUM)0xb1),
		EVEN_DWORDS, s->c3, BC(pk->k1[LAST]), XOR3);

	u[0] = _mm512_unpacklo_epi64(t01, t23);
	u[1] = _mm512_unpackhi_epi64(t01, t23);
}

/* Block offsets of the 8 64-bit lanes: lanes 2L and 2L+1 hold blocks L
 * and L+4, so unpacklo/hi of 128-bit lane L give blocks L and L+4. */
static inline __m512i ctr_offsets(void)
{
	return _mm512_setr_epi64(0, 4, 1, 5, 2, 6, 3, 7);
}

/*
 * Chains of 8 blocks in a full step.  A round of one chain is a 7-cycle
 * dependency chain (multiply, shift, XOR) for 3 cycles of port work, so
 * at least 3 chains keep the ports busy; measured, more is better still
 * (the scheduler fills the ports more evenly), up to 8, where spilled
 * state words go through the load and store ports, which are idle here.
 * The tail of a call uses 2 chains, then 1.
 */
#define NCHAIN 8
#define STEP (32 * NCHAIN)      /* elements per full step */
#define STEP2 64                /* elements per 2-chain step */

/*
 * The 32 * nc lanes of blocks lo .. lo + 8 nc - 1 (counter word 0; word
 * 1 is pk->hi) in element order, nc chains advanced round by round side
 * by side so that one chain's multiplies overlap the others' latency.
 */
static inline __attribute__((always_inline)) void
philox_step(const struct pk *pk, uint32_t lo, int nc, __m512i *u)
{
	__m512i ctr = _mm512_add_epi64(_mm512_set1_epi64((long long)lo),
				       ctr_offsets());
	struct p8 s[NCHAIN];
	int r, c;

	/* Keep the keys as memory operands (embedded broadcasts) rather than
	 * letting them be hoisted into more registers than there are. */
	__asm__("" : "+r"(pk));
#pragma GCC unroll 8
	for (c = 0; c < nc; c++)
		p8_start(pk, _mm512_add_epi64(ctr, _mm512_set1_epi64(8 * c)),
			 &s[c]);
#pragma GCC unroll 8
	for (c = 0; c < nc; c++)
		p8_round3(pk, &s[c]);
#pragma GCC unroll 8
	for (r = 3; r < DS_PHILOX_ROUNDS - 1; r++)
#pragma GCC unroll 8
		for (c = 0; c < nc; c++)
			p8_round(pk, r, &s[c]);
#pragma GCC unroll 8
	for (c = 0; c < nc; c++)
		p8_last(pk, &s[c], u + 2 * c);
}


/* Whether blocks blk .. blk + nb - 1 all have pk's counter word 1. */
static inline int same_hi(const struct pk *pk, uint64_t blk, uint64_t nb)
{
	return ((blk + nb - 1) >> 32) == pk->hi;
}

/*
 * How many of the m elements from block blk on a vector step can do: a
 * full step (STEP), 2 chains (STEP2), one chain (32, or m when m < 32),
 * or 0 when the 8 blocks of a chain straddle a change of counter word 1.
 * Makes pk's constants those of blk's word 1.
 */
static inline size_t step_len(struct pk *pk, uint64_t blk, size_t m)
{
	if ((blk >> 32) != pk->hi)
		pk_hi(pk, blk >> 32);
	if (m >= STEP && same_hi(pk, blk, STEP / 4))
		return STEP;
	if (m >= STEP2 && same_hi(pk, blk, STEP2 / 4))
		return STEP2;
	if (!same_hi(pk, blk, 8))
		return 0;
	return m < 32 ? m : 32;
}

/* u[k] for elements i0 .. i0+n-1. */
static void philox_avx512(uint64_t seed, uint32_t j, uint32_t name_hash,
			  uint64_t i0, size_t n, uint32_t *u)
{
	size_t i = ds_philox_head_len(i0, n), m;
	__m512i v[2 * NCHAIN];
	struct pk pk;
	uint64_t blk;
	int q;

	REF->philox(seed, j, name_hash, i0, i, u);
	pk_init(&pk, seed, j, name_hash);
	for (; i < n; i += m) {
		blk = (i0 + i) >> 2;
		m = step_len(&pk, blk, n - i);
		if (m == STEP || m == STEP2) {
			if (m == STEP)
				philox_step(&pk, (uint32_t)blk, NCHAIN, v);
			else
				philox_step(&pk, (uint32_t)blk, 2, v);
			for (q = 0; q < (int)(m / 16); q++)
				_mm512_storeu_si512(u + i + 16 * q, v[q]);
		} else if (m) {
			philox_step(&pk, (uint32_t)blk, 1, v);
			_mm512_mask_storeu_epi32(u + i, lanes16(m), v[0]);
			if (m > 16)
				_mm512_mask_storeu_epi32(u + i + 16,
							 lanes16(m - 16), v[1]);
		} else {
			m = n - i < 32 ? n - i : 32;
			REF->philox(seed, j, name_hash, i0 + i, m, u + i);
		}
	}
}

/*
 * The mask of u >= thr: a full step's 16 vectors compared as they come
 * out of the generator, 4 masks of 16 to a word, never stored as words
 * of u; a step that is not full (the end, an odd start, a change of
 * counter word 1) draws into u first.
 */
static size_t keep_bits_avx512(uint64_t seed, uint32_t j, uint32_t name_hash,
			       uint64_t i0, size_t n, uint32_t thr,
			       uint64_t *bits)
{
	const __m512i tv = BC(thr);
	__m512i v[2 * NCHAIN];
	uint32_t u[STEP];
	size_t i, c, kept = 0;
	struct pk pk;
	uint64_t blk, w;
	int q, r;

	pk_init(&pk, seed, j, name_hash);
	for (i = 0; i < n; i += c) {
		c = n - i < STEP ? n - i : STEP;
		blk = (i0 + i) >> 2;
		if (i0 % 4 || c < STEP || step_len(&pk, blk, c) != STEP) {
			philox_avx512(seed, j, name_hash, i0 + i, c, u);
			kept += ds_keep_bits(u, c, thr, bits + i / 64);
			continue;
		}
		philox_step(&pk, (uint32_t)blk, NCHAIN, v);
		for (q = 0; q < STEP / 64; q++) {
			for (w = 0, r = 0; r < 4; r++)
				w |= (uint64_t)_mm512_cmpge_epu32_mask(
					v[4 * q + r], tv) << 16 * r;
			bits[i / 64 + (size_t)q] = w;
			kept += (size_t)__builtin_popcountll(w);
		}
	}
	return kept;
}

/* ---- elementwise steps ------------------------------------------------ */

/* d = kept ? (x - b) * s : +0 for the lanes of k (thr 0 keeps all). */
static inline void sparsify16(const float *b, const float *x,
			      const uint32_t *u, __m512i thr, __m512 s,
			      float *d, __mmask16 k)
{
	__mmask16 keep = _mm512_cmpge_epu32_mask(
		_mm512_maskz_loadu_epi32(k, u), thr);
	__m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x),
				 _mm512_maskz_loadu_ps(k, b));

	_mm512_mask_storeu_ps(d, k, _mm512_maskz_mul_ps(keep, t, s));
}

/* d = kept ? (x - b) * s : +0 (unsigned u >= thr). */
static void sparsify_avx512(const float *b, const float *x, const uint32_t *u,
			    uint32_t thr, float s, float *d, size_t n)
{
	const __m512 sv = _mm512_set1_ps(s);
	const __m512i tv = BC(thr);
	size_t i;

	for (i = 0; i + 16 <= n; i += 16)
		sparsify16(b + i, x + i, u + i, tv, sv, d + i, ALL16);
	if (i < n)
		sparsify16(b + i, x + i, u + i, tv, sv, d + i, lanes16(n - i));
}

/* d = x - b for the lanes of k. */
static inline void delta16(const float *b, const float *x, float *d,
			   __mmask16 k)
{
	_mm512_mask_storeu_ps(d, k, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x),
						  _mm512_maskz_loadu_ps(k, b)));
}

/* d = x - b */
static void delta_avx512(const float *b, const float *x, float *d, size_t n)
{
	size_t i;

	for (i = 0; i + 16 <= n; i += 16)
		delta16(b + i, x + i, d + i, ALL16);
	if (i < n)
		delta16(b + i, x + i, d + i, lanes16(n - i));
}

/* acc = acc + w * d for the lanes of k. */
static inline void axpy16(float *acc, __m512 w, const float *d, __mmask16 k)
{
	__m512 t = _mm512_mul_ps(w, _mm512_maskz_loadu_ps(k, d));

	t = _mm512_add_ps(_mm512_maskz_loadu_ps(k, acc), t);
	_mm512_mask_storeu_ps(acc, k, t);
}

/* acc = acc + w * d */
static void axpy_avx512(float *acc, float w, const float *d, size_t n)
{
	const __m512 wv = _mm512_set1_ps(w);
	size_t i;

	for (i = 0; i + 16 <= n; i += 16)
		axpy16(acc + i, wv, d + i, ALL16);
	if (i < n)
		axpy16(acc + i, wv, d + i, lanes16(n - i));
}

/* The constants of one dare_axpy call. */
struct dv {
	__m512 s, w;
	__m512i thr;
};

/*
 * acc = acc + w * (kept ? (x - b) * s : +0) for the lanes of k (kept:
 * u >= thr); zero-masking the product gives the reference's +0.
 */
static inline void dare16(float *acc, const float *b, const float *x,
			  __m512i u, const struct dv *c, __mmask16 k)
{
	__mmask16 keep = _mm512_cmpge_epu32_mask(u, c->thr);
	__m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x),
				 _mm512_maskz_loadu_ps(k, b));

	d = _mm512_mul_ps(c->w, _mm512_maskz_mul_ps(keep, d, c->s));
	d = _mm512_add_ps(_mm512_maskz_loadu_ps(k, acc), d);
	_mm512_mask_storeu_ps(acc, k, d);
}

/* thr = 0 keeps all: acc = acc + w * ((x - b) * s), no Philox. */
static void keep_all_axpy(float *acc, const float *b, const float *x,
			  float s, float w, size_t n)
{
	const struct dv c = { _mm512_set1_ps(s), _mm512_set1_ps(w), BC(0) };
	size_t i;

	for (i = 0; i + 16 <= n; i += 16)
		dare16(acc + i, b + i, x + i, BC(0), &c, ALL16);
	if (i < n)
		dare16(acc + i, b + i, x + i, BC(0), &c, lanes16(n - i));
}

/* One vector step of dare_axpy: m (STEP, STEP2 or at most 32) elements. */
static inline void dare_step(float *acc, const float *b, const float *x,
			     const struct pk *pk, uint64_t blk,
			     const struct dv *c, size_t m)
{
	__m512i u[2 * NCHAIN];
	int q;

	if (m == STEP) {
		philox_step(pk, (uint32_t)blk, NCHAIN, u);
		for (q = 0; q < 2 * NCHAIN; q++)
			dare16(acc + 16 * q, b + 16 * q, x + 16 * q, u[q], c,
			       ALL16);
		return;
	}
	if (m == STEP2) {
		philox_step(pk, (uint32_t)blk, 2, u);
		for (q = 0; q < 4; q++)
			dare16(acc + 16 * q, b + 16 * q, x + 16 * q, u[q], c,
			       ALL16);
		return;
	}
	philox_step(pk, (uint32_t)blk, 1, u);
	dare16(acc, b, x, u[0], c, lanes16(m));
	if (m > 16)
		dare16(acc + 16, b + 16, x + 16, u[1], c, lanes16(m - 16));
}

/* acc = acc + w * sparsify(x - b): scalar head to a block start, then
 * vector steps; Philox, mask, rescale and accumulate fused. */
static void dare_axpy_avx512(float *acc, const float *b, const float *x,
			     const struct ds_dare *dp, uint64_t i0, size_t n)
{
	const struct dv c = { _mm512_set1_ps(dp->s), _mm512_set1_ps(dp->w),
			      BC(dp->thr) };
	size_t i = ds_philox_head_len(i0, n), m;
	struct pk pk;
	uint64_t blk;

	if (!dp->thr) {
		keep_all_axpy(acc, b, x, dp->s, dp->w, n);
		return;
	}
	REF->dare_axpy(acc, b, x, dp, i0, i);
	pk_init(&pk, dp->seed, dp->j, dp->name_hash);
	for (; i < n; i += m) {
		blk = (i0 + i) >> 2;
		m = step_len(&pk, blk, n - i);
		if (m) {
			dare_step(acc + i, b + i, x + i, &pk, blk, &c, m);
			continue;
		}
		m = n - i < 32 ? n - i : 32;    /* word 1 changes inside */
		REF->dare_axpy(acc + i, b + i, x + i, dp, i0 + i, m);
	}
}

/*
 * dare16 with the mask given (keep, within k) and only the kept values:
 * the popcount(keep) values at v are loaded (no lane past them is read)
 * and spread to the kept lanes by vexpandps in its register form (the
 * memory form is microcoded on AMD Zen 4).  Returns how many were read.
 */
static inline unsigned kept16(float *acc, const float *b, const float *v,
			      __mmask16 keep, const struct dv *c, __mmask16 k)
{
	unsigned pc = (unsigned)__builtin_popcount(keep);
	__m512 x = _mm512_maskz_expand_ps(keep, _mm512_maskz_loadu_ps(
		(__mmask16)((1u << pc) - 1), v));
	__m512 d = _mm512_sub_ps(x, _mm512_maskz_loadu_ps(k, b));

	d = _mm512_mul_ps(c->w, _mm512_maskz_mul_ps(keep, d, c->s));
	d = _mm512_add_ps(_mm512_maskz_loadu_ps(k, acc), d);
	_mm512_mask_storeu_ps(acc, k, d);
	return pc;
}

/* dare_axpy with the mask as bits and v the kept values (kernels.h). */
static void kept_axpy_avx512(float *acc, const float *b, const float *v,
			     size_t nv, const uint64_t *keep, float s, float w,
			     size_t n)
{
	const struct dv c = { _mm512_set1_ps(s), _mm512_set1_ps(w), BC(0) };
	size_t i, r = 0;
	__mmask16 k;

	(void)nv;       /* masked loads read only the kept values */
	for (i = 0; i + 16 <= n; i += 16)
		r += kept16(acc + i, b + i, v + r,
			    (__mmask16)(keep[i / 64] >> (i % 64)), &c, ALL16);
	if (i < n) {
		k = lanes16(n - i);
		kept16(acc + i, b + i, v + r,
		       (__mmask16)(keep[i / 64] >> (i % 64)) & k, &c, k);
	}
}

/*
 * TIES for the lanes of k.  S sums from +0 in row order as the reference
 * does; flipping the sign of every e_j when S < 0 (or NaN) turns the
 * election into e > 0, which is false for zeros and NaN as the reference
 * needs.  The elected terms are added under the election mask, so acc
 * and D see exactly the reference's additions.
 */
static inline void ties16(const float *e, size_t stride, unsigned nm,
			  const float *w, float *acc, float *dsum, __mmask16 k)
{
	const __m512 z = _mm512_setzero_ps();
	__m512 S = z, a = z, D = z, v;
	__m512i flip;
	__mmask16 pos, sel;
	unsigned j;

	for (j = 0; j < nm; j++)
		S = _mm512_add_ps(S, _mm512_maskz_loadu_ps(k, e + j * stride));
	pos = _mm512_cmp_ps_mask(S, z, _CMP_GE_OQ);     /* NaN: -1 */
	flip = _mm512_maskz_mov_epi32((__mmask16)~pos, BC(0x80000000u));
	for (j = 0; j < nm; j++) {
		v = _mm512_maskz_loadu_ps(k, e + j * stride);
		sel = _mm512_cmp_ps_mask(_mm512_castsi512_ps(_mm512_xor_si512(
			_mm512_castps_si512(v), flip)), z, _CMP_GT_OQ);
		a = _mm512_mask_add_ps(a, sel, a, v);
		D = _mm512_mask_add_ps(D, sel, D, _mm512_set1_ps(w[j]));
	}
	_mm512_mask_storeu_ps(acc, k, a);
	_mm512_mask_storeu_ps(dsum, k, D);
}

/* TIES over n elements. */
static void ties_avx512(const float *e, size_t stride, unsigned nm,
			const float *w, float *acc, float *dsum, size_t n)
{
	size_t i;

	for (i = 0; i + 16 <= n; i += 16)
		ties16(e + i, stride, nm, w, acc + i, dsum + i, ALL16);
	if (i < n)
		ties16(e + i, stride, nm, w, acc + i, dsum + i, lanes16(n - i));
}

/*
 * vfixupimmps table: QNaN and SNaN inputs (classes 0, 1) take the
 * destination (the canonical NaN), every other class passes the input
 * through unchanged (MXCSR.DAZ is clear, as the reference assumes too).
 */
#define CANON_TABLE 0x11111100

/* The operands of one finish call. */
struct fin {
	const float *b, *dsum;  /* NULL when not given */
	__m512 div, lambda;
	int divide;             /* div != 0 (used when dsum is NULL) */
};

/* finish for the lanes of k, the reference's steps in its order. */
static inline void finish16(float *acc, const struct fin *f, size_t i,
			    __mmask16 k)
{
	const __m512 canon = _mm512_castsi512_ps(BC(DS_CANON_NAN_BITS));
	__m512 v = _mm512_maskz_loadu_ps(k, acc + i), d;

	if (f->dsum) {
		d = _mm512_maskz_loadu_ps(k, f->dsum + i);
		d = _mm512_mask_mov_ps(d, _mm512_cmp_ps_mask(d,
			_mm512_setzero_ps(), _CMP_EQ_OQ), _mm512_set1_ps(1.0f));
		v = _mm512_div_ps(v, d);
	} else if (f->divide) {
		v = _mm512_div_ps(v, f->div);
	}
	if (f->b)
		v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, f->b + i),
				  _mm512_mul_ps(f->lambda, v));
	v = _mm512_fixupimm_ps(canon, v, BC(CANON_TABLE), 0);
	_mm512_mask_storeu_ps(acc + i, k, v);
}

/* finish over n elements with the operands of f. */
static inline __attribute__((always_inline)) void
finish_n(float *acc, const struct fin *f, size_t n)
{
	size_t i;

	for (i = 0; i + 16 <= n; i += 16)
		finish16(acc, f, i, ALL16);
	if (i < n)
		finish16(acc, f, i, lanes16(n - i));
}

/* Normalize, add the base scaled by lambda, canonicalize NaN. */
static void finish_avx512(float *acc, const float *b, const float *dsum,
			  float div, float lambda, size_t n)
{
	const struct fin f = { b, dsum, _mm512_set1_ps(div),
			       _mm512_set1_ps(lambda), div != 0.0f };
	const struct fin plain = { b, NULL, f.div, f.lambda, 0 };

	/* dare_linear and dare_ties: no division, a base.  Its own loop,
	 * with the tests of finish16 folded away. */
	if (b && !dsum && div == 0.0f)
		finish_n(acc, &plain, n);
	else
		finish_n(acc, &f, n);
}

/* ---- rank selection ----------------------------------------------------- */

/* Rank keys of the lanes of k: |d|'s bits, 0x7fffffff for a NaN. */
static inline __m512i key16(const float *d, __mmask16 k)
{
	const __m512i abs = BC(0x7fffffff);
	__m512i a = _mm512_and_si512(_mm512_maskz_loadu_epi32(k, d), abs);

	return _mm512_mask_mov_epi32(a, _mm512_cmpgt_epi32_mask(a,
						BC(0x7f800000)), abs);
}

/* Lanes of k where lo < key <= hi. */
static inline __mmask16 range16(const float *d, __m512i lo, __m512i hi,
				__mmask16 k)
{
	__m512i key = key16(d, k);

	return _mm512_mask_cmpgt_epi32_mask(k, key, lo) &
	       _mm512_cmple_epi32_mask(key, hi);
}

/* key = rank key of d */
static void rank_keys_avx512(const float *d, uint32_t *key, size_t n)
{
	size_t i;

	for (i = 0; i + 16 <= n; i += 16)
		_mm512_storeu_si512(key + i, key16(d + i, ALL16));
	if (i < n)
		_mm512_mask_storeu_epi32(key + i, lanes16(n - i),
					 key16(d + i, lanes16(n - i)));
}

/* x = key in range ? d * s : +0, for the lanes of k. */
static inline void keep16(const float *d, __m512i lo, __m512i hi, __m512 s,
			  float *x, __mmask16 k)
{
	__mmask16 in = range16(d, lo, hi, k);

	_mm512_mask_storeu_ps(x, k, _mm512_maskz_mul_ps(in,
				_mm512_maskz_loadu_ps(k, d), s));
}

/* x = key in range ? d * s : +0 */
static void keep_range_avx512(const float *d, int32_t lo, int32_t hi,
			      float s, float *x, size_t n)
{
	const __m512i lv = BC(lo), hv = BC(hi);
	const __m512 sv = _mm512_set1_ps(s);
	size_t i;

	for (i = 0; i + 16 <= n; i += 16)
		keep16(d + i, lv, hv, sv, x + i, ALL16);
	if (i < n)
		keep16(d + i, lv, hv, sv, x + i, lanes16(n - i));
}

/* How many keys are in range: a lane counter per lane, folded into c
 * every 2^20 vectors, long before one could wrap. */
static size_t count_range_avx512(const float *d, int32_t lo, int32_t hi,
				 size_t n)
{
	const __m512i lv = BC(lo), hv = BC(hi);
	const __m512i one = BC(1);
	size_t i = 0, c = 0, end;
	__m512i acc;

	while (i < n) {
		end = n - i > ((size_t)16 << 20) ? i + ((size_t)16 << 20) : n;
		acc = _mm512_setzero_si512();
		for (; i + 16 <= end; i += 16)
			acc = _mm512_mask_add_epi32(acc, range16(d + i, lv, hv,
						    ALL16), acc, one);
		if (i < end) {
			acc = _mm512_mask_add_epi32(acc, range16(d + i, lv, hv,
						    lanes16(end - i)), acc, one);
			i = end;
		}
		c += (uint32_t)_mm512_reduce_add_epi32(acc);
	}
	return c;
}

/* The bits.h count, built here for the POPCNT instruction. */
static size_t bits_count_avx512(const uint64_t *bits, size_t n)
{
	return ds_bits_count(bits, n);
}

const struct ds_kernel_ops ds_kernel_avx512_ops = {
	.name = "avx512",
	.load = load_avx512,
	.store = store_avx512,
	.philox = philox_avx512,
	.keep_bits = keep_bits_avx512,
	.bits_count = bits_count_avx512,
	.sparsify = sparsify_avx512,
	.delta = delta_avx512,
	.axpy = axpy_avx512,
	.dare_axpy = dare_axpy_avx512,
	.kept_axpy = kept_axpy_avx512,
	.ties = ties_avx512,
	.finish = finish_avx512,
	.rank_keys = rank_keys_avx512,
	.keep_range = keep_range_avx512,
	.count_range = count_range_avx512,
#ifdef DS_HAVE_AVX2
	.ties_kept = ds_ties_kept_avx2,
#endif
};

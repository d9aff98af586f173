/* SPDX-License-Identifier: MIT */
/* avx2.c - the AVX2 + F16C path: the scalar reference's bits, 8 lanes wide */
#include "config.h"

#include <immintrin.h>
#include "kernels/kernels.h"
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

/*
 * 8 F32 to BF16, the integer rounding of convert.h lane by lane: add
 * 0x7fff plus the lowest kept bit, keep the upper half; NaN lanes get
 * upper half | 0x40 instead.  packus is exact: every lane is < 2^16.
 */
static inline __m128i st_bf16(__m256 v)
{
	const __m256i one = _mm256_set1_epi32(1);
	__m256i x = _mm256_castps_si256(v);
	__m256i hi = _mm256_srli_epi32(x, 16);
	__m256i r = _mm256_add_epi32(x, _mm256_set1_epi32(0x7fff));
	__m256i abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff));
	__m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));

	r = _mm256_srli_epi32(_mm256_add_epi32(r, _mm256_and_si256(hi, one)), 16);
	hi = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
	r = _mm256_blendv_epi8(r, hi, nan);
	return _mm_packus_epi32(_mm256_castsi256_si128(r),
				_mm256_extracti128_si256(r, 1));
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

	if (dt == DS_DT_BF16)
		for (; i + 8 <= n; i += 8)
			_mm_storeu_si128((__m128i *)(d + 2 * i),
					 st_bf16(_mm256_loadu_ps(src + i)));
	else if (dt == DS_DT_F16)
		for (; i + 8 <= n; i += 8)
			_mm_storeu_si128((__m128i *)(d + 2 * i),
					 st_f16(_mm256_loadu_ps(src + i)));
	REF->store(dt, src + i,
		   d + i * (dt == DS_DT_BF16 || dt == DS_DT_F16 ? 2 : 4), n - i);
}

/* ---- Philox, 8 blocks (32 lanes) per chain, 2 chains per step ---------- */

/*
 * Each state word of 4 blocks lives in the low halves of the 4 64-bit
 * lanes of a register, so _mm256_mul_epu32 gives the full 32x32->64
 * products with no shuffling: lo is the product as is (the high half left
 * above it is never read: mul_epu32 reads only low halves, and the final
 * packing shifts it out), hi is the product >> 32.  Counter words 2 and 3
 * (j, name hash) are the same for every block, so round 1's second
 * product and round 2's use of it are constants, folded in pk_init.
 */
struct pk {
	__m256i k0[DS_PHILOX_ROUNDS], k1[DS_PHILOX_ROUNDS];
	__m256i r1a;    /* round 1: c0' = (ctr >> 32) ^ hi(M1 j) ^ k0 */
	__m256i r1b;    /* round 1: c2' = hi(M0 ctr) ^ hash ^ k1 */
	__m256i r2a;    /* round 2: c0'' = hi(M1 c2') ^ lo(M1 j) ^ k0' */
};

/* Round keys and the constant parts of rounds 1 and 2, broadcast. */
static void pk_init(struct pk *pk, uint64_t seed, uint32_t j, uint32_t hash)
{
	uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
	uint64_t p1 = (uint64_t)DS_PHILOX_M1 * j;
	int r;

	for (r = 0; r < DS_PHILOX_ROUNDS; r++) {
		pk->k0[r] = _mm256_set1_epi32((int)k0);
		pk->k1[r] = _mm256_set1_epi32((int)k1);
		k0 += DS_PHILOX_W0;
		k1 += DS_PHILOX_W1;
	}
	k0 = (uint32_t)seed;
	k1 = (uint32_t)(seed >> 32);
	pk->r1a = _mm256_set1_epi32((int)((uint32_t)(p1 >> 32) ^ k0));
	pk->r1b = _mm256_set1_epi32((int)(hash ^ k1));
	pk->r2a = _mm256_set1_epi32((int)((uint32_t)p1 ^ (k0 + DS_PHILOX_W0)));
}

/* High halves of the 64-bit products, in the low halves. */
#define HI_SHIFT(p) _mm256_srli_epi64((p), 32)
#define HI_SHUF(p) _mm256_shuffle_epi32((p), 0xf5)

/* Philox state of 4 blocks. */
struct p4 {
	__m256i c0, c1, c2, c3;
};

/* Rounds 1 and 2 for blocks blk .. blk+3 (counter word 1 per lane). */
static inline void p4_start(const struct pk *pk, uint64_t blk, struct p4 *s)
{
	const __m256i m0 = _mm256_set1_epi32((int)DS_PHILOX_M0);
	const __m256i m1 = _mm256_set1_epi32((int)DS_PHILOX_M1);
	__m256i ctr = _mm256_add_epi64(_mm256_set1_epi64x((long long)blk),
				       _mm256_setr_epi64x(0, 1, 2, 3));
	__m256i q0 = _mm256_mul_epu32(ctr, m0);   /* round 1; c3' = q0 */
	__m256i c0 = _mm256_xor_si256(_mm256_srli_epi64(ctr, 32), pk->r1a);
	__m256i c2 = _mm256_xor_si256(HI_SHUF(q0), pk->r1b);
	__m256i p0 = _mm256_mul_epu32(c0, m0);    /* round 2 */
	__m256i p1 = _mm256_mul_epu32(c2, m1);

	s->c0 = _mm256_xor_si256(HI_SHIFT(p1), pk->r2a);
	s->c2 = _mm256_xor_si256(_mm256_xor_si256(q0, pk->k1[1]), HI_SHUF(p0));
	s->c1 = p1;
	s->c3 = p0;
}

/* One generic round r (2 .. 9) of 4 blocks. */
static inline void p4_round(const struct pk *pk, int r, struct p4 *s)
{
	__m256i p0 = _mm256_mul_epu32(s->c0, _mm256_set1_epi32((int)DS_PHILOX_M0));
	__m256i p1 = _mm256_mul_epu32(s->c2, _mm256_set1_epi32((int)DS_PHILOX_M1));

	s->c0 = _mm256_xor_si256(_mm256_xor_si256(s->c1, pk->k0[r]),
				 HI_SHIFT(p1));
	s->c2 = _mm256_xor_si256(_mm256_xor_si256(s->c3, pk->k1[r]),
				 HI_SHUF(p0));
	s->c1 = p1;
	s->c3 = p0;
}

/* The 16 lanes of a finished state, in element order. */
static inline void p4_pack(const struct p4 *s, __m256i u[2])
{
	/* (x0 x1) and (x2 x3) pairs per block, then blocks 0|2 and 1|3. */
	__m256i t01 = _mm256_blend_epi32(s->c0, _mm256_slli_epi64(s->c1, 32), 0xaa);
	__m256i t23 = _mm256_blend_epi32(s->c2, _mm256_slli_epi64(s->c3, 32), 0xaa);
	__m256i lo = _mm256_unpacklo_epi64(t01, t23);
	__m256i hi = _mm256_unpackhi_epi64(t01, t23);

	u[0] = _mm256_permute2x128_si256(lo, hi, 0x20);
	u[1] = _mm256_permute2x128_si256(lo, hi, 0x31);
}

/* Independent 4-block chains per step: enough to cover the multiply
 * latency (about 7 cycles per round and chain) with other chains' work. */
#define NCHAIN 4
#define STEP (16 * NCHAIN)      /* elements per step */

/*
 * The STEP lanes of blocks blk .. blk+4*NCHAIN-1 in element order, the
 * chains advanced round by round side by side.
 */
static inline __attribute__((always_inline)) void
philox_step(const struct pk *pk, uint64_t blk, __m256i u[2 * NCHAIN])
{
	struct p4 s[NCHAIN];
	int r, c;

	/* Hide pk from loop-invariant motion: the keys are read where they
	 * are used (memory operands of vpxor) instead of being hoisted out of
	 * the caller's loop into more registers than there are, then spilled. */
	__asm__("" : "+r"(pk));
	for (c = 0; c < NCHAIN; c++)
		p4_start(pk, blk + 4 * (uint64_t)c, &s[c]);
#pragma GCC unroll 8
	for (r = 2; r < DS_PHILOX_ROUNDS; r++)
#pragma GCC unroll 4
		for (c = 0; c < NCHAIN; c++)
			p4_round(pk, r, &s[c]);
	for (c = 0; c < NCHAIN; c++)
		p4_pack(&s[c], u + 2 * c);
}

/* Elements before i0's next multiple of 4 (the scalar head), at most n. */
static inline size_t head_len(uint64_t i0, size_t n)
{
	size_t h = (size_t)((4 - (i0 & 3)) & 3);

	return h < n ? h : n;
}

/* u[k] for elements i0 .. i0+n-1. */
static void philox_avx2(uint64_t seed, uint32_t j, uint32_t name_hash,
			uint64_t i0, size_t n, uint32_t *u)
{
	size_t i = head_len(i0, n);
	struct pk pk;
	__m256i v[2 * NCHAIN];
	int q;

	REF->philox(seed, j, name_hash, i0, i, u);
	pk_init(&pk, seed, j, name_hash);
	for (; i + STEP <= n; i += STEP) {
		philox_step(&pk, (i0 + i) >> 2, v);
		for (q = 0; q < 2 * NCHAIN; q++)
			_mm256_storeu_si256((__m256i *)(u + i + 8 * q), v[q]);
	}
	REF->philox(seed, j, name_hash, i0 + i, n - i, u + i);
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

/* Philox, mask, rescale and accumulate fused, 32 elements per step. */
static size_t dare_axpy_32(float *acc, const float *b, const float *x,
			   const struct ds_dare *dp, uint64_t i0, size_t n)
{
	const __m256 sv = _mm256_set1_ps(dp->s), wv = _mm256_set1_ps(dp->w);
	const __m256i tb = thr_biased(dp->thr);
	struct pk pk;
	__m256i u[2 * NCHAIN];
	size_t i = 0, o;
	__m256 d;
	int q;

	pk_init(&pk, dp->seed, dp->j, dp->name_hash);
	for (; i + STEP <= n; i += STEP) {
		philox_step(&pk, (i0 + i) >> 2, u);
		for (q = 0; q < 2 * NCHAIN; q++) {
			o = i + 8 * (size_t)q;
			d = dare8(_mm256_loadu_ps(b + o), _mm256_loadu_ps(x + o),
				  u[q], tb, sv);
			d = _mm256_add_ps(_mm256_loadu_ps(acc + o),
					  _mm256_mul_ps(wv, d));
			_mm256_storeu_ps(acc + o, d);
		}
	}
	return i;
}

/* acc = acc + w * sparsify(x - b): scalar head to a block start, vector
 * body, scalar tail. */
static void dare_axpy_avx2(float *acc, const float *b, const float *x,
			   const struct ds_dare *dp, uint64_t i0, size_t n)
{
	size_t i = dp->thr ? head_len(i0, n) : 0;

	REF->dare_axpy(acc, b, x, dp, i0, i);
	if (dp->thr)
		i += dare_axpy_32(acc + i, b + i, x + i, dp, i0 + i, n - i);
	else
		i += keep_all_axpy(acc, b, x, dp->s, dp->w, n);
	REF->dare_axpy(acc + i, b + i, x + i, dp, i0 + i, n - i);
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

/* Normalize, add the base scaled by lambda, canonicalize NaN. */
static void finish_avx2(float *acc, const float *b, const float *dsum,
			float div, float lambda, size_t n)
{
	const __m256 one = _mm256_set1_ps(1.0f), dv = _mm256_set1_ps(div);
	const __m256 lam = _mm256_set1_ps(lambda);
	const __m256 canon = _mm256_castsi256_ps(
		_mm256_set1_epi32((int)DS_CANON_NAN_BITS));
	size_t i = 0;
	__m256 v, d;

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
		v = _mm256_blendv_ps(v, canon, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
		_mm256_storeu_ps(acc + i, v);
	}
	REF->finish(acc + i, b ? b + i : NULL, dsum ? dsum + i : NULL, div,
		    lambda, n - i);
}

const struct ds_kernel_ops ds_kernel_avx2_ops = {
	.name = "avx2",
	.load = load_avx2,
	.store = store_avx2,
	.philox = philox_avx2,
	.sparsify = sparsify_avx2,
	.delta = delta_avx2,
	.axpy = axpy_avx2,
	.dare_axpy = dare_axpy_avx2,
	.ties = ties_avx2,
	.finish = finish_avx2,
};

/* SPDX-License-Identifier: MIT */
/* neon.c - the AArch64 NEON path: the scalar reference's bits, 4 lanes wide */
#include "config.h"

#if defined(DS_HAVE_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#include "kernels/kernels.h"
#include "kernels/bits.h"
#include "kernels/convert.h"
#include "kernels/philox.h"

/*
 * NEON is part of every AArch64 CPU, so dispatch.c needs no CPU check.
 * The build has -ffp-contract=off: arm_neon.h writes vmulq_f32 and
 * vaddq_f32 as plain * and +, which GCC would otherwise fuse into FMLA.
 * Loops run 4 (or 16) elements at a time; the scalar reference finishes
 * the tail from the same index.  FPCR is assumed at its Linux default
 * (round to nearest, no flush to zero, NaN payloads propagated), which is
 * what the conversions below rely on.
 */
#define REF (&ds_kernel_scalar_ops)

/* ---- conversions ------------------------------------------------------ */

/* 4 BF16 to F32: bits << 16. */
static inline float32x4_t ld_bf16(const void *p)
{
	return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)
							  (const void *)p), 16));
}

/* 4 F16 to F32 with FCVTL: exact, NaN quieted with its payload. */
static inline float32x4_t ld_f16(const void *p)
{
	return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)
							    (const void *)p)));
}

/* 4 F32 to BF16, the integer rounding of convert.h lane by lane. */
static inline uint16x4_t st_bf16(float32x4_t v)
{
	uint32x4_t x = vreinterpretq_u32_f32(v);
	uint32x4_t lsb = vandq_u32(vshrq_n_u32(x, 16), vdupq_n_u32(1));
	uint32x4_t r = vaddq_u32(vaddq_u32(x, vdupq_n_u32(0x7fff)), lsb);
	uint32x4_t nan = vcgtq_u32(vandq_u32(x, vdupq_n_u32(0x7fffffff)),
				   vdupq_n_u32(0x7f800000));

	r = vbslq_u32(nan, vorrq_u32(x, vdupq_n_u32(0x00400000)), r);
	return vshrn_n_u32(r, 16);
}

/* 4 F32 to F16 with FCVTN: nearest-even, NaN as convert.h. */
static inline uint16x4_t st_f16(float32x4_t v)
{
	return vreinterpret_u16_f16(vcvt_f16_f32(v));
}

/* Convert n elements of dt to floats. */
static void load_neon(enum ds_dtype dt, const void *src, float *dst, size_t n)
{
	const char *s = src;
	size_t i = 0;

	if (dt == DS_DT_BF16)
		for (; i + 4 <= n; i += 4)
			vst1q_f32(dst + i, ld_bf16(s + 2 * i));
	else if (dt == DS_DT_F16)
		for (; i + 4 <= n; i += 4)
			vst1q_f32(dst + i, ld_f16(s + 2 * i));
	REF->load(dt, s + i * (dt == DS_DT_BF16 || dt == DS_DT_F16 ? 2 : 4),
		  dst + i, n - i);
}

/* Round n floats to dt. */
static void store_neon(enum ds_dtype dt, const float *src, void *dst, size_t n)
{
	char *d = dst;
	size_t i = 0;

	if (dt == DS_DT_BF16)
		for (; i + 4 <= n; i += 4)
			vst1_u16((uint16_t *)(void *)(d + 2 * i),
				 st_bf16(vld1q_f32(src + i)));
	else if (dt == DS_DT_F16)
		for (; i + 4 <= n; i += 4)
			vst1_u16((uint16_t *)(void *)(d + 2 * i),
				 st_f16(vld1q_f32(src + i)));
	REF->store(dt, src + i,
		   d + i * (dt == DS_DT_BF16 || dt == DS_DT_F16 ? 2 : 4), n - i);
}

/* ---- Philox, 4 blocks (16 lanes) per step ----------------------------- */

/* hi and lo halves of the 4 products a[k] * m (UMULL, UMULL2, UZP). */
static inline void mulhilo4(uint32x4_t a, uint32_t m, uint32x4_t *hi,
			    uint32x4_t *lo)
{
	uint32x4_t p01 = vreinterpretq_u32_u64(vmull_n_u32(vget_low_u32(a), m));
	uint32x4_t p23 = vreinterpretq_u32_u64(vmull_high_n_u32(a, m));

	*lo = vuzp1q_u32(p01, p23);
	*hi = vuzp2q_u32(p01, p23);
}

/*
 * Philox4x32-10 of blocks blk .. blk+3, one block per lane: x[w] holds
 * word w of the 4 blocks (so lane w of element 4b+w is x[w][b]).
 */
static inline void philox4(uint64_t seed, uint32_t j, uint32_t hash,
			   uint64_t blk, uint32x4_t x[4])
{
	uint32_t lo[4], hi[4], k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
	uint32x4_t c0, c1, c2 = vdupq_n_u32(j), c3 = vdupq_n_u32(hash);
	uint32x4_t h0, l0, h1, l1;
	int q, r;

	for (q = 0; q < 4; q++) {
		lo[q] = (uint32_t)(blk + (uint64_t)q);
		hi[q] = (uint32_t)((blk + (uint64_t)q) >> 32);
	}
	c0 = vld1q_u32(lo);
	c1 = vld1q_u32(hi);
	for (r = 0; r < DS_PHILOX_ROUNDS; r++) {
		mulhilo4(c0, DS_PHILOX_M0, &h0, &l0);
		mulhilo4(c2, DS_PHILOX_M1, &h1, &l1);
		c0 = veorq_u32(veorq_u32(h1, c1), vdupq_n_u32(k0));
		c2 = veorq_u32(veorq_u32(h0, c3), vdupq_n_u32(k1));
		c1 = l1;
		c3 = l0;
		k0 += DS_PHILOX_W0;
		k1 += DS_PHILOX_W1;
	}
	x[0] = c0;
	x[1] = c1;
	x[2] = c2;
	x[3] = c3;
}


/* u[k] for elements i0 .. i0+n-1: ST4 interleaves the words per block. */
static void philox_neon(uint64_t seed, uint32_t j, uint32_t name_hash,
			uint64_t i0, size_t n, uint32_t *u)
{
	size_t i = ds_philox_head_len(i0, n);
	uint32x4x4_t v;

	REF->philox(seed, j, name_hash, i0, i, u);
	for (; i + 16 <= n; i += 16) {
		philox4(seed, j, name_hash, (i0 + i) >> 2, v.val);
		vst4q_u32(u + i, v);
	}
	REF->philox(seed, j, name_hash, i0 + i, n - i, u + i);
}

/* The mask of u >= thr: 256 draws at a time, compared by bits.h (NEON). */
static size_t keep_bits_neon(uint64_t seed, uint32_t j, uint32_t name_hash,
			     uint64_t i0, size_t n, uint32_t thr, uint64_t *bits)
{
	uint32_t u[256];
	size_t a, c, kept = 0;

	for (a = 0; a < n; a += c) {
		c = n - a < 256 ? n - a : 256;
		philox_neon(seed, j, name_hash, i0 + a, c, u);
		kept += ds_keep_bits(u, c, thr, bits + a / 64);
	}
	return kept;
}

/* ---- elementwise steps ------------------------------------------------ */

/* (u >= thr) ? (x - b) * s : +0 for 4 lanes. */
static inline float32x4_t dare4(float32x4_t b, float32x4_t x, uint32x4_t u,
				uint32_t thr, float s)
{
	float32x4_t d = vmulq_n_f32(vsubq_f32(x, b), s);

	return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(d),
					       vcgeq_u32(u, vdupq_n_u32(thr))));
}

/* d = kept ? (x - b) * s : +0 */
static void sparsify_neon(const float *b, const float *x, const uint32_t *u,
			  uint32_t thr, float s, float *d, size_t n)
{
	size_t i = 0;

	for (; i + 4 <= n; i += 4)
		vst1q_f32(d + i, dare4(vld1q_f32(b + i), vld1q_f32(x + i),
				       vld1q_u32(u + i), thr, s));
	REF->sparsify(b + i, x + i, u + i, thr, s, d + i, n - i);
}

/* d = x - b */
static void delta_neon(const float *b, const float *x, float *d, size_t n)
{
	size_t i = 0;

	for (; i + 4 <= n; i += 4)
		vst1q_f32(d + i, vsubq_f32(vld1q_f32(x + i), vld1q_f32(b + i)));
	REF->delta(b + i, x + i, d + i, n - i);
}

/* acc = acc + w * d */
static void axpy_neon(float *acc, float w, const float *d, size_t n)
{
	size_t i = 0;

	for (; i + 4 <= n; i += 4)
		vst1q_f32(acc + i, vaddq_f32(vld1q_f32(acc + i),
					     vmulq_n_f32(vld1q_f32(d + i), w)));
	REF->axpy(acc + i, w, d + i, n - i);
}

/*
 * Philox, mask, rescale and accumulate fused, 16 elements per step.  LD4
 * splits the 16 elements by lane (i mod 4), the layout Philox gives.
 */
static size_t dare_axpy_16(float *acc, const float *b, const float *x,
			   const struct ds_dare *dp, uint64_t i0, size_t n)
{
	float32x4x4_t bv, xv, av;
	uint32x4_t u[4];
	size_t i = 0;
	int q;

	for (; i + 16 <= n; i += 16) {
		philox4(dp->seed, dp->j, dp->name_hash, (i0 + i) >> 2, u);
		bv = vld4q_f32(b + i);
		xv = vld4q_f32(x + i);
		av = vld4q_f32(acc + i);
		for (q = 0; q < 4; q++)
			av.val[q] = vaddq_f32(av.val[q], vmulq_n_f32(
				dare4(bv.val[q], xv.val[q], u[q], dp->thr, dp->s),
				dp->w));
		vst4q_f32(acc + i, av);
	}
	return i;
}

/* acc = acc + w * sparsify(x - b). */
static void dare_axpy_neon(float *acc, const float *b, const float *x,
			   const struct ds_dare *dp, uint64_t i0, size_t n)
{
	size_t i = ds_philox_head_len(i0, n);

	REF->dare_axpy(acc, b, x, dp, i0, i);
	if (dp->thr)
		i += dare_axpy_16(acc + i, b + i, x + i, dp, i0 + i, n - i);
	else
		for (; i + 4 <= n; i += 4)
			vst1q_f32(acc + i, vaddq_f32(vld1q_f32(acc + i), vmulq_n_f32(
				vmulq_n_f32(vsubq_f32(vld1q_f32(x + i),
						      vld1q_f32(b + i)), dp->s),
				dp->w)));
	REF->dare_axpy(acc + i, b + i, x + i, dp, i0 + i, n - i);
}

/*
 * For each 4-bit mask m, the TBL index that moves the kept values (packed
 * at the start of a vector) to their lanes: lane l, when kept, takes the
 * bytes of value popcount(m & ((1 << l) - 1)); 0xff gives a dropped lane 0.
 */
#define POP3(x) (((x) & 1) + ((x) >> 1 & 1) + ((x) >> 2 & 1))
#define SB(m, l, c) ((m) >> (l) & 1 ? 4 * POP3((m) & ((1u << (l)) - 1)) + (c) \
		     : 0xff)
#define SL(m, l) SB(m, l, 0), SB(m, l, 1), SB(m, l, 2), SB(m, l, 3)
#define SROW(m) { SL(m, 0), SL(m, 1), SL(m, 2), SL(m, 3) }
static const uint8_t spread[16][16] = {
	SROW(0), SROW(1), SROW(2), SROW(3), SROW(4), SROW(5), SROW(6),
	SROW(7), SROW(8), SROW(9), SROW(10), SROW(11), SROW(12), SROW(13),
	SROW(14), SROW(15),
};
static const uint8_t pop4[16] = { 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3,
				   3, 4 };

/*
 * dare4 with the mask given (m) and only the kept values, avail of them
 * left at v: 4 are loaded when there are, else the kept ones alone, so
 * nothing past the last is read.  Returns how many were used.
 */
static inline unsigned kept4(float *acc, const float *b, const float *v,
			     size_t avail, unsigned m, float s, float w)
{
	static const uint32_t bit[4] = { 1, 2, 4, 8 };
	float t[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
	unsigned pc = pop4[m], q;
	uint32x4_t keep = vtstq_u32(vdupq_n_u32(m), vld1q_u32(bit));
	float32x4_t x, d;

	if (avail >= 4) {
		x = vld1q_f32(v);
	} else {
		for (q = 0; q < pc; q++)
			t[q] = v[q];
		x = vld1q_f32(t);
	}
	x = vreinterpretq_f32_u8(vqtbl1q_u8(vreinterpretq_u8_f32(x),
					    vld1q_u8(spread[m])));
	d = vmulq_n_f32(vsubq_f32(x, vld1q_f32(b)), s);
	d = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(d), keep));
	vst1q_f32(acc, vaddq_f32(vld1q_f32(acc), vmulq_n_f32(d, w)));
	return pc;
}

/* dare_axpy with the mask as bits and v the kept values (kernels.h);
 * the scalar reference takes the last n % 4, from the rest of a word. */
static void kept_axpy_neon(float *acc, const float *b, const float *v,
			   size_t nv, const uint64_t *keep, float s, float w,
			   size_t n)
{
	size_t i, r = 0;
	uint64_t rest;

	for (i = 0; i + 4 <= n; i += 4)
		r += kept4(acc + i, b + i, v + r, nv - r,
			   (unsigned)(keep[i / 64] >> (i % 64)) & 15, s, w);
	if (i < n) {
		rest = keep[i / 64] >> (i % 64);
		REF->kept_axpy(acc + i, b + i, v + r, nv - r, &rest, s, w,
			       n - i);
	}
}

/* TIES for 4 elements; see avx2.c for why masked adds equal skipping. */
static inline void ties4(const float *e, size_t stride, unsigned nm,
			 const float *w, float *acc, float *dsum)
{
	const float32x4_t z = vdupq_n_f32(0.0f);
	float32x4_t S = z, a = z, D = z, v;
	uint32x4_t pos, sel;
	unsigned j;

	for (j = 0; j < nm; j++)
		S = vaddq_f32(S, vld1q_f32(e + j * stride));
	pos = vcgeq_f32(S, z);                      /* NaN: -1 */
	for (j = 0; j < nm; j++) {
		v = vld1q_f32(e + j * stride);
		sel = vbslq_u32(pos, vcgtq_f32(v, z), vcltq_f32(v, z));
		a = vaddq_f32(a, vreinterpretq_f32_u32(
			vandq_u32(vreinterpretq_u32_f32(v), sel)));
		D = vaddq_f32(D, vreinterpretq_f32_u32(
			vandq_u32(vreinterpretq_u32_f32(vdupq_n_f32(w[j])), sel)));
	}
	vst1q_f32(acc, a);
	vst1q_f32(dsum, D);
}

/* TIES over n elements. */
static void ties_neon(const float *e, size_t stride, unsigned nm,
		      const float *w, float *acc, float *dsum, size_t n)
{
	size_t i = 0;

	for (; i + 4 <= n; i += 4)
		ties4(e + i, stride, nm, w, acc + i, dsum + i);
	REF->ties(e + i, stride, nm, w, acc + i, dsum + i, n - i);
}

/* Normalize, add the base scaled by lambda, canonicalize NaN. */
static void finish_neon(float *acc, const float *b, const float *dsum,
			float div, float lambda, size_t n)
{
	const float32x4_t one = vdupq_n_f32(1.0f), z = vdupq_n_f32(0.0f);
	const uint32x4_t canon = vdupq_n_u32(DS_CANON_NAN_BITS);
	size_t i = 0;
	float32x4_t v, d;

	for (; i + 4 <= n; i += 4) {
		v = vld1q_f32(acc + i);
		if (dsum) {
			d = vld1q_f32(dsum + i);
			v = vdivq_f32(v, vbslq_f32(vceqq_f32(d, z), one, d));
		} else if (div != 0.0f) {
			v = vdivq_f32(v, vdupq_n_f32(div));
		}
		if (b)
			v = vaddq_f32(vld1q_f32(b + i), vmulq_n_f32(v, lambda));
		v = vbslq_f32(vceqq_f32(v, v), v, vreinterpretq_f32_u32(canon));
		vst1q_f32(acc + i, v);
	}
	REF->finish(acc + i, b ? b + i : NULL, dsum ? dsum + i : NULL, div,
		    lambda, n - i);
}

/* ---- rank selection ----------------------------------------------------- */

/* Rank keys of 4 floats: |d|'s bits, 0x7fffffff for a NaN. */
static inline int32x4_t key4(const float *d)
{
	const uint32x4_t abs = vdupq_n_u32(0x7fffffff);
	uint32x4_t a = vandq_u32(vld1q_u32((const uint32_t *)(const void *)d),
				 abs);

	a = vorrq_u32(a, vandq_u32(vcgtq_u32(a, vdupq_n_u32(0x7f800000)), abs));
	return vreinterpretq_s32_u32(a);
}

/* All ones where lo < key <= hi. */
static inline uint32x4_t range4(int32x4_t key, int32x4_t lo, int32x4_t hi)
{
	return vandq_u32(vcgtq_s32(key, lo), vcleq_s32(key, hi));
}

/* key = rank key of d */
static void rank_keys_neon(const float *d, uint32_t *key, size_t n)
{
	size_t i = 0;

	for (; i + 4 <= n; i += 4)
		vst1q_u32(key + i, vreinterpretq_u32_s32(key4(d + i)));
	REF->rank_keys(d + i, key + i, n - i);
}

/* x = key in range ? d * s : +0 */
static void keep_range_neon(const float *d, int32_t lo, int32_t hi, float s,
			    float *x, size_t n)
{
	const int32x4_t lv = vdupq_n_s32(lo), hv = vdupq_n_s32(hi);
	size_t i = 0;
	uint32x4_t t;

	for (; i + 4 <= n; i += 4) {
		t = vreinterpretq_u32_f32(vmulq_n_f32(vld1q_f32(d + i), s));
		t = vandq_u32(t, range4(key4(d + i), lv, hv));
		vst1q_f32(x + i, vreinterpretq_f32_u32(t));
	}
	REF->keep_range(d + i, lo, hi, s, x + i, n - i);
}

/* How many keys are in range: lanes count down from 0 by their masks,
 * folded into c every 2^20 vectors, long before a lane could wrap. */
static size_t count_range_neon(const float *d, int32_t lo, int32_t hi,
			       size_t n)
{
	const int32x4_t lv = vdupq_n_s32(lo), hv = vdupq_n_s32(hi);
	size_t i = 0, c = 0, end;
	uint32x4_t acc;

	while (i + 4 <= n) {
		end = n - i > ((size_t)4 << 20) ? i + ((size_t)4 << 20) : n;
		acc = vdupq_n_u32(0);
		for (; i + 4 <= end; i += 4)
			acc = vsubq_u32(acc, range4(key4(d + i), lv, hv));
		c += vaddvq_u32(acc);
	}
	return c + REF->count_range(d + i, lo, hi, n - i);
}

/* The bits.h count. */
static size_t bits_count_neon(const uint64_t *bits, size_t n)
{
	return ds_bits_count(bits, n);
}

const struct ds_kernel_ops ds_kernel_neon_ops = {
	.name = "neon",
	.load = load_neon,
	.store = store_neon,
	.philox = philox_neon,
	.keep_bits = keep_bits_neon,
	.bits_count = bits_count_neon,
	.sparsify = sparsify_neon,
	.delta = delta_neon,
	.axpy = axpy_neon,
	.dare_axpy = dare_axpy_neon,
	.kept_axpy = kept_axpy_neon,
	.ties = ties_neon,
	.finish = finish_neon,
	.rank_keys = rank_keys_neon,
	.keep_range = keep_range_neon,
	.count_range = count_range_neon,
};
#endif

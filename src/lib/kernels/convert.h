/* SPDX-License-Identifier: MIT */
/* convert.h - scalar F32/F16/BF16 conversions, the reference of every path */
#ifndef DS_CONVERT_H
#define DS_CONVERT_H

#include <stdint.h>
#include <string.h>
#include "dare-stream.h"

/* Canonical quiet NaN every merged NaN is stored as (see methods.c). */
#define DS_CANON_NAN_BITS 0x7fc00000u

/* Bits of a float, without aliasing trouble. */
static inline uint32_t ds_fbits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

/* Float with the given bits. */
static inline float ds_bitsf(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

/*
 * Rank key of a value (DESIGN 5.1): its magnitude's bits, which order like
 * the magnitudes; every NaN gets the largest key, above infinity.
 */
static inline uint32_t ds_rank_key(float v)
{
	uint32_t b = ds_fbits(v) & 0x7fffffffu;

	return b > 0x7f800000u ? 0x7fffffffu : b;   /* branch-free: a NaN */
}

/* BF16 to F32: the upper half of the float; exact, payloads kept. */
static inline float ds_cvt_bf16_f32(uint16_t h)
{
	return ds_bitsf((uint32_t)h << 16);
}

/*
 * F32 to BF16, round to nearest-even; overflow carries into the exponent
 * and gives +-inf.  A NaN keeps its sign and upper payload and is made
 * quiet (bit 6 of the half), so it cannot round into an infinity.
 */
static inline uint16_t ds_cvt_f32_bf16(float f)
{
	uint32_t x = ds_fbits(f);

	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | 0x0040u);
	return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/*
 * F16 to F32, exact: subnormals are normalized, infinities kept, and a NaN
 * keeps its sign and payload and is made quiet (what F16C's VCVTPH2PS and
 * AArch64's FCVTL do).
 */
static inline float ds_cvt_f16_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
	float f;

	if (e == 0x1f)
		return ds_bitsf(sign | 0x7f800000u | (m << 13) |
				(m ? 0x00400000u : 0));
	if (e)
		return ds_bitsf(sign | ((e + 112) << 23) | (m << 13));
	f = (float)m * 0x1p-24f;        /* subnormal or zero: exact */
	return ds_bitsf(sign | ds_fbits(f));
}

/*
 * F32 to F16, round to nearest-even, also into and out of the subnormal
 * range; |f| >= 65520 gives +-inf; a NaN gives sign | 0x7e00 | mantissa
 * >> 13 (what F16C's VCVTPS2PH with imm 0 gives).
 */
static inline uint16_t ds_cvt_f32_f16(float f)
{
	uint32_t x = ds_fbits(f), a = x & 0x7fffffffu;
	uint32_t sign = (x >> 16) & 0x8000u, h, rem, e, m, sh;

	if (a > 0x7f800000u)
		return (uint16_t)(sign | 0x7e00u | ((a & 0x7fffffu) >> 13));
	if (a >= 0x477ff000u)           /* 65520 and up: ties to inf */
		return (uint16_t)(sign | 0x7c00u);
	if (a >= 0x38800000u) {         /* normal in F16 */
		h = (a >> 13) - (112u << 10);
		rem = a & 0x1fffu;
		h += rem > 0x1000u || (rem == 0x1000u && (h & 1u));
		return (uint16_t)(sign | h);
	}
	if (a <= 0x33000000u)           /* at most 2^-25: ties to zero */
		return (uint16_t)sign;
	e = a >> 23;                    /* 102 .. 112 */
	m = (a & 0x7fffffu) | 0x800000u;
	sh = 126 - e;                   /* |f| / 2^-24 = m >> sh */
	h = m >> sh;
	rem = m & ((1u << sh) - 1);
	h += rem > (1u << (sh - 1)) || (rem == (1u << (sh - 1)) && (h & 1u));
	return (uint16_t)(sign | h);
}

/* Element i of p, of dtype dt (F32, F16 or BF16; aligned or not), in
 * binary32: what load gives it. */
static inline float ds_cvt_at(const void *p, enum ds_dtype dt, uint64_t i)
{
	uint16_t h;
	float f;

	if (dt == DS_DT_F32) {
		memcpy(&f, (const char *)p + 4 * i, sizeof(f));
		return f;
	}
	memcpy(&h, (const char *)p + 2 * i, sizeof(h));
	return dt == DS_DT_BF16 ? ds_cvt_bf16_f32(h) : ds_cvt_f16_f32(h);
}

#endif

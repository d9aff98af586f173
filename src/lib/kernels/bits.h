/* SPDX-License-Identifier: MIT */
/* bits.h - the kept elements of a DARE mask as a bitmap */
#ifndef DS_KERNELS_BITS_H
#define DS_KERNELS_BITS_H

#include <stddef.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#endif

/*
 * bits[w] gets bit j set where u[64w + j] >= thr, for the n words of u
 * (the rest of the last word clear); returns how many are set.  Integer
 * comparisons: every path gives the same bits.  The baseline vector unit
 * of the target (SSE2 on x86-64, NEON on AArch64) needs no dispatch; a
 * mask is one pass over words the generator has just written, so this is
 * memory speed on any of them.
 */
static inline uint64_t ds_bits16(const uint32_t *u, uint32_t thr)
{
#if defined(__SSE2__)
	/* unsigned >=, as signed > of both with the top bit flipped */
	const __m128i f = _mm_set1_epi32((int)0x80000000u);
	const __m128i t = _mm_set1_epi32((int)((thr - 1) ^ 0x80000000u));
	uint64_t b = 0;

	for (unsigned q = 0; q < 4; q++) {
		__m128i x = _mm_loadu_si128((const __m128i *)(u + 4 * q));
		__m128i gt = _mm_cmpgt_epi32(_mm_xor_si128(x, f), t);

		b |= (uint64_t)_mm_movemask_ps(_mm_castsi128_ps(gt)) << 4 * q;
	}
	return b;
#elif defined(__ARM_NEON) && defined(__aarch64__)
	static const uint32_t w[4] = { 1, 2, 4, 8 };
	const uint32x4_t wv = vld1q_u32(w), tv = vdupq_n_u32(thr);
	uint64_t b = 0;

	for (unsigned q = 0; q < 4; q++) {
		uint32x4_t ge = vcgeq_u32(vld1q_u32(u + 4 * q), tv);

		b |= (uint64_t)vaddvq_u32(vandq_u32(ge, wv)) << 4 * q;
	}
	return b;
#else
	uint64_t b = 0;

	for (unsigned j = 0; j < 16; j++)
		b |= (uint64_t)(u[j] >= thr) << j;
	return b;
#endif
}

/* Set bits of x, without the POPCNT instruction x86-64's baseline lacks
 * (__builtin_popcountll would call libgcc there). */
static inline unsigned ds_popcount64(uint64_t x)
{
#if defined(__POPCNT__) || defined(__aarch64__)
	return (unsigned)__builtin_popcountll(x);
#else
	x = x - (x >> 1 & 0x5555555555555555ull);
	x = (x & 0x3333333333333333ull) + (x >> 2 & 0x3333333333333333ull);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
	return (unsigned)((x * 0x0101010101010101ull) >> 56);
#endif
}

/* Set bits among the first n of bits (bit i of word i / 64). */
static inline size_t ds_bits_count(const uint64_t *bits, size_t n)
{
	size_t c = 0, w;

	for (w = 0; w < n / 64; w++)
		c += ds_popcount64(bits[w]);
	if (n % 64)
		c += ds_popcount64(bits[w] & ((1ull << (n % 64)) - 1));
	return c;
}

/*
 * The set bits of w as off + their positions, lowest first, into idx[];
 * returns how many.  idx needs room for one more than that.  A random
 * mask at p 0.9 sets 6.4 of 64 bits: a loop until the word is clear would
 * mispredict its end at every word, so 12 steps run unconditionally
 * (each writes, and counts only while bits are left; the bit 63 ORed in
 * keeps ctz defined), and a loop takes the rare rest.
 */
static inline unsigned ds_bits_list(uint64_t w, uint32_t off, uint32_t *idx)
{
	unsigned m = 0;

#pragma GCC unroll 12
	for (int s = 0; s < 12; s++) {
		idx[m] = off + (uint32_t)__builtin_ctzll(w | 1ull << 63);
		m += w != 0;
		w &= w - 1;
	}
	for (; w; w &= w - 1)
		idx[m++] = off + (uint32_t)__builtin_ctzll(w);
	return m;
}

/* thr > 0 (a threshold of 0 keeps everything and needs no mask). */
static inline size_t ds_keep_bits(const uint32_t *u, size_t n, uint32_t thr,
				  uint64_t *bits)
{
	size_t kept = 0, w;

	for (w = 0; (w + 1) * 64 <= n; w++) {
		uint64_t b = 0;

		for (unsigned q = 0; q < 4; q++)
			b |= ds_bits16(u + 64 * w + 16 * q, thr) << 16 * q;
		bits[w] = b;
		kept += ds_popcount64(b);
	}
	if (n % 64) {
		uint64_t b = 0;

		for (size_t j = 0; j < n % 64; j++)
			b |= (uint64_t)(u[64 * w + j] >= thr) << j;
		bits[w] = b;
		kept += ds_popcount64(b);
	}
	return kept;
}

#endif

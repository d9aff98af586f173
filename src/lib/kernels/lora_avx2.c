/* SPDX-License-Identifier: MIT */
/* lora_avx2.c - the LoRA row update, 8 columns a vector (AVX2) */
#include "config.h"

#include <immintrin.h>
#include "kernels/kernels.h"

/*
 * Each lane is the scalar loop of lora.c: mul then add, in k order.  Four
 * vectors go at once so that four chains of dependent additions overlap.
 */
void ds_lora_row_avx2(const float *w, const float *v, size_t vs,
		      const float *u, unsigned r, float s, float *x, size_t n)
{
	const __m256 sv = _mm256_set1_ps(s);
	size_t c = 0;

	for (; c + 32 <= n; c += 32) {
		__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;

		for (unsigned k = 0; k < r; k++) {
			const float *vk = v + k * vs + c;
			__m256 uk = _mm256_set1_ps(u[k]);

			a0 = _mm256_add_ps(a0, _mm256_mul_ps(uk,
					   _mm256_loadu_ps(vk)));
			a1 = _mm256_add_ps(a1, _mm256_mul_ps(uk,
					   _mm256_loadu_ps(vk + 8)));
			a2 = _mm256_add_ps(a2, _mm256_mul_ps(uk,
					   _mm256_loadu_ps(vk + 16)));
			a3 = _mm256_add_ps(a3, _mm256_mul_ps(uk,
					   _mm256_loadu_ps(vk + 24)));
		}
		_mm256_storeu_ps(x + c, _mm256_add_ps(_mm256_loadu_ps(w + c),
				 _mm256_mul_ps(sv, a0)));
		_mm256_storeu_ps(x + c + 8, _mm256_add_ps(
				 _mm256_loadu_ps(w + c + 8), _mm256_mul_ps(sv, a1)));
		_mm256_storeu_ps(x + c + 16, _mm256_add_ps(
				 _mm256_loadu_ps(w + c + 16), _mm256_mul_ps(sv, a2)));
		_mm256_storeu_ps(x + c + 24, _mm256_add_ps(
				 _mm256_loadu_ps(w + c + 24), _mm256_mul_ps(sv, a3)));
	}
	for (; c + 8 <= n; c += 8) {
		__m256 acc = _mm256_setzero_ps();

		for (unsigned k = 0; k < r; k++)
			acc = _mm256_add_ps(acc, _mm256_mul_ps(
					    _mm256_set1_ps(u[k]),
					    _mm256_loadu_ps(v + k * vs + c)));
		_mm256_storeu_ps(x + c, _mm256_add_ps(_mm256_loadu_ps(w + c),
						      _mm256_mul_ps(sv, acc)));
	}
	if (c < n)
		ds_lora_row_scalar(w + c, v + c, vs, u, r, s, x + c, n - c);
}

/*
 * 8 rows of 8 floats (ro[l] lane q) to 8 vectors of 8 (t[q] lane l):
 * unpack pairs of rows, shuffle pairs of pairs, swap 128-bit halves.
 */
static inline __attribute__((always_inline)) void
transpose8(const __m256 ro[8], __m256 t[8])
{
	__m256 u0 = _mm256_unpacklo_ps(ro[0], ro[1]);
	__m256 u1 = _mm256_unpackhi_ps(ro[0], ro[1]);
	__m256 u2 = _mm256_unpacklo_ps(ro[2], ro[3]);
	__m256 u3 = _mm256_unpackhi_ps(ro[2], ro[3]);
	__m256 u4 = _mm256_unpacklo_ps(ro[4], ro[5]);
	__m256 u5 = _mm256_unpackhi_ps(ro[4], ro[5]);
	__m256 u6 = _mm256_unpacklo_ps(ro[6], ro[7]);
	__m256 u7 = _mm256_unpackhi_ps(ro[6], ro[7]);
	__m256 s0 = _mm256_shuffle_ps(u0, u2, 0x44);
	__m256 s1 = _mm256_shuffle_ps(u0, u2, 0xee);
	__m256 s2 = _mm256_shuffle_ps(u1, u3, 0x44);
	__m256 s3 = _mm256_shuffle_ps(u1, u3, 0xee);
	__m256 s4 = _mm256_shuffle_ps(u4, u6, 0x44);
	__m256 s5 = _mm256_shuffle_ps(u4, u6, 0xee);
	__m256 s6 = _mm256_shuffle_ps(u5, u7, 0x44);
	__m256 s7 = _mm256_shuffle_ps(u5, u7, 0xee);

	t[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
	t[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
	t[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
	t[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
	t[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
	t[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
	t[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
	t[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* Terms kb .. kb+7 (those below r) of the sums of the 8 columns at
 * c[0..7], added to a in k order. */
static inline __attribute__((always_inline)) __m256
pick8(__m256 a, const float *const c[8], unsigned kb, const float *u,
      unsigned r)
{
	__m256 ro[8], t[8];
	unsigned q, nq = r - kb < 8 ? r - kb : 8;

#pragma GCC unroll 8
	for (q = 0; q < 8; q++)
		ro[q] = _mm256_loadu_ps(c[q] + kb);
	transpose8(ro, t);
	if (nq == 8) {
#pragma GCC unroll 8
		for (q = 0; q < 8; q++)
			a = _mm256_add_ps(a, _mm256_mul_ps(
				_mm256_set1_ps(u[kb + q]), t[q]));
		return a;
	}
	for (q = 0; q < nq; q++)
		a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_set1_ps(u[kb + q]),
						   t[q]));
	return a;
}

/*
 * The picked columns 8 a vector: 8 columns' values, 8 of k at a time,
 * transposed into one vector per k (v by columns makes each column's
 * values one load); two groups of 8 at once so that two chains of
 * dependent additions overlap.  Each lane is ds_lora_pick_scalar's sum,
 * term by term.  A last group of fewer than 8 repeats its last column.
 */
void ds_lora_pick_avx2(const float *v, const uint32_t *idx, size_t m,
		       const float *u, unsigned r, float *acc)
{
	const size_t rp = (r + 7) / 8 * 8;
	const float *c0[8], *c1[8];
	float tail[8];
	size_t l = 0;
	unsigned q, kb;

	for (; l + 16 <= m; l += 16) {
		__m256 a0 = _mm256_setzero_ps(), a1 = a0;

		for (q = 0; q < 8; q++) {
			c0[q] = v + idx[l + q] * rp;
			c1[q] = v + idx[l + 8 + q] * rp;
		}
		for (kb = 0; kb < r; kb += 8) {
			a0 = pick8(a0, c0, kb, u, r);
			a1 = pick8(a1, c1, kb, u, r);
		}
		_mm256_storeu_ps(acc + l, a0);
		_mm256_storeu_ps(acc + l + 8, a1);
	}
	for (; l < m; l += 8) {
		__m256 a0 = _mm256_setzero_ps();

		for (q = 0; q < 8; q++)
			c0[q] = v + idx[l + q < m ? l + q : m - 1] * rp;
		for (kb = 0; kb < r; kb += 8)
			a0 = pick8(a0, c0, kb, u, r);
		if (l + 8 <= m) {
			_mm256_storeu_ps(acc + l, a0);
		} else {
			_mm256_storeu_ps(tail, a0);
			for (q = 0; l + q < m; q++)
				acc[l + q] = tail[q];
		}
	}
}

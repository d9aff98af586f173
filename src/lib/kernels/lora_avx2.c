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

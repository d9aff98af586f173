/* SPDX-License-Identifier: MIT */
/* lora_avx512.c - the LoRA row update, 16 columns a vector (AVX-512 F) */
#include "config.h"

#include <immintrin.h>
#include "kernels/kernels.h"

/*
 * Each lane is the scalar loop of lora.c: mul then add, in k order.  Four
 * vectors go at once so that four chains of dependent additions overlap;
 * the tail is masked, not scalar.
 */
void ds_lora_row_avx512(const float *w, const float *v, size_t vs,
			const float *u, unsigned r, float s, float *x,
			size_t n)
{
	const __m512 sv = _mm512_set1_ps(s);
	size_t c = 0;

	for (; c + 64 <= n; c += 64) {
		__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;

		for (unsigned k = 0; k < r; k++) {
			const float *vk = v + k * vs + c;
			__m512 uk = _mm512_set1_ps(u[k]);

			a0 = _mm512_add_ps(a0, _mm512_mul_ps(uk,
					   _mm512_loadu_ps(vk)));
			a1 = _mm512_add_ps(a1, _mm512_mul_ps(uk,
					   _mm512_loadu_ps(vk + 16)));
			a2 = _mm512_add_ps(a2, _mm512_mul_ps(uk,
					   _mm512_loadu_ps(vk + 32)));
			a3 = _mm512_add_ps(a3, _mm512_mul_ps(uk,
					   _mm512_loadu_ps(vk + 48)));
		}
		_mm512_storeu_ps(x + c, _mm512_add_ps(_mm512_loadu_ps(w + c),
				 _mm512_mul_ps(sv, a0)));
		_mm512_storeu_ps(x + c + 16, _mm512_add_ps(
				 _mm512_loadu_ps(w + c + 16), _mm512_mul_ps(sv, a1)));
		_mm512_storeu_ps(x + c + 32, _mm512_add_ps(
				 _mm512_loadu_ps(w + c + 32), _mm512_mul_ps(sv, a2)));
		_mm512_storeu_ps(x + c + 48, _mm512_add_ps(
				 _mm512_loadu_ps(w + c + 48), _mm512_mul_ps(sv, a3)));
	}
	for (; c < n; c += 16) {
		__mmask16 m = n - c >= 16 ? (__mmask16)0xffff :
			      (__mmask16)((1u << (n - c)) - 1);
		__m512 acc = _mm512_setzero_ps();

		for (unsigned k = 0; k < r; k++)
			acc = _mm512_add_ps(acc, _mm512_mul_ps(
					    _mm512_set1_ps(u[k]),
					    _mm512_maskz_loadu_ps(m, v + k * vs +
								  c)));
		_mm512_mask_storeu_ps(x + c, m, _mm512_add_ps(
				      _mm512_maskz_loadu_ps(m, w + c),
				      _mm512_mul_ps(sv, acc)));
	}
}

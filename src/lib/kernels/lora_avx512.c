/* SPDX-License-Identifier: MIT */
/* lora_avx512.c - the LoRA row update, 16 columns at a time (AVX-512 F) */
#include "config.h"

#include <immintrin.h>
#include "kernels/kernels.h"

/* Each lane is the scalar loop of lora.c; the tail is masked, not scalar. */
void ds_lora_row_avx512(const float *w, const float *v, size_t vs,
			const float *u, unsigned r, float s, float *x,
			size_t n)
{
	const __m512 sv = _mm512_set1_ps(s);

	for (size_t c = 0; c < n; c += 16) {
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

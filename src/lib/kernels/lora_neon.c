/* SPDX-License-Identifier: MIT */
/* lora_neon.c - the LoRA row update, 4 columns a vector (NEON) */
#include "config.h"

#include <arm_neon.h>
#include "kernels/kernels.h"

/*
 * vmulq then vaddq, never vfmaq/vmlaq: each lane is lora.c's loop.  Four
 * vectors go at once so that four chains of dependent additions overlap.
 */
void ds_lora_row_neon(const float *w, const float *v, size_t vs,
		      const float *u, unsigned r, float s, float *x, size_t n)
{
	const float32x4_t sv = vdupq_n_f32(s);
	size_t c = 0;

	for (; c + 16 <= n; c += 16) {
		float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;

		for (unsigned k = 0; k < r; k++) {
			const float *vk = v + k * vs + c;
			float32x4_t uk = vdupq_n_f32(u[k]);

			a0 = vaddq_f32(a0, vmulq_f32(uk, vld1q_f32(vk)));
			a1 = vaddq_f32(a1, vmulq_f32(uk, vld1q_f32(vk + 4)));
			a2 = vaddq_f32(a2, vmulq_f32(uk, vld1q_f32(vk + 8)));
			a3 = vaddq_f32(a3, vmulq_f32(uk, vld1q_f32(vk + 12)));
		}
		vst1q_f32(x + c, vaddq_f32(vld1q_f32(w + c), vmulq_f32(sv, a0)));
		vst1q_f32(x + c + 4, vaddq_f32(vld1q_f32(w + c + 4),
					       vmulq_f32(sv, a1)));
		vst1q_f32(x + c + 8, vaddq_f32(vld1q_f32(w + c + 8),
					       vmulq_f32(sv, a2)));
		vst1q_f32(x + c + 12, vaddq_f32(vld1q_f32(w + c + 12),
						vmulq_f32(sv, a3)));
	}
	for (; c + 4 <= n; c += 4) {
		float32x4_t acc = vdupq_n_f32(0.0f);

		for (unsigned k = 0; k < r; k++)
			acc = vaddq_f32(acc, vmulq_f32(vdupq_n_f32(u[k]),
						       vld1q_f32(v + k * vs +
								 c)));
		vst1q_f32(x + c, vaddq_f32(vld1q_f32(w + c),
					   vmulq_f32(sv, acc)));
	}
	if (c < n)
		ds_lora_row_scalar(w + c, v + c, vs, u, r, s, x + c, n - c);
}

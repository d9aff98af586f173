/* SPDX-License-Identifier: MIT */
/* lora_neon.c - the LoRA row update, 4 columns at a time (NEON) */
#include "config.h"

#include <arm_neon.h>
#include "kernels/kernels.h"

/* vmulq then vaddq, never vfmaq/vmlaq: each lane is lora.c's loop. */
void ds_lora_row_neon(const float *w, const float *v, size_t vs,
		      const float *u, unsigned r, float s, float *x, size_t n)
{
	const float32x4_t sv = vdupq_n_f32(s);
	size_t c = 0;

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

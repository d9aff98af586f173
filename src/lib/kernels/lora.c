/* SPDX-License-Identifier: MIT */
/* lora.c - the scalar LoRA row update, the reference of every path */
#include "config.h"

#include "kernels/kernels.h"

/* Compiled with -ffp-contract=off: each product and sum is rounded. */
void ds_lora_row_scalar(const float *w, const float *v, size_t vs,
			const float *u, unsigned r, float s, float *x, size_t n)
{
	for (size_t c = 0; c < n; c++) {
		float acc = 0.0f;

		for (unsigned k = 0; k < r; k++)
			acc = acc + u[k] * v[k * vs + c];
		x[c] = w[c] + s * acc;
	}
}

/* Four columns at a time, so that four chains of dependent additions
 * overlap; each is the loop above, term by term. */
void ds_lora_pick_scalar(const float *v, const uint32_t *idx, size_t m,
			 const float *u, unsigned r, float *acc)
{
	const size_t rp = (r + 7) / 8 * 8;
	size_t l = 0;

	for (; l + 4 <= m; l += 4) {
		const float *v0 = v + idx[l] * rp, *v1 = v + idx[l + 1] * rp;
		const float *v2 = v + idx[l + 2] * rp, *v3 = v + idx[l + 3] * rp;
		float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;

		for (unsigned k = 0; k < r; k++) {
			a0 = a0 + u[k] * v0[k];
			a1 = a1 + u[k] * v1[k];
			a2 = a2 + u[k] * v2[k];
			a3 = a3 + u[k] * v3[k];
		}
		acc[l] = a0;
		acc[l + 1] = a1;
		acc[l + 2] = a2;
		acc[l + 3] = a3;
	}
	for (; l < m; l++) {
		const float *vc = v + idx[l] * rp;
		float a = 0.0f;

		for (unsigned k = 0; k < r; k++)
			a = a + u[k] * vc[k];
		acc[l] = a;
	}
}

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

/* SPDX-License-Identifier: MIT */
/* kernels.h - per-ISA building blocks of the merge kernels, chosen once */
#ifndef DS_KERNELS_H
#define DS_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "dare-stream.h"

/*
 * Every path (scalar, AVX2, NEON) gives the same bits as the scalar
 * reference for every input, NaN, infinities, zeros and subnormals
 * included.  Elementwise semantics, all in binary32 without contraction:
 *
 *   load:     F32 as is; BF16 bits << 16; F16 exactly (subnormals, inf, NaN
 *             with its payload).
 *   store:    round to nearest-even; overflow to +-inf; NaN stays NaN and
 *             quiet (BF16: upper half | 0x0040; F16: sign | 0x7e00 |
 *             mantissa >> 13).
 *   philox:   u[k] = lane (i mod 4) of Philox4x32-10 with counter
 *             (b mod 2^32, b div 2^32, j, name_hash), b = i div 4,
 *             key (seed mod 2^32, seed div 2^32), for i = i0 + k.
 *   sparsify: d = (u >= thr) ? (x - b) * s : +0.0f
 *   delta:    d = x - b
 *   axpy:     acc = acc + w * d
 */
struct ds_kernel_ops {
	const char *name;
	void (*load)(enum ds_dtype dt, const void *src, float *dst, size_t n);
	void (*store)(enum ds_dtype dt, const float *src, void *dst, size_t n);
	void (*philox)(uint64_t seed, uint32_t j, uint32_t name_hash,
		       uint64_t i0, size_t n, uint32_t *u);
	void (*sparsify)(const float *b, const float *x, const uint32_t *u,
			 uint32_t thr, float s, float *d, size_t n);
	void (*delta)(const float *b, const float *x, float *d, size_t n);
	void (*axpy)(float *acc, float w, const float *d, size_t n);
};

enum ds_kpath { DS_KPATH_SCALAR, DS_KPATH_AVX2, DS_KPATH_NEON, DS_KPATH_COUNT };

/* The path named ("scalar", "avx2", "neon"), or NULL when this build or this
 * CPU cannot run it. */
const struct ds_kernel_ops *ds_kernel_get(const char *name);
/*
 * The path to use: DARE_STREAM_KERNEL when set (NULL if it names a path
 * that cannot run here), else the best one the CPU and OS support.
 * Decided once per process.
 */
const struct ds_kernel_ops *ds_kernel_select(void);

/* One Philox4x32-10 block: x = philox(ctr, key). */
void ds_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2],
		      uint32_t x[4]);

/* Scalar conversions, the reference every path follows. */
float ds_bf16_to_f32(uint16_t h);
uint16_t ds_f32_to_bf16(float f);
float ds_f16_to_f32(uint16_t h);
uint16_t ds_f32_to_f16(float f);

#endif

/* SPDX-License-Identifier: MIT */
/* kernels.h - per-ISA building blocks of the merge kernels, chosen once */
#ifndef DS_KERNELS_H
#define DS_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dare-stream.h"

/*
 * Every path (scalar, AVX2, AVX-512, NEON) gives the same bits as the scalar
 * reference for every input, NaN, infinities, zeros and subnormals
 * included, with one exception: the payload and sign of a NaN that an
 * arithmetic step (sparsify, delta, axpy, dare_axpy, ties) produces are
 * not fixed (which NaN operand an addition propagates depends on the
 * operand order the compiler picks, and x86 and Arm make different default
 * NaNs).  finish() turns every NaN into the canonical quiet NaN, so what
 * is stored is the same on every path and machine.  Elementwise
 * semantics, all in binary32 without contraction:
 *
 *   load:     F32 as is; BF16 bits << 16; F16 exactly (subnormals, inf, NaN
 *             with its payload).
 *   store:    round to nearest-even; overflow to +-inf; NaN stays NaN and
 *             quiet (BF16: upper half | 0x0040; F16: sign | 0x7e00 |
 *             mantissa >> 13).
 *   philox:   u[k] = lane (i mod 4) of Philox4x32-10 with counter
 *             (b mod 2^32, b div 2^32, j, name_hash), b = i div 4,
 *             key (seed mod 2^32, seed div 2^32), for i = i0 + k.
 *   keep_bits: the mask of philox's u: bit k % 64 of bits[k / 64] set
 *             where u[k] >= thr, for k < n, the rest of the last word
 *             clear; returns how many are set.  thr >= 1.
 *   bits_count: how many of the first n bits of bits are set (bit k % 64
 *             of bits[k / 64]); the words past them are not read.
 *   sparsify: d = (u >= thr) ? (x - b) * s : +0.0f
 *   delta:    d = x - b
 *   axpy:     acc = acc + w * d
 *
 * and the fused steps the methods are built from (methods.c):
 *
 *   dare_axpy: acc = acc + w * d, d = (u >= thr) ? (x - b) * s : +0.0f with
 *             u from philox for i = i0 + k; thr 0 keeps every element
 *             (u is then not computed).
 *   kept_axpy: the same with the mask given as bits and only the kept
 *             values: acc = acc + w * d, d = kept ? (v[r] - b) * s : +0.0f,
 *             kept = bit k % 64 of keep[k / 64], r = the number of kept
 *             elements before k.  v holds nv >= that many values; nothing
 *             past v[nv - 1] is read.  With keep the bits of dare_axpy's
 *             mask and v the values x has where it keeps, both give the
 *             same acc: this is dare_axpy for a delta pack, whose reader
 *             has drawn the mask already (inputs/pack.h).
 *   ties:     for each element, over the nm rows e_j (stride floats
 *             apart): S = +0 + e_0 + e_1 ...; m = S >= 0 ? +1 : -1;
 *             a_j = e_j != 0 && (m > 0 ? e_j > 0 : e_j < 0);
 *             acc = +0 + (e_j for a_j) ...; dsum = +0 + (w_j for a_j) ...
 *   finish:   v = acc; v = v / (dsum == 0 ? 1 : dsum) when dsum is given,
 *             else v = v / div when div != 0; v = b + lambda * v when b is
 *             given; a NaN v becomes the canonical quiet NaN 0x7fc00000.
 *   ties_kept: dare_ties from masks straight to the output, in one pass
 *             (optional: NULL on a path without it, where methods.c runs
 *             the steps one by one): for element k, b = load(b[k]); row
 *             e_j = kept ? +0 + w_j * ((x - b) * s_j) : +0 for each
 *             model (kept: bit k of its mask, every element without one;
 *             x: its element k, or its next kept value when it holds only
 *             those), then ties, finish (dsum when normalize, lambda, b)
 *             and store to the output's dtype.  Those are the steps'
 *             bits: memset, kept_axpy or dare_axpy, ties, finish, store.
 *             Every weight is finite (a dropped element's term is then +0
 *             either way).  Nothing past a model's last kept value is read.
 *
 * and the rank selection's loops (select.c), integer logic on the rank
 * key of DESIGN 5.1, key(d) = bits(d) & 0x7fffffff, 0x7fffffff for every
 * NaN (convert.h's ds_rank_key); lo and hi lie in -1 .. 0x7fffffff:
 *
 *   rank_keys:   key = key(d)
 *   keep_range:  x = (lo < key(d) && key(d) <= hi) ? d * s : +0.0f
 *   count_range: the number of elements with lo < key(d) <= hi
 *
 * Arrays may be unaligned; n may be anything (0 included); an output
 * may be the same array as an input of the same element (delta's d and x).
 */

/* One model's DARE stream of one tensor (DESIGN 4) and its weight. */
struct ds_dare {
	uint64_t seed;
	uint32_t j, name_hash;
	uint32_t thr;                  /* drop iff u < thr; 0 keeps all */
	float s, w;
};

/* One model of a ties_kept call: its mask, values, scale and weight. */
struct ds_tk_model {
	const uint64_t *keep;          /* bit k % 64 of keep[k / 64]; NULL: all */
	const void *v;                 /* every element, or (kept) the kept ones */
	size_t nv;                     /* kept: how many values v holds */
	enum ds_dtype dt;
	bool kept;
	float s, w;
};

/* A ties_kept call: n elements of the base and the output, nm models. */
struct ds_tk {
	const void *b;
	enum ds_dtype bdt;
	void *out;
	enum ds_dtype odt;
	float lambda;
	bool normalize;
	unsigned nm;
	struct ds_tk_model m[DS_MAX_MODELS];
};

struct ds_kernel_ops {
	const char *name;
	void (*load)(enum ds_dtype dt, const void *src, float *dst, size_t n);
	void (*store)(enum ds_dtype dt, const float *src, void *dst, size_t n);
	void (*philox)(uint64_t seed, uint32_t j, uint32_t name_hash,
		       uint64_t i0, size_t n, uint32_t *u);
	size_t (*keep_bits)(uint64_t seed, uint32_t j, uint32_t name_hash,
			    uint64_t i0, size_t n, uint32_t thr, uint64_t *bits);
	size_t (*bits_count)(const uint64_t *bits, size_t n);
	void (*sparsify)(const float *b, const float *x, const uint32_t *u,
			 uint32_t thr, float s, float *d, size_t n);
	void (*delta)(const float *b, const float *x, float *d, size_t n);
	void (*axpy)(float *acc, float w, const float *d, size_t n);
	void (*dare_axpy)(float *acc, const float *b, const float *x,
			  const struct ds_dare *dp, uint64_t i0, size_t n);
	void (*kept_axpy)(float *acc, const float *b, const float *v,
			  size_t nv, const uint64_t *keep, float s, float w,
			  size_t n);
	void (*ties)(const float *e, size_t stride, unsigned nm,
		     const float *w, float *acc, float *dsum, size_t n);
	void (*finish)(float *acc, const float *b, const float *dsum,
		       float div, float lambda, size_t n);
	void (*rank_keys)(const float *d, uint32_t *key, size_t n);
	void (*keep_range)(const float *d, int32_t lo, int32_t hi, float s,
			   float *x, size_t n);
	size_t (*count_range)(const float *d, int32_t lo, int32_t hi,
			      size_t n);
	void (*ties_kept)(const struct ds_tk *t, size_t n);
};

/* ties_kept of elements k0 .. n-1 element by element, in plain C: the
 * reference the vector paths finish their tails with. */
void ds_ties_kept_ref(const struct ds_tk *t, size_t k0, size_t n);
#if defined(DS_HAVE_AVX2) && (defined(__x86_64__) || defined(__i386__))
/* The AVX2 ties_kept, which the AVX-512 path uses too. */
void ds_ties_kept_avx2(const struct ds_tk *t, size_t n);
#endif

/* The scalar reference path (scalar.c); always available. */
extern const struct ds_kernel_ops ds_kernel_scalar_ops;
#if defined(DS_HAVE_AVX2) && (defined(__x86_64__) || defined(__i386__))
/* The AVX2 + F16C path (avx2.c): reach it only through ds_kernel_get(),
 * which checks the CPU and the OS first. */
extern const struct ds_kernel_ops ds_kernel_avx2_ops;
#endif
#if defined(DS_HAVE_AVX512) && defined(__x86_64__)
/* The AVX-512 F/BW/VL path (avx512.c): likewise only through
 * ds_kernel_get(), which checks the CPU and that the OS saves ZMM state. */
extern const struct ds_kernel_ops ds_kernel_avx512_ops;
#endif
#if defined(DS_HAVE_NEON) && defined(__aarch64__)
/* The NEON path (neon.c), part of every AArch64 CPU. */
extern const struct ds_kernel_ops ds_kernel_neon_ops;
#endif

enum ds_kpath {
	DS_KPATH_SCALAR, DS_KPATH_AVX2, DS_KPATH_AVX512, DS_KPATH_NEON,
	DS_KPATH_COUNT
};

/* The path named ("scalar", "avx2", "avx512", "neon"), or NULL when this
 * build or this CPU cannot run it. */
const struct ds_kernel_ops *ds_kernel_get(const char *name);
/*
 * The path to use: DARE_STREAM_KERNEL when set (NULL if it names a path
 * that cannot run here), else the best one the CPU and OS support.
 * Decided once per process.
 */
const struct ds_kernel_ops *ds_kernel_select(void);

/*
 * LoRA rank-r update of one row segment (lora*.c, DESIGN 7.1), in binary32
 * without contraction, for c in [0, n):
 *
 *   acc = +0 + u[0] * v[c] + u[1] * v[vs + c] + ... + u[r-1] * v[(r-1)vs + c]
 *   x[c] = w[c] + s * acc
 *
 * u holds the row's r coefficients, v the r rows (vs floats apart) of the
 * other factor.  x may be w itself (updated in place) but must not
 * overlap it otherwise, nor u or v.  Same bits on every path.
 */
typedef void ds_lora_row_fn(const float *w, const float *v, size_t vs,
			    const float *u, unsigned r, float s, float *x,
			    size_t n);

ds_lora_row_fn ds_lora_row_scalar;
#if defined(DS_HAVE_AVX2) && (defined(__x86_64__) || defined(__i386__))
ds_lora_row_fn ds_lora_row_avx2;
#endif
#if defined(DS_HAVE_AVX512) && defined(__x86_64__)
ds_lora_row_fn ds_lora_row_avx512;
#endif
#if defined(DS_HAVE_NEON) && defined(__aarch64__)
ds_lora_row_fn ds_lora_row_neon;
#endif

/* The LoRA row update of the same path as k (one of ds_kernel_get's). */
ds_lora_row_fn *ds_lora_kernel(const struct ds_kernel_ops *k);

/*
 * The sums of the LoRA row update at m picked columns of a row segment
 * (the elements a DARE mask keeps), in binary32 without contraction:
 *
 *   acc[l] = +0 + u[0] * vc[0] + u[1] * vc[1] + ... + u[r-1] * vc[r-1]
 *
 * for vc = v + idx[l] * rp, rp = r rounded up to a multiple of 8: v holds
 * the other factor by columns, each column's r values (and rp - r more,
 * not summed) next to each other.  That is the acc of ds_lora_row_fn for
 * that column, term by term, so w + s * acc[l] is its x.  Same bits on
 * every path.
 */
typedef void ds_lora_pick_fn(const float *v, const uint32_t *idx, size_t m,
			     const float *u, unsigned r, float *acc);

ds_lora_pick_fn ds_lora_pick_scalar;
#if defined(DS_HAVE_AVX2) && (defined(__x86_64__) || defined(__i386__))
ds_lora_pick_fn ds_lora_pick_avx2;
#endif

/* The picked-column sums of the same path as k: the AVX2 transpose on the
 * x86 paths, the scalar loop elsewhere. */
ds_lora_pick_fn *ds_lora_pick_kernel(const struct ds_kernel_ops *k);

/* One Philox4x32-10 block: x = philox(ctr, key). */
void ds_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2],
		      uint32_t x[4]);

/* Scalar conversions, the reference every path follows. */
float ds_bf16_to_f32(uint16_t h);
uint16_t ds_f32_to_bf16(float f);
float ds_f16_to_f32(uint16_t h);
uint16_t ds_f32_to_f16(float f);

#endif

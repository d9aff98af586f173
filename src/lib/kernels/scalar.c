/* SPDX-License-Identifier: MIT */
/* scalar.c - the scalar reference path: every other path gives its bits */
#include "config.h"

#include <string.h>
#include "kernels/kernels.h"
#include "kernels/bits.h"
#include "kernels/convert.h"
#include "kernels/philox.h"

/* Public wrappers of the inline reference conversions (convert.h). */
float ds_bf16_to_f32(uint16_t h)
{
	return ds_cvt_bf16_f32(h);
}

uint16_t ds_f32_to_bf16(float f)
{
	return ds_cvt_f32_bf16(f);
}

float ds_f16_to_f32(uint16_t h)
{
	return ds_cvt_f16_f32(h);
}

uint16_t ds_f32_to_f16(float f)
{
	return ds_cvt_f32_f16(f);
}

/* One Philox4x32-10 block (philox.h). */
void ds_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2],
		      uint32_t x[4])
{
	ds_philox_block(ctr, key, x);
}

/* Half-precision element k of an unaligned buffer. */
static inline uint16_t ld16(const void *src, size_t k)
{
	uint16_t h;

	memcpy(&h, (const char *)src + 2 * k, sizeof(h));
	return h;
}

/* Convert n elements of dtype dt (F32, F16 or BF16) to floats. */
static void load_scalar(enum ds_dtype dt, const void *src, float *dst,
			size_t n)
{
	size_t k;

	switch (dt) {
	case DS_DT_BF16:
		for (k = 0; k < n; k++)
			dst[k] = ds_cvt_bf16_f32(ld16(src, k));
		break;
	case DS_DT_F16:
		for (k = 0; k < n; k++)
			dst[k] = ds_cvt_f16_f32(ld16(src, k));
		break;
	default:
		if (n)
			memcpy(dst, src, n * sizeof(float));
		break;
	}
}

/* Round n floats to dtype dt (F32, F16 or BF16), nearest-even. */
static void store_scalar(enum ds_dtype dt, const float *src, void *dst,
			 size_t n)
{
	char *o = dst;
	uint16_t h;
	size_t k;

	switch (dt) {
	case DS_DT_BF16:
		for (k = 0; k < n; k++) {
			h = ds_cvt_f32_bf16(src[k]);
			memcpy(o + 2 * k, &h, sizeof(h));
		}
		break;
	case DS_DT_F16:
		for (k = 0; k < n; k++) {
			h = ds_cvt_f32_f16(src[k]);
			memcpy(o + 2 * k, &h, sizeof(h));
		}
		break;
	default:
		if (n)
			memcpy(dst, src, n * sizeof(float));
		break;
	}
}

/* Philox block blk of model j's stream: the 4 lanes of 4 elements. */
static inline void philox_at(uint64_t seed, uint32_t j, uint32_t name_hash,
			     uint64_t blk, uint32_t x[4])
{
	uint32_t ctr[4] = { (uint32_t)blk, (uint32_t)(blk >> 32), j, name_hash };
	uint32_t key[2] = { (uint32_t)seed, (uint32_t)(seed >> 32) };

	ds_philox_block(ctr, key, x);
}

/* u[k] for elements i0 .. i0+n-1, one block computed per 4 lanes. */
static void philox_scalar(uint64_t seed, uint32_t j, uint32_t name_hash,
			  uint64_t i0, size_t n, uint32_t *u)
{
	uint32_t x[4];
	size_t k;
	uint64_t i;

	for (k = 0; k < n; k++) {
		i = i0 + k;
		if (k == 0 || (i & 3) == 0)
			philox_at(seed, j, name_hash, i >> 2, x);
		u[k] = x[i & 3];
	}
}

/* The mask of u >= thr, a bit per element, 256 draws at a time. */
static size_t keep_bits_scalar(uint64_t seed, uint32_t j, uint32_t name_hash,
			       uint64_t i0, size_t n, uint32_t thr,
			       uint64_t *bits)
{
	uint32_t u[256];
	size_t a, k, c, kept = 0;

	for (k = 0; k < (n + 63) / 64; k++)
		bits[k] = 0;
	for (a = 0; a < n; a += c) {
		c = n - a < 256 ? n - a : 256;
		philox_scalar(seed, j, name_hash, i0 + a, c, u);
		for (k = 0; k < c; k++)
			if (u[k] >= thr) {
				bits[(a + k) / 64] |= 1ull << ((a + k) % 64);
				kept++;
			}
	}
	return kept;
}

/* d = kept ? (x - b) * s : +0 */
static void sparsify_scalar(const float *b, const float *x, const uint32_t *u,
			    uint32_t thr, float s, float *d, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		d[k] = u[k] >= thr ? (x[k] - b[k]) * s : 0.0f;
}

/* d = x - b */
static void delta_scalar(const float *b, const float *x, float *d, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		d[k] = x[k] - b[k];
}

/* acc = acc + w * d */
static void axpy_scalar(float *acc, float w, const float *d, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		acc[k] = acc[k] + w * d[k];
}

/* acc = acc + w * sparsify(x - b), Philox drawn only when thr != 0. */
static void dare_axpy_scalar(float *acc, const float *b, const float *x,
			     const struct ds_dare *dp, uint64_t i0, size_t n)
{
	uint32_t u[4] = { 0, 0, 0, 0 };
	uint64_t i;
	size_t k;
	float d;

	for (k = 0; k < n; k++) {
		i = i0 + k;
		if (dp->thr && (k == 0 || (i & 3) == 0))
			philox_at(dp->seed, dp->j, dp->name_hash, i >> 2, u);
		d = u[i & 3] >= dp->thr ? (x[k] - b[k]) * dp->s : 0.0f;
		acc[k] = acc[k] + dp->w * d;
	}
}

/* dare_axpy with the mask as bits and v the kept values, in order. */
static void kept_axpy_scalar(float *acc, const float *b, const float *v,
			     size_t nv, const uint64_t *keep, float s, float w,
			     size_t n)
{
	size_t k, r = 0;
	float d;

	(void)nv;       /* the bits say how many are read */
	for (k = 0; k < n; k++) {
		d = 0.0f;
		if (keep[k / 64] >> (k % 64) & 1)
			d = (v[r++] - b[k]) * s;
		acc[k] = acc[k] + w * d;
	}
}

/* TIES sign election of one element over the nm rows of e. */
static inline void ties_el(const float *e, size_t stride, unsigned nm,
			   const float *w, float *acc, float *dsum)
{
	float S = 0.0f, a = 0.0f, D = 0.0f, v;
	unsigned j;
	int pos;

	for (j = 0; j < nm; j++)
		S = S + e[j * stride];
	pos = S >= 0.0f;                /* a NaN sum elects -1 */
	for (j = 0; j < nm; j++) {
		v = e[j * stride];
		if (v != 0.0f && (pos ? v > 0.0f : v < 0.0f)) {
			a = a + v;
			D = D + w[j];
		}
	}
	*acc = a;
	*dsum = D;
}

/* TIES over n elements. */
static void ties_scalar(const float *e, size_t stride, unsigned nm,
			const float *w, float *acc, float *dsum, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		ties_el(e + k, stride, nm, w, acc + k, dsum + k);
}

/* finish of one element. */
static inline float finish_el(float v, const float *b, const float *dsum,
			      float div, float lambda)
{
	if (dsum)
		v = v / (*dsum == 0.0f ? 1.0f : *dsum);
	else if (div != 0.0f)
		v = v / div;
	if (b)
		v = *b + lambda * v;
	return v != v ? ds_bitsf(DS_CANON_NAN_BITS) : v;
}

/* Normalize, add the base scaled by lambda, canonicalize NaN. */
static void finish_scalar(float *acc, const float *b, const float *dsum,
			  float div, float lambda, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		acc[k] = finish_el(acc[k], b ? b + k : NULL,
				   dsum ? dsum + k : NULL, div, lambda);
}

/* The steps of ties_kept element by element: row e_j as memset and
 * kept_axpy (or dare_axpy) leave it, then ties_el, finish_el, store. */
void ds_ties_kept_ref(const struct ds_tk *t, size_t k0, size_t n)
{
	size_t r[DS_MAX_MODELS], es = t->odt == DS_DT_F32 ? 4 : 2;
	float e[DS_MAX_MODELS], w[DS_MAX_MODELS], b, a, D, x;
	unsigned j;
	size_t k;

	if (k0 >= n)
		return;
	for (j = 0; j < t->nm; j++) {
		r[j] = t->m[j].kept ? ds_bits_count(t->m[j].keep, k0) : 0;
		w[j] = t->m[j].w;
	}
	for (k = k0; k < n; k++) {
		b = ds_cvt_at(t->b, t->bdt, k);
		for (j = 0; j < t->nm; j++) {
			const struct ds_tk_model *md = &t->m[j];

			e[j] = 0.0f;
			if (md->keep && !(md->keep[k / 64] >> (k % 64) & 1))
				continue;
			x = ds_cvt_at(md->v, md->dt, md->kept ? r[j]++ : k);
			e[j] = e[j] + md->w * ((x - b) * md->s);
		}
		ties_el(e, 1, t->nm, w, &a, &D);
		a = finish_el(a, &b, t->normalize ? &D : NULL, 0.0f, t->lambda);
		store_scalar(t->odt, &a, (char *)t->out + k * es, 1);
	}
}

/* key = rank key of d */
static void rank_keys_scalar(const float *d, uint32_t *key, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		key[k] = ds_rank_key(d[k]);
}

/* Is the rank key of v in lo < key <= hi? */
static inline int in_range(float v, int32_t lo, int32_t hi)
{
	int32_t key = (int32_t)ds_rank_key(v);

	return lo < key && key <= hi;
}

/* x = key in range ? d * s : +0 */
static void keep_range_scalar(const float *d, int32_t lo, int32_t hi,
			      float s, float *x, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		x[k] = in_range(d[k], lo, hi) ? d[k] * s : 0.0f;
}

/* How many keys are in range. */
static size_t count_range_scalar(const float *d, int32_t lo, int32_t hi,
				 size_t n)
{
	size_t k, c = 0;

	for (k = 0; k < n; k++)
		c += (size_t)in_range(d[k], lo, hi);
	return c;
}

/* The bits.h count. */
static size_t bits_count_scalar(const uint64_t *bits, size_t n)
{
	return ds_bits_count(bits, n);
}

const struct ds_kernel_ops ds_kernel_scalar_ops = {
	.name = "scalar",
	.load = load_scalar,
	.store = store_scalar,
	.philox = philox_scalar,
	.keep_bits = keep_bits_scalar,
	.bits_count = bits_count_scalar,
	.sparsify = sparsify_scalar,
	.delta = delta_scalar,
	.axpy = axpy_scalar,
	.dare_axpy = dare_axpy_scalar,
	.kept_axpy = kept_axpy_scalar,
	.ties = ties_scalar,
	.finish = finish_scalar,
	.rank_keys = rank_keys_scalar,
	.keep_range = keep_range_scalar,
	.count_range = count_range_scalar,
};

/* SPDX-License-Identifier: MIT */
/* lora.h - a PEFT LoRA adapter applied to a base model, window by window */
#ifndef DS_LORA_H
#define DS_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dare-stream.h"
#include "inputs/model.h"
#include "kernels/kernels.h"

/*
 * One adapted tensor W [rows, cols] (DESIGN 7.1).  Its update is, for each
 * row i and column c, s * sum over k of u_i[k] * v[k, c], where
 *   plain:      u_i = B[i, :] (B = lora_B [rows, r]), v = A (lora_A [r, cols]);
 *   transposed: u_i = A[:, i] (A [r, rows]), v = B^T (B [cols, r]), for
 *               fan_in_fan_out and for embeddings (lora_embedding_A/B).
 */
struct ds_lora_pair {
	size_t tensor;              /* index of W in the model's tensors */
	const struct ds_tensor *a, *b;  /* in ds_lora.at */
	unsigned r;
	bool trans;
	float s;
};

struct ds_lora {
	char *dir;                  /* the adapter directory, as given */
	unsigned shard;             /* adapter_model.safetensors in m->shards */
	struct ds_tensor *at;       /* its tensors */
	size_t nat;
	struct ds_lora_pair *pairs;
	size_t npairs;
	ptrdiff_t *pair_of;         /* per model tensor: pair, or -1 */
	size_t nreplaced;           /* modules_to_save tensors */
};

/*
 * Apply the adapter directory dir to the opened model m (the base): read
 * adapter_config.json and the header of adapter_model.safetensors, check
 * every tensor against the base, append the adapter file to m->shards and
 * point the tensors it replaces (modules_to_save) at it.  Everything an
 * adapter can hold that is not a plain LoRA is refused, naming the tensor.
 */
int ds_lora_attach(ds_ctx *ctx, struct ds_model *m, const char *dir);

void ds_lora_free(struct ds_lora *l);

/* The pair adapting tensor ti of m, or NULL. */
static inline const struct ds_lora_pair *
ds_lora_pair_of(const struct ds_model *m, size_t ti)
{
	if (!m->lora || m->lora->pair_of[ti] < 0)
		return NULL;
	return &m->lora->pairs[m->lora->pair_of[ti]];
}

/*
 * Per-worker buffers of ds_lora_expand for one adapted model.  v, the
 * factor every row of a tensor shares, is kept from one window to the next
 * of the same tensor (vfor: the pair it holds, NULL for none).
 */
struct ds_lora_buf {
	float *v, *u, *tmp, *w;
	void *raw;
	const struct ds_lora_pair *vfor;
	bool vcols;                 /* v by columns (ds_lora_kept) */
};

/* Bytes of the ds_lora_buf of each model of m[0..nm) that has an adapter,
 * for windows of window elements (0 when none has); ds_lora_buf_init
 * carves them from mem into b[j] for m[j]. */
uint64_t ds_lora_bytes(struct ds_model *const *m, unsigned nm,
		       uint64_t window);
void ds_lora_buf_init(struct ds_lora_buf *b, struct ds_model *const *m,
		      unsigned nm, uint64_t window, void *mem);

/*
 * The window i0..i0+n of the adapted tensor of pair p as binary32 into x:
 * W's n values (in w's dtype) are at wraw, which is x itself, lies at
 * x + n * (4 - size of the dtype) bytes (in the room of x's n floats), or
 * does not overlap x; the factors
 * are read with pread from fd, the adapter file, whose data starts at
 * data_off (v only when b does not hold p's already).  Returns 0, -errno,
 * or -EIO for a short file (ds_pread_all).
 */
int ds_lora_expand(const struct ds_lora_pair *p, const struct ds_tensor *w,
		   const struct ds_kernel_ops *k, ds_lora_row_fn *row, int fd,
		   uint64_t data_off, const void *wraw, uint64_t i0, size_t n,
		   float *x, struct ds_lora_buf *b);

/* The DARE mask the merge draws for a model at a tensor (DESIGN 4). */
struct ds_lora_mask {
	uint64_t seed;
	uint32_t j, name_hash;
	uint32_t thr;                  /* drop iff u < thr; >= 1 */
};

/*
 * ds_lora_expand for a model whose window the merge reads only where its
 * DARE mask mk keeps (methods.h, ds_window.keep): the mask into bits (a
 * bit per element, keep_bits), and the adapted values of the kept
 * elements only, in element order, into x[0], x[1], ...  Each is the
 * value ds_lora_expand gives that element (pick: ds_lora_pick_kernel of
 * k).  wraw and the return values as for ds_lora_expand.
 */
int ds_lora_kept(const struct ds_lora_pair *p, const struct ds_tensor *w,
		 const struct ds_kernel_ops *k, ds_lora_pick_fn *pick, int fd,
		 uint64_t data_off, const void *wraw, uint64_t i0, size_t n,
		 const struct ds_lora_mask *mk, float *x, uint64_t *bits,
		 struct ds_lora_buf *b);

#endif

/* SPDX-License-Identifier: MIT */
/* plan.h - the merge plan: every output tensor, its inputs and its place */
#ifndef DS_PLAN_H
#define DS_PLAN_H

#include <stdbool.h>
#include <stdint.h>
#include "dare-stream.h"
#include "methods/methods.h"
#include "inputs/model.h"
#include "recipe/recipe.h"

/* Input slot 0 is the layout model (the base); 1..n the fine-tunes. */
#define DS_MAX_INPUTS (DS_MAX_MODELS + 1)

enum ds_action { DS_ACT_MERGE, DS_ACT_COPY };

/*
 * One tensor of the output.  Slot 0 is the base (or the layout model), slots
 * 1 .. nsrc the models merged into it, in the order of the tensor's
 * parameters (ds_plan_tparams); src[k] is the input (index into
 * ds_plan.in) that slot k reads.  Without slices slot 1+j is model j.
 */
struct ds_otensor {
	const char *name;           /* output name (the mask's stream name) */
	const struct ds_tensor *in[DS_MAX_INPUTS];
	unsigned src[DS_MAX_INPUTS];
	unsigned nsrc;
	enum ds_action act;
	enum ds_dtype odt;
	uint64_t numel;             /* elements written (the base's) */
	uint64_t obegin;            /* byte offset in the shard's data */
	unsigned oshard;
};

/*
 * Bytes of output tensor o: a copy takes its input's bytes (F4 and F6 have
 * no whole-byte element size), a merge numel elements of its dtype.
 */
static inline uint64_t ds_otensor_bytes(const struct ds_otensor *o)
{
	return o->act == DS_ACT_COPY ? ds_tensor_nbytes(o->in[0]) :
	       o->numel * ds_dtype_size(o->odt);
}

/* One output file of tensors. */
struct ds_oshard {
	const char *name;           /* the base shard's file name */
	char *header;               /* length + JSON, as written */
	size_t hlen;
	uint64_t size;              /* whole file */
	size_t first, count;        /* its tensors in ds_plan.ot */
};

struct ds_plan {
	ds_ctx *ctx;
	const struct ds_recipe *r;
	struct ds_model *in[DS_MAX_INPUTS]; /* [0] base/layout, [1+j] models */
	unsigned ninputs;
	bool base_is_model;         /* linear without --base: layout from j 0 */
	struct ds_mparams mp;
	struct ds_otensor *ot;
	size_t not;
	struct ds_oshard *os;
	unsigned nos;
	uint64_t bytes_read, bytes_written;
	size_t merged;
	/* buffers */
	uint64_t window;            /* elements per window */
	unsigned depth;             /* windows in flight */
	unsigned threads;
	uint64_t memory;            /* bytes of all window buffers */
};

/* Build and check the plan; nothing is written.  0 or negative error. */
int ds_plan_build(ds_ctx *ctx, const struct ds_recipe *r,
		  const struct ds_merge_opts *o, struct ds_plan *p);
void ds_plan_free(struct ds_plan *p);
/* The resolved parameters of output tensor t (0 or DS_E_USAGE). */
int ds_plan_tparams(const struct ds_plan *p, size_t t, struct ds_tparams *tp);
/* Bytes of one window slot's buffers (all inputs and the output). */
uint64_t ds_plan_slot_bytes(const struct ds_plan *p, uint64_t window);

#endif

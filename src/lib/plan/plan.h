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
	char *own;                  /* name, when the plan made it (renamed) */
	const struct ds_tensor *in[DS_MAX_INPUTS];
	unsigned src[DS_MAX_INPUTS];
	unsigned nsrc;
	unsigned npass;             /* streams of its inputs (DESIGN 2) */
	unsigned char pass[DS_MAX_PASSES]; /* enum ds_pass of each */
	enum ds_action act;
	enum ds_dtype odt;
	uint64_t numel;             /* elements written (the base's) */
	uint64_t obegin;            /* byte offset in the shard's data */
	unsigned oshard;
	int slice;                  /* recipe slice, -1 without slices */
	double x;                   /* gradient position (DESIGN 5.3) */
	uint64_t rows;              /* output rows when a tail follows */
	bool tail;                  /* continues the previous tensor's data */
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
	const char *name;           /* the base's file name, or HF's */
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
	bool index;                 /* write model.safetensors.index.json */
	char (*snames)[48];         /* Hugging Face shard names, when used */
	char *names;                /* renamed output tensor names */
	unsigned layers;            /* output layers (with slices) */
	unsigned *lsrc, *lin;       /* per output layer: input and its layer */
	struct ds_tensor tails[4];  /* rows of the tokenizer model */
	unsigned ntails;
	uint64_t bytes_read, bytes_written;
	uint64_t lbase;             /* bit k-1: input k is BASE+ADAPTER over
				       the base's own files (the same inodes) */
	size_t merged;
	/* buffers */
	uint64_t window;            /* elements per window */
	unsigned depth;             /* windows in flight */
	unsigned threads;
	uint64_t memory;            /* bytes of all window buffers */
	uint64_t overhead;          /* tables and scratch, beyond them */
	uint64_t maxrow;            /* longest row of a row-wise method */
	unsigned max_passes;
	char *chat;                 /* chat template to write, resolved */
	uint64_t shard_size;        /* HF shards of at most this; 0: none */
	struct ds_method_needs needs;
	/* --partition K/N: ot and os hold part K's share only (ds_plan_part) */
	unsigned part, parts;       /* parts 0: the whole merge */
	uint64_t run;               /* names the partitioned merge (all parts) */
	unsigned all_nos;           /* shards of the whole merge */
	const char **all_names;     /* and their names */
};

/* Default --shard-size when a recipe has slices: 5 GB. */
#define DS_DEFAULT_SHARD_SIZE 5000000000ull

/* Build and check the plan; nothing is written.  0 or negative error. */
int ds_plan_build(ds_ctx *ctx, const struct ds_recipe *r,
		  const struct ds_merge_opts *o, struct ds_plan *p);
/* The same; DS_PLAN_ANY_ENGINE: plan what this build's engine cannot run
 * (for --dry-run to show each tensor's parameters), quietly. */
#define DS_PLAN_ANY_ENGINE 1u
int ds_plan_build_flags(ds_ctx *ctx, const struct ds_recipe *r,
			const struct ds_merge_opts *o, struct ds_plan *p,
			unsigned flags);
void ds_plan_free(struct ds_plan *p);
/*
 * Part k of n of a planned merge: the shards, largest first (ties: the
 * lower index), each given to the part with the fewest bytes so far (ties:
 * the lower part), so the share depends on the layout alone.  Fills part[]
 * (one entry per shard of p) with each shard's part; 0 or -ENOMEM.
 */
int ds_plan_share(const struct ds_plan *p, unsigned n, unsigned *part);
/* The resolved parameters of output tensor t (0 or DS_E_USAGE). */
int ds_plan_tparams(const struct ds_plan *p, size_t t, struct ds_tparams *tp);
/*
 * Whether input slot k of o is a LoRA model adapting the very bytes slot 0
 * holds (--model BASE+ADAPTER with the merge's BASE): its W is then taken
 * from the base's window, not read again, whenever the base is read.
 */
bool ds_plan_lora_on_base(const struct ds_plan *p, const struct ds_otensor *o,
			  unsigned k);
/* Input bytes one pass over tensor o reads (a pack's: its frames'; none
 * for a LoRA model's W taken from the base's window). */
uint64_t ds_plan_pass_bytes(const struct ds_plan *p, const struct ds_otensor *o);
/* The layer number in a tensor name (DESIGN 5.3), -1 when none; *at and
 * *len locate its digits. */
long ds_plan_layer_of(const char *name, size_t *at, size_t *len);
/* Bytes of one window slot's buffers (all inputs and the output). */
uint64_t ds_plan_slot_bytes(const struct ds_plan *p, uint64_t window);

#endif

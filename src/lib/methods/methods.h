/* SPDX-License-Identifier: MIT */
/* methods.h - merge methods: per-tensor parameters and the per-window kernel */
#ifndef DS_METHODS_H
#define DS_METHODS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dare-stream.h"
#include "kernels/kernels.h"

/*
 * Parameters of one merge, in the exact binary32/binary64 forms the
 * numerics contract (DESIGN 3-5) fixes.  Set once by ds_mparams_init();
 * name_hash is set per tensor with ds_mparams_tensor().
 */
struct ds_mparams {
	enum ds_method method;
	unsigned n;                    /* fine-tuned models */
	bool dare;                     /* random drop (dare_linear, dare_ties) */
	bool ties;                     /* sign election (dare_ties) */
	bool uses_base;                /* out = b + ... (all but linear) */
	bool normalize;
	float w[DS_MAX_MODELS];        /* (float)weight */
	float s[DS_MAX_MODELS];        /* rescale: (float)(1/(1-p)), or 1 */
	uint64_t thr[DS_MAX_MODELS];   /* drop iff u < thr; 2^32 drops all */
	float wsum;                    /* sum of w in model order, binary32 */
	float lambda;                  /* (float)lambda */
	uint64_t seed;                 /* Philox key: k0 = low, k1 = high word */
	uint32_t name_hash;            /* XXH32(tensor name, 0) */
};

/* Default of --normalize for a method (on for linear, off otherwise). */
bool ds_method_default_normalize(enum ds_method m);
/* True when the method needs a base model. */
bool ds_method_needs_base(enum ds_method m);

/*
 * Fill mp.  w, p: per model, double as parsed; normalize -1 for the
 * method's default.  Returns 0 or DS_E_USAGE (non-finite weight, p outside
 * [0, 1], zero weight sum while normalizing, ...) with text in ctx.
 */
int ds_mparams_init(ds_ctx *ctx, struct ds_mparams *mp, enum ds_method m,
		    unsigned n, const double *w, const double *p,
		    double lambda, int normalize, enum ds_rescale rescale,
		    uint64_t seed);
/* Set the per-tensor part of mp (the XXH32 of the name). */
void ds_mparams_tensor(struct ds_mparams *mp, const char *name);

/* Drop threshold T = floor(p * 2^32) in double; 2^32 for p = 1. */
uint64_t ds_drop_threshold(double p);

/* One window of one tensor: element i0 .. i0+n-1 of every input. */
struct ds_window {
	const void *base;              /* NULL for linear */
	enum ds_dtype bdt;
	const void *x[DS_MAX_MODELS];
	enum ds_dtype xdt[DS_MAX_MODELS];
	void *out;
	enum ds_dtype odt;
	uint64_t i0;                   /* flat index of the first element */
	size_t n;
};

/* Floats of scratch memory ds_method_window() needs for n models. */
size_t ds_method_scratch_floats(unsigned nmodels);

/*
 * Compute one window with the given kernel path.  Inputs and output are
 * F32, F16 or BF16 in any combination.  scratch: ds_method_scratch_floats()
 * floats, 64-byte aligned, owned by the calling thread.  Never allocates.
 */
void ds_method_window(const struct ds_kernel_ops *k,
		      const struct ds_mparams *mp,
		      const struct ds_window *win, float *scratch);

#endif

/* SPDX-License-Identifier: MIT */
/* methods.h - merge methods: the method table, parameters, passes, windows */
#ifndef DS_METHODS_H
#define DS_METHODS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dare-stream.h"
#include "kernels/kernels.h"

/* How each delta is thinned before the combine (DESIGN 5, 5.1). */
enum ds_sparsifier {
	DS_SP_NONE, DS_SP_DARE, DS_SP_MAGNITUDE, DS_SP_OUTLIERS, DS_SP_DELLA
};

/* How the inputs of one element become the output (DESIGN 5, 5.2). */
enum ds_combine {
	DS_CB_LINEAR,       /* sum w x, over the models */
	DS_CB_SUM,          /* b + lambda * sum w d */
	DS_CB_CONSENSUS,    /* b + lambda * sum a e (TIES sign election) */
	DS_CB_SLERP, DS_CB_NUSLERP, DS_CB_MODEL_STOCK, DS_CB_SCE,
	DS_CB_KARCHER, DS_CB_PASSTHROUGH
};

/* Who provides what: a base is needed, optional, or not averaged. */
enum ds_base_use { DS_BASE_NEEDED, DS_BASE_OPTIONAL, DS_BASE_LAYOUT };

/* One row of the method table (STYLE 11): a method is its row. */
struct ds_method_def {
	const char *name;
	enum ds_sparsifier sp;
	enum ds_combine cb;
	bool normalize;                /* mergekit's default */
	bool rescale_l1;               /* mergekit's default rescale is l1 */
	enum ds_base_use base;
	unsigned min_models, max_models;
	unsigned params;               /* bit (1 << DS_P_...) per parameter */
	bool weight;                   /* a mergekit recipe needs weights */
};

/* mergekit's default of a parameter (gamma 0.01, t 0.5, ...). */
double ds_param_default(enum ds_param par);

/* The method's row; NULL when out of range. */
const struct ds_method_def *ds_method_def(enum ds_method m);

/*
 * Parameters of one merged tensor, in the exact binary32/binary64 forms the
 * numerics contract (DESIGN 3-5) fixes.  Built by ds_mparams_init() (one
 * set for every tensor) or ds_mparams_from() (one tensor's, from its
 * resolved recipe parameters); name_hash set with ds_mparams_tensor().
 */
struct ds_mparams {
	enum ds_method method;
	const struct ds_method_def *def;
	unsigned n;                    /* models merged into the tensor */
	bool dare;                     /* random drop (dare_linear, dare_ties) */
	bool ties;                     /* sign election */
	bool uses_base;                /* the base is read */
	bool normalize;
	enum ds_rescale rescale;
	float w[DS_MAX_MODELS];        /* (float)weight */
	float s[DS_MAX_MODELS];        /* rescale: (float)(1/(1-p)), or 1 */
	uint64_t thr[DS_MAX_MODELS];   /* drop iff u < thr; 2^32 drops all */
	uint32_t sj[DS_MAX_MODELS];    /* mask stream index of each model */
	double density[DS_MAX_MODELS]; /* 1 - p, in double */
	double gamma[DS_MAX_MODELS];
	double epsilon[DS_MAX_MODELS];
	float wsum;                    /* sum of w in model order, binary32 */
	float lambda;                  /* (float)lambda */
	double t, select_topk, tol;
	float scale;                   /* passthrough, (float)scale */
	unsigned max_iter;
	bool filter_wise, flatten, row_wise;
	uint64_t seed;                 /* Philox key: k0 = low, k1 = high word */
	uint32_t name_hash;            /* XXH32(tensor name, 0) */
};

struct ds_tparams;

/* Default of --normalize for a method (mergekit's). */
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
/* Fill mp from one tensor's resolved parameters; 0 or DS_E_USAGE naming
 * the parameter and its value. */
int ds_mparams_from(ds_ctx *ctx, struct ds_mparams *mp, enum ds_method m,
		    const struct ds_tparams *tp);
/* Set the per-tensor part of mp (the XXH32 of the name). */
void ds_mparams_tensor(struct ds_mparams *mp, const char *name);

/*
 * One window of one tensor: element i0 .. i0+n-1 of every input.  A delta
 * pack whose mask is the merge's own for its model j (DESIGN 7: seed, p,
 * stream index and name hash all match; dare_linear and dare_ties only,
 * in ds_method_window) may come as that mask instead of a full window:
 * keep[j] has bit i % 64 of word i / 64 set where element i0 + i is kept,
 * and x[j] holds only the kept elements, in order.  The merge is the
 * same; what a dropped element's value is never matters to it.
 */
struct ds_window {
	const void *base;              /* NULL when the method reads none */
	enum ds_dtype bdt;
	const void *x[DS_MAX_MODELS];
	enum ds_dtype xdt[DS_MAX_MODELS];
	const uint64_t *keep[DS_MAX_MODELS];   /* NULL: x[j] is every element */
	void *out;
	enum ds_dtype odt;
	uint64_t i0;                   /* flat index of the first element */
	size_t n;
};

/*
 * Whether a DARE mask of threshold thr drops at least half (p >= 0.5) and
 * keeps some: then visiting only its kept elements beats a dense pass
 * (methods.c), and an adapted model is expanded only there (pipeline.c).
 */
static inline bool ds_dare_sparse(uint64_t thr)
{
	return thr >= (1ull << 31) && thr <= UINT32_MAX;
}

/* Floats of scratch memory ds_method_window() needs for n models. */
size_t ds_method_scratch_floats(unsigned nmodels);

/*
 * Compute one window of a single-pass method (linear, task_arithmetic,
 * dare_linear, dare_ties with inverse or no rescale) with the given kernel
 * path.  Inputs and output are F32, F16 or BF16 in any combination.
 * scratch: ds_method_scratch_floats() floats, 64-byte aligned, owned by
 * the calling thread.  Never allocates.
 */
void ds_method_window(const struct ds_kernel_ops *k,
		      const struct ds_mparams *mp,
		      const struct ds_window *win, float *scratch);

/* ---- passes ---------------------------------------------------------------
 *
 * A tensor is streamed once per pass, in the same windows.  Every pass but
 * the last reduces: each window's share is computed on a worker into the
 * slot's reduction buffer, then folded into the tensor's state in window
 * order on the I/O thread, and the pass is finalized after its last window;
 * the windows of the next pass are computed only then.  Integer counts are
 * exact in any order; binary64 sums are kept per 65536-element block and
 * added in block order (DESIGN 5), so no result depends on threads or
 * window size.  A tensor's pass list is the most it may take: finalizing
 * a pass may find later ones unneeded (ds_tstate.skip), whose windows are
 * then neither reduced nor folded.  The writing pass of a selection may
 * decide its cuts itself: each window is begun (ds_write_begin), computed,
 * then checked in window order (ds_write_check) before it is written.
 */

enum ds_pass {
	DS_PASS_HIST_HI,    /* histogram of the high 16 bits of each key */
	DS_PASS_HIST_LO,    /* low 15 bits, inside each cut's bin */
	DS_PASS_COUNT_EQ,   /* keys equal to each cut's, per window, when a
			     * sums pass needs the cuts before the write */
	DS_PASS_SUMS,       /* binary64 sums (norms, Gram matrices, L1) */
	DS_PASS_WRITE       /* the merge itself */
};

#define DS_MAX_PASSES 5
#define DS_BLOCK 65536u              /* elements per block of a sum */
#define DS_HIST_HI 65536u
#define DS_HIST_LO 32768u
#define DS_MAX_SUMS (DS_MAX_MODELS * (DS_MAX_MODELS + 1) / 2 + 2 * DS_MAX_MODELS)

/*
 * A cut in a descending rank order (DESIGN 5.1): the x elements of rank
 * 0 .. x-1 are above it.  With key K of rank x-1, an element is above iff
 * its key is larger, or equal and among the first q equal ones in index
 * order (wc = UINT64_MAX: all eq equal ones are).  The count_eq pass finds
 * the window where the q-th equal one falls, starting at wc, where the
 * first rc equal ones are above; without it, the writing pass counts.
 */
struct ds_cut {
	uint64_t x;
	uint32_t bin, key;
	uint64_t gt, q, eq;
	uint64_t wc, rc;
	uint64_t seen;                 /* equal ones counted so far */
	bool exact;                    /* key and counts known (no hist_lo) */
};

/*
 * One window of the writing pass of a tensor whose cuts it counts itself
 * (ds_tstate.wcount), in its slot's reduction buffer: per cut, the budget
 * r to compute with (how many of the window's keys equal to the cut's are
 * above it, in index order; UINT64_MAX: all), and what the computation
 * leaves: the budget g it used, the window's count eq of equal keys and
 * each chunk's (cnt).  redo: computed before with g; only the chunks whose
 * decisions differ with r are computed again.
 */
struct ds_wsel {
	uint64_t r[DS_MAX_MODELS][2];
	uint64_t g[DS_MAX_MODELS][2];
	uint64_t eq[DS_MAX_MODELS][2];
	bool settled[DS_MAX_MODELS][2]; /* r = 0 exact: nothing to count */
	bool redo;
	uint16_t cnt[];                /* [chunk][nchan][2] */
};

/* Bytes of a ds_wsel for nchan channels and windows of window elements. */
size_t ds_wsel_bytes(unsigned nchan, uint64_t window);

/* Everything one tensor's passes learn, and its parameters. */
struct ds_tstate {
	struct ds_mparams mp;
	uint64_t n, rows, rowlen;      /* elements; rows of rowlen each */
	uint64_t maxrow;               /* longest row of the merge (scratch) */
	unsigned npass, ready;         /* passes; passes finalized */
	enum ds_pass pass[DS_MAX_PASSES];
	unsigned skip;                 /* bit p: pass p found unneeded */
	unsigned nchan;                /* rank channels (models, or 1 for sce) */
	bool select;                   /* some cut is partial */
	bool wcount;                   /* the writing pass counts equal keys */
	uint64_t wnext;                /* its windows checked: up to here */
	struct ds_cut cut[DS_MAX_MODELS][2]; /* [chan][0]: lo, [1]: hi */
	uint64_t nz;                   /* sce: non-zero variances */
	unsigned nsum;                 /* binary64 sums of the SUMS pass */
	float coef[DS_MAX_MODELS + 2]; /* what the writing pass multiplies by */
	uint64_t valid;                /* karcher: models taking part */
	bool copy0;                    /* the output is model 0 itself */
	double sum[DS_MAX_SUMS];       /* last: not cleared beyond nsum */
};

/* Geometry and needs of the merge, for sizing buffers once. */
struct ds_method_needs {
	bool rows;                     /* windows hold whole rows */
	size_t red_bytes;              /* reduction buffer of one slot */
	size_t acc_bytes;              /* accumulators of the merge */
	size_t scratch_floats;         /* per worker thread */
};

/*
 * What a merge of mp's method needs: window size (elements) and the
 * longest row of any merged tensor.
 */
void ds_method_needs(const struct ds_mparams *mp, uint64_t window,
		     uint64_t maxrow, struct ds_method_needs *nd);
/* True when the method's windows must hold whole rows. */
bool ds_method_rows(const struct ds_mparams *mp);

/*
 * Start a tensor: ts gets mp (name hash set), the geometry and its passes;
 * maxrow is the longest row of the merge.  Returns 0, or DS_E_USAGE when
 * a row does not fit the window.
 */
int ds_tensor_begin(ds_ctx *ctx, struct ds_tstate *ts,
		    const struct ds_mparams *mp, const uint64_t *shape,
		    unsigned ndim, uint64_t n, uint64_t window, uint64_t maxrow);

/* Worker: one window's share of pass ts->pass[pass] into red. */
void ds_pass_reduce(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		    unsigned pass, const struct ds_window *win, void *red,
		    float *scratch);
/* I/O thread, in window order: fold red (or the window) into ts and the
 * merge's accumulators acc (ds_method_needs().acc_bytes). */
void ds_pass_fold(const struct ds_kernel_ops *k, struct ds_tstate *ts,
		  unsigned pass, const struct ds_window *win, const void *red,
		  void *acc);
/*
 * I/O thread, after the pass's last window: derive what the next needs,
 * and mark in ts->skip the later passes that are not needed.
 */
void ds_pass_finalize(struct ds_tstate *ts, unsigned pass, void *acc);
/* Was pass found unneeded (set only by the finalizing of an earlier one)? */
static inline bool ds_pass_skipped(const struct ds_tstate *ts, unsigned pass)
{
	return ts->skip >> pass & 1;
}
/* The passes finalized, or skipped, once pass is finalized. */
static inline unsigned ds_pass_ready(const struct ds_tstate *ts, unsigned pass)
{
	unsigned r = pass + 1;

	while (r < ts->npass && ds_pass_skipped(ts, r))
		r++;
	return r;
}
/*
 * I/O thread, before a window of the writing pass is first computed: its
 * budgets into red (a ds_wsel), exact or guessed from the windows checked
 * so far.  Nothing to do unless ts->wcount.
 */
void ds_write_begin(const struct ds_tstate *ts, const struct ds_window *win,
		    void *red);
/*
 * Worker: the writing pass of one window (acc read only; red: the slot's
 * reduction buffer, a ds_wsel when ts->wcount).
 */
void ds_pass_write(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		   const struct ds_window *win, float *scratch, void *acc,
		   void *red);
/*
 * I/O thread, in window order, after the window is computed and before
 * it is written: true when its budgets were wrong, so it must be computed
 * again (red holds the exact ones now); false when it is right, which
 * counts it.  Always false unless ts->wcount.
 */
bool ds_write_check(struct ds_tstate *ts, const struct ds_window *win,
		    void *red);

#endif

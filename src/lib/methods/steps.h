/* SPDX-License-Identifier: MIT */
/* steps.h - the steps methods are built from, shared by the method files */
#ifndef DS_STEPS_H
#define DS_STEPS_H

#include <stdint.h>
#include <string.h>
#include "kernels/convert.h"
#include "methods/methods.h"

/*
 * Elements per inner chunk.  A chunk's working set stays in L1/L2 while
 * every model streams through it.  Chunks divide the 65536-element block,
 * and every element is computed by the same operations whatever chunk it
 * falls in, so the output does not depend on this number.
 */
#define DS_CHUNK 2048
_Static_assert(DS_CHUNK % 64 == 0, "a chunk starts on a word of a mask");

/* Bytes per element of a window dtype (F32, F16 or BF16). */
static inline size_t ds_elsize(enum ds_dtype dt)
{
	return dt == DS_DT_F32 ? 4 : 2;
}

/* Element off of a raw window buffer. */
static inline const void *ds_at(const void *p, enum ds_dtype dt, size_t off)
{
	return (const char *)p + off * ds_elsize(dt);
}

/* The canonical quiet NaN for every NaN result. */
static inline float ds_canon(float v)
{
	return v != v ? ds_bitsf(DS_CANON_NAN_BITS) : v;
}

/* Per-chunk buffers carved from a worker's scratch. */
struct ds_chunk {
	float *acc, *b, *x, *dsum, *t1, *t2, *e;
	uint32_t *u, *key;
	size_t off, m;                  /* chunk start in the window, length */
	uint64_t i0;                    /* flat index of its first element */
	/* models given by their mask (ds_window.keep): where the chunk's kept
	 * values start in x[j], how many there are, and how many x[j] holds
	 * up to the end of the next chunk (what a kernel may read) */
	size_t kv[DS_MAX_MODELS], nk[DS_MAX_MODELS], nw[DS_MAX_MODELS];
};

/* Carve the chunk buffers of ds_method_scratch_floats(n) floats. */
void ds_chunk_carve(struct ds_chunk *c, float *scratch, unsigned n);

/* Rows of e: model j's row, DS_CHUNK floats apart. */
static inline float *ds_erow(const struct ds_chunk *c, unsigned j)
{
	return c->e + (size_t)j * DS_CHUNK;
}

/* Load the base (if read) and every model's delta x_j - b into e rows. */
void ds_chunk_deltas(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
		     const struct ds_window *win, const struct ds_chunk *c);

/* ---- rank selection (select.c) ------------------------------------------ */

/* Cuts of every channel from the tensor's size and parameters. */
void ds_select_begin(struct ds_tstate *ts);
/* Keys of channel ch for the chunk whose deltas are in c->e. */
void ds_select_keys(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		    unsigned ch, const struct ds_chunk *c, uint32_t *key);
/*
 * A window's running counts of keys equal to each cut's (n), and its
 * budgets (r): how many of them are above the cut, in index order
 * (UINT64_MAX: all).  at: n at the start of the chunk; tally: the cut's
 * equal keys are counted in every chunk (the writing pass's check needs
 * them), not only where the budget runs out.
 */
struct ds_eqrun {
	uint64_t n[DS_MAX_MODELS][2];
	uint64_t r[DS_MAX_MODELS][2];
	uint64_t at[DS_MAX_MODELS][2];
	bool tally[DS_MAX_MODELS][2];
};
/*
 * Start a window at win_i0: counts from zero, budgets from ws (the
 * writing pass of a tensor without the count_eq pass) or from what the
 * count_eq pass found.
 */
void ds_select_run(const struct ds_tstate *ts, uint64_t win_i0,
		   const struct ds_wsel *ws, struct ds_eqrun *run);
/*
 * x = v * s where element k of the chunk is kept on channel ch (v: the
 * values that channel ranks), else +0, vector-wide; false (nothing done)
 * in a chunk where a cut falls among equal keys, which then takes
 * ds_select_keys() and ds_select_mask().
 */
bool ds_select_keep(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		    unsigned ch, const struct ds_chunk *c, const float *v,
		    float s, struct ds_eqrun *run, float *x);
/*
 * mask[k] = 1 when element k of the chunk is kept on channel ch (above
 * the hi cut and not above the lo cut), with run's budgets and counts.
 */
void ds_select_mask(const struct ds_tstate *ts, unsigned ch,
		    const uint32_t *key, size_t n, struct ds_eqrun *run,
		    uint8_t *mask);
/*
 * The writing pass, chunk ci of a window: whether it must be computed
 * (always but in a redo, where only chunks whose decisions change are; a
 * chunk not computed moves run on by its recorded counts); after it is,
 * record its counts; after the window's last, its totals and budgets.
 */
bool ds_select_chunk_needed(const struct ds_tstate *ts,
			    const struct ds_wsel *ws, size_t ci,
			    struct ds_eqrun *run);
void ds_select_chunk_done(const struct ds_tstate *ts, struct ds_wsel *ws,
			  size_t ci, struct ds_eqrun *run);
void ds_select_window_done(const struct ds_tstate *ts, struct ds_wsel *ws,
			   const struct ds_eqrun *run);
void ds_select_reduce(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		      enum ds_pass pass, const struct ds_window *win, void *red,
		      float *scratch);
void ds_select_fold(struct ds_tstate *ts, enum ds_pass pass,
		    const struct ds_window *win, const void *red, void *acc);
void ds_select_finalize(struct ds_tstate *ts, enum ds_pass pass, void *acc);

/* ---- sums and coefficients (interp.c) ---------------------------------- */

/* Sums of the SUMS pass: how many, per method. */
unsigned ds_sums_count(const struct ds_mparams *mp);
/* One window's block sums into red (blocks of DS_BLOCK from win->i0). */
void ds_sums_reduce(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		    const struct ds_window *win, double *red, float *scratch);
/* From the totals in ts->sum, the coefficients the writing pass uses. */
void ds_sums_finalize(struct ds_tstate *ts);
/* Index of G_ij (i <= j) in a packed upper triangle of n. */
static inline unsigned ds_tri(unsigned i, unsigned j, unsigned n)
{
	return i * n - i * (i + 1) / 2 + j;
}
/* slerp coefficients (DESIGN 5.2) of squared norms n0, n1 and dot d. */
void ds_slerp_coef(double n0, double n1, double d, double t, float *a,
		   float *b);
/* nuslerp's t = w1 / (w0 + w1) in double, 0.5 when the sum is ~0. */
double ds_nuslerp_t(const struct ds_mparams *mp);
/* model_stock's t from a packed Gram matrix of n deltas. */
double ds_stock_t(const double *g, unsigned n);

/* ---- rows (rows.c) ------------------------------------------------------ */

/* Floats of scratch a row method needs for rows of up to maxrow. */
size_t ds_rows_scratch_floats(unsigned nmodels, uint64_t maxrow);
/* The writing pass of a method whose windows hold whole rows. */
void ds_rows_write(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		   const struct ds_window *win, float *scratch, void *acc);
/* nuslerp per column: sums folded in window order on the I/O thread. */
bool ds_cols(const struct ds_tstate *ts);
size_t ds_cols_acc_bytes(uint64_t maxrow);
void ds_cols_begin(const struct ds_tstate *ts, void *acc);
void ds_cols_fold(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		  const struct ds_window *win, void *acc);
void ds_cols_finalize(const struct ds_tstate *ts, void *acc);

#endif

/* SPDX-License-Identifier: MIT */
/* passes.c - which passes a tensor takes, and each pass's work per window */
#include "config.h"

#include <math.h>
#include <string.h>
#include "common/ctx.h"
#include "methods/steps.h"

/* ---- geometry and pass lists --------------------------------------------- */

bool ds_method_rows(const struct ds_mparams *mp)
{
	switch (mp->def->cb) {
	case DS_CB_NUSLERP:
		return mp->n == 2 && !mp->flatten;
	case DS_CB_MODEL_STOCK:
		return mp->filter_wise;
	default:
		return mp->def->sp == DS_SP_DELLA;
	}
}

/* The output is model 0's tensor (DESIGN 5.2 reading rules). */
static bool copy0(const struct ds_mparams *mp)
{
	enum ds_combine cb = mp->def->cb;

	return mp->n == 1 && (cb == DS_CB_NUSLERP || cb == DS_CB_SCE ||
			      cb == DS_CB_KARCHER);
}

static bool selecting(const struct ds_mparams *mp)
{
	return mp->def->sp == DS_SP_MAGNITUDE ||
	       mp->def->sp == DS_SP_OUTLIERS ||
	       (mp->def->cb == DS_CB_SCE && mp->n > 1 && mp->select_topk < 1.0);
}

static void add(struct ds_tstate *ts, enum ds_pass p)
{
	ts->pass[ts->npass++] = p;
}

void ds_method_needs(const struct ds_mparams *mp, uint64_t window,
		     uint64_t maxrow, struct ds_method_needs *nd)
{
	size_t nch = mp->def->cb == DS_CB_SCE ? 1 : mp->n, red = 0, acc = 0;
	size_t sums = ds_sums_count(mp);

	memset(nd, 0, sizeof(*nd));
	nd->rows = ds_method_rows(mp);
	if (selecting(mp)) {
		/* per bin: keys, and keys of zero low bits (select.c) */
		red = sizeof(uint64_t) + nch * DS_HIST_HI * 2 * sizeof(uint32_t);
		acc = nch * DS_HIST_HI * 2 * sizeof(uint64_t);
	}
	if (sums) {
		size_t b = (size_t)((window + DS_BLOCK - 1) / DS_BLOCK + 1) *
			   sums * sizeof(double);

		red = b > red ? b : red;
	} else if (selecting(mp) && ds_wsel_bytes(nch, window) > red) {
		/* no sums pass: the writing pass counts equal keys */
		red = ds_wsel_bytes(nch, window);
	}
	if (nd->rows && mp->def->cb == DS_CB_NUSLERP && mp->row_wise &&
	    ds_cols_acc_bytes(maxrow) > acc)
		acc = ds_cols_acc_bytes(maxrow);
	nd->red_bytes = red;
	nd->acc_bytes = acc;
	nd->scratch_floats = nd->rows ? ds_rows_scratch_floats(mp->n, maxrow) :
				      ds_method_scratch_floats(mp->n);
}

int ds_tensor_begin(ds_ctx *ctx, struct ds_tstate *ts,
		    const struct ds_mparams *mp, const uint64_t *shape,
		    unsigned ndim, uint64_t n, uint64_t window, uint64_t maxrow)
{
	memset(ts, 0, offsetof(struct ds_tstate, sum));
	ts->mp = *mp;
	ts->n = n;
	ts->rows = ndim >= 2 && shape[0] ? shape[0] : 1;
	ts->rowlen = n / ts->rows;
	ts->maxrow = maxrow;
	ts->copy0 = copy0(mp);
	ts->nsum = ds_sums_count(mp);
	if (!ts->copy0 && ds_method_rows(mp) && ts->rowlen > window)
		return ds_fail(ctx, DS_E_USAGE, "method %s works row by row and "
			       "a row of %llu elements does not fit a window "
			       "of %llu; raise --memory (or lower --threads)",
			       mp->def->name, (unsigned long long)ts->rowlen,
			       (unsigned long long)window);
	if (!ts->copy0 && (selecting(mp) || mp->def->cb == DS_CB_SCE)) {
		ds_select_begin(ts);
		/*
		 * The writing pass finds where each cut falls among its
		 * equal keys; a sums pass before it needs that already.
		 */
		if (ts->select) {
			add(ts, DS_PASS_HIST_HI);
			add(ts, DS_PASS_HIST_LO);
			if (ts->nsum)
				add(ts, DS_PASS_COUNT_EQ);
			ts->wcount = !ts->nsum;
		}
	}
	if (!ts->copy0 && (ts->nsum || ds_cols(ts))) {
		add(ts, DS_PASS_SUMS);
		memset(ts->sum, 0, ts->nsum * sizeof(double));
	}
	add(ts, DS_PASS_WRITE);
	return 0;
}

/* ---- reductions ----------------------------------------------------------- */

void ds_pass_reduce(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		    unsigned pass, const struct ds_window *win, void *red,
		    float *scratch)
{
	if (ts->pass[pass] == DS_PASS_SUMS) {
		if (!ds_cols(ts))
			ds_sums_reduce(k, ts, win, red, scratch);
		return;
	}
	ds_select_reduce(k, ts, ts->pass[pass], win, red, scratch);
}

void ds_pass_fold(const struct ds_kernel_ops *k, struct ds_tstate *ts,
		  unsigned pass, const struct ds_window *win, const void *red,
		  void *acc)
{
	/*
	 * The accumulators are the merge's, shared by its tensors: they are
	 * cleared at a tensor's first fold, when every window of the tensors
	 * before it is past its last use of them (folds and writes run in
	 * window order).
	 */
	if (pass == 0 && win->i0 == 0) {
		if (ds_cols(ts))
			ds_cols_begin(ts, acc);
	}
	/* Each histogram pass starts its counts from zero (DESIGN 5.1). */
	if (win->i0 == 0 && (ts->pass[pass] == DS_PASS_HIST_HI ||
			     ts->pass[pass] == DS_PASS_HIST_LO))
		memset(acc, 0, (size_t)ts->nchan * DS_HIST_HI * 2 *
		       sizeof(uint64_t));
	if (ts->pass[pass] != DS_PASS_SUMS) {
		ds_select_fold(ts, ts->pass[pass], win, red, acc);
		return;
	}
	if (ds_cols(ts)) {
		ds_cols_fold(k, ts, win, acc);
		return;
	}
	/* Block sums, in block order, onto the totals. */
	for (size_t b = 0; b < (win->n + DS_BLOCK - 1) / DS_BLOCK; b++)
		for (unsigned q = 0; q < ts->nsum; q++)
			ts->sum[q] += ((const double *)red)[b * ts->nsum + q];
}

void ds_pass_finalize(struct ds_tstate *ts, unsigned pass, void *acc)
{
	if (ts->pass[pass] != DS_PASS_SUMS)
		ds_select_finalize(ts, ts->pass[pass], acc);
	else if (ds_cols(ts))
		ds_cols_finalize(ts, acc);
	else
		ds_sums_finalize(ts);
}

/* ---- the writing pass, whole-tensor methods ------------------------------- */

/* ties, breadcrumbs, breadcrumbs_ties: the kept deltas, then the combine. */
static void select_chunk(const struct ds_kernel_ops *k,
			 const struct ds_tstate *ts,
			 const struct ds_window *win, struct ds_chunk *c,
			 struct ds_eqrun *run)
{
	const struct ds_mparams *mp = &ts->mp;
	uint8_t *mask = (uint8_t *)c->t2;
	const float *dsum = NULL;
	float div = 0.0f;

	ds_chunk_deltas(k, mp, win, c);
	memset(c->acc, 0, c->m * sizeof(float));
	for (unsigned j = 0; j < mp->n; j++) {
		float *d = ds_erow(c, j), s = mp->s[j];

		if (!ds_select_keep(k, ts, j, c, d, s, run, c->x)) {
			ds_select_keys(k, ts, j, c, c->key);
			ds_select_mask(ts, j, c->key, c->m, run, mask);
			for (size_t i = 0; i < c->m; i++)
				c->x[i] = mask[i] ? d[i] * s : 0.0f;
		}
		if (mp->ties) {
			memset(d, 0, c->m * sizeof(float));
			k->axpy(d, mp->w[j], c->x, c->m);
		} else {
			k->axpy(c->acc, mp->w[j], c->x, c->m);
		}
	}
	if (mp->ties) {
		k->ties(c->e, DS_CHUNK, mp->n, mp->w, c->acc, c->dsum, c->m);
		dsum = mp->normalize ? c->dsum : NULL;
	} else {
		div = mp->normalize ? mp->wsum : 0.0f;
	}
	k->finish(c->acc, c->b, dsum, div, mp->lambda, c->m);
}

/* sce: kept deltas, consensus on their own sum, weights from the norms. */
static void sce_chunk(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		      const struct ds_window *win, struct ds_chunk *c,
		      struct ds_eqrun *run)
{
	const struct ds_mparams *mp = &ts->mp;
	uint8_t *mask = (uint8_t *)c->t2;

	ds_chunk_deltas(k, mp, win, c);
	ds_select_keys(k, ts, 0, c, c->key);
	ds_select_mask(ts, 0, c->key, c->m, run, mask);
	for (size_t i = 0; i < c->m; i++) {
		float S = 0.0f, acc = 0.0f, D = 0.0f, v;
		int pos;

		for (unsigned j = 0; j < mp->n; j++)
			S = S + (mask[i] ? ds_erow(c, j)[i] : 0.0f);
		pos = S >= 0.0f;
		for (unsigned j = 0; j < mp->n; j++) {
			v = mask[i] ? ds_erow(c, j)[i] : 0.0f;
			if (v != 0.0f && (pos ? v > 0.0f : v < 0.0f)) {
				acc = acc + ts->coef[j] * v;
				D = D + ts->coef[j];
			}
		}
		D = D < 1e-6 ? (float)1e-6 : D;
		c->acc[i] = ds_canon(c->b[i] + acc / D);
	}
}

/* slerp, nuslerp (flattened): a v0 + b v1, plus the base for nuslerp. */
static void interp_chunk(const struct ds_kernel_ops *k,
			 const struct ds_tstate *ts,
			 const struct ds_window *win, struct ds_chunk *c)
{
	const struct ds_mparams *mp = &ts->mp;
	const float *v0 = ds_erow(c, 0), *v1 = ds_erow(c, 1);
	float a = ts->coef[0], b = ts->coef[1];
	bool nub = mp->def->cb == DS_CB_NUSLERP && mp->uses_base;

	if (mp->def->cb == DS_CB_SLERP) {
		k->load(win->bdt, ds_at(win->base, win->bdt, c->off),
			ds_erow(c, 0), c->m);
		k->load(win->xdt[0], ds_at(win->x[0], win->xdt[0], c->off),
			ds_erow(c, 1), c->m);
	} else if (nub) {
		ds_chunk_deltas(k, mp, win, c);
	} else {
		for (unsigned j = 0; j < 2; j++)
			k->load(win->xdt[j], ds_at(win->x[j], win->xdt[j],
						   c->off), ds_erow(c, j), c->m);
	}
	for (size_t i = 0; i < c->m; i++) {
		float v = a * v0[i] + b * v1[i];

		c->acc[i] = ds_canon(nub ? c->b[i] + v : v);
	}
}

/* model_stock: t avg + (1 - t) b, avg the models' plain mean. */
static void stock_chunk(const struct ds_kernel_ops *k,
			const struct ds_tstate *ts,
			const struct ds_window *win, struct ds_chunk *c)
{
	const struct ds_mparams *mp = &ts->mp;
	float t = ts->coef[0], u = ts->coef[1], fn = (float)mp->n;

	k->load(win->bdt, ds_at(win->base, win->bdt, c->off), c->b, c->m);
	memset(c->acc, 0, c->m * sizeof(float));
	for (unsigned j = 0; j < mp->n; j++) {
		k->load(win->xdt[j], ds_at(win->x[j], win->xdt[j], c->off),
			c->x, c->m);
		k->axpy(c->acc, 1.0f, c->x, c->m);
	}
	for (size_t i = 0; i < c->m; i++)
		c->acc[i] = ds_canon(t * (c->acc[i] / fn) + u * c->b[i]);
}

/* karcher: sum beta_j x_j over the models that take part. */
static void karcher_chunk(const struct ds_kernel_ops *k,
			  const struct ds_tstate *ts,
			  const struct ds_window *win, struct ds_chunk *c)
{
	const struct ds_mparams *mp = &ts->mp;

	memset(c->acc, 0, c->m * sizeof(float));
	for (unsigned j = 0; j < mp->n; j++) {
		if (!(ts->valid >> j & 1))
			continue;
		k->load(win->xdt[j], ds_at(win->x[j], win->xdt[j], c->off),
			c->x, c->m);
		k->axpy(c->acc, ts->coef[j], c->x, c->m);
	}
	for (size_t i = 0; i < c->m; i++)
		c->acc[i] = ds_canon(c->acc[i]);
}

/* passthrough (and a single model standing for the merge): x, or scale x. */
static void one_chunk(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		      const struct ds_window *win, struct ds_chunk *c)
{
	float s = ts->mp.scale;

	k->load(win->xdt[0], ds_at(win->x[0], win->xdt[0], c->off), c->acc,
		c->m);
	if (!ts->copy0 && s != 1.0f)
		for (size_t i = 0; i < c->m; i++)
			c->acc[i] = ds_canon(s * c->acc[i]);
}

/* ties, breadcrumbs, sce: the chunks a selection computes, and its counts. */
static void select_window(const struct ds_kernel_ops *k,
			  const struct ds_tstate *ts,
			  const struct ds_window *win, struct ds_chunk *c,
			  struct ds_wsel *ws)
{
	struct ds_eqrun run;
	size_t ci = 0;

	ds_select_run(ts, win->i0, ws, &run);
	for (c->off = 0; c->off < win->n; c->off += DS_CHUNK, ci++) {
		c->m = win->n - c->off < DS_CHUNK ? win->n - c->off : DS_CHUNK;
		c->i0 = win->i0 + c->off;
		if (!ds_select_chunk_needed(ts, ws, ci, &run))
			continue;
		if (ts->mp.def->cb == DS_CB_SCE)
			sce_chunk(k, ts, win, c, &run);
		else
			select_chunk(k, ts, win, c, &run);
		ds_select_chunk_done(ts, ws, ci, &run);
		k->store(win->odt, c->acc,
			 (char *)win->out + c->off * ds_elsize(win->odt), c->m);
	}
	ds_select_window_done(ts, ws, &run);
}

void ds_pass_write(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		   const struct ds_window *win, float *scratch, void *acc,
		   void *red)
{
	const struct ds_mparams *mp = &ts->mp;
	enum ds_combine cb = mp->def->cb;
	struct ds_chunk c;

	if (!ts->copy0 && ds_method_rows(mp)) {
		ds_rows_write(k, ts, win, scratch, acc);
		return;
	}
	if (!ts->copy0 && (cb == DS_CB_LINEAR || cb == DS_CB_SUM ||
			   cb == DS_CB_CONSENSUS) &&
	    (mp->def->sp == DS_SP_NONE || mp->def->sp == DS_SP_DARE)) {
		ds_method_window(k, mp, win, scratch);
		return;
	}
	ds_chunk_carve(&c, scratch, ts->mp.n);
	if (!ts->copy0 && (cb == DS_CB_SCE || cb == DS_CB_SUM ||
			   cb == DS_CB_CONSENSUS)) {
		select_window(k, ts, win, &c, red);
		return;
	}
	for (c.off = 0; c.off < win->n; c.off += DS_CHUNK) {
		c.m = win->n - c.off < DS_CHUNK ? win->n - c.off : DS_CHUNK;
		c.i0 = win->i0 + c.off;
		if (ts->copy0 || cb == DS_CB_PASSTHROUGH)
			one_chunk(k, ts, win, &c);
		else if (cb == DS_CB_SLERP || cb == DS_CB_NUSLERP)
			interp_chunk(k, ts, win, &c);
		else if (cb == DS_CB_MODEL_STOCK)
			stock_chunk(k, ts, win, &c);
		else if (cb == DS_CB_KARCHER)
			karcher_chunk(k, ts, win, &c);
		k->store(win->odt, c.acc,
			 (char *)win->out + c.off * ds_elsize(win->odt), c.m);
	}
}

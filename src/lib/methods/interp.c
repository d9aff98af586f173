/* SPDX-License-Identifier: MIT */
/* interp.c - per-tensor sums and what they decide: l1 rescale, slerp,
 * nuslerp, model_stock, karcher and sce weights */
#include "config.h"

#include <math.h>
#include <string.h>
#include "methods/steps.h"

/*
 * Every sum is binary64, starts from +0 and runs in element order inside
 * each 65536-element block; the pipeline adds the block sums in block
 * order (DESIGN 5).  Windows start on block boundaries, so a chunk never
 * straddles two blocks.
 */

static bool l1(const struct ds_mparams *mp)
{
	return mp->rescale == DS_RESCALE_L1 &&
	       (mp->def->sp == DS_SP_DARE || mp->def->sp == DS_SP_MAGNITUDE ||
		mp->def->sp == DS_SP_OUTLIERS);
}

unsigned ds_sums_count(const struct ds_mparams *mp)
{
	unsigned n = mp->n;

	if (l1(mp))
		return 2 * n;
	switch (mp->def->cb) {
	case DS_CB_SLERP:
		return 3;
	case DS_CB_NUSLERP:
		return n == 2 && mp->flatten ? 3 : 0;
	case DS_CB_MODEL_STOCK:
		return mp->filter_wise ? 0 : n * (n + 1) / 2;
	case DS_CB_KARCHER:
		return n > 1 ? n * (n + 1) / 2 : 0;
	case DS_CB_SCE:
		return n > 1 ? n : 0;
	default:
		return 0;
	}
}

/* s += a[k] * b[k] in binary64, element order. */
static double dot(double s, const float *a, const float *b, size_t m)
{
	for (size_t k = 0; k < m; k++)
		s += (double)a[k] * (double)b[k];
	return s;
}

/* The packed Gram matrix of the n rows of e, added to g. */
static void gram(double *g, const struct ds_chunk *c, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = i; j < n; j++)
			g[ds_tri(i, j, n)] = dot(g[ds_tri(i, j, n)],
						 ds_erow(c, i), ds_erow(c, j),
						 c->m);
}

/* L1 norms of every delta and of its kept part (rescale l1). */
static void l1_sums(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		    const struct ds_chunk *c, struct ds_eqrun *run, double *s)
{
	const struct ds_mparams *mp = &ts->mp;
	uint8_t *mask = (uint8_t *)c->t2;

	for (unsigned j = 0; j < mp->n; j++) {
		const float *d = ds_erow(c, j);
		double a = s[2 * j], b = s[2 * j + 1];

		if (mp->dare) {
			if (mp->thr[j] && mp->thr[j] <= UINT32_MAX)
				k->philox(mp->seed, mp->sj[j], mp->name_hash,
					  c->i0, c->m, c->u);
			for (size_t i = 0; i < c->m; i++)
				mask[i] = mp->thr[j] == 0 ||
					  (mp->thr[j] <= UINT32_MAX &&
					   c->u[i] >= mp->thr[j]);
		} else {
			ds_select_keys(k, ts, j, c, c->key);
			ds_select_mask(ts, j, c->key, c->m, run, mask);
		}
		for (size_t i = 0; i < c->m; i++)
			a += fabs((double)d[i]);
		for (size_t i = 0; i < c->m; i++)
			if (mask[i])
				b += fabs((double)d[i]);
		s[2 * j] = a;
		s[2 * j + 1] = b;
	}
}

/* sce: the kept deltas' squares, per model. */
static void sce_sums(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		     const struct ds_chunk *c, struct ds_eqrun *run, double *s)
{
	uint8_t *mask = (uint8_t *)c->t2;

	ds_select_keys(k, ts, 0, c, c->key);
	ds_select_mask(ts, 0, c->key, c->m, run, mask);
	for (unsigned j = 0; j < ts->mp.n; j++) {
		const float *d = ds_erow(c, j);

		for (size_t i = 0; i < c->m; i++)
			if (mask[i])
				s[j] += (double)d[i] * (double)d[i];
	}
}

/* Load model j's values (no base) into row j of e. */
static void load_models(const struct ds_kernel_ops *k,
			const struct ds_mparams *mp,
			const struct ds_window *win, const struct ds_chunk *c)
{
	for (unsigned j = 0; j < mp->n; j++)
		k->load(win->xdt[j], ds_at(win->x[j], win->xdt[j], c->off),
			ds_erow(c, j), c->m);
}

/* The two vectors a slerp interpolates, into rows 0 and 1 of e. */
static void slerp_inputs(const struct ds_kernel_ops *k,
			 const struct ds_mparams *mp,
			 const struct ds_window *win, const struct ds_chunk *c)
{
	if (mp->def->cb == DS_CB_SLERP) {
		k->load(win->bdt, ds_at(win->base, win->bdt, c->off),
			ds_erow(c, 0), c->m);
		k->load(win->xdt[0], ds_at(win->x[0], win->xdt[0], c->off),
			ds_erow(c, 1), c->m);
	} else if (mp->uses_base) {
		ds_chunk_deltas(k, mp, win, c);
	} else {
		load_models(k, mp, win, c);
	}
}

void ds_sums_reduce(const struct ds_kernel_ops *k, const struct ds_tstate *ts,
		    const struct ds_window *win, double *red, float *scratch)
{
	const struct ds_mparams *mp = &ts->mp;
	struct ds_eqrun run;
	struct ds_chunk c;

	ds_select_run(ts, win->i0, NULL, &run);
	memset(red, 0, ((win->n + DS_BLOCK - 1) / DS_BLOCK) * ts->nsum *
		       sizeof(double));
	ds_chunk_carve(&c, scratch, ts->mp.n);
	for (c.off = 0; c.off < win->n; c.off += DS_CHUNK) {
		double *s = red + (c.off / DS_BLOCK) * ts->nsum;

		c.m = win->n - c.off < DS_CHUNK ? win->n - c.off : DS_CHUNK;
		c.i0 = win->i0 + c.off;
		if (l1(mp)) {
			ds_chunk_deltas(k, mp, win, &c);
			l1_sums(k, ts, &c, &run, s);
			continue;
		}
		switch (mp->def->cb) {
		case DS_CB_SLERP:
		case DS_CB_NUSLERP:
			slerp_inputs(k, mp, win, &c);
			s[0] = dot(s[0], ds_erow(&c, 0), ds_erow(&c, 0), c.m);
			s[1] = dot(s[1], ds_erow(&c, 1), ds_erow(&c, 1), c.m);
			s[2] = dot(s[2], ds_erow(&c, 0), ds_erow(&c, 1), c.m);
			break;
		case DS_CB_MODEL_STOCK:
			ds_chunk_deltas(k, mp, win, &c);
			gram(s, &c, mp->n);
			break;
		case DS_CB_KARCHER:
			load_models(k, mp, win, &c);
			gram(s, &c, mp->n);
			break;
		case DS_CB_SCE:
			ds_chunk_deltas(k, mp, win, &c);
			sce_sums(k, ts, &c, &run, s);
			break;
		default:
			break;
		}
	}
}

void ds_slerp_coef(double n0, double n1, double d, double t, float *a,
		   float *b)
{
	double N0 = sqrt(n0), N1 = sqrt(n1), c, th, st;

	N0 = N0 > 1e-8 ? N0 : 1.0;
	N1 = N1 > 1e-8 ? N1 : 1.0;
	c = d / (N0 * N1);
	if (c > 1.0)
		c = 1.0;
	else if (c < -1.0)
		c = -1.0;
	if (fabs(c) > 0.9995) {
		*a = (float)(1.0 - t);
		*b = (float)t;
		return;
	}
	th = acos(c);
	st = sin(th);
	*a = (float)(sin(th - th * t) / st);
	*b = (float)(sin(th * t) / st);
}

double ds_stock_t(const double *g, unsigned n)
{
	double cos = 0.0, pairs = 0.0, div;

	for (unsigned i = 0; i < n; i++)
		for (unsigned j = i + 1; j < n; j++) {
			double ni = sqrt(g[ds_tri(i, i, n)]);
			double nj = sqrt(g[ds_tri(j, j, n)]);
			double den = ni * nj, cij;

			den = den > 1e-6 ? den : 1e-6;
			cij = g[ds_tri(i, j, n)] / den;
			if (cij > 1.0)
				cij = 1.0;
			else if (cij < -1.0)
				cij = -1.0;
			cos += cij;
			pairs += 1.0;
		}
	cos = cos / pairs;
	div = 1.0 + ((double)n - 1.0) * cos;
	return div == 0.0 ? 0.0 : (double)n * cos / div;
}

/* ---- karcher ------------------------------------------------------------- */

/* c^T U c over the valid models, rows outer, both in model order. */
static double quad(const double *U, const double *c, const bool *v,
		   unsigned n)
{
	double q = 0.0;

	for (unsigned i = 0; i < n; i++) {
		double r = 0.0;

		if (!v[i])
			continue;
		for (unsigned k = 0; k < n; k++)
			if (v[k])
				r += U[i * DS_MAX_MODELS + k] * c[k];
		q += c[i] * r;
	}
	return q;
}

/* One step of mergekit's Riemannian mean, on the coefficients c. */
static bool karcher_step(const double *U, double *c, const double *a,
			 const bool *v, unsigned n, double tol)
{
	double T[DS_MAX_MODELS] = { 0 }, nt, cn, sn, un;

	for (unsigned i = 0; i < n; i++) {
		double d = 0.0, th, f;

		if (!v[i])
			continue;
		for (unsigned k = 0; k < n; k++)
			if (v[k])
				d += c[k] * U[k * DS_MAX_MODELS + i];
		d = d > 1.0 ? 1.0 : d < -1.0 ? -1.0 : d;
		th = acos(d);
		if (th < tol)
			continue;
		f = a[i] * (th / sin(th));
		for (unsigned k = 0; k < n; k++)
			if (v[k])
				T[k] += f * ((k == i ? 1.0 : 0.0) - d * c[k]);
	}
	nt = sqrt(quad(U, T, v, n));
	if (nt < tol)
		return false;
	cn = cos(nt);
	sn = sin(nt);
	for (unsigned k = 0; k < n; k++)
		if (v[k])
			c[k] = cn * c[k] + sn * (T[k] / nt);
	un = sqrt(quad(U, c, v, n));
	if (un > tol)
		for (unsigned k = 0; k < n; k++)
			if (v[k])
				c[k] = c[k] / un;
	return true;
}

/*
 * Every iterate of the Karcher loop is a combination of the unit tensors
 * u_j = x_j / N_j, so the loop runs on their coefficients with the Gram
 * matrix U of the u_j; out = s * sum c_j u_j = sum ((s * c_j) / N_j) x_j.
 */
static void karcher(struct ds_tstate *ts)
{
	double U[DS_MAX_MODELS * DS_MAX_MODELS];
	const struct ds_mparams *mp = &ts->mp;
	unsigned n = mp->n, first = n;
	double N[DS_MAX_MODELS], a[DS_MAX_MODELS], c[DS_MAX_MODELS];
	double asum = 0.0, s = 0.0, nu;
	bool v[DS_MAX_MODELS];

	ts->valid = 0;
	for (unsigned j = 0; j < n; j++) {
		N[j] = sqrt(ts->sum[ds_tri(j, j, n)]);
		v[j] = N[j] > mp->tol;
		if (v[j] && first == n)
			first = j;
		if (v[j])
			asum += 1.0 / n;
		s += (1.0 / n) * N[j];
		ts->coef[j] = 0.0f;
	}
	if (first == n)
		return;                         /* every tensor is ~0: out 0 */
	for (unsigned i = 0; i < n; i++)
		for (unsigned k = 0; k < n; k++) {
			unsigned lo = i < k ? i : k, hi = i < k ? k : i;

			U[i * DS_MAX_MODELS + k] = v[i] && v[k] ?
				ts->sum[ds_tri(lo, hi, n)] / (N[i] * N[k]) : 0.0;
		}
	for (unsigned j = 0; j < n; j++)
		c[j] = a[j] = v[j] ? (1.0 / n) / asum : 0.0;
	nu = sqrt(quad(U, c, v, n));
	if (nu < mp->tol) {
		for (unsigned j = 0; j < n; j++)
			c[j] = j == first ? 1.0 : 0.0;
	} else {
		for (unsigned j = 0; j < n; j++)
			c[j] = c[j] / nu;
	}
	for (unsigned it = 0; it < mp->max_iter; it++)
		if (!karcher_step(U, c, a, v, n, mp->tol))
			break;
	for (unsigned j = 0; j < n; j++)
		if (v[j]) {
			ts->coef[j] = (float)((s * c[j]) / N[j]);
			ts->valid |= 1ull << j;
		}
}

/* sce: mean kept squared delta per model, normalised to sum 1. */
static void sce_weights(struct ds_tstate *ts)
{
	unsigned n = ts->mp.n;
	double w[DS_MAX_MODELS], sum = 0.0;

	for (unsigned j = 0; j < n; j++) {
		w[j] = ts->sum[j] / (double)ts->n;
		sum += w[j];
	}
	for (unsigned j = 0; j < n; j++)
		ts->coef[j] = (float)(sum < 1e-6 ? 1.0 / n : w[j] / sum);
}

double ds_nuslerp_t(const struct ds_mparams *mp)
{
	double w0 = mp->w[0], w1 = mp->w[1];

	return fabs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
}

void ds_sums_finalize(struct ds_tstate *ts)
{
	struct ds_mparams *mp = &ts->mp;
	const double *s = ts->sum;

	if (l1(mp)) {
		for (unsigned j = 0; j < mp->n; j++)
			mp->s[j] = s[2 * j] < 1e-7 || s[2 * j + 1] < 1e-7 ? 1.0f :
				   (float)(s[2 * j] / s[2 * j + 1]);
		return;
	}
	switch (mp->def->cb) {
	case DS_CB_SLERP:
		ds_slerp_coef(s[0], s[1], s[2], mp->t, &ts->coef[0],
			      &ts->coef[1]);
		break;
	case DS_CB_NUSLERP:
		ds_slerp_coef(s[0], s[1], s[2], ds_nuslerp_t(mp), &ts->coef[0],
			      &ts->coef[1]);
		break;
	case DS_CB_MODEL_STOCK: {
		double t = ds_stock_t(s, mp->n);

		ts->coef[0] = (float)t;
		ts->coef[1] = (float)(1.0 - t);
		break;
	}
	case DS_CB_KARCHER:
		karcher(ts);
		break;
	case DS_CB_SCE:
		sce_weights(ts);
		break;
	default:
		break;
	}
}

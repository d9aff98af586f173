/* SPDX-License-Identifier: MIT */
/* stats.c - delta-stats: stream models against a base, histogram |delta| */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/ctx.h"
#include "inputs/lora.h"
#include "inputs/model.h"
#include "io/io.h"
#include "kernels/convert.h"
#include "kernels/kernels.h"
#include "stats/stats.h"

/* ---- the histogram -------------------------------------------------------- */

void ds_hist_reset(struct ds_hist *h)
{
	if (h->lo <= h->hi && h->hi < DS_HIST_BINS)
		memset(&h->bin[h->lo], 0, (h->hi - h->lo + 1) * sizeof(h->bin[0]));
	h->n = h->nan = h->zeros = 0;
	h->sum = 0;
	h->max = 0;
	h->lo = DS_HIST_BINS;
	h->hi = 0;
}

/* One delta: NaN counted apart; everything else binned on its bits. */
static inline void hist_one(struct ds_hist *h, float d, uint32_t *lo,
			    uint32_t *hi)
{
	uint32_t a = ds_fbits(d) & 0x7fffffffu, k;

	if (a > 0x7f800000u) {
		h->nan++;
		return;
	}
	k = a >> DS_HIST_SHIFT;
	h->bin[k]++;
	h->zeros += a == 0;
	h->sum += (double)ds_bitsf(a);
	if (a > h->max)
		h->max = a;
	if (k < *lo)
		*lo = k;
	if (k > *hi)
		*hi = k;
}

void ds_hist_add_delta(struct ds_hist *h, const float *b, const float *x,
		       size_t n)
{
	uint32_t lo = h->lo, hi = h->hi;

	for (size_t k = 0; k < n; k++)
		hist_one(h, x[k] - b[k], &lo, &hi);
	h->lo = lo;
	h->hi = hi;
	h->n += n;
}

void ds_hist_add(struct ds_hist *h, const float *d, size_t n)
{
	uint32_t lo = h->lo, hi = h->hi;

	for (size_t k = 0; k < n; k++)
		hist_one(h, d[k], &lo, &hi);
	h->lo = lo;
	h->hi = hi;
	h->n += n;
}

void ds_hist_merge(struct ds_hist *dst, const struct ds_hist *src)
{
	for (uint32_t k = src->lo; k <= src->hi && k < DS_HIST_BINS; k++)
		dst->bin[k] += src->bin[k];
	if (src->lo < dst->lo)
		dst->lo = src->lo;
	if (src->lo <= src->hi && src->hi > dst->hi)
		dst->hi = src->hi;
	dst->n += src->n;
	dst->nan += src->nan;
	dst->zeros += src->zeros;
	dst->sum += src->sum;
	if (src->max > dst->max)
		dst->max = src->max;
}

float ds_hist_percentile(const struct ds_hist *h, uint64_t num, uint64_t den)
{
	uint64_t N = h->n - h->nan, r, cum = 0;

	if (N == 0 || den == 0 || num > den || den > UINT32_MAX)
		return 0;
	/* r = ceil(N num / den) without overflow: num, den < 2^32. */
	r = N / den * num + ((N % den) * num + den - 1) / den;
	if (r == 0)
		r = 1;
	if (r > N)
		r = N;
	if (r <= h->zeros)
		return 0;
	for (uint32_t k = h->lo; k <= h->hi; k++) {
		cum += h->bin[k];
		if (cum >= r) {
			/* The upper edge of bin k; +inf's bin has none. */
			uint64_t up = ((uint64_t)k + 1) << DS_HIST_SHIFT;

			return ds_bitsf(up < h->max ? (uint32_t)up : h->max);
		}
	}
	return ds_bitsf(h->max);     /* not reached: the bins hold N values */
}

void ds_hist_stats(const struct ds_hist *h, struct ds_delta_stats *s)
{
	uint64_t N = h->n - h->nan;

	memset(s, 0, sizeof(*s));
	s->n = h->n;
	s->nan = h->nan;
	if (N == 0)
		return;
	s->zeros = h->zeros;
	s->sum = h->sum;
	s->mean = h->sum / (double)N;
	s->max = ds_bitsf(h->max);
	s->p50 = ds_hist_percentile(h, 500, 1000);
	s->p99 = ds_hist_percentile(h, 990, 1000);
	s->p999 = ds_hist_percentile(h, 999, 1000);
}

/* ---- verdict and names ---------------------------------------------------- */

enum ds_delta_verdict ds_delta_verdict(const struct ds_delta_stats *s)
{
	if (s->n == s->nan)
		return DS_DELTA_NONE;
	if (s->p99 <= DS_DELTA_SFT_P99)
		return DS_DELTA_SFT;
	if (s->p99 >= DS_DELTA_CPT_P99)
		return DS_DELTA_CPT;
	return DS_DELTA_BETWEEN;
}

const char *ds_delta_verdict_name(enum ds_delta_verdict v)
{
	static const char *const nm[] = { "none", "sft", "between", "cpt" };

	return (unsigned)v < sizeof(nm) / sizeof(nm[0]) ? nm[v] : NULL;
}

const char *ds_delta_skip_name(enum ds_delta_skip why)
{
	static const char *const nm[] = { "compared", "not-float", "dtype",
					  "missing", "extra", "shape" };

	return (unsigned)why < sizeof(nm) / sizeof(nm[0]) ? nm[why] : NULL;
}

/* ---- the scan ------------------------------------------------------------- */

/* One window of one tensor: the reads of the base and of the model. */
struct win {
	struct ds_io_req rd[2];     /* 0: base, 1: model */
	void *raw[2];
	unsigned pending;           /* reads not yet completed */
	size_t p;                   /* the pair it belongs to */
	uint64_t i0;
	size_t n;
	bool busy;
};

/* A base tensor and what becomes of it against one model. */
struct pair {
	const struct ds_tensor *b, *m;
	enum ds_delta_skip skip;
};

struct ds_delta_scan {
	ds_ctx *ctx;
	ds_model *base;
	int *bfd;                   /* the base's shards, opened once */
	const struct ds_kernel_ops *k;
	struct ds_io io;
	uint64_t window, memory;
	void *mem;                  /* every window buffer, one allocation */
	struct win w[2];
	float *fb, *fx;
	struct ds_hist *th, *all;   /* this tensor's and the model's */
};

/* What one run needs besides the scan: the model and the cursors. */
struct run {
	ds_delta_scan *sc;
	ds_model *m;
	int *mfd;
	struct pair *pr;
	size_t np, ncompared;
	size_t ip;                  /* next window to issue: pair, offset */
	uint64_t ii0;
	size_t ep;                  /* pairs reported so far */
	unsigned seq_issue, seq_done;
	int err;
	ds_delta_fn *fn;
	void *user;
	void *lmem;                 /* BASE+ADAPTER: the factors' buffers */
	struct ds_lora_buf lb;
};

#define MIN_MEMORY (64u << 10)
/* Per element: two windows of two raw inputs (F32 at most) and the two
 * binary32 copies the kernel loads them into. */
#define BYTES_PER_ELEM (2 * 2 * 4 + 2 * 4)

static bool is_float(enum ds_dtype dt)
{
	return dt == DS_DT_F16 || dt == DS_DT_BF16 || dt == DS_DT_F32;
}

static bool is_floaty(enum ds_dtype dt)
{
	return is_float(dt) || dt == DS_DT_F64 || dt == DS_DT_F8_E4M3 ||
	       dt == DS_DT_F8_E5M2;
}

static void close_fds(int *fd, unsigned n)
{
	for (unsigned i = 0; fd && i < n; i++)
		if (fd[i] >= 0)
			close(fd[i]);
	free(fd);
}

static int open_fds(ds_ctx *ctx, const struct ds_model *m, int **out)
{
	int *fd = malloc(sizeof(int) * (m->nshards ? m->nshards : 1));

	*out = NULL;
	if (!fd)
		return ds_fail(ctx, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < m->nshards; i++)
		fd[i] = -1;
	for (unsigned i = 0; i < m->nshards; i++) {
		fd[i] = open(m->shards[i].path, O_RDONLY | O_CLOEXEC);
		if (fd[i] < 0) {
			int e = errno;

			close_fds(fd, i);
			return ds_fail(ctx, -e, "%s: %s", m->shards[i].path,
				       strerror(e));
		}
	}
	*out = fd;
	return 0;
}

static int alloc_buffers(ds_delta_scan *sc)
{
	uint64_t W = sc->window, raw = W * 4;
	size_t total = (size_t)(4 * raw + 2 * W * sizeof(float));
	char *p;

	sc->mem = aligned_alloc(4096, (total + 4095) & ~(size_t)4095);
	sc->th = malloc(sizeof(*sc->th));
	sc->all = malloc(sizeof(*sc->all));
	if (!sc->mem || !sc->th || !sc->all)
		return ds_fail(sc->ctx, -ENOMEM, "cannot allocate %zu bytes of "
			       "window buffers; lower --memory", total);
	p = sc->mem;
	for (int s = 0; s < 2; s++)
		for (int k = 0; k < 2; k++, p += raw)
			sc->w[s].raw[k] = p;
	sc->fb = (float *)(void *)p;
	sc->fx = sc->fb + W;
	memset(sc->th, 0, sizeof(*sc->th));
	memset(sc->all, 0, sizeof(*sc->all));
	sc->memory = total + 2 * sizeof(struct ds_hist);
	return 0;
}

int ds_delta_scan_create(ds_ctx *ctx, const char *base,
			 const struct ds_delta_opts *opts, ds_delta_scan **out)
{
	ds_delta_scan *sc = calloc(1, sizeof(*sc));
	uint64_t mem = opts && opts->memory ? opts->memory : DS_DEFAULT_MEMORY;
	int rc;

	*out = NULL;
	if (!sc)
		return ds_fail(ctx, -ENOMEM, "out of memory");
	sc->ctx = ctx;
	if (mem < MIN_MEMORY) {
		ds_delta_scan_free(sc);
		return ds_fail(ctx, DS_E_USAGE, "memory %llu bytes is too small "
			       "(at least 64K)", (unsigned long long)mem);
	}
	sc->window = mem / BYTES_PER_ELEM / 1024 * 1024;
	if (!(sc->k = ds_kernel_select()))
		rc = ds_fail(ctx, DS_E_USAGE, "DARE_STREAM_KERNEL names a "
			     "kernel path this machine cannot run");
	else if ((rc = ds_model_open(ctx, base, &sc->base)) == 0 &&
		 (rc = open_fds(ctx, sc->base, &sc->bfd)) == 0 &&
		 (rc = alloc_buffers(sc)) == 0)
		rc = ds_io_create(ctx, opts ? opts->io : DS_IO_AUTO, 4, -1,
				  &sc->io);
	if (rc) {
		ds_delta_scan_free(sc);
		return rc;
	}
	*out = sc;
	return 0;
}

void ds_delta_scan_info(const ds_delta_scan *sc, uint64_t *window,
			uint64_t *memory, const char **io)
{
	if (window)
		*window = sc->window;
	if (memory)
		*memory = sc->memory;
	if (io)
		*io = sc->io.ops ? sc->io.ops->name : "";
}

void ds_delta_scan_free(ds_delta_scan *sc)
{
	if (!sc)
		return;
	ds_io_destroy(&sc->io);
	if (sc->base)
		close_fds(sc->bfd, sc->base->nshards);
	ds_model_free(sc->base);
	free(sc->mem);
	free(sc->th);
	free(sc->all);
	free(sc);
}

/* ---- one model against the base ------------------------------------------ */

static bool same_shape(const struct ds_tensor *a, const struct ds_tensor *b)
{
	if (a->ndim != b->ndim)
		return false;
	for (unsigned d = 0; d < a->ndim; d++)
		if (a->shape[d] != b->shape[d])
			return false;
	return true;
}

/* What to do with base tensor bt against model m; warnings say why not. */
static enum ds_delta_skip classify(ds_ctx *ctx, const struct ds_model *m,
				   const struct ds_tensor *bt,
				   const struct ds_tensor *mt)
{
	char s1[256], s2[256];

	if (!mt) {
		ds_warn(ctx, "%s: tensor '%s' of the base is missing; not "
			"compared", m->arg, bt->name);
		return DS_DELTA_MISSING;
	}
	if (!is_floaty(bt->dtype) && !is_floaty(mt->dtype))
		return DS_DELTA_NOT_FLOAT;
	if (!is_float(bt->dtype) || !is_float(mt->dtype)) {
		ds_warn(ctx, "%s: tensor '%s' is %s, the base's %s (only F32, "
			"BF16 and F16 are compared); not compared", m->arg,
			bt->name, ds_dtype_name(mt->dtype),
			ds_dtype_name(bt->dtype));
		return DS_DELTA_DTYPE;
	}
	if (!same_shape(bt, mt)) {
		ds_warn(ctx, "%s: tensor '%s' has shape %s, the base's %s; not "
			"compared", m->arg, bt->name,
			ds_shape_str(mt->shape, mt->ndim, s1, sizeof(s1)),
			ds_shape_str(bt->shape, bt->ndim, s2, sizeof(s2)));
		return DS_DELTA_SHAPE;
	}
	return DS_DELTA_COMPARED;
}

static int make_pairs(struct run *r)
{
	const struct ds_model *b = r->sc->base;

	r->np = b->ntensors;
	r->pr = calloc(r->np ? r->np : 1, sizeof(*r->pr));
	if (!r->pr)
		return ds_fail(r->sc->ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < r->np; i++) {
		struct pair *p = &r->pr[i];

		p->b = &b->tensors[i];
		p->m = ds_model_find(r->m, p->b->name);
		p->skip = classify(r->sc->ctx, r->m, p->b, p->m);
		r->ncompared += p->skip == DS_DELTA_COMPARED;
	}
	return 0;
}

static void report_tensor(struct run *r, const struct ds_tensor *bt,
			  const struct ds_tensor *mt, enum ds_delta_skip skip,
			  const struct ds_hist *h)
{
	const struct ds_tensor *t = mt ? mt : bt;
	struct ds_delta_tensor dt = {
		.name = t->name, .skip = skip,
		.base_dtype = bt ? (int)bt->dtype : -1,
		.dtype = mt ? (int)mt->dtype : -1,
		.ndim = t->ndim, .shape = t->shape,
	};

	if (h)
		ds_hist_stats(h, &dt.s);
	if (r->fn)
		r->fn(r->user, &dt);
}

/* Report the skipped pairs before pair `upto`. */
static void report_skipped(struct run *r, size_t upto)
{
	for (; r->ep < upto; r->ep++)
		if (r->pr[r->ep].skip != DS_DELTA_COMPARED)
			report_tensor(r, r->pr[r->ep].b, r->pr[r->ep].m,
				      r->pr[r->ep].skip, NULL);
}

static void submit_read(struct run *r, struct win *w, int k,
			const struct ds_model *m, const int *fds,
			const struct ds_tensor *t)
{
	struct ds_io_req *q = &w->rd[k];
	unsigned es = ds_dtype_size(t->dtype);

	memset(q, 0, sizeof(*q));
	q->fd = fds[t->shard];
	q->buf = w->raw[k];
	q->len = w->n * es;
	q->off = m->shards[t->shard].data_off + t->begin + w->i0 * es;
	q->user = w;
	w->pending++;
	ds_io_submit(&r->sc->io, q);
}

/* Queue the next window, if any, into w: every element of every compared
 * pair in order, and one empty window for an empty tensor. */
static bool issue(struct run *r, struct win *w)
{
	const struct pair *p;

	while (r->ip < r->np && r->pr[r->ip].skip != DS_DELTA_COMPARED)
		r->ip++;
	if (r->ip >= r->np)
		return false;
	p = &r->pr[r->ip];
	w->p = r->ip;
	w->i0 = r->ii0;
	w->n = p->b->numel - r->ii0 < r->sc->window ?
	       (size_t)(p->b->numel - r->ii0) : (size_t)r->sc->window;
	w->busy = true;
	w->pending = 0;
	if (w->n) {
		submit_read(r, w, 0, r->sc->base, r->sc->bfd, p->b);
		submit_read(r, w, 1, r->m, r->mfd, p->m);
	}
	r->ii0 += w->n;
	if (r->ii0 >= p->b->numel) {
		r->ip++;
		r->ii0 = 0;
	}
	r->seq_issue++;
	return true;
}

static void read_failed(struct run *r, const struct ds_io_req *q)
{
	const struct win *w = q->user;
	const struct pair *p = &r->pr[w->p];
	bool isb = q == &w->rd[0];
	const struct ds_model *m = isb ? r->sc->base : r->m;
	const struct ds_tensor *t = isb ? p->b : p->m;

	if (r->err)
		return;
	r->err = ds_fail(r->sc->ctx, q->res, "%s: reading tensor '%s' at "
			 "offset %llu: %s", m->shards[t->shard].path, t->name,
			 (unsigned long long)q->off,
			 q->res == -EIO ? "file shorter than its header says "
			 "or I/O error" : strerror(-q->res));
}

/* Wait until window w has all its bytes (or a read failed). */
static int complete(struct run *r, struct win *w)
{
	while (w->pending) {
		struct ds_io_req *q;
		int rc = ds_io_wait(&r->sc->io, &q);

		if (rc)
			return ds_fail(r->sc->ctx, rc, "I/O engine: %s",
				       strerror(-rc));
		((struct win *)q->user)->pending--;
		if (q->res < 0)
			read_failed(r, q);
	}
	return 0;
}

/* Histogram the window's deltas; close its tensor after its last window. */
static void compute(struct run *r, struct win *w)
{
	ds_delta_scan *sc = r->sc;
	const struct pair *p = &r->pr[w->p];
	const struct ds_lora_pair *lp;
	int rc;

	if (w->i0 == 0) {
		report_skipped(r, w->p);
		ds_hist_reset(sc->th);
	}
	sc->k->load(p->b->dtype, w->raw[0], sc->fb, w->n);
	lp = ds_lora_pair_of(r->m, (size_t)(p->m - r->m->tensors));
	if (!lp)
		sc->k->load(p->m->dtype, w->raw[1], sc->fx, w->n);
	else if ((rc = ds_lora_expand(lp, p->m, sc->k, ds_lora_kernel(sc->k),
				      r->mfd[r->m->lora->shard],
				      r->m->shards[r->m->lora->shard].data_off,
				      w->raw[1], w->i0, w->n, sc->fx, &r->lb))) {
		r->err = ds_fail(sc->ctx, rc, "%s: reading the LoRA factors of "
				 "tensor '%s' failed: %s",
				 r->m->shards[r->m->lora->shard].path,
				 p->m->name, strerror(-rc));
		return;
	}
	ds_hist_add_delta(sc->th, sc->fb, sc->fx, w->n);
	if (w->i0 + w->n >= p->b->numel) {
		ds_hist_merge(sc->all, sc->th);
		report_tensor(r, p->b, p->m, DS_DELTA_COMPARED, sc->th);
		r->ep = w->p + 1;
	}
}

/*
 * Two windows in flight: while one is histogrammed the other is read.
 * After an error nothing more is issued, and what is in flight is drained
 * before the buffers can be reused or freed.
 */
static int stream(struct run *r)
{
	ds_delta_scan *sc = r->sc;
	int rc;

	for (;;) {
		struct win *w = &sc->w[r->seq_done % 2];

		while (!r->err && r->seq_issue - r->seq_done < 2 &&
		       issue(r, &sc->w[r->seq_issue % 2]))
			;
		if (!w->busy)
			return r->err;
		if ((rc = complete(r, w)))
			return rc;
		if (!r->err)
			compute(r, w);
		w->busy = false;
		r->seq_done++;
	}
}

/* The model's tensors that the base does not have, after the base's. */
static void report_extra(struct run *r)
{
	for (size_t i = 0; i < r->m->ntensors; i++) {
		const struct ds_tensor *t = &r->m->tensors[i];

		if (ds_model_find(r->sc->base, t->name))
			continue;
		ds_notice(r->sc->ctx, "%s: tensor '%s' is not in the base; not "
			  "compared", r->m->arg, t->name);
		report_tensor(r, NULL, t, DS_DELTA_EXTRA, NULL);
	}
}

/* A LoRA model's window is computed (inputs/lora.h): its buffers, once. */
static int lora_buffers(struct run *r)
{
	uint64_t n = ds_lora_bytes(&r->m, 1, r->sc->window);

	if (!n)
		return 0;
	if (!(r->lmem = aligned_alloc(64, (n + 63) & ~(uint64_t)63)))
		return ds_fail(r->sc->ctx, -ENOMEM, "cannot allocate %llu "
			       "bytes for the LoRA factors of %s",
			       (unsigned long long)n, r->m->arg);
	ds_lora_buf_init(&r->lb, &r->m, 1, r->sc->window, r->lmem);
	return 0;
}

int ds_delta_scan_run(ds_delta_scan *sc, const char *model, ds_delta_fn *fn,
		      void *user, struct ds_delta_stats *overall)
{
	struct run r = { .sc = sc, .fn = fn, .user = user };
	int rc;

	memset(overall, 0, sizeof(*overall));
	ds_hist_reset(sc->all);
	if ((rc = ds_model_open(sc->ctx, model, &r.m)) == 0 &&
	    (rc = open_fds(sc->ctx, r.m, &r.mfd)) == 0 &&
	    (rc = lora_buffers(&r)) == 0 &&
	    (rc = make_pairs(&r)) == 0 && (rc = stream(&r)) == 0) {
		report_skipped(&r, r.np);
		report_extra(&r);
		ds_hist_stats(sc->all, overall);
		if (r.ncompared == 0)
			rc = ds_fail(sc->ctx, DS_E_MISMATCH, "%s: no tensor of "
				     "the base could be compared (see the "
				     "warnings)", model);
	}
	if (r.m)
		close_fds(r.mfd, r.m->nshards);
	free(r.pr);
	free(r.lmem);
	ds_model_free(r.m);
	return rc;
}

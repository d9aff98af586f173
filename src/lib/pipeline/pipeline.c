/* SPDX-License-Identifier: MIT */
/* pipeline.c - windows in lockstep: read, merge on workers, write in order */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include "common/ctx.h"
#include "common/fault.h"
#include "io/io.h"
#include "kernels/kernels.h"
#include "pipeline/pipeline.h"

/*
 * Window slots form a ring indexed by sequence number: window seq lives in
 * slot seq % nslots.  Reads of later windows are queued while earlier ones
 * are merged; writes are issued strictly in sequence order, which is file
 * order, so each shard's checksum is fed in order without holding data.
 */
enum slot_state {
	S_FREE, S_READING, S_COMPUTING, S_COMPUTED, S_WRITING, S_WRITTEN
};

struct slot {
	enum slot_state st;
	size_t t;                       /* output tensor */
	uint64_t i0, n;                 /* elements (merge) or bytes (copy) */
	unsigned pending;               /* reads outstanding */
	int last;                       /* last window of its tensor */
	uint64_t tdigest;               /* then: XXH3-64 of the tensor */
	struct ds_mparams mp;           /* with this tensor's name hash */
	void *in[DS_MAX_INPUTS];
	void *out;
	struct ds_io_req rd[DS_MAX_INPUTS], wr, wake;
};

#define BEHIND 8

struct range {
	int fd;
	uint64_t off, len;
};

struct pipe {
	ds_ctx *ctx;
	const struct ds_plan *p;
	struct ds_out *o;
	struct ds_io io;
	const struct ds_kernel_ops *k;
	struct slot *slots;
	unsigned nslots;
	void *mem;
	float *scratch;
	size_t scratch_floats;
	int *fds;                       /* [k * maxshards + s] */
	unsigned maxshards;
	uint64_t chunk;                 /* bytes per copy window */
	size_t t;                       /* cursor: next window */
	uint64_t pos;
	uint64_t seq_issue, seq_write, seq_retire;
	struct range behind[BEHIND];    /* written windows, to drop later */
	int drop_inputs;
	XXH3_state_t *tensor_hash;      /* of the tensor being written */
	unsigned outstanding;           /* events ds_io_wait() still owes */
	int err;
	/* workers */
	pthread_t *th;
	unsigned nth;
	pthread_mutex_t lk;
	pthread_cond_t cv;
	struct ds_reqq queue;            /* wake requests of slots to merge */
	int stop;
	/* progress */
	ds_progress_fn *progress;
	void *user;
	uint64_t done;
};

/* ---- compute workers ------------------------------------------------------ */

static void merge_window(struct pipe *pp, struct slot *s, float *scratch)
{
	const struct ds_plan *p = pp->p;
	const struct ds_otensor *o = &p->ot[s->t];
	struct ds_window w = {
		.base = p->mp.uses_base ? s->in[0] : NULL,
		.bdt = o->in[0]->dtype,
		.out = s->out, .odt = o->odt, .i0 = s->i0, .n = s->n,
	};

	for (unsigned j = 0; j < p->mp.n; j++) {
		w.x[j] = s->in[1 + j];
		w.xdt[j] = o->in[1 + j]->dtype;
	}
	ds_method_window(pp->k, &s->mp, &w, scratch);
}

struct worker_arg {
	struct pipe *pp;
	float *scratch;
};

static void *worker(void *arg)
{
	struct worker_arg *wa = arg;
	struct pipe *pp = wa->pp;

	for (;;) {
		struct ds_io_req *r;

		pthread_mutex_lock(&pp->lk);
		while (!pp->queue.head && !pp->stop)
			pthread_cond_wait(&pp->cv, &pp->lk);
		r = ds_reqq_pop(&pp->queue);
		pthread_mutex_unlock(&pp->lk);
		if (!r)
			return NULL;
		merge_window(pp, r->user, wa->scratch);
		ds_io_post(&pp->io, r);     /* the slot's wake request */
	}
}

static void enqueue(struct pipe *pp, struct slot *s)
{
	s->st = S_COMPUTING;
	pp->outstanding++;
	pthread_mutex_lock(&pp->lk);
	ds_reqq_push(&pp->queue, &s->wake);
	pthread_cond_signal(&pp->cv);
	pthread_mutex_unlock(&pp->lk);
}

/* ---- windows -------------------------------------------------------------- */

/* Units of tensor t: elements when merged, bytes when copied. */
static uint64_t units(const struct pipe *pp, size_t t)
{
	const struct ds_otensor *o = &pp->p->ot[t];

	return o->act == DS_ACT_MERGE ? o->numel :
	       o->in[0]->end - o->in[0]->begin;
}

/* Take the next window from the cursor; 0 when there is none left. */
static int next_window(struct pipe *pp, size_t *t, uint64_t *i0, uint64_t *n)
{
	uint64_t step;

	while (pp->t < pp->p->not && pp->pos >= units(pp, pp->t)) {
		pp->t++;
		pp->pos = 0;
	}
	if (pp->t >= pp->p->not)
		return 0;
	step = pp->p->ot[pp->t].act == DS_ACT_MERGE ? pp->p->window : pp->chunk;
	*t = pp->t;
	*i0 = pp->pos;
	*n = units(pp, pp->t) - pp->pos < step ? units(pp, pp->t) - pp->pos
					       : step;
	pp->pos += *n;
	return 1;
}

static void read_input(struct pipe *pp, struct slot *s, unsigned k,
		       void *buf, uint64_t es)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];
	const struct ds_tensor *t = o->in[k];
	const struct ds_model *m = pp->p->in[o->src[k]];
	struct ds_io_req *r = &s->rd[k];

	r->fd = pp->fds[o->src[k] * pp->maxshards + t->shard];
	r->write = false;
	r->buf = buf;
	r->len = s->n * es;
	r->off = m->shards[t->shard].data_off + t->begin + s->i0 * es;
	r->user = s;
	s->pending++;
	pp->outstanding++;
	ds_io_submit(&pp->io, r);
}

/* Queue the reads of the next window into slot s. */
static int start_window(struct pipe *pp, struct slot *s)
{
	const struct ds_plan *p = pp->p;
	const struct ds_otensor *o;

	if (!next_window(pp, &s->t, &s->i0, &s->n))
		return 0;
	o = &p->ot[s->t];
	s->st = S_READING;
	s->pending = 0;
	pp->seq_issue++;
	if (o->act == DS_ACT_COPY) {
		read_input(pp, s, 0, s->out, 1);
		return 1;
	}
	s->mp = p->mp;
	ds_mparams_tensor(&s->mp, o->name);
	for (unsigned k = p->mp.uses_base ? 0 : 1; k < p->ninputs; k++)
		read_input(pp, s, k, s->in[k], ds_dtype_size(o->in[k]->dtype));
	return 1;
}

/* Queue the write of the next window in sequence, if it is merged. */
static int start_write(struct pipe *pp)
{
	struct slot *s = &pp->slots[pp->seq_write % pp->nslots];
	const struct ds_otensor *o;
	const struct ds_oshard *os;
	uint64_t es;

	if (pp->seq_write == pp->seq_issue || s->st != S_COMPUTED)
		return 0;
	o = &pp->p->ot[s->t];
	os = &pp->p->os[o->oshard];
	es = o->act == DS_ACT_MERGE ? ds_dtype_size(o->odt) : 1;
	s->wr = (struct ds_io_req){
		.fd = ds_out_fd(pp->o, o->oshard), .write = true,
		.buf = s->out, .len = s->n * es, .user = s,
		.off = os->hlen + o->obegin + s->i0 * es,
	};
	ds_out_hash(pp->o, o->oshard, s->out, s->wr.len);
	if (s->i0 == 0)
		XXH3_64bits_reset(pp->tensor_hash);
	XXH3_64bits_update(pp->tensor_hash, s->out, s->wr.len);
	s->last = s->i0 + s->n == units(pp, s->t);
	if (s->last)
		s->tdigest = XXH3_64bits_digest(pp->tensor_hash);
	s->st = S_WRITING;
	pp->seq_write++;
	pp->outstanding++;
	ds_io_submit(&pp->io, &s->wr);
	return 1;
}

static void io_failed(struct pipe *pp, struct slot *s, struct ds_io_req *r)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];

	if (pp->err)
		return;
	if (r == &s->wr) {
		pp->err = ds_fail(pp->ctx, r->res, "%s: write of tensor '%s' "
				  "failed: %s", ds_out_path(pp->o, o->oshard),
				  o->name, strerror(-r->res));
		return;
	}
	unsigned k = (unsigned)(r - s->rd);
	pp->err = ds_fail(pp->ctx, r->res, "%s: reading tensor '%s' at offset "
			  "%llu failed: %s",
			  pp->p->in[o->src[k]]->shards[o->in[k]->shard].path,
			  o->name, (unsigned long long)r->off,
			  r->res == -EIO ? "file shorter than its header says "
			  "or I/O error" : strerror(-r->res));
}

/* One event from the engine: a read, a write or a merge has finished. */
static void on_event(struct pipe *pp, struct ds_io_req *r)
{
	struct slot *s = r->user;

	pp->outstanding--;
	if (r != &s->wake && r->res < 0)
		io_failed(pp, s, r);
	if (r == &s->wr) {
		s->st = S_WRITTEN;
		pp->done += r->len;
		if (pp->progress && !pp->err) {
			struct ds_progress pr = {
				.tensor = pp->p->ot[s->t].name,
				.done = pp->done, .total = pp->p->bytes_written,
			};
			pp->progress(pp->user, &pr);
		}
	} else if (r == &s->wake) {
		s->st = S_COMPUTED;
	} else if (--s->pending == 0) {
		if (pp->err || pp->p->ot[s->t].act == DS_ACT_COPY)
			s->st = S_COMPUTED;
		else
			enqueue(pp, s);
	}
}

/* Free written slots in sequence order; journal each finished tensor. */
/*
 * Page cache hygiene, so that a merge larger than RAM does not flood it:
 * writeback of each written window starts at once, and a window written
 * BEHIND windows ago is dropped from the cache (by then it is clean).
 * Input pages are dropped once consumed when the inputs would not fit in
 * half the RAM anyway; a smaller merge leaves them cached for the next run.
 */
static void cache_hygiene(struct pipe *pp, struct slot *s)
{
	struct range *old = &pp->behind[pp->seq_retire % BEHIND];

	sync_file_range(s->wr.fd, (off_t)s->wr.off, (off_t)s->wr.len,
			SYNC_FILE_RANGE_WRITE);
	if (old->len)
		posix_fadvise(old->fd, (off_t)old->off, (off_t)old->len,
			      POSIX_FADV_DONTNEED);
	*old = (struct range){ s->wr.fd, s->wr.off, s->wr.len };
	for (unsigned k = 0; pp->drop_inputs && k < pp->p->ninputs; k++)
		if (s->rd[k].len)
			posix_fadvise(s->rd[k].fd, (off_t)s->rd[k].off,
				      (off_t)s->rd[k].len, POSIX_FADV_DONTNEED);
}

static void retire(struct pipe *pp)
{
	struct slot *s;

	while (pp->seq_retire < pp->seq_write &&
	       (s = &pp->slots[pp->seq_retire % pp->nslots])->st == S_WRITTEN) {
		if (s->last && !pp->err) {
			pp->err = ds_out_journal(pp->o, s->t, s->tdigest);
			ds_fault("tensor");
		}
		ds_fault("window");
		cache_hygiene(pp, s);
		memset(s->rd, 0, sizeof(s->rd));
		s->st = S_FREE;
		pp->seq_retire++;
	}
}

static int loop(struct pipe *pp)
{
	for (;;) {
		struct ds_io_req *r;
		int rc;

		while (!pp->err &&
		       pp->slots[pp->seq_issue % pp->nslots].st == S_FREE &&
		       start_window(pp, &pp->slots[pp->seq_issue % pp->nslots]))
			;
		while (!pp->err && start_write(pp))
			;
		if (pp->outstanding == 0)
			return pp->err;
		rc = ds_io_wait(&pp->io, &r);
		if (rc)         /* the engine itself failed: nothing to drain */
			return pp->err ? pp->err :
			       ds_fail(pp->ctx, rc, "I/O engine: %s",
				       strerror(-rc));
		on_event(pp, r);
		retire(pp);
	}
}

/* ---- set-up --------------------------------------------------------------- */

static int open_inputs(struct pipe *pp)
{
	const struct ds_plan *p = pp->p;

	for (unsigned k = 0; k < p->ninputs; k++)
		if (p->in[k]->nshards > pp->maxshards)
			pp->maxshards = p->in[k]->nshards;
	pp->fds = malloc(sizeof(int) * p->ninputs * pp->maxshards);
	if (!pp->fds)
		return ds_fail(pp->ctx, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < p->ninputs * pp->maxshards; i++)
		pp->fds[i] = -1;
	for (unsigned k = 0; k < p->ninputs; k++)
		for (unsigned s = 0; s < p->in[k]->nshards; s++) {
			const char *path = p->in[k]->shards[s].path;
			int fd = open(path, O_RDONLY | O_CLOEXEC);

			if (fd < 0)
				return ds_fail(pp->ctx, -errno, "%s: %s", path,
					       strerror(errno));
			pp->fds[k * pp->maxshards + s] = fd;
		}
	return 0;
}

/* Every window buffer and the workers' scratch, in one allocation. */
static int alloc_buffers(struct pipe *pp)
{
	const struct ds_plan *p = pp->p;
	uint64_t slot = ds_plan_slot_bytes(p, p->window);
	uint64_t per = slot / (p->ninputs + 1);
	size_t scratch = pp->scratch_floats * sizeof(float) * p->threads;
	char *m;

	pp->nslots = p->depth;
	pp->chunk = per;
	pp->slots = calloc(pp->nslots, sizeof(*pp->slots));
	pp->mem = aligned_alloc(4096, pp->nslots * slot + scratch);
	if (!pp->slots || !pp->mem)
		return ds_fail(pp->ctx, -ENOMEM, "cannot allocate %llu bytes "
			       "of window buffers; lower --memory",
			       (unsigned long long)(pp->nslots * slot));
	m = pp->mem;
	for (unsigned i = 0; i < pp->nslots; i++) {
		struct slot *s = &pp->slots[i];

		for (unsigned k = 0; k < p->ninputs; k++, m += per)
			s->in[k] = m;
		s->out = m;
		m += per;
		s->wake.user = s;
	}
	pp->scratch = (float *)m;
	return 0;
}

static int start_workers(struct pipe *pp, struct worker_arg *wa)
{
	pp->th = calloc(pp->p->threads, sizeof(*pp->th));
	if (!pp->th)
		return ds_fail(pp->ctx, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < pp->p->threads; i++) {
		int rc;

		wa[i].pp = pp;
		wa[i].scratch = pp->scratch + i * pp->scratch_floats;
		rc = pthread_create(&pp->th[i], NULL, worker, &wa[i]);
		if (rc)
			return ds_fail(pp->ctx, -rc, "cannot start a worker "
				       "thread: %s", strerror(rc));
		pp->nth++;
	}
	return 0;
}

static void teardown(struct pipe *pp)
{
	pthread_mutex_lock(&pp->lk);
	pp->stop = 1;
	pthread_cond_broadcast(&pp->cv);
	pthread_mutex_unlock(&pp->lk);
	for (unsigned i = 0; i < pp->nth; i++)
		pthread_join(pp->th[i], NULL);
	pthread_mutex_destroy(&pp->lk);
	pthread_cond_destroy(&pp->cv);
	for (unsigned i = 0; pp->fds && i < pp->p->ninputs * pp->maxshards; i++)
		if (pp->fds[i] >= 0)
			close(pp->fds[i]);
	ds_io_destroy(&pp->io);
	free(pp->th);
	free(pp->fds);
	free(pp->slots);
	free(pp->mem);
	XXH3_freeState(pp->tensor_hash);
}

int ds_pipeline_run(ds_ctx *ctx, const struct ds_plan *p, struct ds_out *o,
		    size_t first, enum ds_io_backend io, const char **io_name,
		    ds_progress_fn *progress, void *user)
{
	struct pipe pp = {
		.ctx = ctx, .p = p, .o = o, .progress = progress, .t = first,
		.user = user, .scratch_floats = ds_method_scratch_floats(p->mp.n),
		.tensor_hash = XXH3_createState(),
	};
	struct worker_arg wa[64];
	int rc = 0;

	pthread_mutex_init(&pp.lk, NULL);
	pthread_cond_init(&pp.cv, NULL);
	pp.k = ds_kernel_select();
	if (!pp.k)
		rc = ds_fail(ctx, DS_E_USAGE, "DARE_STREAM_KERNEL names a "
			       "kernel path this machine cannot run");
	for (unsigned s = 0; s < p->nos; s++)
		pp.done += p->os[s].hlen;
	for (size_t t = 0; t < first; t++)
		pp.done += ds_otensor_bytes(&p->ot[t]);
	if (!pp.tensor_hash)
		rc = ds_fail(ctx, -ENOMEM, "out of memory");
	pp.drop_inputs = p->bytes_read >
			 (uint64_t)sysconf(_SC_PHYS_PAGES) *
			 (uint64_t)sysconf(_SC_PAGESIZE) / 2;
	if (!rc)
		rc = ds_io_create(ctx, io, p->depth * (p->ninputs + 1), &pp.io);
	if (!rc && io_name)
		*io_name = pp.io.ops->name;
	if (!rc)
		rc = open_inputs(&pp);
	if (!rc)
		rc = alloc_buffers(&pp);
	if (!rc)
		rc = start_workers(&pp, wa);
	if (!rc)
		rc = loop(&pp);
	teardown(&pp);
	return rc;
}

/* SPDX-License-Identifier: MIT */
/* pipeline.c - windows in lockstep: read, merge on workers, write in order */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xxhash.h>
#include "common/cancel.h"
#include "common/ctx.h"
#include "common/fault.h"
#include "io/io.h"
#include "kernels/kernels.h"
#include "kernels/xxh.h"
#include "inputs/lora.h"
#include "inputs/pack.h"
#include "pipeline/pipeline.h"

/*
 * Window slots form a ring indexed by sequence number: window seq lives in
 * slot seq % nslots.  Reads of later windows are queued while earlier ones
 * are merged; writes are issued strictly in sequence order, which is file
 * order, so each shard's checksum is fed in order without holding data.
 */
enum slot_state {
	S_FREE, S_READING, S_WAITING, S_COMPUTING, S_COMPUTED, S_WRITING,
	S_WRITTEN
};

/*
 * A tensor is streamed once per pass (methods.h); a window of a reducing
 * pass ends in its slot's reduction buffer, folded in sequence order where
 * a written window would be written.  A window whose pass needs the one
 * before it finalized waits, read, in S_WAITING.  A pass that finalizing
 * an earlier one found unneeded is left where the cursor is; its windows
 * already read go through their slots untouched.
 */
struct slot {
	enum slot_state st;
	size_t t;                       /* output tensor */
	unsigned pass;                  /* of its tensor's passes */
	uint64_t i0, n;                 /* elements (merge) or bytes (copy) */
	unsigned pending;               /* reads outstanding */
	bool redo;                      /* computed again (ds_write_check) */
	int last;                       /* last window of its tensor */
	uint64_t tdigest;               /* then: its shard's XXH3-64 so far */
	struct ds_tstate *ts;           /* its tensor's state (merged ones) */
	void *red;                      /* reduction buffer */
	/* delta packs: compressed frames read, expanded into in[k], or (the
	 * merge's mask: methods.h, ds_window.keep) their mask into kbits[k]
	 * and keep[k] set, the kept values into in[k] */
	void *cbuf[DS_MAX_INPUTS];
	const void *cdata[DS_MAX_INPUTS];   /* the frames, in cbuf */
	struct ds_pack_frame *fr[DS_MAX_INPUTS];
	unsigned nfr[DS_MAX_INPUTS];
	uint64_t *kbits[DS_MAX_INPUTS];
	const uint64_t *keep[DS_MAX_INPUTS];
	int perr;                       /* a frame that did not expand */
	int lerr;                       /* a LoRA factor that did not read */
	unsigned lerr_k;
	unsigned perr_k;
	uint64_t perr_frame;
	void *in[DS_MAX_INPUTS];        /* the window of input k, in ibuf[k] */
	void *ibuf[DS_MAX_INPUTS];
	bool direct[DS_MAX_INPUTS];     /* input k read with O_DIRECT */
	void *out;                      /* the output window, in obuf */
	void *obuf;
	bool wdirect;                   /* its whole blocks written direct */
	unsigned wpending;              /* writes outstanding */
	/* wr: the window's write, or when direct its partial first and last
	 * blocks (wh, wt) and its whole blocks (wd) */
	struct ds_io_req rd[DS_MAX_INPUTS], wr, wh, wt, wd, wake;
	struct ds_io_req tail[DS_MAX_INPUTS];  /* a direct read's last bytes */
};

#define BEHIND 8

struct range {
	int fd;
	uint64_t off, len;
};

/*
 * Ranges whose pages are to leave the page cache, dropped by a thread of
 * their own: dropping costs about as much CPU as reading them from the
 * cache did, which the I/O thread must not spend.  When the queue is full
 * the I/O thread drops the range itself.
 */
#define DROPQ 256

struct dropper {
	pthread_t th;
	bool started;
	pthread_mutex_t lk;
	pthread_cond_t cv;
	struct range q[DROPQ];
	unsigned head, tail;            /* free-running */
	bool stop;
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
	int *dfds;                      /* the same opened O_DIRECT, or -1 */
	unsigned maxshards;
	uint64_t chunk;                 /* bytes per copy window */
	size_t t;                       /* cursor: next window */
	unsigned pass;
	uint64_t pos;
	struct ds_tstate *cur;          /* the cursor tensor's state, or NULL */
	bool begun;                     /* cursor tensor started */
	struct ds_tstate *ts;           /* ring of nts tensor states */
	unsigned nts;
	void *acc;                      /* the method's accumulators */
	uint64_t packs;                 /* bit k-1: input k reads a pack */
	uint64_t loras;                 /* bit k-1: input k is BASE+ADAPTER */
	ds_lora_row_fn *lrow;
	ds_lora_pick_fn *lpick;
	uint64_t lora_bytes;            /* of each worker's ds_lora_bufs */
	XXH3_state_t *base_hash;        /* of the base tensor, when packs */
	uint64_t seq_issue, seq_write, seq_retire;
	struct range behind[BEHIND];    /* written windows, to drop later */
	struct dropper drop;
	struct range orun;              /* the output's pages dropped, in a row */
	struct range inrun[DS_MAX_INPUTS];   /* each input's */
	unsigned char *keep;            /* [t * DS_MAX_INPUTS + k]: the pages
					 * of input k of output tensor t stay */
	unsigned outstanding;           /* events ds_io_wait() still owes */
	int err;
	const struct ds_cancel *cancel; /* checked at every event */
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

struct worker_arg {
	struct pipe *pp;
	float *scratch;
	ZSTD_DCtx *dc;                  /* for packs */
	void *vals;
	void *lmem;                     /* for LoRA models */
	struct ds_lora_buf lb[DS_MAX_INPUTS];  /* per adapted model */
};

/* The LoRA pair of input k of output tensor o, or NULL. */
static const struct ds_lora_pair *lora_at(const struct pipe *pp,
					  const struct ds_otensor *o,
					  unsigned k)
{
	const struct ds_model *m = pp->p->in[o->src[k]];

	if (!m->lora || !o->in[k])
		return NULL;
	return ds_lora_pair_of(m, (size_t)(o->in[k] - m->tensors));
}

/* Where input k's raw window is read: its end aligned with the end of the
 * n floats that the LoRA update writes over it (ds_lora_expand). */
static void *lora_raw(const struct slot *s, unsigned k, enum ds_dtype dt)
{
	return (char *)s->in[k] + s->n * (4 - ds_dtype_size(dt));
}

/* Whether LoRA input k of slot s takes its W from the base's window
 * (ds_plan_lora_on_base), which this window reads. */
static bool lora_on_base(const struct pipe *pp, const struct slot *s,
			 unsigned k)
{
	return (s->ts->mp.uses_base || pp->packs) &&
	       ds_plan_lora_on_base(pp->p, &pp->p->ot[s->t], k);
}

/* The window of slot s as the methods see it. */
static void window_of(const struct pipe *pp, const struct slot *s,
		      struct ds_window *w)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];

	*w = (struct ds_window){
		.base = s->ts->mp.uses_base ? s->in[0] : NULL,
		.bdt = o->in[0]->dtype,
		.out = s->out, .odt = o->odt, .i0 = s->i0, .n = s->n,
	};
	for (unsigned j = 0; j < o->nsrc; j++) {
		w->x[j] = s->in[1 + j];
		w->xdt[j] = lora_at(pp, o, 1 + j) ? DS_DT_F32 :
			    o->in[1 + j]->dtype;
		w->keep[j] = s->keep[1 + j];
	}
}

static bool writing(const struct slot *s)
{
	return !s->ts || s->ts->pass[s->pass] == DS_PASS_WRITE;
}

/*
 * Whether pack input k can come to the merge as its mask and kept values
 * (methods.h, ds_window.keep): its mask is the one the merge draws for
 * it, the method is dare_linear or dare_ties in one pass (with l1 rescale
 * a pass reads whole windows first), and the window holds whole frames,
 * as every window of a method that is not row by row does.
 */
static bool as_kept(const struct pipe *pp, const struct slot *s, unsigned k)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];
	const struct ds_model *m = pp->p->in[o->src[k]];
	const struct ds_mparams *mp = &s->ts->mp;
	unsigned j = k - 1;

	return s->kbits[k] && mp->dare && s->ts->npass == 1 && writing(s) &&
	       j < mp->n && s->i0 % DS_PACK_FRAME == 0 &&
	       ds_pack_mask_is(m->pack, (size_t)(o->in[k] - m->tensors),
			       mp->name_hash, mp->seed, mp->sj[j], mp->thr[j]);
}

/* Rebuild each pack input's window from its frames and the base's, or
 * hand the merge its mask and kept values when it draws the same mask. */
static int expand_packs(struct pipe *pp, struct slot *s,
			const struct worker_arg *wa)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];

	for (unsigned k = 1; k <= o->nsrc; k++) {
		const struct ds_model *m = pp->p->in[o->src[k]];
		const struct ds_tensor *t = o->in[k];
		size_t ti = (size_t)(t - m->tensors);
		int rc;

		s->keep[k] = NULL;
		if (!m->pack)
			continue;
		if (as_kept(pp, s, k)) {
			rc = ds_pack_kept(wa->dc, pp->k, m->pack, ti, t->dtype,
					  s->cdata[k], s->fr[k], s->nfr[k], s->i0,
					  s->in[k], s->kbits[k], &s->perr_frame);
			s->keep[k] = s->kbits[k];
		} else {
			rc = ds_pack_expand(wa->dc, pp->k, m->pack, ti,
					    m->pack->pt[ti].name_hash, t->dtype,
					    s->cdata[k], s->fr[k], s->nfr[k],
					    s->i0, s->n, s->in[0],
					    o->in[0]->dtype, s->in[k], wa->vals,
					    &s->perr_frame);
		}
		if (rc) {
			s->perr_k = k;
			return rc;
		}
	}
	return 0;
}

/*
 * Whether LoRA input k can come to the merge as its mask and kept values
 * (methods.h, ds_window.keep), as a pack's does: the method is
 * dare_linear or dare_ties in one pass and drops at least half of the
 * model (below that, expanding every element costs no more than the
 * scattered ones).  The mask is the merge's own, drawn here.
 */
static bool lora_as_kept(const struct slot *s, unsigned k,
			 struct ds_lora_mask *mk)
{
	const struct ds_mparams *mp = &s->ts->mp;
	unsigned j = k - 1;

	if (!s->kbits[k] || !mp->dare || s->ts->npass != 1 || !writing(s) ||
	    j >= mp->n || !ds_dare_sparse(mp->thr[j]))
		return false;
	*mk = (struct ds_lora_mask){ mp->seed, mp->sj[j], mp->name_hash,
				     (uint32_t)mp->thr[j] };
	return true;
}

/* Apply each LoRA model's adapter to its window, into binary32: every
 * element, or only those the merge's mask keeps. */
static int expand_loras(struct pipe *pp, struct slot *s,
			struct worker_arg *wa)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];

	for (unsigned k = 1; k <= o->nsrc; k++) {
		const struct ds_lora_pair *lp = lora_at(pp, o, k);
		const struct ds_model *m = pp->p->in[o->src[k]];
		struct ds_lora_mask mk;
		const void *wraw;
		int fd, rc;

		if (pp->loras >> (k - 1) & 1)
			s->keep[k] = NULL;
		if (!lp)
			continue;
		fd = pp->fds[o->src[k] * pp->maxshards + m->lora->shard];
		wraw = lora_on_base(pp, s, k) ? s->in[0] :
		       lora_raw(s, k, o->in[k]->dtype);
		if (lora_as_kept(s, k, &mk)) {
			rc = ds_lora_kept(lp, o->in[k], pp->k, pp->lpick, fd,
					  m->shards[m->lora->shard].data_off,
					  wraw, s->i0, s->n, &mk, s->in[k],
					  s->kbits[k], &wa->lb[o->src[k]]);
			s->keep[k] = s->kbits[k];
		} else {
			rc = ds_lora_expand(lp, o->in[k], pp->k, pp->lrow, fd,
					    m->shards[m->lora->shard].data_off,
					    wraw, s->i0, s->n, s->in[k],
					    &wa->lb[o->src[k]]);
		}
		if (rc) {
			s->lerr_k = k;
			return rc;
		}
	}
	return 0;
}

static void merge_window(struct pipe *pp, struct slot *s,
			 struct worker_arg *wa)
{
	float *scratch = wa->scratch;
	struct ds_window w;

	/* a window computed again finds its inputs expanded already */
	if (pp->packs && !s->redo && (s->perr = expand_packs(pp, s, wa)))
		return;
	if (pp->loras && !s->redo && (s->lerr = expand_loras(pp, s, wa)))
		return;
	window_of(pp, s, &w);
	if (writing(s))
		ds_pass_write(pp->k, s->ts, &w, scratch, pp->acc, s->red);
	else
		ds_pass_reduce(pp->k, s->ts, s->pass, &w, s->red, scratch);
}

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
		merge_window(pp, r->user, wa);
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

/*
 * Queue a read window of a merged tensor to be computed; a window of the
 * writing pass first gets what it may assume of the windows before it.
 */
static void compute(struct pipe *pp, struct slot *s)
{
	if (writing(s)) {
		struct ds_window w;

		window_of(pp, s, &w);
		ds_write_begin(s->ts, &w, s->red);
	}
	enqueue(pp, s);
}

/* ---- windows -------------------------------------------------------------- */

/* Units of tensor t: elements when merged, bytes when copied. */
static uint64_t units(const struct pipe *pp, size_t t)
{
	const struct ds_otensor *o = &pp->p->ot[t];

	return o->act == DS_ACT_MERGE ? o->numel :
	       o->in[0]->end - o->in[0]->begin;
}

/*
 * Start the cursor's tensor: its parameters (checked by the plan already)
 * and its passes, in the next state of the ring.  The ring has a state more
 * than there are slots, so no window in flight still reads the one reused.
 */
static int begin_tensor(struct pipe *pp)
{
	const struct ds_plan *p = pp->p;
	const struct ds_otensor *o = &p->ot[pp->t];
	struct ds_tparams tp;
	struct ds_mparams mp;
	int rc;

	pp->cur = NULL;
	if (o->act != DS_ACT_MERGE)
		return 0;
	pp->cur = &pp->ts[pp->t % pp->nts];
	if ((rc = ds_plan_tparams(p, pp->t, &tp)) ||
	    (rc = ds_mparams_from(pp->ctx, &mp, p->r->method, &tp)))
		return rc;
	ds_mparams_tensor(&mp, o->name);
	return ds_tensor_begin(pp->ctx, pp->cur, &mp, o->in[0]->shape,
			       o->in[0]->ndim, o->numel, p->window, p->maxrow);
}

/* Elements (or bytes) per window of the cursor's tensor. */
static uint64_t step_of(const struct pipe *pp)
{
	const struct ds_tstate *ts = pp->cur;

	if (pp->p->ot[pp->t].act != DS_ACT_MERGE)
		return pp->chunk;
	if (!ts->copy0 && ds_method_rows(&ts->mp))
		return pp->p->window / ts->rowlen * ts->rowlen;
	return pp->p->window;
}

/* Take the next window from the cursor; 0 when there is none left. */
static int next_window(struct pipe *pp, struct slot *s)
{
	uint64_t step, left;
	int rc;

	for (;;) {
		if (pp->t >= pp->p->not)
			return 0;
		if (!pp->begun) {
			if ((rc = begin_tensor(pp))) {
				pp->err = rc;
				return 0;
			}
			pp->begun = true;
		}
		if (pp->pos < units(pp, pp->t) &&
		    !(pp->cur && ds_pass_skipped(pp->cur, pp->pass)))
			break;
		if (pp->cur && pp->pass + 1 < pp->cur->npass) {
			pp->pass++;
		} else {
			pp->t++;
			pp->pass = 0;
			pp->begun = false;
		}
		pp->pos = 0;
	}
	step = step_of(pp);
	left = units(pp, pp->t) - pp->pos;
	s->t = pp->t;
	s->pass = pp->pass;
	s->ts = pp->cur;
	s->i0 = pp->pos;
	s->n = left < step ? left : step;
	pp->pos += s->n;
	return 1;
}

/*
 * Direct reads.  A merged tensor's window of a model that is read once,
 * single pass, from a file that was not cached (pp->keep), is read with
 * O_DIRECT: the disk's DMA fills the window buffer itself, where a
 * buffered read has the kernel find a page for every 4 KiB, copy it out on
 * the I/O thread and the dropper drop it afterwards; for a cold merge that
 * was most of the CPU time not spent merging.  The read covers the
 * window's bytes widened to DS_DIO_ALIGN at both ends (the buffers have
 * that slack); the window starts at its offset within.  Where widening
 * would pass the end of the file, the last partial block comes through
 * the buffered descriptor as a request of its own (tail).  A window that
 * lies inside the file's last block, and one whose bytes are not aligned
 * to their element size (so that the window is as aligned in memory as its
 * elements need), is read buffered.
 */
/*
 * Submit r as a direct read into buf (DS_DIO_ALIGN-aligned, with that
 * slack at both ends) from dfd, a file of fsize bytes; false (nothing
 * submitted) when it lies inside the file's last block.  *data: where r's
 * bytes begin in buf.
 */
static bool submit_direct(struct pipe *pp, struct slot *s, unsigned k,
			  struct ds_io_req *r, int dfd, uint64_t fsize,
			  void *buf, const void **data)
{
	uint64_t a = DS_DIO_ALIGN, end = r->off + r->len;
	uint64_t lo = r->off & ~(a - 1), hi = (end + a - 1) & ~(a - 1);

	if (hi > fsize)
		hi = end & ~(a - 1);
	if (hi <= lo)
		return false;
	*data = (char *)buf + (r->off - lo);
	s->direct[k] = true;
	if (hi < end) {
		struct ds_io_req *tl = &s->tail[k];

		*tl = (struct ds_io_req){
			.fd = r->fd, .buf = (char *)buf + (hi - lo),
			.len = end - hi, .off = hi, .user = s,
		};
		s->pending++;
		pp->outstanding++;
		ds_io_submit(&pp->io, tl);
	}
	r->fd = dfd;
	r->buf = buf;
	r->off = lo;
	r->len = hi - lo;
	s->pending++;
	pp->outstanding++;
	ds_io_submit(&pp->io, r);
	return true;
}

/* Whether input k of slot s may be read direct from dfd. */
static bool may_read_direct(const struct pipe *pp, const struct slot *s,
			    unsigned k, int dfd)
{
	return dfd >= 0 && s->ts && s->ts->npass == 1 &&
	       !pp->keep[s->t * DS_MAX_INPUTS + k];
}

/* A window of a merged tensor of a safetensors model, read direct. */
static bool read_direct(struct pipe *pp, struct slot *s, unsigned k,
			struct ds_io_req *r)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];
	const struct ds_tensor *t = o->in[k];
	const struct ds_model *m = pp->p->in[o->src[k]];
	int dfd = pp->dfds[o->src[k] * pp->maxshards + t->shard];
	const void *data;

	if (m->pack || !may_read_direct(pp, s, k, dfd) ||
	    lora_at(pp, o, k) ||
	    r->off % ds_dtype_size(t->dtype) ||
	    !submit_direct(pp, s, k, r, dfd, m->shards[t->shard].size,
			   s->ibuf[k], &data))
		return false;
	s->in[k] = (void *)data;
	return true;
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
	if (o->act == DS_ACT_MERGE && read_direct(pp, s, k, r))
		return;
	if (lora_at(pp, o, k))
		r->buf = lora_raw(s, k, t->dtype);
	if (m->pack) {
		/* the window's frames, expanded by the worker */
		int dfd, rc = ds_pack_window(r->fd, m->pack, (size_t)(t - m->tensors),
					s->i0, s->n, &r->off, &r->len,
					s->fr[k], &s->nfr[k]);

		r->buf = s->cbuf[k];
		s->cdata[k] = s->cbuf[k];
		if (rc) {
			pp->err = ds_fail(pp->ctx, rc == DS_E_FORMAT ? rc : rc,
					  "%s: tensor '%s': damaged seek table",
					  m->shards[0].path, t->name);
			return;
		}
		dfd = pp->dfds[o->src[k] * pp->maxshards];
		if (r->len && may_read_direct(pp, s, k, dfd) &&
		    submit_direct(pp, s, k, r, dfd, m->shards[0].size,
				  s->cbuf[k], &s->cdata[k]))
			return;
	}
	s->pending++;
	pp->outstanding++;
	ds_io_submit(&pp->io, r);
}

/* Where window s goes in its shard. */
static uint64_t out_offset(const struct pipe *pp, const struct slot *s)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];

	return pp->p->os[o->oshard].hlen + o->obegin + s->i0 *
	       (o->act == DS_ACT_MERGE ? ds_dtype_size(o->odt) : 1);
}

/*
 * Direct writes.  The output window lies in its buffer at its offset in the
 * file modulo DS_DIO_ALIGN, so that its whole blocks can go with O_DIRECT
 * from where they are: the page cache neither takes a copy of them nor
 * writes them back, and nothing is dropped afterwards.  The partial blocks
 * at its two ends go buffered (the neighbouring window, or the header,
 * writes the rest of each), and are written back and dropped as before.
 * A window whose offset is not a multiple of its element size stays at the
 * start of its buffer and is written buffered whole.
 */
static void place_output(const struct pipe *pp, struct slot *s)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];
	uint64_t off = out_offset(pp, s);

	s->wdirect = ds_out_dfd(pp->o, o->oshard) >= 0 &&
		     (o->act != DS_ACT_MERGE ||
		      off % ds_dtype_size(o->odt) == 0);
	s->out = (char *)s->obuf + (s->wdirect ? off % DS_DIO_ALIGN : 0);
}

static void put_write(struct pipe *pp, struct slot *s, struct ds_io_req *w)
{
	s->wpending++;
	pp->outstanding++;
	ds_io_submit(&pp->io, w);
}

/* Submit the write of window s, which s->wr describes whole. */
static void submit_write(struct pipe *pp, struct slot *s, int dfd)
{
	const struct ds_io_req *w = &s->wr;
	uint64_t a = DS_DIO_ALIGN, end = w->off + w->len;
	uint64_t lo = (w->off + a - 1) & ~(uint64_t)(a - 1);
	uint64_t hi = end & ~(uint64_t)(a - 1);

	s->wpending = 0;
	if (!s->wdirect || hi <= lo) {
		put_write(pp, s, &s->wr);
		return;
	}
	if (lo > w->off) {
		s->wh = (struct ds_io_req){
			.fd = w->fd, .write = true, .buf = w->buf,
			.len = lo - w->off, .off = w->off, .user = s,
		};
		put_write(pp, s, &s->wh);
	}
	if (end > hi) {
		s->wt = (struct ds_io_req){
			.fd = w->fd, .write = true,
			.buf = (char *)w->buf + (hi - w->off),
			.len = end - hi, .off = hi, .user = s,
		};
		put_write(pp, s, &s->wt);
	}
	s->wd = (struct ds_io_req){
		.fd = dfd, .write = true, .buf = (char *)w->buf + (lo - w->off),
		.len = hi - lo, .off = lo, .user = s,
	};
	put_write(pp, s, &s->wd);
}

/* Queue the reads of the next window into slot s. */
static int start_window(struct pipe *pp, struct slot *s)
{
	const struct ds_plan *p = pp->p;
	const struct ds_otensor *o;

	if (!next_window(pp, s))
		return 0;
	o = &p->ot[s->t];
	s->st = S_READING;
	s->pending = 0;
	s->redo = false;
	memset(s->direct, 0, sizeof(s->direct));
	memcpy(s->in, s->ibuf, sizeof(s->in));
	place_output(pp, s);
	pp->seq_issue++;
	if (o->act == DS_ACT_COPY) {
		read_input(pp, s, 0, s->out, 1);
		return 1;
	}
	for (unsigned k = s->ts->mp.uses_base || pp->packs ? 0 : 1;
	     k <= o->nsrc; k++)
		if (!lora_on_base(pp, s, k))
			read_input(pp, s, k, s->in[k],
				   ds_dtype_size(o->in[k]->dtype));
	return 1;
}

static void pack_failed(struct pipe *pp, struct slot *s)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];

	pp->err = ds_fail(pp->ctx, DS_E_FORMAT, "%s: tensor '%s', frame %llu "
			  "is damaged: it does not decompress to the values "
			  "its mask keeps, or its digest differs",
			  pp->p->in[o->src[s->perr_k]]->shards[0].path,
			  o->in[s->perr_k]->name,
			  (unsigned long long)s->perr_frame);
}

static void lora_failed(struct pipe *pp, struct slot *s)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];
	const struct ds_model *m = pp->p->in[o->src[s->lerr_k]];

	pp->err = ds_fail(pp->ctx, s->lerr, "%s: reading the LoRA factors of "
			  "tensor '%s' failed: %s",
			  m->shards[m->lora->shard].path, o->in[s->lerr_k]->name,
			  s->lerr == -EIO ? "the file is shorter than its "
			  "header says (truncated?)" : strerror(-s->lerr));
}

/*
 * A pack records the digest of the base tensor it was made from; the
 * base's bytes are hashed as they pass, in order, and compared at the
 * tensor's end, before it is journaled or anything gets a final name.
 */
static void check_base(struct pipe *pp, struct slot *s)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];
	uint64_t d;

	if (s->i0 == 0)
		XXH3_64bits_reset(pp->base_hash);
	ds_xxh3_64_update(pp->base_hash, s->in[0],
			  s->n * ds_dtype_size(o->in[0]->dtype));
	if (s->i0 + s->n != units(pp, s->t))
		return;
	d = XXH3_64bits_digest(pp->base_hash);
	for (unsigned k = 1; k <= o->nsrc && !pp->err; k++) {
		const struct ds_model *m = pp->p->in[o->src[k]];
		const struct ds_pack_tensor *pt;

		if (!m->pack)
			continue;
		pt = &m->pack->pt[o->in[k] - m->tensors];
		if (pt->base_xxh3 != d)
			pp->err = ds_fail(pp->ctx, DS_E_MISMATCH, "%s: made from "
					  "another base: tensor '%s' of %s has "
					  "XXH3-64 %016llx, the pack expects "
					  "%016llx", m->shards[0].path, o->name,
					  pp->p->in[0]->arg,
					  (unsigned long long)d,
					  (unsigned long long)pt->base_xxh3);
	}
}

/* Compute every waiting window of ts whose pass is now ready. */
static void wake_waiting(struct pipe *pp, const struct ds_tstate *ts)
{
	for (unsigned i = 0; i < pp->nslots; i++) {
		struct slot *w = &pp->slots[i];

		if (w->st != S_WAITING || w->ts != ts || w->pass > ts->ready)
			continue;
		if (ds_pass_skipped(ts, w->pass))
			w->st = S_COMPUTED;
		else
			compute(pp, w);
	}
}

/*
 * A reducing window, in sequence order: fold its share into the tensor's
 * state; after the pass's last window, finalize it and release the
 * windows of the next pass.
 */
static void fold(struct pipe *pp, struct slot *s)
{
	struct ds_tstate *ts = s->ts;
	/* a window read before its pass was found unneeded: nothing to do */
	bool skipped = ds_pass_skipped(ts, s->pass);
	struct ds_window w;

	window_of(pp, s, &w);
	if (!skipped && !pp->err)
		ds_pass_fold(pp->k, ts, s->pass, &w, s->red, pp->acc);
	if (!skipped && s->i0 + s->n == units(pp, s->t)) {
		if (!pp->err)
			ds_pass_finalize(ts, s->pass, pp->acc);
		ts->ready = ds_pass_ready(ts, s->pass);
		wake_waiting(pp, ts);
	}
	s->wr.len = 0;
	s->last = 0;
	s->st = S_WRITTEN;
	pp->seq_write++;
}

/* Queue the write of the next window in sequence, if it is merged. */
static int start_write(struct pipe *pp)
{
	struct slot *s = &pp->slots[pp->seq_write % pp->nslots];
	const struct ds_otensor *o;
	uint64_t es;

	if (pp->seq_write == pp->seq_issue || s->st != S_COMPUTED)
		return 0;
	if (!writing(s)) {
		fold(pp, s);
		return 1;
	}
	o = &pp->p->ot[s->t];
	/* In window order, the writing pass's guesses are checked (select.c);
	 * a window that guessed wrong is computed again first. */
	if (o->act == DS_ACT_MERGE && !pp->err) {
		struct ds_window w;

		window_of(pp, s, &w);
		if (ds_write_check(s->ts, &w, s->red)) {
			s->redo = true;
			enqueue(pp, s);
			return 0;
		}
	}
	if (pp->packs && o->act == DS_ACT_MERGE)
		check_base(pp, s);
	es = o->act == DS_ACT_MERGE ? ds_dtype_size(o->odt) : 1;
	s->wr = (struct ds_io_req){
		.fd = ds_out_fd(pp->o, o->oshard), .write = true,
		.buf = s->out, .len = s->n * es, .user = s,
		.off = out_offset(pp, s),
	};
	ds_out_hash(pp->o, o->oshard, s->out, s->wr.len);
	s->last = s->i0 + s->n == units(pp, s->t);
	if (s->last)
		s->tdigest = ds_out_digest(pp->o, o->oshard);
	s->st = S_WRITING;
	pp->seq_write++;
	submit_write(pp, s, ds_out_dfd(pp->o, o->oshard));
	return 1;
}

static void io_failed(struct pipe *pp, struct slot *s, struct ds_io_req *r)
{
	const struct ds_otensor *o = &pp->p->ot[s->t];

	if (pp->err)
		return;
	if (r->write) {
		pp->err = ds_fail(pp->ctx, r->res, "%s: write of tensor '%s' "
				  "failed: %s", ds_out_path(pp->o, o->oshard),
				  o->name, strerror(-r->res));
		return;
	}
	unsigned k = (unsigned)(r >= s->tail && r < s->tail + DS_MAX_INPUTS ?
				r - s->tail : r - s->rd);
	pp->err = ds_fail(pp->ctx, r->res, "%s: reading tensor '%s' at offset "
			  "%llu failed: %s",
			  pp->p->in[o->src[k]]->shards[o->in[k]->shard].path,
			  o->name, (unsigned long long)r->off,
			  r->res == -ENODATA ? "the file is shorter than its "
			  "header says (truncated?)" : strerror(-r->res));
}

/* One event from the engine: a read, a write or a merge has finished. */
static void on_event(struct pipe *pp, struct ds_io_req *r)
{
	struct slot *s = r->user;

	pp->outstanding--;
	if (r != &s->wake && r->res < 0)
		io_failed(pp, s, r);
	if (r->write) {
		pp->done += r->len;
		if (--s->wpending)
			return;
		s->st = S_WRITTEN;
		if (pp->progress && !pp->err) {
			struct ds_progress pr = {
				.tensor = pp->p->ot[s->t].name,
				.done = pp->done, .total = pp->p->bytes_written,
			};
			pp->progress(pp->user, &pr);
		}
	} else if (r == &s->wake) {
		s->st = S_COMPUTED;
		if (s->perr && !pp->err)
			pack_failed(pp, s);
		if (s->lerr && !pp->err)
			lora_failed(pp, s);
	} else if (--s->pending == 0) {
		if (pp->err || pp->p->ot[s->t].act == DS_ACT_COPY)
			s->st = S_COMPUTED;
		else if (s->ts->ready < s->pass)
			s->st = S_WAITING;
		else if (ds_pass_skipped(s->ts, s->pass))
			s->st = S_COMPUTED;
		else
			compute(pp, s);
	}
}

static void *dropper_main(void *arg)
{
	struct dropper *d = arg;

	pthread_mutex_lock(&d->lk);
	for (;;) {
		struct range r;

		while (d->head == d->tail && !d->stop)
			pthread_cond_wait(&d->cv, &d->lk);
		if (d->head == d->tail)
			break;
		r = d->q[d->head++ % DROPQ];
		pthread_mutex_unlock(&d->lk);
		posix_fadvise(r.fd, (off_t)r.off, (off_t)r.len,
			      POSIX_FADV_DONTNEED);
		pthread_mutex_lock(&d->lk);
	}
	pthread_mutex_unlock(&d->lk);
	return NULL;
}

static void drop_range(struct pipe *pp, int fd, uint64_t off, uint64_t len)
{
	struct dropper *d = &pp->drop;
	bool queued = false;

	if (d->started) {
		pthread_mutex_lock(&d->lk);
		if (d->tail - d->head < DROPQ) {
			d->q[d->tail++ % DROPQ] = (struct range){ fd, off, len };
			pthread_cond_signal(&d->cv);
			queued = true;
		}
		pthread_mutex_unlock(&d->lk);
	}
	if (!queued)
		posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
}

/*
 * Drop a range that follows run, the ranges dropped before in a row in the
 * same file, from up to 2 MiB before it: a large folio of the page cache
 * (up to 2 MiB where the pages are 4 KiB) goes only once it lies wholly in
 * a range dropped, and the one across the boundary of two windows lies in
 * neither.
 */
#define FOLIO_MAX ((uint64_t)2 << 20)

static void drop_run(struct pipe *pp, struct range *run, int fd, uint64_t off,
		     uint64_t len)
{
	uint64_t back = 0;

	if (run->len && run->fd == fd && run->off + run->len == off) {
		back = off - run->off < FOLIO_MAX ? off - run->off : FOLIO_MAX;
		run->len += len;
	} else {
		*run = (struct range){ fd, off, len };
	}
	drop_range(pp, fd, off - back, len + back);
}

/*
 * Page cache hygiene: the merge leaves the cache as it found it.  Writeback
 * of each written window starts at once, and a window written BEHIND
 * windows ago is dropped from the cache (by then it is clean).  Input pages
 * are dropped once their window is written (every pass has read them),
 * unless a later output tensor reads the same bytes (a slice repeats a
 * layer) or their file was mostly cached before the merge (pp->keep).
 * Pages just freed are what the next reads are given: a merge that kept
 * its inputs cached made the kernel find fresh pages for every read, which
 * costs far more system time than the reads themselves where the RAM is a
 * virtual machine's.
 */
static void cache_hygiene(struct pipe *pp, struct slot *s)
{
	struct range *old = &pp->behind[pp->seq_retire % BEHIND];

	if (!s->wr.len)
		return;                 /* a reducing pass: its pages are kept */
	sync_file_range(s->wr.fd, (off_t)s->wr.off, (off_t)s->wr.len,
			SYNC_FILE_RANGE_WRITE);
	if (old->len)
		drop_run(pp, &pp->orun, old->fd, old->off, old->len);
	*old = (struct range){ s->wr.fd, s->wr.off, s->wr.len };
	for (unsigned k = 0; k < pp->p->ninputs; k++)
		if (s->rd[k].len && !s->direct[k] &&
		    !pp->keep[s->t * DS_MAX_INPUTS + k])
			drop_run(pp, &pp->inrun[k], s->rd[k].fd,
				 s->rd[k].off, s->rd[k].len);
}

/* Free written slots in sequence order; journal each finished tensor. */
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

/*
 * Issue what can be issued, write (or fold) what is next in order, free
 * what is done, until nothing moves: a folded window frees its slot
 * without any event, so the loop must not wait while that can go on.
 */
static void advance(struct pipe *pp)
{
	bool moved;

	do {
		uint64_t retired = pp->seq_retire;

		moved = false;
		while (!pp->err &&
		       pp->slots[pp->seq_issue % pp->nslots].st == S_FREE &&
		       start_window(pp, &pp->slots[pp->seq_issue % pp->nslots]))
			moved = true;
		while (!pp->err && start_write(pp))
			moved = true;
		retire(pp);
		moved |= pp->seq_retire != retired;
	} while (moved && !pp->err);
}

static int loop(struct pipe *pp)
{
	for (;;) {
		struct ds_io_req *r;
		int rc;

		/* Stop issuing at once; what is in flight still drains, as
		 * after an error, before the buffers go. */
		if (!pp->err && ds_canceled(pp->cancel))
			pp->err = ds_fail(pp->ctx, DS_E_CANCELED, "interrupted");
		advance(pp);
		if (pp->outstanding == 0 && !pp->err &&
		    (pp->seq_retire != pp->seq_issue || pp->t < pp->p->not))
			return ds_fail(pp->ctx, -EIO, "internal error: the window "
				       "loop stopped with windows left (%llu of "
				       "%llu done, tensor %zu of %zu)",
				       (unsigned long long)pp->seq_retire,
				       (unsigned long long)pp->seq_issue,
				       pp->t, pp->p->not);
		if (pp->outstanding == 0)
			return pp->err;
		rc = ds_io_wait(&pp->io, &r);
		if (rc == -ECANCELED)   /* woken: the flag is checked above */
			continue;
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
	pp->dfds = malloc(sizeof(int) * p->ninputs * pp->maxshards);
	if (!pp->fds || !pp->dfds)
		return ds_fail(pp->ctx, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < p->ninputs * pp->maxshards; i++)
		pp->fds[i] = pp->dfds[i] = -1;
	for (unsigned k = 0; k < p->ninputs; k++)
		for (unsigned s = 0; s < p->in[k]->nshards; s++) {
			const char *path = p->in[k]->shards[s].path;
			int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

			if (fd < 0)
				return ds_fail(pp->ctx, -errno, "%s: %s", path,
					       strerror(errno));
			pp->fds[k * pp->maxshards + s] = fd;
			/* LoRA models read their factors their own way */
			if (!p->in[k]->lora)
				rc = ds_open_direct(path, O_RDONLY, &pp->dfds[k *
						    pp->maxshards + s]);
			if (rc)
				return ds_fail(pp->ctx, rc, "%s: %s", path,
					       strerror(-rc));
		}
	return 0;
}

/*
 * Every window buffer and the workers' scratch, in one allocation, in huge
 * pages where the kernel has them: a direct read's request is as long as
 * the pages of its buffer allow (a segment per page, a few hundred
 * segments), 1 MiB in pages of 4 KiB, where the disk serves 4 MiB
 * requests best.
 */
#define HUGE_PAGE ((size_t)2 << 20)

/* n rounded up to a multiple of DS_DIO_ALIGN */
static uint64_t dio_round(uint64_t n)
{
	return (n + DS_DIO_ALIGN - 1) & ~(uint64_t)(DS_DIO_ALIGN - 1);
}

static int alloc_buffers(struct pipe *pp)
{
	const struct ds_plan *p = pp->p;
	uint64_t slot = ds_plan_slot_bytes(p, p->window);
	uint64_t per = slot / (p->ninputs + 1);
	/* an input's buffer: a direct read's slack at both ends */
	uint64_t iper = dio_round(per + 2 * DS_DIO_ALIGN);
	size_t scratch = pp->scratch_floats * sizeof(float) * p->threads;
	size_t red = dio_round(p->needs.red_bytes);
	size_t acc = (p->needs.acc_bytes + 63) & ~(size_t)63;
	size_t total, cbytes, frb, kb, oper, stride;
	char *m;

	pp->nslots = p->depth;
	pp->lora_bytes = ds_lora_bytes(p->in, p->ninputs, p->window);
	pp->chunk = per;
	pp->nts = pp->nslots + 1;
	for (unsigned k = 1; k < p->ninputs; k++) {
		if (p->in[k]->pack)
			pp->packs |= 1ull << (k - 1);
		if (p->in[k]->lora)
			pp->loras |= 1ull << (k - 1);
	}
	cbytes = dio_round(ds_pack_window_bound(p->window, DS_DT_F32) +
			   2 * DS_DIO_ALIGN);
	frb = dio_round((p->window / DS_PACK_FRAME + 3) *
			sizeof(struct ds_pack_frame));
	kb = dio_round((p->window / 64 + 1) * sizeof(uint64_t));
	oper = dio_round(per + DS_DIO_ALIGN);
	stride = dio_round(iper * p->ninputs + oper + red +
			   (size_t)__builtin_popcountll(pp->packs) *
			   (cbytes + frb + kb) +
			   (size_t)__builtin_popcountll(pp->loras) * kb);
	total = pp->nslots * stride + scratch + acc;
	pp->slots = calloc(pp->nslots, sizeof(*pp->slots));
	pp->ts = calloc(pp->nts, sizeof(*pp->ts));
	pp->mem = aligned_alloc(HUGE_PAGE, (total + HUGE_PAGE - 1) &
				~(size_t)(HUGE_PAGE - 1));
	if (!pp->slots || !pp->ts || !pp->mem)
		return ds_fail(pp->ctx, -ENOMEM, "cannot allocate %llu bytes "
			       "of window buffers; lower --memory",
			       (unsigned long long)total);
#ifdef MADV_HUGEPAGE
	madvise(pp->mem, (total + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1),
		MADV_HUGEPAGE);
#endif
	for (unsigned i = 0; i < pp->nslots; i++) {
		struct slot *s = &pp->slots[i];

		m = (char *)pp->mem + i * stride;
		for (unsigned k = 0; k < p->ninputs; k++, m += iper)
			s->in[k] = s->ibuf[k] = m;
		s->out = s->obuf = m;
		m += oper;
		s->red = m;
		m += red;
		for (unsigned k = 1; k < p->ninputs; k++)
			if (pp->packs >> (k - 1) & 1) {
				s->cbuf[k] = m;
				s->fr[k] = (struct ds_pack_frame *)(m + cbytes);
				s->kbits[k] = (uint64_t *)(m + cbytes + frb);
				m += cbytes + frb + kb;
			} else if (pp->loras >> (k - 1) & 1) {
				s->kbits[k] = (uint64_t *)m;
				m += kb;
			}
		s->wake.user = s;
	}
	m = (char *)pp->mem + pp->nslots * stride;
	pp->acc = m;
	m += acc;
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
		if (pp->packs) {
			wa[i].dc = ZSTD_createDCtx();
			wa[i].vals = malloc(DS_PACK_FRAME * 8);
			if (!wa[i].dc || !wa[i].vals)
				return ds_fail(pp->ctx, -ENOMEM, "out of memory");
		}
		if (pp->loras) {
			wa[i].lmem = aligned_alloc(64, (pp->lora_bytes + 63) &
						   ~(uint64_t)63);
			if (!wa[i].lmem)
				return ds_fail(pp->ctx, -ENOMEM, "cannot allocate "
					       "%llu bytes for the LoRA factors",
					       (unsigned long long)pp->lora_bytes);
			ds_lora_buf_init(wa[i].lb, pp->p->in,
					 pp->p->ninputs, pp->p->window,
					 wa[i].lmem);
		}
		rc = pthread_create(&pp->th[i], NULL, worker, &wa[i]);
		if (rc)
			return ds_fail(pp->ctx, -rc, "cannot start a worker "
				       "thread: %s", strerror(rc));
		pp->nth++;
	}
	return 0;
}

static int start_dropper(struct pipe *pp)
{
	struct dropper *d = &pp->drop;
	int rc;

	pthread_mutex_init(&d->lk, NULL);
	pthread_cond_init(&d->cv, NULL);
	rc = pthread_create(&d->th, NULL, dropper_main, d);
	if (rc) {
		pthread_mutex_destroy(&d->lk);
		pthread_cond_destroy(&d->cv);
		return ds_fail(pp->ctx, -rc, "cannot start a thread: %s",
			       strerror(rc));
	}
	d->started = true;
	return 0;
}

/* Drops what is queued (the files are still open), then ends. */
static void stop_dropper(struct dropper *d)
{
	if (!d->started)
		return;
	pthread_mutex_lock(&d->lk);
	d->stop = true;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->lk);
	pthread_join(d->th, NULL);
	pthread_mutex_destroy(&d->lk);
	pthread_cond_destroy(&d->cv);
	d->started = false;
}

static void teardown(struct pipe *pp)
{
	stop_dropper(&pp->drop);
	pthread_mutex_lock(&pp->lk);
	pp->stop = 1;
	pthread_cond_broadcast(&pp->cv);
	pthread_mutex_unlock(&pp->lk);
	for (unsigned i = 0; i < pp->nth; i++)
		pthread_join(pp->th[i], NULL);
	pthread_mutex_destroy(&pp->lk);
	pthread_cond_destroy(&pp->cv);
	for (unsigned i = 0; pp->fds && i < pp->p->ninputs * pp->maxshards; i++) {
		if (pp->fds[i] >= 0)
			close(pp->fds[i]);
		if (pp->dfds && pp->dfds[i] >= 0)
			close(pp->dfds[i]);
	}
	ds_io_destroy(&pp->io);
	free(pp->th);
	free(pp->fds);
	free(pp->dfds);
	free(pp->keep);
	free(pp->slots);
	free(pp->ts);
	free(pp->mem);
	XXH3_freeState(pp->base_hash);
}

struct use {
	const struct ds_model *m;
	unsigned shard, k;
	uint64_t begin;
	size_t t;
};

static int use_cmp(const void *a, const void *b)
{
	const struct use *x = a, *y = b;

	if (x->m != y->m)
		return (uintptr_t)x->m < (uintptr_t)y->m ? -1 : 1;
	if (x->shard != y->shard)
		return x->shard < y->shard ? -1 : 1;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return x->t < y->t ? -1 : x->t > y->t;
}

/*
 * pp->keep: which inputs of each output tensor from first on keep their
 * pages once written: those a later output tensor reads again, so that
 * they are still cached then (only recipes with slices read a tensor
 * twice; the sort is of the plan's size), and those of files that were
 * mostly cached before the merge, which it leaves as it found them.
 */
static int mark_keeps(struct pipe *pp, size_t first)
{
	const struct ds_plan *p = pp->p;
	size_t nfd = (size_t)p->ninputs * pp->maxshards, n = 0;
	unsigned char *cached = malloc(nfd);   /* per fd, as pp->fds */
	struct use *u;

	pp->keep = calloc((p->not ? p->not : 1) * DS_MAX_INPUTS, 1);
	u = malloc((p->not ? p->not : 1) * (p->ninputs + 1) * sizeof(*u));
	if (!pp->keep || !u || !cached) {
		free(u);
		free(cached);
		return ds_fail(pp->ctx, -ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < nfd; i++)
		cached[i] = pp->fds[i] >= 0 && ds_mostly_cached(pp->fds[i]);
	for (size_t t = first; t < p->not; t++) {
		const struct ds_otensor *o = &p->ot[t];

		for (unsigned k = 0; k <= o->nsrc; k++) {
			const struct ds_model *m = p->in[o->src[k]];

			if (!o->in[k])
				continue;
			/* a pack's tensors all begin at 0: their index
			 * tells them apart */
			u[n++] = (struct use){ m, o->in[k]->shard, k,
					       m->pack ? (uint64_t)(o->in[k] -
						m->tensors) : o->in[k]->begin,
					       t };
			pp->keep[t * DS_MAX_INPUTS + k] =
				cached[o->src[k] * pp->maxshards +
				       o->in[k]->shard];
		}
	}
	qsort(u, n, sizeof(*u), use_cmp);
	for (size_t i = n; i-- > 1;)
		if (u[i - 1].m == u[i].m && u[i - 1].shard == u[i].shard &&
		    u[i - 1].begin == u[i].begin && u[i - 1].t < u[i].t)
			pp->keep[u[i - 1].t * DS_MAX_INPUTS + u[i - 1].k] = 1;
	free(u);
	free(cached);
	return 0;
}

int ds_pipeline_run(ds_ctx *ctx, const struct ds_plan *p, struct ds_out *o,
		    size_t first, enum ds_io_backend io, const char **io_name,
		    const struct ds_cancel *cancel, ds_progress_fn *progress,
		    void *user)
{
	struct pipe pp = {
		.ctx = ctx, .p = p, .o = o, .progress = progress, .t = first,
		.cancel = cancel,
		.user = user, .scratch_floats = p->needs.scratch_floats,
		.base_hash = XXH3_createState(),
	};
	struct worker_arg wa[64] = { { 0 } };
	sigset_t all, old;
	int rc = 0;

	pthread_mutex_init(&pp.lk, NULL);
	pthread_cond_init(&pp.cv, NULL);
	pp.k = ds_kernel_select();
	pp.lrow = pp.k ? ds_lora_kernel(pp.k) : NULL;
	pp.lpick = pp.k ? ds_lora_pick_kernel(pp.k) : NULL;
	if (!pp.k)
		rc = ds_fail(ctx, DS_E_USAGE, "DARE_STREAM_KERNEL names a "
			       "kernel path this machine cannot run");
	for (unsigned s = 0; s < p->nos; s++)
		pp.done += p->os[s].hlen;
	for (size_t t = 0; t < first; t++)
		pp.done += ds_otensor_bytes(&p->ot[t]);
	if (!pp.base_hash)
		rc = ds_fail(ctx, -ENOMEM, "out of memory");
	/* The engine's and the workers' threads take no signal: a handler
	 * (the caller's, calling ds_merge_cancel()) runs on the caller's
	 * thread, which can then block it while it frees the handle. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (!rc)
		rc = ds_io_create(ctx, io, p->depth * (p->ninputs + 1),
				  ds_cancel_fd(cancel), &pp.io);
	if (!rc && io_name)
		*io_name = pp.io.ops->name;
	if (!rc)
		rc = open_inputs(&pp);
	if (!rc)
		rc = mark_keeps(&pp, first);
	if (!rc)
		rc = alloc_buffers(&pp);
	if (!rc)
		rc = start_workers(&pp, wa);
	if (!rc)
		rc = start_dropper(&pp);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!rc)
		rc = loop(&pp);
	teardown(&pp);
	for (unsigned i = 0; i < 64; i++) {
		ZSTD_freeDCtx(wa[i].dc);
		free(wa[i].vals);
		free(wa[i].lmem);
	}
	return rc;
}

/* SPDX-License-Identifier: MIT */
/* io_pread.c - the portable backend: pread/pwrite on a few I/O threads */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include "io/io.h"

#define PREAD_THREADS 4

/* A FIFO of requests guarded by the engine's lock. */
struct fifo {
	struct ds_reqq q;
	pthread_cond_t nonempty;
};

/* Submitted requests wait in queued for an I/O thread; finished ones (and
 * posted ones, from any thread) wait in done for ds_io_wait(). */
struct pread_engine {
	pthread_mutex_t lock;
	struct fifo queued, done;
	int stop;
	pthread_t th[PREAD_THREADS];
	unsigned nth;
};

static void push(struct pread_engine *e, struct fifo *q, struct ds_io_req *r)
{
	pthread_mutex_lock(&e->lock);
	ds_reqq_push(&q->q, r);
	pthread_cond_signal(&q->nonempty);
	pthread_mutex_unlock(&e->lock);
}

/* Next request of q; NULL once the engine stops and q is empty. */
static struct ds_io_req *pop(struct pread_engine *e, struct fifo *q)
{
	struct ds_io_req *r;

	pthread_mutex_lock(&e->lock);
	while (!q->q.head && !e->stop)
		pthread_cond_wait(&q->nonempty, &e->lock);
	r = ds_reqq_pop(&q->q);
	pthread_mutex_unlock(&e->lock);
	return r;
}

static void *io_thread(void *arg)
{
	struct pread_engine *e = arg;
	struct ds_io_req *r;

	while ((r = pop(e, &e->queued))) {
		ds_io_rw_full(r);
		push(e, &e->done, r);
	}
	return NULL;
}

static int pread_submit(void *ev, struct ds_io_req *r)
{
	r->done = 0;
	r->res = 0;
	push(ev, &((struct pread_engine *)ev)->queued, r);
	return 0;
}

static int pread_wait(void *ev, struct ds_io_req **r)
{
	struct pread_engine *e = ev;

	*r = pop(e, &e->done);
	return *r ? 0 : -EPIPE;
}

static void pread_post(void *ev, struct ds_io_req *r)
{
	push(ev, &((struct pread_engine *)ev)->done, r);
}

static void pread_destroy(void *ev)
{
	struct pread_engine *e = ev;

	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	e->stop = 1;
	pthread_cond_broadcast(&e->queued.nonempty);
	pthread_cond_broadcast(&e->done.nonempty);
	pthread_mutex_unlock(&e->lock);
	for (unsigned i = 0; i < e->nth; i++)
		pthread_join(e->th[i], NULL);
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->queued.nonempty);
	pthread_cond_destroy(&e->done.nonempty);
	free(e);
}

int ds_io_pread_create(unsigned depth, void **out)
{
	struct pread_engine *e = calloc(1, sizeof(*e));
	unsigned n = depth < PREAD_THREADS ? depth : PREAD_THREADS;

	if (!e)
		return -ENOMEM;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->queued.nonempty, NULL);
	pthread_cond_init(&e->done.nonempty, NULL);
	for (e->nth = 0; e->nth < (n ? n : 1); e->nth++)
		if (pthread_create(&e->th[e->nth], NULL, io_thread, e)) {
			int rc = e->nth ? 0 : -EAGAIN;
			if (rc) {
				pread_destroy(e);
				return rc;
			}
			break;
		}
	*out = e;
	return 0;
}

const struct ds_io_ops ds_io_pread_ops = {
	.name = "pread",
	.submit = pread_submit,
	.wait = pread_wait,
	.post = pread_post,
	.destroy = pread_destroy,
};

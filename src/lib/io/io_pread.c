/* SPDX-License-Identifier: MIT */
/* io_pread.c - the portable backend: pread/pwrite on a few I/O threads */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "io/io.h"

#define PREAD_THREADS 4

/* A FIFO of requests guarded by the engine's lock. */
struct fifo {
	struct ds_reqq q;
	pthread_cond_t nonempty;
};

/* Submitted requests wait in queued for an I/O thread; finished ones (and
 * posted ones, from any thread) wait in done for ds_io_wait().  The waiter
 * sleeps in poll() rather than on a condition variable, so that the
 * cancellation eventfd (written from a signal handler) wakes it too: each
 * push to done bumps done_fd. */
struct pread_engine {
	pthread_mutex_t lock;
	struct fifo queued, done;
	int done_fd, cancel_fd;
	int cancel_seen;
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

static void push_done(struct pread_engine *e, struct ds_io_req *r)
{
	uint64_t one = 1;

	pthread_mutex_lock(&e->lock);
	ds_reqq_push(&e->done.q, r);
	pthread_mutex_unlock(&e->lock);
	while (write(e->done_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static void *io_thread(void *arg)
{
	struct pread_engine *e = arg;
	struct ds_io_req *r;

	while ((r = pop(e, &e->queued))) {
		ds_io_rw_full(r);
		push_done(e, r);
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

/* The next finished request; -ECANCELED (once) when cancellation is
 * raised while none is ready. */
static int pread_wait(void *ev, struct ds_io_req **r)
{
	struct pread_engine *e = ev;

	for (;;) {
		struct pollfd pf[2] = {
			{ .fd = e->done_fd, .events = POLLIN },
			{ .fd = e->cancel_fd, .events = POLLIN },
		};
		nfds_t n = e->cancel_fd >= 0 && !e->cancel_seen ? 2 : 1;
		uint64_t v;
		int stop;

		pthread_mutex_lock(&e->lock);
		*r = ds_reqq_pop(&e->done.q);
		stop = e->stop;
		pthread_mutex_unlock(&e->lock);
		if (*r)
			return 0;
		if (stop)
			return -EPIPE;
		if (poll(pf, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pf[0].revents && read(e->done_fd, &v, sizeof(v)) < 0 &&
		    errno != EAGAIN && errno != EINTR)
			return -errno;
		if (n == 2 && pf[1].revents) {
			e->cancel_seen = 1;
			return -ECANCELED;
		}
	}
}

static void pread_post(void *ev, struct ds_io_req *r)
{
	push_done(ev, r);
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
	close(e->done_fd);
	free(e);
}

int ds_io_pread_create(unsigned depth, int cancel_fd, void **out)
{
	struct pread_engine *e = calloc(1, sizeof(*e));
	unsigned n = depth < PREAD_THREADS ? depth : PREAD_THREADS;
	int rc;

	if (!e)
		return -ENOMEM;
	e->cancel_fd = cancel_fd;
	e->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->done_fd < 0) {
		rc = -errno;
		free(e);
		return rc;
	}
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->queued.nonempty, NULL);
	pthread_cond_init(&e->done.nonempty, NULL);
	for (e->nth = 0; e->nth < (n ? n : 1); e->nth++)
		if (pthread_create(&e->th[e->nth], NULL, io_thread, e)) {
			if (e->nth == 0) {
				pread_destroy(e);
				return -EAGAIN;
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

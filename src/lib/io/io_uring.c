/* SPDX-License-Identifier: MIT */
/* io_uring.c - the io_uring backend: batched submits, short-I/O requeue */
#include "config.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "io/io.h"

/*
 * Requests are prepared into the submission queue without a system call
 * and submitted in one batch when the caller waits.  Compute workers cannot
 * touch the ring, so ds_io_post() queues their request on a locked list and
 * bumps an eventfd on which the ring always has a read pending: the wake-up
 * arrives through the same wait as the I/O completions.
 */
struct uring_engine {
	struct io_uring ring;
	int efd;
	uint64_t ebuf;                  /* target of the pending eventfd read */
	pthread_mutex_t lock;
	struct ds_reqq posted;
};

#define EVENTFD_TAG ((uint64_t)1)       /* user_data of the eventfd read */
#define CANCEL_TAG ((uint64_t)2)        /* of the cancellation poll */

static struct io_uring_sqe *get_sqe(struct uring_engine *e)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);

	if (!sqe) {                     /* full: push the batch out first */
		io_uring_submit(&e->ring);
		sqe = io_uring_get_sqe(&e->ring);
	}
	return sqe;
}

/* (Re)queue the untransferred part of r. */
static int queue_req(struct uring_engine *e, struct ds_io_req *r)
{
	struct io_uring_sqe *sqe = get_sqe(e);
	char *p = (char *)r->buf + r->done;
	unsigned len = (unsigned)(r->len - r->done < (1u << 30) ?
				  r->len - r->done : (1u << 30));

	if (!sqe)
		return -EBUSY;
	if (r->write)
		io_uring_prep_write(sqe, r->fd, p, len, r->off + r->done);
	else
		io_uring_prep_read(sqe, r->fd, p, len, r->off + r->done);
	io_uring_sqe_set_data(sqe, r);
	return 0;
}

static int arm_eventfd(struct uring_engine *e)
{
	struct io_uring_sqe *sqe = get_sqe(e);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_read(sqe, e->efd, &e->ebuf, sizeof(e->ebuf), 0);
	io_uring_sqe_set_data64(sqe, EVENTFD_TAG);
	return 0;
}

static int uring_submit(void *ev, struct ds_io_req *r)
{
	r->done = 0;
	r->res = 0;
	return queue_req(ev, r);
}

static struct ds_io_req *pop_posted(struct uring_engine *e)
{
	struct ds_io_req *r;

	pthread_mutex_lock(&e->lock);
	r = ds_reqq_pop(&e->posted);
	pthread_mutex_unlock(&e->lock);
	return r;
}

/* Account one completion of r; 1 when r is finished, 0 when requeued. */
static int complete(struct uring_engine *e, struct ds_io_req *r, int res)
{
	if (res == -EINTR || res == -EAGAIN)
		return queue_req(e, r) ? (r->res = -EBUSY, 1) : 0;
	if (res < 0) {
		r->res = res;
		return 1;
	}
	if (res == 0) {                 /* EOF before len bytes */
		r->res = r->write ? -ENOSPC : -ENODATA;
		return 1;
	}
	r->done += (size_t)res;
	if (r->done < r->len)           /* short transfer: ask for the rest */
		return queue_req(e, r) ? (r->res = -EBUSY, 1) : 0;
	r->res = 0;
	return 1;
}

static int uring_wait(void *ev, struct ds_io_req **out)
{
	struct uring_engine *e = ev;

	for (;;) {
		struct io_uring_cqe *cqe;
		struct ds_io_req *r;
		uint64_t tag;
		int res, rc;

		if ((*out = pop_posted(e)))
			break;
		if (io_uring_peek_cqe(&e->ring, &cqe)) {
			rc = io_uring_submit_and_wait(&e->ring, 1);
			if (rc < 0 && rc != -EINTR && rc != -EAGAIN &&
			    rc != -EBUSY)
				return rc;
			continue;
		}
		tag = io_uring_cqe_get_data64(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&e->ring, cqe);
		if (tag == EVENTFD_TAG) {
			arm_eventfd(e);
			continue;
		}
		if (tag == CANCEL_TAG) {        /* one shot: not re-armed */
			*out = NULL;
			io_uring_submit(&e->ring);
			return -ECANCELED;
		}
		r = (struct ds_io_req *)(uintptr_t)tag;
		if (complete(e, r, res)) {
			*out = r;
			break;
		}
	}
	/* Whatever was queued meanwhile goes to the disk before the caller
	 * starts computing. */
	io_uring_submit(&e->ring);
	return 0;
}

static void uring_post(void *ev, struct ds_io_req *r)
{
	struct uring_engine *e = ev;
	uint64_t one = 1;

	pthread_mutex_lock(&e->lock);
	ds_reqq_push(&e->posted, r);
	pthread_mutex_unlock(&e->lock);
	while (write(e->efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static void uring_destroy(void *ev)
{
	struct uring_engine *e = ev;

	if (!e)
		return;
	io_uring_queue_exit(&e->ring);
	close(e->efd);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

/* Watch the cancellation eventfd: its poll completes once it is raised. */
static int arm_cancel(struct uring_engine *e, int fd)
{
	struct io_uring_sqe *sqe;

	if (fd < 0)
		return 0;
	if (!(sqe = get_sqe(e)))
		return -EBUSY;
	io_uring_prep_poll_add(sqe, fd, POLLIN);
	io_uring_sqe_set_data64(sqe, CANCEL_TAG);
	return 0;
}

int ds_io_uring_create(unsigned depth, int cancel_fd, void **out)
{
	struct uring_engine *e = calloc(1, sizeof(*e));
	int rc;

	if (!e)
		return -ENOMEM;
	e->efd = eventfd(0, EFD_CLOEXEC);
	if (e->efd < 0) {
		rc = -errno;
		free(e);
		return rc;
	}
	rc = io_uring_queue_init(depth + 3, &e->ring, 0);
	if (rc < 0) {
		close(e->efd);
		free(e);
		return rc;
	}
	pthread_mutex_init(&e->lock, NULL);
	arm_eventfd(e);
	arm_cancel(e, cancel_fd);
	*out = e;
	return 0;
}

const struct ds_io_ops ds_io_uring_ops = {
	.name = "io_uring",
	.submit = uring_submit,
	.wait = uring_wait,
	.post = uring_post,
	.destroy = uring_destroy,
};

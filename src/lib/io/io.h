/* SPDX-License-Identifier: MIT */
/* io.h - the I/O engine: queued reads and writes, completions one by one */
#ifndef DS_IO_H
#define DS_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dare-stream.h"

/*
 * A request is owned by the caller from ds_io_submit() until ds_io_wait()
 * hands it back.  A completed request has transferred all len bytes
 * (short transfers are resumed by the engine, EINTR/EAGAIN retried) or has
 * res < 0.  Completions come back in any order.
 */
struct ds_io_req {
	int fd;
	bool write;
	void *buf;
	size_t len;
	uint64_t off;
	void *user;                 /* the caller's: who to wake */
	int res;                    /* 0 or -errno; -ENODATA at an early EOF */
	size_t done;                /* engine's: bytes transferred so far */
	struct ds_io_req *next;     /* engine's: queue link */
};

/* A FIFO of requests linked through their next field; the caller locks. */
struct ds_reqq {
	struct ds_io_req *head, *tail;
};

static inline void ds_reqq_push(struct ds_reqq *q, struct ds_io_req *r)
{
	r->next = NULL;
	if (q->tail)
		q->tail->next = r;
	else
		q->head = r;
	q->tail = r;
}

static inline struct ds_io_req *ds_reqq_pop(struct ds_reqq *q)
{
	struct ds_io_req *r = q->head;

	if (r && !(q->head = r->next))
		q->tail = NULL;
	return r;
}

struct ds_io_ops {
	const char *name;
	int (*submit)(void *e, struct ds_io_req *r);
	int (*wait)(void *e, struct ds_io_req **r);
	void (*post)(void *e, struct ds_io_req *r);
	void (*destroy)(void *e);
};

struct ds_io {
	const struct ds_io_ops *ops;
	void *e;
};

/* Set up the engine chosen by want (AUTO: the best available).  depth is
 * the number of requests that may be in flight at once.  When cancel_fd
 * (-1: none) becomes readable, ds_io_wait() returns -ECANCELED once,
 * without a request, even while every request is still in flight. */
int ds_io_create(ds_ctx *ctx, enum ds_io_backend want, unsigned depth,
		 int cancel_fd, struct ds_io *io);
void ds_io_destroy(struct ds_io *io);

/* Queue a read or write. */
static inline int ds_io_submit(struct ds_io *io, struct ds_io_req *r)
{
	return io->ops->submit(io->e, r);
}

/* Block until a request completes (or is posted) and return it; or
 * -ECANCELED with *r NULL (see ds_io_create()). */
static inline int ds_io_wait(struct ds_io *io, struct ds_io_req **r)
{
	return io->ops->wait(io->e, r);
}

/* From any thread: make r come back from ds_io_wait() as if completed
 * (compute workers use it to wake the I/O loop). */
static inline void ds_io_post(struct ds_io *io, struct ds_io_req *r)
{
	io->ops->post(io->e, r);
}

/*
 * Direct I/O (O_DIRECT) takes offsets, lengths and buffers aligned to
 * DS_DIO_ALIGN, which covers what every common file system asks.
 * ds_open_direct() opens path with flags | O_DIRECT into *fd, or leaves
 * *fd -1 where the file system does not take direct I/O (EINVAL: tmpfs),
 * wants a larger alignment, or descriptors have run out (the caller's
 * buffered descriptor serves).  Returns 0, or -errno for any other error
 * (the file's).
 */
#define DS_DIO_ALIGN 4096u
int ds_open_direct(const char *path, int flags, int *fd);

/* Whether most of fd's file is in the page cache (cachestat(2), Linux
 * 6.5; false where it is missing): a merge leaves such a file cached. */
bool ds_mostly_cached(int fd);

/* Synchronous full transfer with retries, shared by the backends. */
int ds_io_rw_full(struct ds_io_req *r);

extern const struct ds_io_ops ds_io_pread_ops, ds_io_uring_ops;
int ds_io_pread_create(unsigned depth, int cancel_fd, void **e);
int ds_io_uring_create(unsigned depth, int cancel_fd, void **e);

#endif

/* SPDX-License-Identifier: MIT */
/* cancel.h - a cancellation request that a signal handler may raise */
#ifndef DS_CANCEL_H
#define DS_CANCEL_H

#include <stdatomic.h>
#include <stdbool.h>

/*
 * Raised from any thread or from a signal handler: ds_cancel_raise() only
 * stores to a lock-free atomic and write()s to an eventfd, both
 * async-signal-safe.  The I/O loop checks the flag at every event, and the
 * engines watch fd so that a loop blocked in ds_io_wait() wakes at once.
 * The eventfd lives as long as the merge handle, so a handler never writes
 * to a descriptor that was closed and reused.
 */
struct ds_cancel {
	atomic_int flag;
	int fd;                 /* eventfd, readable once raised; -1: none */
};

/* 0 or -errno (no eventfd: cancellation then waits for the next event). */
int ds_cancel_init(struct ds_cancel *c);
void ds_cancel_raise(struct ds_cancel *c);
void ds_cancel_destroy(struct ds_cancel *c);

static inline bool ds_canceled(const struct ds_cancel *c)
{
	return c && atomic_load_explicit(&c->flag, memory_order_acquire);
}

/* The descriptor an engine should watch, or -1. */
static inline int ds_cancel_fd(const struct ds_cancel *c)
{
	return c ? c->fd : -1;
}

#endif

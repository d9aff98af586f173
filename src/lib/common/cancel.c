/* SPDX-License-Identifier: MIT */
/* cancel.c - raise and watch a cancellation request (see cancel.h) */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "common/cancel.h"

_Static_assert(ATOMIC_INT_LOCK_FREE == 2,
	       "a signal handler may only touch lock-free atomics");

int ds_cancel_init(struct ds_cancel *c)
{
	atomic_init(&c->flag, 0);
	c->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return c->fd < 0 ? -errno : 0;
}

void ds_cancel_raise(struct ds_cancel *c)
{
	int saved = errno;          /* a handler must leave errno alone */
	uint64_t one = 1;

	atomic_store_explicit(&c->flag, 1, memory_order_release);
	if (c->fd >= 0 && write(c->fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, it is readable anyway */
	}
	errno = saved;
}

void ds_cancel_destroy(struct ds_cancel *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

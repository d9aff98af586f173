/* SPDX-License-Identifier: MIT */
/* io_pread.c - the portable backend: pread/pwrite at submit time */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include "io.h"

/* Completed requests wait in a FIFO; post() may come from any thread. */
struct pread_engine {
	pthread_mutex_t lock;
	pthread_cond_t ready;
	struct ds_io_req *head, *tail;
};

static void push(struct pread_engine *e, struct ds_io_req *r)
{
	pthread_mutex_lock(&e->lock);
	r->next = NULL;
	if (e->tail)
		e->tail->next = r;
	else
		e->head = r;
	e->tail = r;
	pthread_cond_signal(&e->ready);
	pthread_mutex_unlock(&e->lock);
}

static int pread_submit(void *ev, struct ds_io_req *r)
{
	r->done = 0;
	ds_io_rw_full(r);
	push(ev, r);
	return 0;
}

static int pread_wait(void *ev, struct ds_io_req **r)
{
	struct pread_engine *e = ev;

	pthread_mutex_lock(&e->lock);
	while (!e->head)
		pthread_cond_wait(&e->ready, &e->lock);
	*r = e->head;
	e->head = e->head->next;
	if (!e->head)
		e->tail = NULL;
	pthread_mutex_unlock(&e->lock);
	return 0;
}

static void pread_post(void *ev, struct ds_io_req *r)
{
	push(ev, r);
}

static void pread_destroy(void *ev)
{
	struct pread_engine *e = ev;

	if (!e)
		return;
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->ready);
	free(e);
}

int ds_io_pread_create(unsigned depth, void **out)
{
	struct pread_engine *e = calloc(1, sizeof(*e));

	(void)depth;
	if (!e)
		return -ENOMEM;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->ready, NULL);
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

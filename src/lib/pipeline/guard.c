/* SPDX-License-Identifier: MIT */
/* guard.c - detect inputs replaced, truncated or rewritten during a merge */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/ctx.h"
#include "pipeline/guard.h"

int ds_guard_record(ds_ctx *ctx, const struct ds_plan *p, struct ds_guard *g)
{
	size_t n = 0;

	memset(g, 0, sizeof(*g));
	for (unsigned k = 0; k < p->ninputs; k++)
		n += p->in[k]->nshards;
	g->path = calloc(n ? n : 1, sizeof(*g->path));
	g->st = calloc(n ? n : 1, sizeof(*g->st));
	if (!g->path || !g->st)
		return ds_fail(ctx, -ENOMEM, "out of memory");
	for (unsigned k = 0; k < p->ninputs; k++)
		for (unsigned s = 0; s < p->in[k]->nshards; s++) {
			const char *path = p->in[k]->shards[s].path;

			if (stat(path, &g->st[g->n]))
				return ds_fail(ctx, -errno, "%s: %s", path,
					       strerror(errno));
			g->path[g->n++] = path;
		}
	return 0;
}

static int same_time(struct timespec a, struct timespec b)
{
	return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* What differs between a (at plan time) and b (now), as words. */
static void describe(const struct stat *a, const struct stat *b, char *buf,
		     size_t len)
{
	size_t n = 0;

	buf[0] = 0;
	if (a->st_dev != b->st_dev || a->st_ino != b->st_ino)
		n += (size_t)snprintf(buf + n, len - n, "replaced by another "
				      "file (inode %llu, now %llu); ",
				      (unsigned long long)a->st_ino,
				      (unsigned long long)b->st_ino);
	if (n < len && a->st_size != b->st_size)
		n += (size_t)snprintf(buf + n, len - n, "%s from %lld to %lld "
				      "bytes; ", b->st_size < a->st_size ?
				      "truncated" : "grew",
				      (long long)a->st_size,
				      (long long)b->st_size);
	if (n < len && !same_time(a->st_mtim, b->st_mtim))
		n += (size_t)snprintf(buf + n, len - n, "modified (mtime); ");
	if (n < len && !same_time(a->st_ctim, b->st_ctim))
		n += (size_t)snprintf(buf + n, len - n, "status changed "
				      "(ctime); ");
	if (n >= 2 && n < len)
		buf[n - 2] = 0;         /* the last "; " */
}

int ds_guard_check(ds_ctx *ctx, const struct ds_guard *g)
{
	for (size_t i = 0; i < g->n; i++) {
		struct stat now;
		char what[256];

		if (stat(g->path[i], &now))
			return ds_fail(ctx, DS_E_CHANGED, "%s: input removed "
				       "while the merge read it (%s); nothing "
				       "was given its final name", g->path[i],
				       strerror(errno));
		describe(&g->st[i], &now, what, sizeof(what));
		if (what[0])
			return ds_fail(ctx, DS_E_CHANGED, "%s: input changed "
				       "while the merge read it: %s; nothing "
				       "was given its final name: rerun once "
				       "it is complete", g->path[i], what);
	}
	return 0;
}

void ds_guard_free(struct ds_guard *g)
{
	free(g->path);
	free(g->st);
	memset(g, 0, sizeof(*g));
}

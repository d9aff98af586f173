/* SPDX-License-Identifier: MIT */
/* guard.h - inputs must not change while a merge reads them */
#ifndef DS_GUARD_H
#define DS_GUARD_H

#include <stddef.h>
#include <sys/stat.h>
#include "plan/plan.h"

/*
 * A model re-downloaded into place while it is merged (the Hugging Face
 * cache swaps a blob, a script copies over a shard) makes an output that
 * matches neither version.  The size, mtime, ctime, device and inode of
 * every input shard are recorded when the plan is made, and compared again
 * before anything is given its final name.
 */
struct ds_guard {
	size_t n;
	const char **path;
	struct stat *st;
};

int ds_guard_record(ds_ctx *ctx, const struct ds_plan *p, struct ds_guard *g);
/* 0, or DS_E_CHANGED naming the first file that changed and how. */
int ds_guard_check(ds_ctx *ctx, const struct ds_guard *g);
void ds_guard_free(struct ds_guard *g);

#endif

/* SPDX-License-Identifier: MIT */
/* lock.h - one merge at a time in an output directory */
#ifndef DS_LOCK_H
#define DS_LOCK_H

#include <stdbool.h>
#include "common/ctx.h"

/*
 * An open-file-description lock (fcntl F_OFD_SETLK) on a file inside OUT.
 * The kernel drops it when its holder exits however it exits, so a run
 * killed by SIGKILL or the OOM killer never blocks the --resume that
 * follows: a lock file left behind is not locked, and is simply taken.
 * The holder writes its pid into the file for the message of a refused
 * run, and unlinks the file while still holding the lock when it is done;
 * a run that locked a file that has meanwhile been unlinked notices (the
 * path names another inode, or none) and starts again.
 *
 * Names, so that a partitioned merge can lock only its own part:
 *   .dare-stream.lock            a whole merge (and finalize): exclusive
 * and, with --partition K/N:
 *   .dare-stream.lock            shared (partitions do not exclude each
 *                                other; a whole merge excludes them all)
 *   .dare-stream.K-of-N.lock     exclusive: the part K's own lock and pid
 * A shared lock file carries no pid and is unlinked only by its last
 * holder (the one that can turn its lock exclusive on release).
 */
#define DS_LOCK_NAME ".dare-stream.lock"

struct ds_lock {
	int fd;                 /* -1: not held */
	bool exclusive;
	char *path;
};

/* Take dir/name without waiting; DS_E_OUTPUT naming the holder's pid when
 * another process holds it. */
int ds_lock_take(ds_ctx *ctx, const char *dir, const char *name,
		 bool exclusive, struct ds_lock *lk);
/* DS_E_OUTPUT (with the holder's pid) when dir/name is locked by another
 * run; 0 when it is free or absent.  Creates nothing.  shared: only an
 * exclusive holder counts (what a shared ds_lock_take() would meet). */
int ds_lock_probe(ds_ctx *ctx, const char *dir, const char *name);
int ds_lock_probe_shared(ds_ctx *ctx, const char *dir, const char *name,
			 bool shared);
/* The pid holding dir/name exclusively, 0 when none does, -1 when it is
 * held but no pid is recorded (a shared lock). */
long ds_lock_holder(const char *dir, const char *name);
/* Unlink and unlock (nothing when not held). */
void ds_lock_release(struct ds_lock *lk);

#endif

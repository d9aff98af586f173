/* SPDX-License-Identifier: MIT */
/* lock.c - one merge at a time in an output directory (see lock.h) */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "output/lock.h"

/* The holder's pid from the lock file; 0 when not (yet) written: a run
 * that just took the lock writes it a moment later, so wait a little. */
static long holder_pid(int fd)
{
	struct timespec ms10 = { 0, 10 * 1000 * 1000 };

	for (int i = 0; i < 20; i++) {
		char buf[32];
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

		if (n > 0) {
			buf[n] = 0;
			return strtol(buf, NULL, 10);
		}
		nanosleep(&ms10, NULL);
	}
	return 0;
}

static int busy(ds_ctx *ctx, const char *dir, const char *path, int fd,
		bool shared)
{
	long pid = shared ? 0 : holder_pid(fd);
	char who[64] = "a process whose pid it does not name";

	if (shared)
		return ds_fail(ctx, DS_E_OUTPUT, "%s: the parts of a "
			       "partitioned merge are writing it (they hold %s "
			       "shared); let them end and run dare-stream "
			       "finalize, or stop them", dir, path);
	if (pid > 0)
		snprintf(who, sizeof(who), "pid %ld", pid);
	return ds_fail(ctx, DS_E_OUTPUT, "%s: another merge is writing it "
		       "(dare-stream %s holds %s); wait for it to end, or stop "
		       "it and continue it with --resume", dir, who, path);
}

static char *lock_path(const char *dir, const char *name)
{
	char *p = malloc(strlen(dir) + strlen(name) + 2);

	if (p)
		sprintf(p, "%s/%s", dir, name);
	return p;
}

/* 0, or the errno of a lock another process holds (EAGAIN) or of a
 * failure.  F_OFD_SETLK needs Linux 3.15; flock() is the fallback. */
static int try_lock(int fd, bool exclusive)
{
	struct flock fl = {
		.l_type = exclusive ? F_WRLCK : F_RDLCK,
		.l_whence = SEEK_SET,
	};

	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EACCES || errno == EAGAIN)
		return EAGAIN;
	if (errno != EINVAL)
		return errno;
	if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0)
		return 0;
	return errno == EWOULDBLOCK ? EAGAIN : errno;
}

/* The locked descriptor still is the file at path (not one unlinked by a
 * run that was releasing it). */
static bool still_there(int fd, const char *path)
{
	struct stat a, b;

	return fstat(fd, &a) == 0 && stat(path, &b) == 0 &&
	       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int write_pid(int fd)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());

	if (ftruncate(fd, 0) || pwrite(fd, buf, (size_t)n, 0) != n)
		return errno ? errno : EIO;
	return 0;
}

int ds_lock_take(ds_ctx *ctx, const char *dir, const char *name,
		 bool exclusive, struct ds_lock *lk)
{
	int e = 0;

	lk->fd = -1;
	if (!(lk->path = lock_path(dir, name)))
		return ds_fail(ctx, -ENOMEM, "out of memory");
	struct timespec ms5 = { 0, 5 * 1000 * 1000 };

	lk->exclusive = exclusive;
	for (int tries = 0; tries < 16; tries++) {
		int fd = open(lk->path, O_RDWR | O_CREAT | O_CLOEXEC |
			      O_NOFOLLOW, 0644);

		if (fd < 0)
			return ds_fail(ctx, -errno, "%s: cannot create the "
				       "lock file: %s", lk->path,
				       strerror(errno));
		e = try_lock(fd, exclusive);
		/* The last of the shared holders turns its lock exclusive
		 * for a moment to unlink the file: wait that out. */
		for (int w = 0; e == EAGAIN && !exclusive && w < 40; w++) {
			nanosleep(&ms5, NULL);
			e = try_lock(fd, exclusive);
		}
		if (e == EAGAIN) {
			e = busy(ctx, dir, lk->path, fd, false);
			close(fd);
			return e;
		}
		if (e) {
			close(fd);
			return ds_fail(ctx, -e, "%s: cannot lock: %s",
				       lk->path, strerror(e));
		}
		if (!still_there(fd, lk->path)) {
			close(fd);
			continue;
		}
		if (exclusive && (e = write_pid(fd))) {
			unlink(lk->path);       /* locked: ours to remove */
			close(fd);
			return ds_fail(ctx, -e, "%s: %s", lk->path,
				       strerror(e));
		}
		lk->fd = fd;
		return 0;
	}
	return ds_fail(ctx, DS_E_OUTPUT, "%s: the lock file keeps being "
		       "replaced; is another merge starting?", lk->path);
}

int ds_lock_probe_shared(ds_ctx *ctx, const char *dir, const char *name,
			 bool shared)
{
	struct flock fl = { .l_type = shared ? F_RDLCK : F_WRLCK,
			    .l_whence = SEEK_SET };
	char *path = lock_path(dir, name);
	int fd, rc = 0;

	if (!path)
		return ds_fail(ctx, -ENOMEM, "out of memory");
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0 && fcntl(fd, F_OFD_GETLK, &fl) == 0 &&
	    fl.l_type != F_UNLCK)
		rc = busy(ctx, dir, path, fd, fl.l_type == F_RDLCK);
	if (fd >= 0)
		close(fd);
	free(path);
	return rc;
}

int ds_lock_probe(ds_ctx *ctx, const char *dir, const char *name)
{
	return ds_lock_probe_shared(ctx, dir, name, false);
}

long ds_lock_holder(const char *dir, const char *name)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char *path = lock_path(dir, name);
	long pid = 0;
	int fd;

	if (!path)
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0 && fcntl(fd, F_OFD_GETLK, &fl) == 0 &&
	    fl.l_type != F_UNLCK) {
		pid = fl.l_type == F_RDLCK ? -1 : holder_pid(fd);
		if (pid <= 0)
			pid = -1;
	}
	if (fd >= 0)
		close(fd);
	free(path);
	return pid;
}

void ds_lock_release(struct ds_lock *lk)
{
	/* An exclusive lock is ours alone; a shared one is unlinked only by
	 * the last holder, that can turn it exclusive. */
	if (lk->fd >= 0) {
		if (lk->exclusive || try_lock(lk->fd, true) == 0)
			unlink(lk->path);
		close(lk->fd);
	}
	lk->fd = -1;
	free(lk->path);
	lk->path = NULL;
}

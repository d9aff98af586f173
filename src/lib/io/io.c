/* SPDX-License-Identifier: MIT */
/* io.c - choose an I/O backend; the full-transfer loop they share; direct
 * descriptors and what the page cache holds */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "common/ctx.h"
#include "io/io.h"

/* cachestat(2) has one number on every architecture (Linux 6.5); older C
 * libraries do not name it */
#ifdef SYS_cachestat
#define DS_SYS_CACHESTAT SYS_cachestat
#else
#define DS_SYS_CACHESTAT 451
#endif

/*
 * Is most of the file in the page cache?  cachestat(2) (Linux 6.5) tells
 * without reading it; where it is missing the answer is no, and the merge
 * drops what it reads.
 */
bool ds_mostly_cached(int fd)
{
#ifdef __linux__
	struct { uint64_t off, len; } range = { 0, 0 };   /* the whole file */
	struct { uint64_t cache, dirty, wb, evicted, recent; } cs;
	struct stat st;

	if (fstat(fd, &st) || st.st_size <= 0 ||
	    syscall(DS_SYS_CACHESTAT, fd, &range, &cs, 0))
		return false;
	return cs.cache * (uint64_t)sysconf(_SC_PAGESIZE) >
	       (uint64_t)st.st_size / 2;
#else
	(void)fd;
	return false;
#endif
}

int ds_open_direct(const char *path, int flags, int *fd)
{
	*fd = -1;
#if defined(O_DIRECT) && defined(STATX_DIOALIGN)
	int d = open(path, flags | O_DIRECT | O_CLOEXEC);
	struct statx stx;

	if (d < 0)
		return errno == EINVAL || errno == EMFILE || errno == ENFILE ?
		       0 : -errno;
	if (statx(d, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) ||
	    !(stx.stx_mask & STATX_DIOALIGN) || !stx.stx_dio_offset_align ||
	    stx.stx_dio_offset_align > DS_DIO_ALIGN ||
	    stx.stx_dio_mem_align > DS_DIO_ALIGN)
		close(d);
	else
		*fd = d;
#else
	(void)path;
	(void)flags;
#endif
	return 0;
}

int ds_io_rw_full(struct ds_io_req *r)
{
	while (r->done < r->len) {
		char *p = (char *)r->buf + r->done;
		size_t left = r->len - r->done;
		off_t off = (off_t)(r->off + r->done);
		ssize_t k = r->write ? pwrite(r->fd, p, left, off)
				     : pread(r->fd, p, left, off);

		if (k < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (k < 0)
			return r->res = -errno;
		if (k == 0)             /* EOF before len bytes: truncated */
			return r->res = r->write ? -ENOSPC : -ENODATA;
		r->done += (size_t)k;
	}
	return r->res = 0;
}

int ds_io_create(ds_ctx *ctx, enum ds_io_backend want, unsigned depth,
		 int cancel_fd, struct ds_io *io)
{
	int rc = 0;

	if (want != DS_IO_PREAD) {
		io->ops = &ds_io_uring_ops;
		rc = ds_io_uring_create(depth, cancel_fd, &io->e);
		if (rc == 0)
			return 0;
		if (want == DS_IO_URING)
			return ds_fail(ctx, rc, "io_uring cannot be set up: %s",
				       strerror(-rc));
		/* ENOSYS: old kernel; EPERM: seccomp or io_uring_disabled */
		ds_notice(ctx, "io_uring unavailable (%s): using pread "
			  "threads", strerror(-rc));
	}
	io->ops = &ds_io_pread_ops;
	rc = ds_io_pread_create(depth, cancel_fd, &io->e);
	if (rc)
		return ds_fail(ctx, rc, "cannot start the I/O threads: %s",
			       strerror(-rc));
	return 0;
}

void ds_io_destroy(struct ds_io *io)
{
	if (io->ops)
		io->ops->destroy(io->e);
	io->ops = NULL;
}

/* SPDX-License-Identifier: MIT */
/* faultshim.c - LD_PRELOAD shim: the N-th matching I/O call fails */
/*
 * Test-only.  Environment:
 *   DS_FAULT_CALL   open, pread, pwrite, write, fsync, fallocate, rename
 *                   or close: the call to fail
 *   DS_FAULT_PATH   fnmatch(3) pattern of the file's path (as opened, or
 *                   as /proc/self/fd names it); unset: every path
 *   DS_FAULT_NTH    fail the N-th matching call (1-based); 0 never
 *   DS_FAULT_ERRNO  EIO, ENOSPC, EFBIG, EROFS, EACCES, EMFILE, EINTR,
 *                   EAGAIN, or SHORT: pread/pwrite/write transfer half,
 *                   and every later transfer on that file ends there
 *                   (reads at end of file, writes with ENOSPC)
 *   DS_FAULT_LOG    append "CALL PATH" for every matching call
 *   DS_FAULT_REPORT write "CALL PATH" of the call that was failed
 * The shim's own files are written with raw system calls, never through
 * the functions it wraps.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const struct { const char *name; int err; } errnos[] = {
	{ "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EFBIG", EFBIG },
	{ "EROFS", EROFS }, { "EACCES", EACCES }, { "EMFILE", EMFILE },
	{ "EINTR", EINTR }, { "EAGAIN", EAGAIN }, { "SHORT", -1 },
};

static const char *want_call, *want_path;
static long want_nth;
static int want_err;
static long count;              /* matching calls so far (atomic) */
static int ended;               /* SHORT: later transfers end (atomic) */
static char ended_path[4096];   /* on this file (written before ended) */
static int inited;

static void init(void)
{
	const char *e = getenv("DS_FAULT_ERRNO");

	if (__atomic_load_n(&inited, __ATOMIC_ACQUIRE))
		return;
	want_call = getenv("DS_FAULT_CALL");
	want_path = getenv("DS_FAULT_PATH");
	want_nth = getenv("DS_FAULT_NTH") ? atol(getenv("DS_FAULT_NTH")) : 0;
	want_err = EIO;
	for (size_t i = 0; e && i < sizeof(errnos) / sizeof(errnos[0]); i++)
		if (!strcmp(e, errnos[i].name))
			want_err = errnos[i].err;
	__atomic_store_n(&inited, 1, __ATOMIC_RELEASE);
}

static void append(const char *var, const char *call, const char *path)
{
	const char *file = getenv(var);
	char line[4200];
	int n, fd;

	if (!file)
		return;
	n = snprintf(line, sizeof(line), "%s %s\n", call, path);
	fd = (int)syscall(SYS_openat, AT_FDCWD, file,
			  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (syscall(SYS_write, fd, line, (size_t)n) < 0) {
		/* a test helper: nothing to do about it */
	}
	syscall(SYS_close, fd);
}

static void fd_path(int fd, char *buf, size_t len)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, len - 1);
	buf[n > 0 ? n : 0] = 0;
}

/*
 * 0: let the call through; -1: fail it with errno set; 1: SHORT, transfer
 * half; 2: SHORT ended, no more bytes.
 */
static int decide(const char *call, const char *path)
{
	long n;

	init();
	if (!want_call || strcmp(call, want_call) ||
	    (want_path && fnmatch(want_path, path, 0)))
		return 0;
	if (want_err < 0 && __atomic_load_n(&ended, __ATOMIC_ACQUIRE))
		return strcmp(path, ended_path) ? 0 : 2;
	n = __atomic_add_fetch(&count, 1, __ATOMIC_ACQ_REL);
	append("DS_FAULT_LOG", call, path);
	if (n != want_nth)
		return 0;
	append("DS_FAULT_REPORT", call, path);
	if (want_err < 0) {
		snprintf(ended_path, sizeof(ended_path), "%s", path);
		__atomic_store_n(&ended, 1, __ATOMIC_RELEASE);
		return 1;
	}
	errno = want_err;
	return -1;
}

static int decide_fd(const char *call, int fd)
{
	char path[4096];

	init();
	if (!want_call || strcmp(call, want_call))
		return 0;
	fd_path(fd, path, sizeof(path));
	return decide(call, path);
}

#define REAL(ret, name, ...) \
	static ret (*real)(__VA_ARGS__); \
	if (!real) \
		real = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, name)

/* ---- transfers ---------------------------------------------------------- */

static ssize_t xfer(const char *call, int fd, size_t *len, int write_op)
{
	switch (decide_fd(call, fd)) {
	case -1:
		return -1;
	case 1:
		*len /= 2;
		return 0;
	case 2:
		if (write_op) {
			errno = ENOSPC;
			return -1;
		}
		return -2;              /* end of file */
	default:
		return 0;
	}
}

ssize_t pread(int fd, void *buf, size_t len, off_t off)
{
	REAL(ssize_t, "pread", int, void *, size_t, off_t);
	ssize_t r = xfer("pread", fd, &len, 0);

	return r == -2 ? 0 : r < 0 ? -1 : real(fd, buf, len, off);
}

ssize_t pread64(int fd, void *buf, size_t len, off_t off)
{
	return pread(fd, buf, len, off);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	REAL(ssize_t, "pwrite", int, const void *, size_t, off_t);
	ssize_t r = xfer("pwrite", fd, &len, 1);

	return r < 0 ? -1 : real(fd, buf, len, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	return pwrite(fd, buf, len, off);
}

ssize_t write(int fd, const void *buf, size_t len)
{
	REAL(ssize_t, "write", int, const void *, size_t);
	ssize_t r = fd > 2 ? xfer("write", fd, &len, 1) : 0;

	return r < 0 ? -1 : real(fd, buf, len);
}

/* ---- the rest ----------------------------------------------------------- */

int fsync(int fd)
{
	REAL(int, "fsync", int);

	return decide_fd("fsync", fd) < 0 ? -1 : real(fd);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	REAL(int, "fallocate", int, int, off_t, off_t);

	return decide_fd("fallocate", fd) < 0 ? -1 : real(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
	return fallocate(fd, mode, off, len);
}

int close(int fd)
{
	REAL(int, "close", int);

	if (decide_fd("close", fd) < 0) {
		real(fd);               /* closed anyway, as Linux does */
		errno = EIO;
		return -1;
	}
	return real(fd);
}

int rename(const char *from, const char *to)
{
	REAL(int, "rename", const char *, const char *);

	return decide("rename", to) < 0 ? -1 : real(from, to);
}

static int open_common(int dirfd, const char *path, int flags, mode_t mode)
{
	REAL(int, "openat", int, const char *, int, ...);

	if (decide("open", path) < 0)
		return -1;
	return real(dirfd, path, flags, mode);
}

static mode_t mode_arg(int flags, va_list ap)
{
	return flags & (O_CREAT | O_TMPFILE) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	return open_common(AT_FDCWD, path, flags, m);
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	return open_common(AT_FDCWD, path, flags, m);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	return open_common(dirfd, path, flags, m);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	return open_common(dirfd, path, flags, m);
}

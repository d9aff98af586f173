/* SPDX-License-Identifier: MIT */
/* ctx.h - error text and log routing shared by every stage of the engine */
#ifndef DS_CTX_H
#define DS_CTX_H

#include <stdio.h>
#include "dare-stream.h"

struct ds_ctx {
	char err[2048];
	ds_log_fn *log;
	void *log_user;
};

/* Record the error text in ctx and return code (so: return ds_fail(...)). */
int ds_fail(ds_ctx *ctx, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Send a warning / notice through the context's log callback, if any. */
void ds_warn(ds_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void ds_notice(ds_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Write v as the shortest decimal that reads back as the same double. */
void ds_fput_double(FILE *f, double v);

/*
 * pread all len bytes at off, retrying short reads and EINTR: 0, -errno,
 * or -EIO when the file ends first.
 */
int ds_pread_all(int fd, void *buf, size_t len, uint64_t off);

/* Checked arithmetic: 0 on success, -1 on overflow. */
static inline int ds_mul_u64(uint64_t a, uint64_t b, uint64_t *r)
{
	return __builtin_mul_overflow(a, b, r) ? -1 : 0;
}
static inline int ds_add_u64(uint64_t a, uint64_t b, uint64_t *r)
{
	return __builtin_add_overflow(a, b, r) ? -1 : 0;
}

#endif

/* SPDX-License-Identifier: MIT */
/* ctx.c - context: last error text and the log callback */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "common/ctx.h"

ds_ctx *ds_ctx_create(void)
{
	return calloc(1, sizeof(ds_ctx));
}

void ds_ctx_free(ds_ctx *ctx)
{
	free(ctx);
}

void ds_ctx_set_log(ds_ctx *ctx, ds_log_fn *fn, void *user)
{
	ctx->log = fn;
	ctx->log_user = user;
}

const char *ds_ctx_error(const ds_ctx *ctx)
{
	return ctx->err;
}

/* A C0 control, DEL, or the UTF-8 form (C2 80..C2 9F) of a C1 control. */
static size_t control_len(const unsigned char *s)
{
	if (*s < 0x20 || *s == 0x7f)
		return 1;
	return s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f ? 2 : 0;
}

/*
 * Format into out, writing control characters as \xNN: tensor and file
 * names come from files of strangers and must not reach a terminal raw
 * (an escape sequence in a tensor name would be run by it).
 */
static void format_safe(char *out, size_t size, const char *fmt, va_list ap)
{
	char raw[2048];
	const unsigned char *s = (const unsigned char *)raw;
	size_t o = 0, k;

	vsnprintf(raw, sizeof(raw), fmt, ap);
	for (; *s && o + 1 < size; s += k ? k : 1) {
		if (!(k = control_len(s))) {
			out[o++] = (char)*s;
			continue;
		}
		if (o + 4 * k >= size)
			break;
		for (size_t i = 0; i < k; i++, o += 4)
			snprintf(out + o, 5, "\\x%02x", s[i]);
	}
	out[o] = '\0';
}

int ds_fail(ds_ctx *ctx, int code, const char *fmt, ...)
{
	va_list ap;

	if (!ctx)
		return code;
	va_start(ap, fmt);
	format_safe(ctx->err, sizeof(ctx->err), fmt, ap);
	va_end(ap);
	return code;
}

static void ds_log(ds_ctx *ctx, enum ds_log_level lv, const char *fmt,
		   va_list ap)
{
	char msg[1024];

	if (!ctx || !ctx->log)
		return;
	format_safe(msg, sizeof(msg), fmt, ap);
	ctx->log(ctx->log_user, lv, msg);
}

void ds_warn(ds_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ds_log(ctx, DS_LOG_WARNING, fmt, ap);
	va_end(ap);
}

void ds_notice(ds_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ds_log(ctx, DS_LOG_NOTICE, fmt, ap);
	va_end(ap);
}

void ds_fput_double(FILE *f, double v)
{
	char buf[40];

	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	fputs(buf, f);
}

int ds_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t r = pread(fd, p, len, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

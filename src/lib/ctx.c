/* SPDX-License-Identifier: MIT */
/* ctx.c - context: last error text and the log callback */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "ctx.h"

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

int ds_fail(ds_ctx *ctx, int code, const char *fmt, ...)
{
	va_list ap;

	if (!ctx)
		return code;
	va_start(ap, fmt);
	vsnprintf(ctx->err, sizeof(ctx->err), fmt, ap);
	va_end(ap);
	return code;
}

static void ds_log(ds_ctx *ctx, enum ds_log_level lv, const char *fmt,
		   va_list ap)
{
	char msg[1024];

	if (!ctx || !ctx->log)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
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

/* SPDX-License-Identifier: MIT */
/* messages.c - the one place that turns errors into messages and exit codes */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"

int report(ds_ctx *ctx, int rc)
{
	const char *msg = ctx ? ds_ctx_error(ctx) : "";

	if (rc == 0)
		return EXIT_OK;
	if (rc == DS_E_CANCELED) {
		int sig = signals_caught();

		fprintf(stderr, "dare-stream: stopped by %s: %s\n",
			signal_name(sig), *msg ? msg : "interrupted");
		return EXIT_SIGNAL + (sig ? sig : 2);
	}
	fprintf(stderr, "dare-stream: error: %s\n",
		*msg ? msg : rc > -4096 ? strerror(-rc) : "failed");
	switch (rc) {
	case DS_E_USAGE:
		return EXIT_USAGE;
	case DS_E_FORMAT:
	case DS_E_MISMATCH:
	case DS_E_NOTFOUND:
	case DS_E_CHANGED:
		return EXIT_INPUT;
	case DS_E_OUTPUT:
		return EXIT_OUTPUT;
	default:
		return EXIT_RUNTIME;
	}
}

int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("dare-stream: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_USAGE;
}

void log_stderr(void *quiet, enum ds_log_level lv, const char *msg)
{
	if (lv == DS_LOG_WARNING)
		fprintf(stderr, "dare-stream: warning: %s\n", msg);
	else if (!*(const bool *)quiet)
		fprintf(stderr, "dare-stream: %s\n", msg);
}

const char *human_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	unsigned u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.2f %s" : "%.0f %s", v, unit[u]);
	return buf;
}

double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void progress_cb(void *user, const struct ds_progress *p)
{
	struct progress *pr = user;
	double t = now_seconds(), rate, eta;
	char a[32], b[32];

	if (!pr->on || (t - pr->last < 0.25 && p->done < p->total))
		return;
	pr->last = t;
	rate = t > pr->start ? (double)p->done / (t - pr->start) : 0;
	eta = rate > 0 ? (double)(p->total - p->done) / rate : 0;
	fprintf(stderr, "\r\033[K%3.0f%% %s / %s  %.0f MB/s  ETA %d:%02d  %.40s",
		p->total ? 100.0 * (double)p->done / (double)p->total : 100.0,
		human_bytes(p->done, a, sizeof(a)),
		human_bytes(p->total, b, sizeof(b)), rate / 1e6,
		(int)eta / 60, (int)eta % 60, p->tensor);
	if (p->done >= p->total)
		fputc('\n', stderr);
}

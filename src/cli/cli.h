/* SPDX-License-Identifier: MIT */
/* cli.h - the dare-stream command: subcommands, option parsing, messages */
#ifndef DS_CLI_H
#define DS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include "dare-stream.h"

/* Exit status of the command (see EXIT STATUS in dare-stream(1)). */
enum {
	EXIT_OK = 0,
	EXIT_RUNTIME = 1,           /* I/O or system error, disk full */
	EXIT_USAGE = 2,             /* bad option or value */
	EXIT_INPUT = 3,             /* invalid or inconsistent input */
	EXIT_OUTPUT = 4,            /* output refused */
	EXIT_CORRUPT = 5,           /* verify: OUT is corrupt or incomplete */
	EXIT_SIGNAL = 128,          /* + the signal that stopped a merge */
};

int cmd_merge(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_finalize(int argc, char **argv);
int cmd_extract(int argc, char **argv);
int cmd_apply(int argc, char **argv);

/* Plan and run the merge of recipe r into out (merge.c); an exit status. */
int cli_merge_recipe(ds_ctx *ctx, ds_recipe *r, const char *out,
		     const struct ds_merge_opts *mo, bool quiet);
int cmd_stats(int argc, char **argv);

/* ---- options.c ---------------------------------------------------------- */

/* Parse SIZE with K/M/G/T (or KiB/MiB/GiB/TiB, both powers of 1024) or
 * KB/MB/GB/TB (powers of 1000); 0 or -1 (out of range, not a size). */
int parse_size(const char *s, uint64_t *out);
/* A finite double; 0 or -1. */
int parse_double(const char *s, double *out);
/* An unsigned 64-bit integer, decimal or 0x hex; 0 or -1. */
int parse_u64(const char *s, uint64_t *out);
/* A comma-separated list of at most max finite doubles; count or -1. */
int parse_list(const char *s, double *out, int max);
/* Output dtype name (bf16, f16, f32 or the mergekit spellings); -1. */
int parse_dtype(const char *s);

/* ---- messages.c ----------------------------------------------------------- */

/* "dare-stream: error: ..." on stderr; returns the exit status for rc. */
int report(ds_ctx *ctx, int rc);
/* Print a usage error and return EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log callback: warnings and notices on stderr (notices unless quiet). */
void log_stderr(void *quiet, enum ds_log_level lv, const char *msg);
/* Human-readable byte count ("1.50 GiB") into buf. */
const char *human_bytes(uint64_t n, char *buf, size_t len);

struct progress {
	bool on;
	double start, last;
	uint64_t last_done;
};
/* Progress line on stderr, a few times a second at most. */
void progress_cb(void *user, const struct ds_progress *p);
/* Seconds since an arbitrary epoch (monotonic). */
double now_seconds(void);

/* ---- signals.c ------------------------------------------------------------ */

/* Catch SIGINT, SIGTERM and SIGHUP (unless ignored, as in nohup). */
void signals_install(void);
/* A signal from now on cancels mg (one caught while planning, at once). */
void signals_watch(ds_merge *mg);
/* Before mg is freed. */
void signals_unwatch(void);
/* The first signal caught, or 0. */
int signals_caught(void);
const char *signal_name(int sig);
/* "dare-stream: WHY: dare-stream ARGV... --resume", shell-quoted. */
void print_resume_hint(int argc, char **argv, const char *why);

#endif

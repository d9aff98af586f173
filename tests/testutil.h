/* SPDX-License-Identifier: MIT */
/* testutil.h - helpers the test programs share: a scratch directory, files */
#ifndef DS_TESTUTIL_H
#define DS_TESTUTIL_H

#include <stddef.h>

/* ---- without Check: the unit suites and the fuzz harnesses -------------- */

/*
 * Make the scratch directory $TMPDIR/<prefix>XXXXXX (/tmp when TMPDIR is
 * unset or empty); its path, or NULL (errno set) when mkdtemp fails.
 */
const char *scratch_make(const char *prefix);

/* Remove the scratch directory and all below it; 0, or -1 on any failure. */
int scratch_remove(void);

/* scratch/ + the formatted name, in one of 8 rotating buffers. */
const char *P(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* rm -rf p: 0 when p is gone (or never was), -1 when some of it remains. */
int rm_rf(const char *p);

/*
 * A whole safetensors file in *file (malloc'd, *len bytes): F32 [2] tensors
 * named names[0..n), 8 zero bytes each in that order, __metadata__ from meta
 * (NULL-terminated key, value pairs; NULL for none).  0, or what ds_st_build
 * returned, or -ENOMEM; *file is NULL on failure.
 */
int build_f32_shard(const char *const *names, size_t n,
		    const char *const *meta, char **file, size_t *len);

/* ---- with Check: each failure is an assertion of the running test ------- */

/* Replace the file p with len bytes of data. */
void write_raw(const char *p, const void *data, size_t len);

/* Replace the file p with the string text (no NUL). */
void write_text(const char *p, const char *text);

/* Append len bytes of data to the existing file p. */
void append_raw(const char *p, const void *data, size_t len);

/* Append the string text (no NUL) to the existing file p. */
void append_text(const char *p, const char *text);

struct Suite;

/* Run every test of s; EXIT_SUCCESS when all passed, else EXIT_FAILURE. */
int run_suite(struct Suite *s);

#endif

/* SPDX-License-Identifier: MIT */
/* testutil.c - helpers the test programs share: a scratch directory, files */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "inputs/model.h"
#include "testutil.h"

static char scratch[PATH_MAX - 256];

const char *scratch_make(const char *prefix)
{
	const char *t = getenv("TMPDIR");

	snprintf(scratch, sizeof(scratch), "%s/%sXXXXXX", t && *t ? t : "/tmp",
		 prefix);
	return mkdtemp(scratch);
}

int scratch_remove(void)
{
	return rm_rf(scratch);
}

const char *P(const char *fmt, ...)
{
	static char buf[8][PATH_MAX];
	static unsigned k;
	char *b = buf[k++ % 8];
	va_list ap;
	int n = snprintf(b, PATH_MAX, "%s/", scratch);

	va_start(ap, fmt);
	vsnprintf(b + n, PATH_MAX - (size_t)n, fmt, ap);
	va_end(ap);
	return b;
}

int rm_rf(const char *p)
{
	struct stat st;
	struct dirent *de;
	char sub[PATH_MAX];
	DIR *d;
	int rc = 0;

	if (lstat(p, &st))
		return errno == ENOENT ? 0 : -1;
	if (S_ISDIR(st.st_mode) && (d = opendir(p))) {
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") ||
			    !strcmp(de->d_name, ".."))
				continue;
			snprintf(sub, sizeof(sub), "%s/%s", p, de->d_name);
			rc |= rm_rf(sub);
		}
		closedir(d);
	}
	return remove(p) ? -1 : rc;
}

int build_f32_shard(const char *const *names, size_t n,
		    const char *const *meta, char **file, size_t *len)
{
	struct ds_tensor *t = calloc(n ? n : 1, sizeof(*t));
	char *hdr = NULL;
	size_t hlen;
	int rc = -ENOMEM;

	*file = NULL;
	for (size_t i = 0; t && i < n; i++) {
		t[i].name = (char *)names[i];
		t[i].dtype = DS_DT_F32;
		t[i].ndim = 1;
		t[i].shape[0] = 2;
		t[i].numel = 2;
		t[i].begin = 8 * i;
		t[i].end = 8 * i + 8;
	}
	if (t && !(rc = ds_st_build(t, n, meta, &hdr, &hlen))) {
		*len = hlen + 8 * n;
		if ((*file = calloc(1, *len)))
			memcpy(*file, hdr, hlen);
		else
			rc = -ENOMEM;
	}
	free(hdr);
	free(t);
	return rc;
}

/* The fuzz harnesses define TESTUTIL_NO_CHECK: they do not link Check. */
#ifndef TESTUTIL_NO_CHECK
#include <check.h>

/* Open p with flags and write len bytes of data to it, asserting each step. */
static void put(const char *p, int flags, const void *data, size_t len)
{
	int fd = open(p, flags, 0644);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
}

void write_raw(const char *p, const void *data, size_t len)
{
	put(p, O_WRONLY | O_CREAT | O_TRUNC, data, len);
}

void write_text(const char *p, const char *text)
{
	write_raw(p, text, strlen(text));
}

void append_raw(const char *p, const void *data, size_t len)
{
	put(p, O_WRONLY | O_APPEND, data, len);
}

void append_text(const char *p, const char *text)
{
	append_raw(p, text, strlen(text));
}

int run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
#endif

/* SPDX-License-Identifier: MIT */
/* fuzz.h - what the libFuzzer harnesses share: the entry point, files */
#ifndef DS_FUZZ_H
#define DS_FUZZ_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant: say which, then crash so libFuzzer keeps the input. */
__attribute__((noreturn))
static inline void fuzz_fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz invariant broken: %s: %s\n", what,
		detail ? detail : "");
	abort();
}

/* Write len bytes to fd from offset 0 (the file cut to len first). */
static inline void fuzz_fill(int fd, const void *data, size_t len)
{
	const char *p = data;
	size_t off = 0;

	if (ftruncate(fd, 0))
		fuzz_fail("ftruncate", NULL);
	while (off < len) {
		ssize_t w = pwrite(fd, p + off, len - off, (off_t)off);

		if (w <= 0)
			fuzz_fail("pwrite", NULL);
		off += (size_t)w;
	}
}

/* Replace the file at path with len bytes of data. */
static inline void fuzz_write(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0)
		fuzz_fail("cannot create", path);
	fuzz_fill(fd, data, len);
	close(fd);
}

#endif

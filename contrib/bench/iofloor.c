/* SPDX-License-Identifier: MIT */
/* iofloor.c - the I/O floor of a merge: read every input byte, write the output */

/*
 * Not a test.  Reads each input file from start to end with large
 * sequential reads, then writes OUT_BYTES bytes to OUT with large sequential
 * writes and fsyncs it: the least any merge of these inputs into an output
 * of that size must do.  Prints the seconds taken.
 *
 * Usage: iofloor OUT OUT_BYTES INPUT...
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUF (8u << 20)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int read_all(const char *path, char *buf)
{
	int fd = open(path, O_RDONLY);
	ssize_t k;

	if (fd < 0)
		return -1;
	while ((k = read(fd, buf, BUF)) > 0)
		;
	close(fd);
	return k < 0 ? -1 : 0;
}

static int write_all(const char *path, unsigned long long n, char *buf)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0)
		return -1;
	while (n) {
		size_t len = n < BUF ? (size_t)n : BUF;
		ssize_t k = write(fd, buf, len);

		if (k <= 0) {
			close(fd);
			return -1;
		}
		n -= (unsigned long long)k;
	}
	if (fsync(fd)) {
		close(fd);
		return -1;
	}
	return close(fd);
}

int main(int argc, char **argv)
{
	char *buf = malloc(BUF);
	double t0;

	if (argc < 4 || !buf) {
		fprintf(stderr, "usage: iofloor OUT OUT_BYTES INPUT...\n");
		return 2;
	}
	memset(buf, 0x3c, BUF);
	t0 = now();
	for (int i = 3; i < argc; i++)
		if (read_all(argv[i], buf)) {
			fprintf(stderr, "iofloor: %s: %s\n", argv[i],
				strerror(errno));
			return 1;
		}
	if (write_all(argv[1], strtoull(argv[2], NULL, 10), buf)) {
		fprintf(stderr, "iofloor: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	printf("%.3f\n", now() - t0);
	free(buf);
	return 0;
}

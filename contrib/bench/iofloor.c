/* SPDX-License-Identifier: MIT */
/* iofloor.c - the I/O floors of a merge: read every input byte, write the output */

/*
 * Not a test.  Two floors, each the least a merge of these inputs into an
 * output of OUT_BYTES must do, with large (8 MiB) sequential I/O:
 *
 *   sequential (default): read each input file from start to end, then
 *   write OUT_BYTES bytes to OUT and fsync it.  A merge that overlaps its
 *   reads and writes can beat this one.
 *
 *   pipelined (-p): the inputs are read while another thread writes OUT at
 *   the same time, starting writeback of each chunk at once
 *   (sync_file_range, as the engine does) and fsyncing at the end.  The
 *   writer never gets ahead of the readers: output byte k is written only
 *   once the fraction k / OUT_BYTES of the input bytes has been read, since
 *   no merge can write a result before it has read what it is made of.
 *   This is what a perfectly pipelined merge achieves, the stricter floor.
 *
 * Both leave the page cache as the engine does: OUT is allocated whole
 * first, each chunk read is dropped from the cache once read, and each
 * chunk written once its writeback (started at once) is done, two chunks
 * behind.  So the reads are given the pages just freed rather than pages
 * the kernel has to find, which where the RAM is a virtual machine's costs
 * more than the I/O itself: a floor that kept its pages measured the
 * allocator of the host, not the device, and could be slower than the
 * merge it is a floor of.
 *
 * -j READERS reads with that many threads, each taking the next whole file
 * in the order given (default 1).  The merge reads every input model at
 * once, and a single stream of read() calls does not reach the throughput
 * of several on every device, so a floor with one reader per input model
 * is the one a merge cannot beat.
 *
 * Prints the seconds taken.
 *
 * Usage: iofloor [-p] [-j READERS] OUT OUT_BYTES INPUT...
 */
#define _GNU_SOURCE             /* sync_file_range */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUF (8u << 20)
#define BEHIND 2                /* chunks written, not yet dropped */
#define MAX_READERS 64

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Progress of the reader, for the pipelined writer to wait on. */
struct progress {
	pthread_mutex_t lk;
	pthread_cond_t cv;
	unsigned long long done, total;  /* input bytes read, to read */
	int finished;                    /* the reader has stopped */
};

static void advance(struct progress *pg, unsigned long long k, int finished)
{
	if (!pg)
		return;
	pthread_mutex_lock(&pg->lk);
	pg->done += k;
	pg->finished |= finished;
	pthread_cond_broadcast(&pg->cv);
	pthread_mutex_unlock(&pg->lk);
}

/* Wait until output bytes up to end may be written. */
static void wait_input(struct progress *pg, unsigned long long end,
		       unsigned long long out_bytes)
{
	if (!pg)
		return;
	pthread_mutex_lock(&pg->lk);
	while (!pg->finished &&
	       (long double)pg->done * out_bytes < (long double)end * pg->total)
		pthread_cond_wait(&pg->cv, &pg->lk);
	pthread_mutex_unlock(&pg->lk);
}

static int read_all(const char *path, char *buf, struct progress *pg)
{
	int fd = open(path, O_RDONLY);
	off_t off = 0;
	ssize_t k;

	if (fd < 0)
		return -1;
	while ((k = read(fd, buf, BUF)) > 0) {
		posix_fadvise(fd, off, k, POSIX_FADV_DONTNEED);
		off += k;
		advance(pg, (unsigned long long)k, 0);
	}
	close(fd);
	return k < 0 ? -1 : 0;
}

/* Write n bytes to path and fsync; when pg is set, pace on the reader.
 * Writeback of each chunk starts at once; the chunk BEHIND chunks back is
 * waited for and dropped. */
static int write_all(const char *path, unsigned long long n, const char *buf,
		     struct progress *pg)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	unsigned long long off = 0;

	if (fd < 0)
		return -1;
	if (n && fallocate(fd, 0, 0, (off_t)n) && errno != EOPNOTSUPP) {
		close(fd);
		return -1;
	}
	while (off < n) {
		size_t len = n - off < BUF ? (size_t)(n - off) : BUF;
		ssize_t k;

		wait_input(pg, off + len, n);
		k = write(fd, buf, len);
		if (k <= 0) {
			close(fd);
			return -1;
		}
		sync_file_range(fd, (off_t)off, (off_t)k, SYNC_FILE_RANGE_WRITE);
		if (off >= BEHIND * BUF) {
			off_t old = (off_t)(off - BEHIND * BUF);

			sync_file_range(fd, old, BUF, SYNC_FILE_RANGE_WAIT_BEFORE |
					SYNC_FILE_RANGE_WRITE |
					SYNC_FILE_RANGE_WAIT_AFTER);
			posix_fadvise(fd, old, BUF, POSIX_FADV_DONTNEED);
		}
		off += (unsigned long long)k;
	}
	if (fsync(fd)) {
		close(fd);
		return -1;
	}
	return close(fd);
}

/* The inputs, taken in order by the reader threads. */
struct job {
	char **inputs;
	int ninputs, next;
	int readers;                     /* still running */
	pthread_mutex_t lk;
	struct progress *pg;
	const char *failed;              /* the file that failed, or NULL */
	int err;
};

/* A reader thread: whole files, one after another, in the order given. */
static void *reader(void *arg)
{
	struct job *j = arg;
	char *buf = malloc(BUF);
	int i, last;

	for (;;) {
		pthread_mutex_lock(&j->lk);
		i = !buf || j->failed ? j->ninputs : j->next++;
		pthread_mutex_unlock(&j->lk);
		if (i >= j->ninputs)
			break;
		if (read_all(j->inputs[i], buf, j->pg)) {
			pthread_mutex_lock(&j->lk);
			j->failed = j->inputs[i];
			j->err = errno;
			pthread_mutex_unlock(&j->lk);
		}
	}
	if (!buf) {
		pthread_mutex_lock(&j->lk);
		j->failed = "(buffer)";
		j->err = ENOMEM;
		pthread_mutex_unlock(&j->lk);
	}
	free(buf);
	pthread_mutex_lock(&j->lk);
	last = --j->readers == 0;
	pthread_mutex_unlock(&j->lk);
	if (last)
		advance(j->pg, 0, 1);
	return NULL;
}

int main(int argc, char **argv)
{
	int pipelined = 0, nread = 1, opt;
	char *wbuf = malloc(BUF);
	struct progress pg = { .lk = PTHREAD_MUTEX_INITIALIZER,
			       .cv = PTHREAD_COND_INITIALIZER };
	struct job j = { .lk = PTHREAD_MUTEX_INITIALIZER };
	unsigned long long out_bytes;
	pthread_t th[MAX_READERS];
	double t0;
	int i;

	while ((opt = getopt(argc, argv, "pj:")) != -1) {
		if (opt == 'p')
			pipelined = 1;
		else if (opt == 'j' && atoi(optarg) >= 1 &&
			 atoi(optarg) <= MAX_READERS)
			nread = atoi(optarg);
		else
			optind = argc;          /* the usage below */
	}
	if (argc - optind < 3 || !wbuf) {
		fprintf(stderr, "usage: iofloor [-p] [-j READERS] OUT OUT_BYTES "
			"INPUT...\n");
		return 2;
	}
	argv += optind;
	argc -= optind;
	out_bytes = strtoull(argv[1], NULL, 10);
	for (i = 2; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st)) {
			fprintf(stderr, "iofloor: %s: %s\n", argv[i],
				strerror(errno));
			return 1;
		}
		pg.total += (unsigned long long)st.st_size;
	}
	memset(wbuf, 0x3c, BUF);
	j.inputs = argv + 2;
	j.ninputs = argc - 2;
	j.readers = nread;
	j.pg = pipelined ? &pg : NULL;
	t0 = now();
	for (i = 0; i < nread; i++) {
		int rc = pthread_create(&th[i], NULL, reader, &j);

		if (rc) {
			fprintf(stderr, "iofloor: thread: %s\n", strerror(rc));
			return 1;
		}
	}
	if (!pipelined)                 /* the sequential floor: reads first */
		for (i = 0; i < nread; i++)
			pthread_join(th[i], NULL);
	if (!j.failed && write_all(argv[0], out_bytes, wbuf, j.pg)) {
		fprintf(stderr, "iofloor: %s: %s\n", argv[0], strerror(errno));
		return 1;
	}
	if (pipelined)
		for (i = 0; i < nread; i++)
			pthread_join(th[i], NULL);
	if (j.failed) {
		fprintf(stderr, "iofloor: %s: %s\n", j.failed, strerror(j.err));
		return 1;
	}
	printf("%.3f\n", now() - t0);
	free(wbuf);
	return 0;
}

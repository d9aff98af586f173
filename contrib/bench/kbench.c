/* SPDX-License-Identifier: MIT */
/* kbench.c - merge kernel throughput per core, for each kernel path */

/*
 * Not a test: prints output elements per second on one thread (so per
 * core) for dare_linear and dare_ties with 2 BF16 models, a BF16 base and
 * BF16 output, the median of several runs, for every path this CPU runs.
 * Build it from the top of a configured tree (config.h from configure):
 *
 *   cc -O2 -ffp-contract=off -DDS_HAVE_AVX2=1 -I. -Iinclude -Isrc/lib \
 *      -c src/lib/kernels/avx2.c -mavx2 -mf16c -o avx2.o
 *   cc -O2 -ffp-contract=off -I. -Iinclude -Isrc/lib \
 *      -c src/lib/kernels/avx512.c -mavx512f -mavx512bw -mavx512vl \
 *      -mf16c -mavx2 -o avx512.o
 *   cc -O2 -ffp-contract=off -I. -Iinclude -Isrc/lib contrib/bench/kbench.c \
 *      src/lib/ctx.c src/lib/methods.c src/lib/kernels/scalar.c \
 *      src/lib/kernels/dispatch.c avx2.o avx512.o -lxxhash -lm -lpthread \
 *      -o kbench
 *
 * (config.h defines DS_HAVE_AVX2 and DS_HAVE_AVX512 on x86-64; drop
 * avx2.o and avx512.o elsewhere.)  The build tree makes it as
 * contrib/bench/kbench.
 *
 * Usage: kbench [elements per run (default 2^25)] [runs (default 7)] [path]
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "methods/methods.h"

#define WINDOW (1u << 20)       /* elements per ds_method_window() call */

/* Seconds on the monotonic clock. */
static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* BF16 values near 1 with small deltas between the models, like a fine-tune. */
static void fill(uint16_t *b, uint16_t *x0, uint16_t *x1, size_t n)
{
	uint32_t r = 12345;
	size_t k;

	for (k = 0; k < n; k++) {
		r = r * 1664525u + 1013904223u;
		b[k] = (uint16_t)(0x3c00 + (r >> 22));
		x0[k] = (uint16_t)(b[k] + ((r >> 8) & 7) - 3);
		x1[k] = (uint16_t)(b[k] + ((r >> 12) & 7) - 3);
	}
}

/* qsort order of doubles. */
static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/*
 * Elements/s of runs runs of total elements through windows: the median,
 * and the best (on a busy machine the best is the steadier figure).
 */
static double measure(const struct ds_kernel_ops *k,
		      const struct ds_mparams *mp, struct ds_window *win,
		      float *scratch, size_t total, int runs, double *best)
{
	double t[64];
	size_t done;
	int r;

	for (r = 0; r < runs; r++) {
		t[r] = now();
		for (done = 0; done < total; done += win->n) {
			win->i0 = done;
			ds_method_window(k, mp, win, scratch);
		}
		t[r] = (double)done / (now() - t[r]);
	}
	qsort(t, (size_t)runs, sizeof(t[0]), cmp_double);
	*best = t[runs - 1];
	return t[runs / 2];
}

/* Each method on each path this CPU runs. */
int main(int argc, char **argv)
{
	static const char *const paths[] = { "scalar", "avx2", "avx512",
		"neon" };
	static const enum ds_method methods[] = { DS_M_DARE_LINEAR, DS_M_DARE_TIES };
	size_t total = argc > 1 ? strtoull(argv[1], NULL, 0) : 1u << 25;
	int runs = argc > 2 ? atoi(argv[2]) : 7;
	uint16_t *b = malloc(WINDOW * 2), *x0 = malloc(WINDOW * 2);
	uint16_t *x1 = malloc(WINDOW * 2), *out = malloc(WINDOW * 2);
	float *scratch = aligned_alloc(64, ds_method_scratch_floats(2) * 4);
	double w[2] = { 0.6, 0.4 }, p[2] = { 0.9, 0.9 };
	struct ds_window win = { .base = b, .bdt = DS_DT_BF16, .out = out,
		.odt = DS_DT_BF16, .n = WINDOW,
		.x = { x0, x1 }, .xdt = { DS_DT_BF16, DS_DT_BF16 } };
	const struct ds_kernel_ops *k;
	struct ds_mparams mp;
	double med, best;
	size_t m, i;

	if (!b || !x0 || !x1 || !out || !scratch || runs < 1 || runs > 64)
		return 1;
	fill(b, x0, x1, WINDOW);
	for (m = 0; m < 2; m++) {
		if (ds_mparams_init(NULL, &mp, methods[m], 2, w, p, 1.0, -1,
				    DS_RESCALE_INVERSE, 42))
			return 1;
		ds_mparams_tensor(&mp, "model.layers.0.mlp.up_proj.weight");
		for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
			k = ds_kernel_get(paths[i]);
			if (!k || (argc > 3 && strcmp(argv[3], k->name)))
				continue;
			med = measure(k, &mp, &win, scratch, total, runs, &best);
			printf("%-12s %-7s %7.3f Gelem/s per core (median of %d,"
			       " best %.3f)\n", ds_method_name(methods[m]),
			       k->name, med / 1e9, runs, best / 1e9);
		}
	}
	free(b);
	free(x0);
	free(x1);
	free(out);
	free(scratch);
	return 0;
}

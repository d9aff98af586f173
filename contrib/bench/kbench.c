/* SPDX-License-Identifier: MIT */
/* kbench.c - merge kernel throughput per core, for each method and kernel path */

/*
 * Not a test: prints output elements per second on one thread (so per
 * core) for one BF16 tensor of a BF16 base and BF16 models into a BF16
 * output, the median of several runs, for every kernel path this CPU runs
 * and each of these methods (the options bench.sh merges with):
 *
 *   dare_linear, dare_ties  2 models, p 0.9            1 pass
 *   ties                    2 models, p 0.9            rank passes + write
 *   della                   2 models, p 0.9, eps 0.05  1 pass, whole rows
 *   della (wide)            the same on wider deltas   1 pass, whole rows
 *   slerp                   1 model, t 0.5             sums + write
 *   model_stock             2 models                   sums + write
 *
 * The tensor goes through the engine's pass API exactly as the pipeline
 * drives it (ds_tensor_begin, then per reducing pass ds_pass_reduce and
 * ds_pass_fold on every window and ds_pass_finalize, then ds_write_begin,
 * ds_pass_write and ds_write_check on every window), on one thread.  Two
 * rates are printed: the writing pass alone (the kernel the merge's last
 * pass runs), and all passes together (what one core delivers for the
 * whole tensor, which is what has to keep up with the disk).  For
 * single-pass methods the two are the same.
 * Build it from the top of a configured tree (config.h from configure):
 *
 *   cc -O2 -ffp-contract=off -DDS_HAVE_AVX2=1 -I. -Iinclude -Isrc/lib \
 *      -c src/lib/kernels/avx2.c -mavx2 -mf16c -o avx2.o
 *   cc -O2 -ffp-contract=off -I. -Iinclude -Isrc/lib \
 *      -c src/lib/kernels/avx512.c -mavx512f -mavx512bw -mavx512vl \
 *      -mf16c -mavx2 -o avx512.o
 *   cc -O2 -ffp-contract=off -I. -Iinclude -Isrc/lib contrib/bench/kbench.c \
 *      src/lib/common/ctx.c src/lib/recipe/recipe.c \
 *      src/lib/methods/methods.c src/lib/methods/passes.c \
 *      src/lib/methods/select.c src/lib/methods/interp.c \
 *      src/lib/methods/rows.c src/lib/kernels/scalar.c \
 *      src/lib/kernels/dispatch.c avx2.o avx512.o \
 *      -lxxhash -lyaml -lm -lpthread -o kbench
 *
 * (config.h defines DS_HAVE_AVX2 and DS_HAVE_AVX512 on x86-64; drop
 * avx2.o and avx512.o elsewhere.)  The build tree makes it as
 * contrib/bench/kbench.
 *
 * Usage: kbench [elements per tensor (default 2^25)] [runs (default 7)]
 *               [path] [method]
 */
#include "config.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "methods/methods.h"
#include "recipe/recipe.h"

#define WINDOW (1u << 20)       /* elements per window */
#define ROWLEN 4096u            /* the tensor is [n / ROWLEN, ROWLEN] */

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

/* Round to nearest even (the values here are finite). */
static uint16_t bf16_of(float f)
{
	uint32_t x;

	memcpy(&x, &f, 4);
	return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

static float f32_of(uint16_t h)
{
	uint32_t x = (uint32_t)h << 16;
	float f;

	memcpy(&f, &x, 4);
	return f;
}

/* A normal draw (Box-Muller) from the generator state r. */
static double normal(uint32_t *r)
{
	double u, v;

	*r = *r * 1664525u + 1013904223u;
	u = ((double)(*r >> 8) + 0.5) / 16777216.0;
	*r = *r * 1664525u + 1013904223u;
	v = (double)(*r >> 8) / 16777216.0;
	return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/*
 * BF16 weights of stddev 0.02 with fine-tune deltas of stddev 0.002 (as
 * tests/mkfixture makes them): |delta| spans many binades, so della's
 * rows take two counting digits, as those of real fine-tunes do.
 */
static void fill_wide(uint16_t *b, uint16_t *x0, uint16_t *x1, size_t n)
{
	uint32_t r = 54321;

	for (size_t k = 0; k < n; k++) {
		b[k] = bf16_of((float)(0.02 * normal(&r)));
		x0[k] = bf16_of(f32_of(b[k]) + (float)(0.002 * normal(&r)));
		x1[k] = bf16_of(f32_of(b[k]) + (float)(0.002 * normal(&r)));
	}
}

/* qsort order of doubles. */
static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* A method as bench.sh merges it. */
struct bench {
	enum ds_method m;
	unsigned n;                     /* models */
	double p, epsilon;              /* epsilon 0: the default */
	bool wide;                      /* fill_wide()'s inputs */
};

static const struct bench benches[] = {
	{ DS_M_DARE_LINEAR, 2, 0.9, 0.0, false },
	{ DS_M_DARE_TIES, 2, 0.9, 0.0, false },
	{ DS_M_TIES, 2, 0.9, 0.0, false },
	{ DS_M_DELLA, 2, 0.9, 0.05, false },
	{ DS_M_DELLA, 2, 0.9, 0.05, true },
	{ DS_M_SLERP, 1, 0.0, 0.0, false },     /* t: the default, 0.5 */
	{ DS_M_MODEL_STOCK, 2, 0.0, 0.0, false },
};

/* The parameters of b, as ds_mparams_init() would set them, with epsilon. */
static int params(const struct bench *b, struct ds_mparams *mp)
{
	static const double w[2] = { 0.6, 0.4 };
	struct ds_tparams tp;

	memset(&tp, 0, sizeof(tp));
	for (unsigned i = 0; i < DS_P_COUNT; i++)
		tp.param[i] = ds_param_default((enum ds_param)i);
	tp.n = b->n;
	tp.has_base = true;
	for (unsigned j = 0; j < b->n; j++) {
		tp.j[j] = tp.sj[j] = j;
		tp.weight[j] = w[j];
		tp.p[j] = b->p;
		tp.density[j] = 1.0 - b->p;
		tp.gamma[j] = tp.param[DS_P_GAMMA];
		tp.epsilon[j] = b->epsilon > 0.0 ? b->epsilon :
				tp.param[DS_P_EPSILON];
	}
	tp.lambda = 1.0;
	tp.normalize = -1;
	tp.rescale = DS_RESCALE_INVERSE;
	tp.seed = 42;
	if (ds_mparams_from(NULL, mp, b->m, &tp))
		return -1;
	ds_mparams_tensor(mp, "model.layers.0.mlp.up_proj.weight");
	return 0;
}

/* What one run of the tensor needs besides the inputs. */
struct work {
	struct ds_tstate ts;
	void *red, *acc;
	float *scratch;
};

/*
 * One run of the whole tensor of total elements through the windows:
 * seconds of the reducing passes (*tr) and of the writing pass (*tw).
 */
static int run(const struct ds_kernel_ops *k, const struct ds_mparams *mp,
	       struct ds_window *win, struct work *w, uint64_t total,
	       double *tr, double *tw)
{
	const uint64_t shape[2] = { total / ROWLEN, ROWLEN };
	double t0 = now(), t1;
	uint64_t done;
	unsigned p;

	if (ds_tensor_begin(NULL, &w->ts, mp, shape, 2, total, WINDOW, ROWLEN))
		return -1;
	for (p = 0; p + 1 < w->ts.npass; p++) {
		if (ds_pass_skipped(&w->ts, p))
			continue;
		for (done = 0; done < total; done += win->n) {
			win->i0 = done;
			win->n = total - done < WINDOW ? total - done : WINDOW;
			ds_pass_reduce(k, &w->ts, p, win, w->red, w->scratch);
			ds_pass_fold(k, &w->ts, p, win, w->red, w->acc);
		}
		ds_pass_finalize(&w->ts, p, w->acc);
		w->ts.ready = ds_pass_ready(&w->ts, p);
	}
	t1 = now();
	for (done = 0; done < total; done += win->n) {
		win->i0 = done;
		win->n = total - done < WINDOW ? total - done : WINDOW;
		ds_write_begin(&w->ts, win, w->red);
		ds_pass_write(k, &w->ts, win, w->scratch, w->acc, w->red);
		ds_write_check(&w->ts, win, w->red);
	}
	*tr = t1 - t0;
	*tw = now() - t1;
	return 0;
}

/* Each method on each path this CPU runs. */
int main(int argc, char **argv)
{
	static const char *const paths[] = { "scalar", "avx2", "avx512",
		"neon" };
	uint64_t total = argc > 1 ? strtoull(argv[1], NULL, 0) : 1u << 25;
	int runs = argc > 2 ? atoi(argv[2]) : 7;
	uint16_t *b = malloc(WINDOW * 2), *x0 = malloc(WINDOW * 2);
	uint16_t *x1 = malloc(WINDOW * 2), *out = malloc(WINDOW * 2);
	uint16_t *wb = malloc(WINDOW * 2), *w0 = malloc(WINDOW * 2);
	uint16_t *w1 = malloc(WINDOW * 2);
	struct ds_window win = { .base = b, .bdt = DS_DT_BF16, .out = out,
		.odt = DS_DT_BF16, .n = WINDOW,
		.x = { x0, x1 }, .xdt = { DS_DT_BF16, DS_DT_BF16 } };
	struct ds_window wwin = win;
	static struct work w;
	double wr[64], all[64];

	total = (total + ROWLEN - 1) / ROWLEN * ROWLEN;
	if (!b || !x0 || !x1 || !out || !wb || !w0 || !w1 || runs < 1 ||
	    runs > 64 || !total)
		return 1;
	fill(b, x0, x1, WINDOW);
	/* the normal draws take a while: only for a della run */
	if (argc <= 4 || !strcmp(argv[4], "della"))
		fill_wide(wb, w0, w1, WINDOW);
	wwin.base = wb;
	wwin.x[0] = w0;
	wwin.x[1] = w1;
	printf("%-12s %-7s %6s %11s %11s   Gelem/s per core, median of %d"
	       " (best)\n", "method", "path", "passes", "write pass",
	       "all passes", runs);
	for (size_t m = 0; m < sizeof(benches) / sizeof(benches[0]); m++) {
		struct ds_method_needs nd;
		struct ds_mparams mp;

		if (argc > 4 && strcmp(argv[4], ds_method_name(benches[m].m)))
			continue;
		if (params(&benches[m], &mp)) {
			fprintf(stderr, "kbench: %s: bad parameters\n",
				ds_method_name(benches[m].m));
			return 1;
		}
		ds_method_needs(&mp, WINDOW, ROWLEN, &nd);
		w.red = malloc(nd.red_bytes ? nd.red_bytes : 1);
		w.acc = malloc(nd.acc_bytes ? nd.acc_bytes : 1);
		w.scratch = aligned_alloc(64, (nd.scratch_floats * 4 + 63) &
					  ~(size_t)63);
		if (!w.red || !w.acc || !w.scratch)
			return 1;
		for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
			const struct ds_kernel_ops *k = ds_kernel_get(paths[i]);
			double tr, tw;
			int r;

			if (!k || (argc > 3 && strcmp(argv[3], k->name) &&
				   strcmp(argv[3], "all")))
				continue;
			for (r = 0; r < runs; r++) {
				if (run(k, &mp, benches[m].wide ? &wwin : &win,
					&w, total, &tr, &tw)) {
					fprintf(stderr, "kbench: %s: a row does"
						" not fit the window\n",
						ds_method_name(benches[m].m));
					return 1;
				}
				wr[r] = (double)total / tw;
				all[r] = (double)total / (tr + tw);
			}
			qsort(wr, (size_t)runs, sizeof(wr[0]), cmp_double);
			qsort(all, (size_t)runs, sizeof(all[0]), cmp_double);
			printf("%-12s %-7s %6u %11.3f %11.3f   (%.3f, %.3f)\n",
			       benches[m].wide ? "della-wide" :
			       ds_method_name(benches[m].m), k->name,
			       w.ts.npass - (unsigned)__builtin_popcount(
				       w.ts.skip), wr[runs / 2] / 1e9,
			       all[runs / 2] / 1e9, wr[runs - 1] / 1e9,
			       all[runs - 1] / 1e9);
			fflush(stdout);
		}
		free(w.red);
		free(w.acc);
		free(w.scratch);
	}
	free(b);
	free(x0);
	free(x1);
	free(out);
	free(wb);
	free(w0);
	free(w1);
	return 0;
}

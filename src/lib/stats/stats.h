/* SPDX-License-Identifier: MIT */
/* stats.h - the |delta| histogram behind delta-stats, and its figures */
#ifndef DS_STATS_H
#define DS_STATS_H

#include <stddef.h>
#include <stdint.h>
#include "dare-stream.h"

/*
 * Bin k of |d| holds the binary32 values whose bits b (sign clear) have
 * b >> 15 == k: 8 exponent bits and the top 8 fraction bits, so 256 bins
 * per power of two.  +inf is bin 0xff00; NaN is never binned.
 */
#define DS_HIST_SHIFT 15
#define DS_HIST_BINS (1u << (31 - DS_HIST_SHIFT))

struct ds_hist {
	uint64_t bin[DS_HIST_BINS];
	uint64_t n, nan, zeros;
	double sum;
	uint32_t max;               /* bits of the largest |d| */
	uint32_t lo, hi;            /* bins in use are within [lo, hi] */
};

/* Empty h (only the bins in use are cleared: cheap between tensors). */
void ds_hist_reset(struct ds_hist *h);
/* Add d = x[k] - b[k] for k < n, in binary32, in order. */
void ds_hist_add_delta(struct ds_hist *h, const float *b, const float *x,
		       size_t n);
/* Add the deltas d[k] themselves (tests, and callers with deltas). */
void ds_hist_add(struct ds_hist *h, const float *d, size_t n);
/* dst += src: counts, bins, max; dst->sum += src->sum. */
void ds_hist_merge(struct ds_hist *dst, const struct ds_hist *src);
/*
 * The nearest-rank percentile num/den (0 < num <= den) of the non-NaN
 * values: the upper edge of the bin holding the ceil(N num / den)-th
 * smallest, clamped to the maximum; 0 when that value is a zero.
 */
float ds_hist_percentile(const struct ds_hist *h, uint64_t num, uint64_t den);
/* Every figure of h. */
void ds_hist_stats(const struct ds_hist *h, struct ds_delta_stats *s);

#endif

/* SPDX-License-Identifier: MIT */
/* test_bits.c - ds_keep_bits and ds_bits_count against the definition
 *
 * Built natively (the SSE2 path on x86-64, the scalar one elsewhere) and by
 * tests/neon-cross.sh for AArch64 under qemu (the NEON path).  Prints
 * "bits: N checks, F failures"; exit 1 on a failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/bits.h"

static unsigned checks, failures;

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t next32(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

/* Values near thr and at both ends, mixed with random words. */
static void fill(uint32_t *u, size_t n, uint32_t thr)
{
	const uint32_t edge[] = { 0, 1, thr - 1, thr, thr + 1, 0x7fffffffu,
				  0x80000000u, 0xfffffffeu, 0xffffffffu };

	for (size_t i = 0; i < n; i++) {
		uint32_t r = next32();

		u[i] = r % 3 ? next32() : edge[r % (sizeof(edge) / sizeof(*edge))];
	}
}

static void one(size_t n, uint32_t thr)
{
	static uint32_t u[65536 + 64];
	static uint64_t bits[1024 + 2];
	size_t want = 0, got, nw = (n + 63) / 64;
	int bad = 0;

	fill(u, n, thr);
	memset(bits, 0xa5, sizeof(bits));
	got = ds_keep_bits(u, n, thr, bits);
	for (size_t i = 0; i < nw * 64; i++) {
		int is = (int)(bits[i / 64] >> (i % 64) & 1);
		int should = i < n && u[i] >= thr;

		want += (size_t)should;
		bad |= is != should;
	}
	bad |= bits[nw] != 0xa5a5a5a5a5a5a5a5ull;   /* nothing past the end */
	bad |= got != want;
	/* counting the first m bits ignores the ones after them */
	for (size_t m = n; m + 70 > n && m > 0; m -= m > 7 ? 7 : m) {
		size_t c = 0;

		for (size_t i = 0; i < m; i++)
			c += bits[i / 64] >> (i % 64) & 1;
		bad |= ds_bits_count(bits, m) != c;
	}
	checks++;
	if (bad) {
		failures++;
		printf("FAIL n %zu thr %u: %zu kept, want %zu\n", n, thr, got,
		       want);
	}
}

int main(void)
{
	const size_t ns[] = { 1, 15, 16, 17, 63, 64, 65, 127, 128, 1000, 4096,
			      65535, 65536 };
	const uint32_t thrs[] = { 1, 2, 0x7fffffffu, 0x80000000u, 0x80000001u,
				  0xe6666666u, 0xfffffffeu, 0xffffffffu };

	for (size_t a = 0; a < sizeof(ns) / sizeof(*ns); a++)
		for (size_t b = 0; b < sizeof(thrs) / sizeof(*thrs); b++)
			one(ns[a], thrs[b]);
	for (unsigned r = 0; r < 200; r++)
		one(1 + next32() % 5000, 1 + next32() % 0xffffffffu);
	printf("bits: %u checks, %u failures\n", checks, failures);
	return failures != 0;
}

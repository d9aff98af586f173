/* SPDX-License-Identifier: MIT */
/* philox.h - scalar Philox4x32-10 and the DARE lane of DESIGN section 4 */
#ifndef DS_PHILOX_H
#define DS_PHILOX_H

#include <stddef.h>
#include <stdint.h>

#define DS_PHILOX_M0 0xD2511F53u
#define DS_PHILOX_M1 0xCD9E8D57u
#define DS_PHILOX_W0 0x9E3779B9u
#define DS_PHILOX_W1 0xBB67AE85u
#define DS_PHILOX_ROUNDS 10

/* One round: two 32x32->64 products, the state words permuted (Random123). */
static inline void ds_philox_round(uint32_t c[4], uint32_t k0, uint32_t k1)
{
	uint64_t p0 = (uint64_t)DS_PHILOX_M0 * c[0];
	uint64_t p1 = (uint64_t)DS_PHILOX_M1 * c[2];
	uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0;
	uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1;

	c[0] = n0;
	c[1] = (uint32_t)p1;
	c[2] = n2;
	c[3] = (uint32_t)p0;
}

/* x = Philox4x32-10(ctr, key); the key is bumped after rounds 1..9. */
static inline void ds_philox_block(const uint32_t ctr[4], const uint32_t key[2],
				   uint32_t x[4])
{
	uint32_t c[4] = { ctr[0], ctr[1], ctr[2], ctr[3] };
	uint32_t k0 = key[0], k1 = key[1];
	int r;

	for (r = 0; r < DS_PHILOX_ROUNDS; r++) {
		ds_philox_round(c, k0, k1);
		k0 += DS_PHILOX_W0;
		k1 += DS_PHILOX_W1;
	}
	x[0] = c[0];
	x[1] = c[1];
	x[2] = c[2];
	x[3] = c[3];
}

/*
 * The uniform u of DESIGN 4 for element i of model j's stream of a tensor:
 * block i / 4, lane i % 4, counter (block lo, block hi, j, name_hash),
 * key (seed lo, seed hi).
 */
static inline uint32_t ds_philox_u(uint64_t seed, uint32_t j,
				   uint32_t name_hash, uint64_t i)
{
	uint64_t blk = i >> 2;
	uint32_t ctr[4] = { (uint32_t)blk, (uint32_t)(blk >> 32), j, name_hash };
	uint32_t key[2] = { (uint32_t)seed, (uint32_t)(seed >> 32) };
	uint32_t x[4];

	ds_philox_block(ctr, key, x);
	return x[i & 3];
}

/*
 * DARE drop threshold T = floor(p * 2^32) in double (DESIGN 4): an element
 * is dropped iff u < T; 2^32 for p = 1 drops every element, 0 keeps all.
 */
static inline uint64_t ds_drop_threshold(double p)
{
	if (!(p > 0.0))                 /* 0, negative, NaN */
		return 0;
	if (p >= 1.0)
		return 1ull << 32;
	/* p * 2^32 is exact in double; below 2^32 since p < 1. */
	return (uint64_t)(p * 4294967296.0);   /* truncation is floor here */
}

/*
 * Vector paths generate whole blocks of 4 elements: the elements before
 * i0's next multiple of 4 (at most n) come from the scalar reference first.
 */
static inline size_t ds_philox_head_len(uint64_t i0, size_t n)
{
	size_t h = (size_t)((4 - (i0 & 3)) & 3);

	return h < n ? h : n;
}

#endif

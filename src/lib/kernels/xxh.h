/* SPDX-License-Identifier: MIT */
/* xxh.h - XXH3 streaming updates at the widest vectors the CPU runs */
#ifndef DS_KERNELS_XXH_H
#define DS_KERNELS_XXH_H

#include <stddef.h>

/*
 * XXH3_64bits_update() and XXH3_128bits_update() of libxxhash on a state
 * made and read by libxxhash (XXH3_createState, _reset, _digest): the same
 * digests, computed with AVX2 or AVX-512 where the CPU has them (the
 * library is built for SSE2).  Every checksum of the data goes through
 * these; the choice is made once, by the CPU alone (DARE_STREAM_KERNEL
 * picks the merge kernels, whose results it could change; these it cannot).
 * The state is passed as void * because the vector builds name its type
 * differently.
 */
void ds_xxh3_64_update(void *state, const void *p, size_t n);
void ds_xxh3_128_update(void *state, const void *p, size_t n);

/* the vector builds (kernels/xxh_avx2.c, kernels/xxh_avx512.c) */
void ds_xxh3_64_update_avx2(void *state, const void *p, size_t n);
void ds_xxh3_128_update_avx2(void *state, const void *p, size_t n);
void ds_xxh3_64_update_avx512(void *state, const void *p, size_t n);
void ds_xxh3_128_update_avx512(void *state, const void *p, size_t n);

#endif

/* SPDX-License-Identifier: MIT */
/* xxh_avx2.c - libxxhash's XXH3 streaming updates, built for AVX2
 *
 * xxhash.h holds the whole implementation; with XXH_INLINE_ALL this object
 * compiles it at this path's vector width (the shared library is built for
 * SSE2 only), under names of its own.  The state is the library's
 * XXH3_state_t: the same header, so the same layout and the same digests.
 * dispatch.c calls these only on a CPU that runs them.
 */
#include "config.h"

#include <stddef.h>
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "kernels/xxh.h"

void ds_xxh3_64_update_avx2(void *state, const void *p, size_t n)
{
	(void)XXH3_64bits_update(state, p, n);
}

void ds_xxh3_128_update_avx2(void *state, const void *p, size_t n)
{
	(void)XXH3_128bits_update(state, p, n);
}

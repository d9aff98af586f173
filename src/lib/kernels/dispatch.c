/* SPDX-License-Identifier: MIT */
/* dispatch.c - choose the kernel path once: CPU and OS support, env override */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include "kernels/kernels.h"
#include "kernels/xxh.h"

#if defined(DS_HAVE_AVX2) && (defined(__x86_64__) || defined(__i386__))
#define DS_TRY_AVX2 1
#include <cpuid.h>

/* XCR0 through XGETBV, without needing -mxsave for the intrinsic. */
static uint64_t xgetbv0(void)
{
	uint32_t lo, hi;

	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return ((uint64_t)hi << 32) | lo;
}

/*
 * AVX2 and F16C in the CPU (leaf 7 EBX bit 5, leaf 1 ECX bits 28, 29), and
 * the OS saving the YMM state (OSXSAVE, then XCR0 bits 1 and 2): without the
 * latter an AVX instruction faults even on a CPU that has it.
 */
static int avx2_usable(void)
{
	unsigned a, b, c, d;

	if (!__get_cpuid(1, &a, &b, &c, &d))
		return 0;
	if (!(c & bit_OSXSAVE) || !(c & bit_AVX) || !(c & bit_F16C))
		return 0;
	if ((xgetbv0() & 6) != 6)
		return 0;
	if (__get_cpuid_max(0, NULL) < 7)
		return 0;
	__cpuid_count(7, 0, a, b, c, d);
	return (b & bit_AVX2) != 0;
}

#if defined(DS_HAVE_AVX512) && defined(__x86_64__)
#define DS_TRY_AVX512 1
/* XCR0 bits the OS sets when it saves SSE, AVX (YMM upper halves), the
 * opmask registers, ZMM0-15 upper halves and ZMM16-31. */
#define XCR0_AVX512 ((1u << 1) | (1u << 2) | (1u << 5) | (1u << 6) | (1u << 7))
#define LEAF7_AVX512 ((1u << 16) | (1u << 30) | (1u << 31))  /* F, BW, VL */

/*
 * AVX-512 F, BW and VL (leaf 7 EBX bits 16, 30, 31) on top of the AVX2,
 * F16C and POPCNT (leaf 1 ECX bit 23) that avx512.c also uses, and the
 * OS saving the opmask and all of the ZMM state (XCR0): an OS (or
 * hypervisor) that leaves AVX-512 off still reports the CPUID bits, and
 * the first ZMM instruction faults.
 */
static int avx512_usable(void)
{
	unsigned a, b, c, d;

	if (!avx2_usable() || !__get_cpuid(1, &a, &b, &c, &d) ||
	    !(c & bit_POPCNT))
		return 0;
	if ((xgetbv0() & XCR0_AVX512) != XCR0_AVX512)
		return 0;
	__cpuid_count(7, 0, a, b, c, d);
	return (b & LEAF7_AVX512) == LEAF7_AVX512;
}
#endif

/* The CPU check of test(), done once into *cached (-1: not yet). */
static int cpu_ok(int *cached, int (*test)(void))
{
	int v = __atomic_load_n(cached, __ATOMIC_RELAXED);

	if (v < 0) {     /* every thread would compute the same */
		v = test();
		__atomic_store_n(cached, v, __ATOMIC_RELAXED);
	}
	return v;
}

/* AVX2 usable here, checked once. */
static int avx2_ok(void)
{
	static int cached = -1;

	return cpu_ok(&cached, avx2_usable);
}

#ifdef DS_TRY_AVX512
/* AVX-512 usable here, checked once. */
static int avx512_ok(void)
{
	static int cached = -1;

	return cpu_ok(&cached, avx512_usable);
}
#endif
#endif

const struct ds_kernel_ops *ds_kernel_get(const char *name)
{
	if (!name)
		return NULL;
	if (strcmp(name, "scalar") == 0)
		return &ds_kernel_scalar_ops;
#ifdef DS_TRY_AVX2
	if (strcmp(name, "avx2") == 0)
		return avx2_ok() ? &ds_kernel_avx2_ops : NULL;
#endif
#ifdef DS_TRY_AVX512
	if (strcmp(name, "avx512") == 0)
		return avx512_ok() ? &ds_kernel_avx512_ops : NULL;
#endif
#if defined(DS_HAVE_NEON) && defined(__aarch64__)
	if (strcmp(name, "neon") == 0)
		return &ds_kernel_neon_ops;  /* every AArch64 CPU has it */
#endif
	return NULL;
}

static const struct ds_kernel_ops *selected;
static pthread_once_t select_once = PTHREAD_ONCE_INIT;

/* The override if set (NULL when it cannot run here), else the best path. */
static void select_path(void)
{
	static const char *const best[] = { "avx512", "avx2", "neon",
					    "scalar" };
	const char *env = getenv("DARE_STREAM_KERNEL");
	size_t i;

	if (env && *env) {
		selected = ds_kernel_get(env);
		return;
	}
	for (i = 0; i < sizeof(best) / sizeof(best[0]) && !selected; i++)
		selected = ds_kernel_get(best[i]);
}

const struct ds_kernel_ops *ds_kernel_select(void)
{
	pthread_once(&select_once, select_path);
	return selected;
}

ds_lora_row_fn *ds_lora_kernel(const struct ds_kernel_ops *k)
{
#ifdef DS_TRY_AVX2
	if (k == &ds_kernel_avx2_ops)
		return ds_lora_row_avx2;
#endif
#ifdef DS_TRY_AVX512
	if (k == &ds_kernel_avx512_ops)
		return ds_lora_row_avx512;
#endif
#if defined(DS_HAVE_NEON) && defined(__aarch64__)
	if (k == &ds_kernel_neon_ops)
		return ds_lora_row_neon;
#endif
	(void)k;
	return ds_lora_row_scalar;
}

ds_lora_pick_fn *ds_lora_pick_kernel(const struct ds_kernel_ops *k)
{
#ifdef DS_TRY_AVX2
	if (k == &ds_kernel_avx2_ops)
		return ds_lora_pick_avx2;
#endif
#ifdef DS_TRY_AVX512
	if (k == &ds_kernel_avx512_ops)
		return ds_lora_pick_avx2;       /* AVX-512 CPUs run AVX2 */
#endif
	(void)k;
	return ds_lora_pick_scalar;
}

/* ---- XXH3 updates (kernels/xxh.h) ---------------------------------------- */

typedef void xxh_fn(void *state, const void *p, size_t n);

static void xxh64_lib(void *state, const void *p, size_t n)
{
	(void)XXH3_64bits_update(state, p, n);
}

static void xxh128_lib(void *state, const void *p, size_t n)
{
	(void)XXH3_128bits_update(state, p, n);
}

static xxh_fn *xxh64 = xxh64_lib, *xxh128 = xxh128_lib;
static pthread_once_t xxh_once = PTHREAD_ONCE_INIT;

static void xxh_select(void)
{
#ifdef DS_TRY_AVX512
	if (avx512_ok()) {
		xxh64 = ds_xxh3_64_update_avx512;
		xxh128 = ds_xxh3_128_update_avx512;
		return;
	}
#endif
#ifdef DS_TRY_AVX2
	if (avx2_ok()) {
		xxh64 = ds_xxh3_64_update_avx2;
		xxh128 = ds_xxh3_128_update_avx2;
	}
#endif
}

void ds_xxh3_64_update(void *state, const void *p, size_t n)
{
	pthread_once(&xxh_once, xxh_select);
	xxh64(state, p, n);
}

void ds_xxh3_128_update(void *state, const void *p, size_t n)
{
	pthread_once(&xxh_once, xxh_select);
	xxh128(state, p, n);
}

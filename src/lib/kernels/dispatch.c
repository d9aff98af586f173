/* SPDX-License-Identifier: MIT */
/* dispatch.c - choose the kernel path once: CPU and OS support, env override */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "kernels/kernels.h"

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

/* The CPU check, done once. */
static int avx2_ok(void)
{
	static int cached = -1;     /* every thread would compute the same */
	int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);

	if (v < 0) {
		v = avx2_usable();
		__atomic_store_n(&cached, v, __ATOMIC_RELAXED);
	}
	return v;
}
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
	static const char *const best[] = { "avx2", "neon", "scalar" };
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

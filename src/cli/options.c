/* SPDX-License-Identifier: MIT */
/* options.c - parsers for sizes, numbers, lists and dtypes */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "cli.h"

int parse_size(const char *s, uint64_t *out)
{
	static const struct { const char *sfx; uint64_t mul; } units[] = {
		{ "", 1 }, { "B", 1 },
		{ "K", 1ull << 10 }, { "KiB", 1ull << 10 }, { "KB", 1000ull },
		{ "M", 1ull << 20 }, { "MiB", 1ull << 20 }, { "MB", 1000000ull },
		{ "G", 1ull << 30 }, { "GiB", 1ull << 30 },
		{ "GB", 1000000000ull },
		{ "T", 1ull << 40 }, { "TiB", 1ull << 40 },
		{ "TB", 1000000000000ull },
	};
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (!strcasecmp(end, units[i].sfx))
			return __builtin_mul_overflow(v, units[i].mul, out) ?
			       -1 : 0;
	return -1;
}

int parse_double(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return end == s || *end || errno || !isfinite(*out) ? -1 : 0;
}

int parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (!s || *s == '-' || *s == '+' || *s == ' ')
		return -1;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return end == s || *end || errno ? -1 : 0;
}

int parse_list(const char *s, double *out, int max)
{
	int n = 0;

	for (;;) {
		size_t len = strcspn(s, ",");
		char item[64];

		if (n == max || len == 0 || len >= sizeof(item))
			return -1;
		memcpy(item, s, len);
		item[len] = 0;
		if (parse_double(item, &out[n++]))
			return -1;
		if (!s[len])
			return n;
		s += len + 1;
	}
}

int parse_dtype(const char *s)
{
	if (!strcasecmp(s, "bf16") || !strcmp(s, "bfloat16"))
		return DS_DT_BF16;
	if (!strcasecmp(s, "f16") || !strcmp(s, "float16") ||
	    !strcmp(s, "fp16"))
		return DS_DT_F16;
	if (!strcasecmp(s, "f32") || !strcmp(s, "float32") ||
	    !strcmp(s, "fp32"))
		return DS_DT_F32;
	return -1;
}

/* SPDX-License-Identifier: MIT */
/* fuzz_header.c - libFuzzer: a data size then a header, into ds_st_parse */
#include "config.h"

#include <inttypes.h>
#include <string.h>
#include "common/ctx.h"
#include "inputs/model.h"
#include "fuzz.h"

/* What ds_st_parse promises: data order, a tiling of [0, data_size). */
static void check_tiling(const struct ds_tensor *t, size_t n,
			 uint64_t data_size)
{
	uint64_t pos = 0, bytes;

	for (size_t i = 0; i < n; i++) {
		if (t[i].begin != pos)
			fuzz_fail("tensors do not tile the data", t[i].name);
		if (ds_dtype_nbytes(t[i].dtype, t[i].numel, &bytes) ||
		    t[i].end - t[i].begin != bytes)
			fuzz_fail("byte range is not numel x bits / 8",
				  t[i].name);
		if (t[i].ndim > DS_MAX_DIMS || t[i].shard != 7)
			fuzz_fail("ndim or shard", t[i].name);
		pos = t[i].end;
	}
	if (pos != data_size)
		fuzz_fail("data size", NULL);
}

static int same_tensor(const struct ds_tensor *a, const struct ds_tensor *b)
{
	return !strcmp(a->name, b->name) && a->dtype == b->dtype &&
	       a->ndim == b->ndim && a->numel == b->numel &&
	       a->begin == b->begin && a->end == b->end &&
	       !memcmp(a->shape, b->shape, a->ndim * sizeof(a->shape[0]));
}

/* A header written by ds_st_build from what was parsed parses the same. */
static void check_round_trip(const struct ds_tensor *t, size_t n,
			     uint64_t data_size)
{
	static const char *const meta[] = { "format", "pt", NULL };
	ds_ctx *ctx = ds_ctx_create();
	struct ds_tensor *u;
	size_t m, len;
	char *buf;

	if (!ctx || ds_st_build(t, n, meta, &buf, &len))
		fuzz_fail("ds_st_build refused a parsed header", NULL);
	if ((len - 8) % 8 || buf[8] != '{')
		fuzz_fail("built header not padded to 8 bytes", NULL);
	if (ds_st_parse(ctx, "round-trip", buf + 8, len - 8, data_size, 7,
			&u, &m))
		fuzz_fail("built header does not parse", ds_ctx_error(ctx));
	if (m != n)
		fuzz_fail("tensor count changed in the round trip", NULL);
	for (size_t i = 0; i < n; i++)
		if (!same_tensor(&t[i], &u[i]))
			fuzz_fail("tensor changed in the round trip",
				  t[i].name);
	ds_tensors_free(u, m);
	free(buf);
	ds_ctx_free(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ds_ctx *ctx;
	struct ds_tensor *t;
	uint64_t data_size = 0;
	size_t n;

	/* The first 8 bytes (little-endian) are the size of the data. */
	if (size < 8)
		return 0;
	for (int i = 7; i >= 0; i--)
		data_size = data_size << 8 | data[i];
	if (!(ctx = ds_ctx_create()))
		return 0;
	if (ds_st_parse(ctx, "fuzz.safetensors", (const char *)data + 8,
			size - 8, data_size, 7, &t, &n) == 0) {
		check_tiling(t, n, data_size);
		check_round_trip(t, n, data_size);
		ds_tensors_free(t, n);
	} else if (!*ds_ctx_error(ctx)) {
		fuzz_fail("refused without a message", NULL);
	}
	ds_ctx_free(ctx);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/* fuzz_index.c - libFuzzer: the bytes as model.safetensors.index.json */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include "common/ctx.h"
#include "inputs/model.h"
#include "fuzz.h"
#include "testutil.h"

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"
#define INDEX  "model.safetensors.index.json"

static char index_path[PATH_MAX];

/* A valid shard: tensors named names[0..n), F32 [2] each, zero data. */
static void write_shard(const char *name, const char *const *names, size_t n)
{
	static const char *const meta[] = { "format", "pt", NULL };
	char *file;
	size_t len;

	if (build_f32_shard(names, n, meta, &file, &len))
		fuzz_fail("cannot build a shard", name);
	fuzz_write(P("%s", name), file, len);
	free(file);
}

static void cleanup(void)
{
	scratch_remove();
}

/* Once per process: a directory with two shards (a, b) and (c, d). */
static void setup(void)
{
	static const char *const one[] = { "a", "b" }, *const two[] = {
		"c", "model.layers.0.mlp.up_proj.weight" };

	if (!scratch_make("ds-fuzz-index."))
		fuzz_fail("mkdtemp", strerror(errno));
	write_shard(SHARD1, one, 2);
	write_shard(SHARD2, two, 2);
	snprintf(index_path, sizeof(index_path), "%s", P(INDEX));
	atexit(cleanup);
}

/* Every tensor of an opened model is found by its name, in its shard. */
static void check_model(const ds_model *m)
{
	struct ds_tensor_info ti;

	for (size_t i = 0; i < ds_model_tensor_count(m); i++) {
		if (ds_model_tensor(m, i, &ti) ||
		    ds_model_find(m, ti.name) != &m->tensors[i] ||
		    !ds_model_shard_path(m, ti.shard))
			fuzz_fail("tensor table inconsistent", ti.name);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ds_ctx *ctx;
	ds_model *m;

	if (!*index_path)
		setup();
	if (!(ctx = ds_ctx_create()))
		return 0;
	fuzz_write(index_path, data, size);
	if (ds_model_open(ctx, index_path, &m) == 0) {
		check_model(m);
		ds_model_free(m);
	} else if (!*ds_ctx_error(ctx)) {
		fuzz_fail("refused without a message", NULL);
	}
	ds_ctx_free(ctx);
	return 0;
}

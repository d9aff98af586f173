/* SPDX-License-Identifier: MIT */
/* fuzz_index.c - libFuzzer: the bytes as model.safetensors.index.json */
#include "config.h"

#include <limits.h>
#include <string.h>
#include "ctx.h"
#include "model.h"
#include "fuzz.h"

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

static char dir[PATH_MAX], index_path[PATH_MAX];

/* A valid shard: tensors named names[0..n), F32 [2] each, zero data. */
static void write_shard(const char *name, const char *const *names, size_t n)
{
	static const char *const meta[] = { "format", "pt", NULL };
	struct ds_tensor t[4] = { { 0 } };
	char path[PATH_MAX + 64], *buf, *file;
	size_t len;

	for (size_t i = 0; i < n; i++) {
		t[i].name = (char *)names[i];
		t[i].dtype = DS_DT_F32;
		t[i].ndim = 1;
		t[i].shape[0] = 2;
		t[i].numel = 2;
		t[i].begin = 8 * i;
		t[i].end = 8 * i + 8;
	}
	if (ds_st_build(t, n, meta, &buf, &len) || !(file = calloc(1, len +
								    8 * n)))
		fuzz_fail("cannot build a shard", name);
	memcpy(file, buf, len);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fuzz_write(path, file, len + 8 * n);
	free(file);
	free(buf);
}

static void cleanup(void)
{
	char path[PATH_MAX + 64];
	static const char *const files[] = { SHARD1, SHARD2,
		"model.safetensors.index.json" };

	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		unlink(path);
	}
	rmdir(dir);
}

/* Once per process: a directory with two shards (a, b) and (c, d). */
static void setup(void)
{
	static const char *const one[] = { "a", "b" }, *const two[] = {
		"c", "model.layers.0.mlp.up_proj.weight" };
	const char *tmp = getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/ds-fuzz-index.XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		fuzz_fail("mkdtemp", dir);
	write_shard(SHARD1, one, 2);
	write_shard(SHARD2, two, 2);
	snprintf(index_path, sizeof(index_path), "%s/%s", dir,
		 "model.safetensors.index.json");
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

	if (!*dir)
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

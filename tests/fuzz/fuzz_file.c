/* SPDX-License-Identifier: MIT */
/* fuzz_file.c - libFuzzer: the bytes as a whole .safetensors file */
#include "config.h"

#include <errno.h>
#include <sys/mman.h>
#include "common/ctx.h"
#include "inputs/model.h"
#include "fuzz.h"

/* One memory file for the whole run, refilled for each input. */
static int memory_file(void)
{
	static int fd = -1;

	if (fd < 0 && (fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC)) < 0)
		fuzz_fail("memfd_create", NULL);
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memory_file(), rc;
	struct ds_shard sh = { 0 };
	struct ds_tensor *t;
	ds_ctx *ctx = ds_ctx_create();
	size_t n;

	if (!ctx)
		return 0;
	fuzz_fill(fd, data, size);
	rc = ds_st_read(ctx, fd, "fuzz.safetensors", 0, &sh, &t, &n);
	if (rc == 0) {
		/* 8 + header + the last tensor's end is the whole file. */
		if (sh.size != size || sh.data_off < 9 || sh.data_off > size ||
		    (n ? sh.data_off + t[n - 1].end : sh.data_off) != size)
			fuzz_fail("accepted file does not add up", NULL);
		ds_tensors_free(t, n);
	} else if (rc != DS_E_FORMAT && rc != -ENOMEM) {
		fuzz_fail("unexpected error code", ds_ctx_error(ctx));
	} else if (!*ds_ctx_error(ctx)) {
		fuzz_fail("refused without a message", NULL);
	}
	ds_ctx_free(ctx);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/* fuzz_pack.c - libFuzzer: the bytes as a delta pack, opened and expanded */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/ctx.h"
#include "inputs/model.h"
#include "inputs/pack.h"
#include "kernels/kernels.h"
#include "fuzz.h"

#define MAXWIN (4 * DS_PACK_FRAME)

/*
 * Every tensor of an accepted pack is read back window by window, as a
 * merge reads it (rebuilt, and as its mask and kept values): its frames
 * must lie inside the file, and each either expands or is refused as
 * damaged, never anything else.
 */
static void expand_all(const struct ds_model *m, const char *path)
{
	static struct ds_pack_frame fr[MAXWIN / DS_PACK_FRAME + 3];
	static char src[MAXWIN * 8 + 4096], out[MAXWIN * 8], base[MAXWIN * 8];
	static char vals[DS_PACK_FRAME * 8];
	static uint64_t bits[MAXWIN / 64 + 1];
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	FILE *f = fopen(path, "rb");

	for (size_t t = 0; dc && f && t < m->ntensors; t++) {
		const struct ds_tensor *ti = &m->tensors[t];
		uint64_t off, len, bad;
		unsigned nfr;
		int rc;

		if (ds_dtype_size(ti->dtype) == 0 || ti->numel > MAXWIN)
			continue;
		rc = ds_pack_window(fileno(f), m->pack, t, 0, ti->numel, &off,
				    &len, fr, &nfr);
		if (rc && rc != DS_E_FORMAT)
			fuzz_fail("seek table read failed oddly", NULL);
		if (rc || len > sizeof(src))
			continue;
		if (off + len > m->shards[0].size)
			fuzz_fail("frames past the end of the file", NULL);
		if (fseek(f, (long)off, SEEK_SET) ||
		    fread(src, 1, len, f) != len)
			fuzz_fail("cannot read frames the table names", NULL);
		rc = ds_pack_expand(dc, &ds_kernel_scalar_ops, m->pack, t,
				    0x12345678u, ti->dtype, src, fr, nfr, 0,
				    ti->numel, base, ti->dtype, out, vals, &bad);
		if (rc && rc != DS_E_FORMAT)
			fuzz_fail("expand: unexpected error code", NULL);
		/* as a merge with the pack's own mask reads it */
		rc = ds_pack_kept(dc, &ds_kernel_scalar_ops, m->pack, t,
				  ti->dtype, src, fr, nfr, 0, out, bits, &bad);
		if (rc && rc != DS_E_FORMAT)
			fuzz_fail("kept: unexpected error code", NULL);
	}
	if (f)
		fclose(f);
	ZSTD_freeDCtx(dc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[4096];
	ds_ctx *ctx = ds_ctx_create();
	ds_model *m = NULL;
	FILE *f;
	int rc;

	if (!ctx)
		return 0;
	if (!path[0])
		snprintf(path, sizeof(path), "%s/fuzz.dsd",
			 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!(f = fopen(path, "wb")) || fwrite(data, 1, size, f) != size ||
	    fclose(f))
		fuzz_fail("cannot write the input file", path);
	rc = ds_model_open(ctx, path, &m);
	if (rc == 0) {
		if (!m->pack)
			fuzz_fail("a .dsd opened as something else", NULL);
		expand_all(m, path);
		ds_model_free(m);
	} else if (rc != DS_E_FORMAT && rc != -ENOMEM) {
		fuzz_fail("unexpected error code", ds_ctx_error(ctx));
	} else if (!*ds_ctx_error(ctx)) {
		fuzz_fail("refused without a message", NULL);
	}
	ds_ctx_free(ctx);
	return 0;
}

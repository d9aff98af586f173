/* SPDX-License-Identifier: MIT */
/* model.h - a resolved input model: its shards and validated tensor table */
#ifndef DS_MODEL_H
#define DS_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include "dare-stream.h"

/* One tensor as described by a safetensors header. */
struct ds_tensor {
	char *name;
	enum ds_dtype dtype;
	unsigned ndim;
	uint64_t shape[DS_MAX_DIMS];
	uint64_t numel;
	uint64_t begin, end;    /* byte range inside the shard's data section */
	unsigned shard;         /* index into ds_model.shards */
};

/* One safetensors file of a model. */
struct ds_shard {
	char *path;             /* path used to open it (symlinks followed by open) */
	char *name;             /* its file name */
	uint64_t data_off;      /* 8 + header length: where tensor data starts */
	uint64_t size;          /* file size in bytes */
};

struct ds_model {
	char *arg;              /* the argument as given */
	char *dir;              /* directory holding the model's files */
	bool file;              /* the model is one file (a .safetensors
				 * file or a pack), not its directory */
	char *index;            /* model.safetensors.index.json, or NULL */
	struct ds_shard *shards;
	unsigned nshards;
	struct ds_tensor *tensors;  /* shard by shard, each by data offset */
	size_t ntensors;
	size_t *byname;         /* indices of tensors sorted by name */
	struct ds_pack *pack;   /* a delta pack (pack.h), else NULL */
	struct ds_lora *lora;   /* BASE+ADAPTER: the adapter (lora.h), else NULL */
};

/* Tensor named name, or NULL. */
const struct ds_tensor *ds_model_find(const struct ds_model *m,
				      const char *name);

/*
 * Resolve a model argument to the list of its safetensors files:
 * a directory (model.safetensors, or an index, or *.safetensors), a
 * .safetensors file, an index file, or a Hugging Face id org/name looked up
 * in $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub.
 * On success fills m->arg, dir, index, shards[].path/name (not the headers).
 */
int ds_model_resolve(ds_ctx *ctx, const char *arg, struct ds_model *m);

/*
 * Free every member of m and zero it, leaving m itself (for a struct that
 * ds_model_resolve filled on the stack; ds_model_free does this and frees m).
 */
void ds_model_clear(struct ds_model *m);

/* ---- safetensors (safetensors.c) -------------------------------------- */

/* Parse a safetensors dtype name ("BF16"); 0 or -1. */
int ds_dtype_parse(const char *s, enum ds_dtype *out);

/* Width of one element in bits (4 for F4, 6 for F6_*); 0 out of range. */
unsigned ds_dtype_bits(enum ds_dtype dt);

/*
 * Bytes of numel elements of dt, the reference's way: numel x bits, which
 * must not overflow (-EOVERFLOW) and must be a whole number of bytes
 * (-EINVAL: an odd number of F4 elements).  Use it, or ds_tensor_nbytes,
 * rather than numel x ds_dtype_size, which is 0 for the sub-byte dtypes.
 */
int ds_dtype_nbytes(enum ds_dtype dt, uint64_t numel, uint64_t *nbytes);

/* Bytes of the data of a validated tensor, whatever its dtype. */
static inline uint64_t ds_tensor_nbytes(const struct ds_tensor *t)
{
	return t->end - t->begin;
}

/*
 * Parse and validate a header (the JSON text, len bytes, not NUL-terminated)
 * of the file path whose data section holds data_size bytes.  Every rule of
 * DESIGN section 8 is checked, with the reference reader's JSON (see
 * safetensors.c); a key of a tensor entry other than dtype, shape and
 * data_offsets is ignored, with one notice for the file.  The tensors, sorted by data offset, are
 * returned in a malloc'd array (*out, *n), each with .shard = shard.
 * Returns 0, -ENOMEM or DS_E_FORMAT with a message naming path (and tensor).
 */
int ds_st_parse(ds_ctx *ctx, const char *path, const char *json, size_t len,
		uint64_t data_size, unsigned shard,
		struct ds_tensor **out, size_t *n);

/* Size of the open file fd, which must be a regular file (not a FIFO, a
 * device or a directory); 0, -errno or DS_E_FORMAT naming path. */
int ds_regular_size(ds_ctx *ctx, int fd, const char *path, uint64_t *size);

/* Read and validate the header of an open safetensors file. */
int ds_st_read(ds_ctx *ctx, int fd, const char *path, unsigned shard,
	       struct ds_shard *sh, struct ds_tensor **out, size_t *n);

/*
 * The string __metadata__[key] of the safetensors file path, in a malloc'd
 * *value (NULL when the header has no such string).  The header's JSON and
 * entries are checked, not the data offsets: open the model for that.
 * Returns 0, a negative errno or DS_E_FORMAT.
 */
int ds_st_metadata(ds_ctx *ctx, const char *path, const char *key,
		   char **value);

/*
 * Serialize a header for tensors t[0..n) whose begin/end are already laid
 * out contiguously.  The result is the 8-byte little-endian length followed
 * by the JSON object, space-padded to a multiple of 8; meta is a NULL or a
 * NULL-terminated key, value, key, value... list for __metadata__.
 */
int ds_st_build(const struct ds_tensor *t, size_t n, const char *const *meta,
		char **buf, size_t *len);

/* Free the names of n tensors and the array. */
void ds_tensors_free(struct ds_tensor *t, size_t n);

#endif

/* SPDX-License-Identifier: MIT */
/* dare-stream.h - public API of the dare-stream merge engine */
#ifndef DARE_STREAM_H
#define DARE_STREAM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DS_VERSION_STRING "0.1.0"

/*
 * Conventions.  Every function that can fail returns 0 on success and a
 * negative value on failure: a negative errno for system errors (-ENOSPC,
 * -EIO, -ENOMEM, ...) or one of the ds_error codes below.  The library never
 * prints and never exits; the text of the last error, naming the file, the
 * tensor and what was expected, is kept in the ds_ctx (ds_ctx_error()).
 */
enum ds_error {
	DS_E_FORMAT   = -4097, /* malformed input: header, index, recipe */
	DS_E_MISMATCH = -4098, /* inputs disagree: missing tensor, shape */
	DS_E_USAGE    = -4099, /* invalid recipe or option value */
	DS_E_OUTPUT   = -4100, /* output refused: exists, inside an input */
	DS_E_NOTFOUND = -4101, /* model argument cannot be resolved */
};

/*
 * Tensor element types of the safetensors format: every dtype the format
 * defines (huggingface/safetensors 0.8).  F16, BF16 and F32 are merged; the
 * others are copied from the base.  F4 (4 bits) and F6_E2M3, F6_E3M2
 * (6 bits) are smaller than a byte: ds_dtype_size() gives 0 for them.
 */
enum ds_dtype {
	DS_DT_BOOL, DS_DT_U8, DS_DT_I8, DS_DT_U16, DS_DT_I16, DS_DT_U32,
	DS_DT_I32, DS_DT_U64, DS_DT_I64, DS_DT_F8_E4M3, DS_DT_F8_E5M2,
	DS_DT_F16, DS_DT_BF16, DS_DT_F32, DS_DT_F64,
	DS_DT_F8_E8M0, DS_DT_F8_E4M3FNUZ, DS_DT_F8_E5M2FNUZ,
	DS_DT_F4, DS_DT_F6_E2M3, DS_DT_F6_E3M2, DS_DT_C64,
	DS_DT_COUNT
};

/* Merge methods (DESIGN 5, 5.2; mergekit's names). */
enum ds_method {
	DS_M_LINEAR, DS_M_TASK_ARITHMETIC, DS_M_DARE_LINEAR, DS_M_DARE_TIES,
	DS_M_TIES, DS_M_BREADCRUMBS, DS_M_BREADCRUMBS_TIES, DS_M_DELLA,
	DS_M_DELLA_LINEAR, DS_M_SLERP, DS_M_NUSLERP, DS_M_MODEL_STOCK,
	DS_M_SCE, DS_M_KARCHER, DS_M_PASSTHROUGH,
	DS_M_COUNT
};

/* Rescale of kept deltas: 1/(1-p) (the paper), L1-norm ratio, or none. */
enum ds_rescale { DS_RESCALE_INVERSE, DS_RESCALE_NONE, DS_RESCALE_L1 };

/*
 * Method parameters beyond weights, drop rates and lambda, by mergekit's
 * names.  The first four are per model; the rest apply to the whole merge
 * (flags are 0 or 1).
 */
enum ds_param {
	DS_P_GAMMA, DS_P_EPSILON,        /* per model */
	DS_P_T, DS_P_SELECT_TOPK, DS_P_MAX_ITER, DS_P_TOL, DS_P_SCALE,
	DS_P_FILTER_WISE, DS_P_NUSLERP_FLATTEN, DS_P_NUSLERP_ROW_WISE,
	DS_P_COUNT
};

enum ds_io_backend { DS_IO_AUTO, DS_IO_URING, DS_IO_PREAD };

enum ds_log_level { DS_LOG_NOTICE, DS_LOG_WARNING };

/* ---- context ----------------------------------------------------------- */

typedef struct ds_ctx ds_ctx;
typedef void ds_log_fn(void *user, enum ds_log_level level, const char *msg);

/* Create a context; NULL when out of memory. */
ds_ctx *ds_ctx_create(void);
/* Free a context (NULL is a no-op). */
void ds_ctx_free(ds_ctx *ctx);
/* Route notices and warnings (unknown tensors, copied F64 tensors...) to fn. */
void ds_ctx_set_log(ds_ctx *ctx, ds_log_fn *fn, void *user);
/* Text of the last error reported through ctx ("" when none). */
const char *ds_ctx_error(const ds_ctx *ctx);

/* ---- names ------------------------------------------------------------- */

/* Safetensors name of a dtype ("BF16"), NULL when out of range. */
const char *ds_dtype_name(enum ds_dtype dt);
/* Size of one element in bytes (1 for BOOL and F8). */
unsigned ds_dtype_size(enum ds_dtype dt);
/* Format a shape as "[4096, 11008]" into buf (len bytes); returns buf. */
const char *ds_shape_str(const uint64_t *shape, unsigned ndim, char *buf,
			 size_t len);
/* Method name ("dare_ties"), NULL when out of range. */
const char *ds_method_name(enum ds_method m);
/* Parse a method name; returns 0 or DS_E_USAGE. */
int ds_method_parse(const char *name, enum ds_method *out);

/* ---- recipe ------------------------------------------------------------ */

typedef struct ds_recipe ds_recipe;

#define DS_MAX_MODELS 64

/* Create an empty recipe (method dare_linear, weights 1, p 0, seed 0). */
ds_recipe *ds_recipe_create(void);
void ds_recipe_free(ds_recipe *r);
/* Merge method. */
int ds_recipe_set_method(ds_recipe *r, enum ds_method m);
/* Base model argument (directory, file, index, HF id). */
int ds_recipe_set_base(ds_recipe *r, const char *path);
/* Append a fine-tuned model; its position is its model index j. */
int ds_recipe_add_model(ds_recipe *r, const char *path);
/* Weight of model j, or of every model when j < 0. */
int ds_recipe_set_weight(ds_recipe *r, int j, double w);
/* DARE drop probability of model j (every model when j < 0), 0 <= p <= 1. */
int ds_recipe_set_drop_rate(ds_recipe *r, int j, double p);
/*
 * Parameter par of model j (every model when j < 0) for DS_P_GAMMA and
 * DS_P_EPSILON, of the merge for the others (j ignored).  Defaults are
 * mergekit's: gamma 0.01, epsilon 0.15, t 0.5, select_topk 1, max_iter 10,
 * tol 1e-5, scale 1, filter_wise 0, nuslerp_flatten 1, nuslerp_row_wise 0.
 */
int ds_recipe_set_param(ds_recipe *r, int j, enum ds_param par, double v);
/* Name of a parameter ("gamma", "select_topk"), NULL when out of range. */
const char *ds_param_name(enum ds_param par);
/* Global lambda (scale of the merged delta), default 1. */
int ds_recipe_set_lambda(ds_recipe *r, double lambda);
/* 1 on, 0 off, -1 the method's default. */
int ds_recipe_set_normalize(ds_recipe *r, int normalize);
int ds_recipe_set_rescale(ds_recipe *r, enum ds_rescale rescale);
int ds_recipe_set_seed(ds_recipe *r, uint64_t seed);
/* Output dtype of every float tensor (F16, BF16, F32); -1 keeps the base's. */
int ds_recipe_set_dtype(ds_recipe *r, int dtype);
/* Tensors whose name matches the fnmatch(3) glob are copied from the base. */
int ds_recipe_add_exclude(ds_recipe *r, const char *glob);
/* Number of models added so far. */
int ds_recipe_model_count(const ds_recipe *r);
/*
 * Check the recipe as a whole (a base where the method needs one, at least
 * one model, finite weights, p in [0, 1], a non-zero weight sum when
 * normalizing).  Returns 0 or DS_E_USAGE with the reason in ctx.
 */
int ds_recipe_check(ds_ctx *ctx, const ds_recipe *r);
/*
 * Read a YAML recipe (the dare-stream.yml of a merged directory, or a
 * mergekit-style configuration) into r.  Returns 0, -errno or DS_E_FORMAT.
 */
int ds_recipe_load(ds_ctx *ctx, ds_recipe *r, const char *path);

/* ---- models (inspect) -------------------------------------------------- */

typedef struct ds_model ds_model;

/*
 * Dimensions of a tensor at most.  The format sets no limit; 32 is NumPy's
 * (before 2.0) and far beyond any checkpoint (weights have at most 5).
 */
#define DS_MAX_DIMS 32

struct ds_tensor_info {
	const char *name;
	enum ds_dtype dtype;
	unsigned ndim;
	uint64_t shape[DS_MAX_DIMS];
	uint64_t numel;
	uint64_t nbytes;
	unsigned shard;        /* index into the model's shards */
	uint64_t offset;       /* absolute offset of the data in its shard */
};

/*
 * Resolve a model argument (directory, .safetensors file, index file or
 * Hugging Face id in the local cache) and read and validate every header.
 */
int ds_model_open(ds_ctx *ctx, const char *arg, ds_model **out);
void ds_model_free(ds_model *m);
/* Number of tensors; they are listed shard by shard, in data order. */
size_t ds_model_tensor_count(const ds_model *m);
int ds_model_tensor(const ds_model *m, size_t i, struct ds_tensor_info *info);
unsigned ds_model_shard_count(const ds_model *m);
/* Path of shard i as resolved (symlinks not followed). */
const char *ds_model_shard_path(const ds_model *m, unsigned i);
/* Directory that holds the model's files. */
const char *ds_model_dir(const ds_model *m);

/* ---- merge ------------------------------------------------------------- */

struct ds_merge_opts {
	uint64_t memory;          /* window buffer budget in bytes; 0: default */
	unsigned threads;         /* compute threads; 0: online CPUs */
	enum ds_io_backend io;
	int force;                /* replace a non-empty output directory */
	int resume;               /* continue an interrupted merge of OUT */
	uint64_t window;          /* elements per window; 0: from memory */
};

#define DS_DEFAULT_MEMORY (64ull << 20)

struct ds_plan_info {
	size_t tensors;           /* output tensors */
	size_t merged;            /* of which merged (the rest copied) */
	unsigned shards;          /* output shards */
	uint64_t bytes_read;      /* input tensor bytes read */
	uint64_t bytes_written;   /* output bytes written (shards) */
	uint64_t memory;          /* bytes of window buffers allocated */
	uint64_t window;          /* elements per window */
	unsigned threads;
	const char *io;           /* I/O backend in use */
	const char *kernel;       /* kernel path in use */
};

struct ds_progress {
	const char *tensor;       /* tensor being processed */
	uint64_t done, total;     /* output bytes */
};
typedef void ds_progress_fn(void *user, const struct ds_progress *p);

typedef struct ds_merge ds_merge;

/*
 * Plan a merge: resolve and validate every input, check every tensor of the
 * base against every model, lay out the output and size the buffers.  Every
 * problem is reported here, before anything is written.  out_dir is not
 * touched.
 */
int ds_merge_create(ds_ctx *ctx, const ds_recipe *r, const char *out_dir,
		    const struct ds_merge_opts *opts, ds_merge **out);
/* Figures of a planned merge. */
void ds_merge_info(const ds_merge *mg, struct ds_plan_info *info);
/*
 * Run a planned merge.  Output files are written under temporary names and
 * renamed into place only when everything is complete; on failure they are
 * removed.  progress may be NULL.
 */
int ds_merge_run(ds_merge *mg, ds_progress_fn *progress, void *user);
void ds_merge_free(ds_merge *mg);

/* ---- verify ------------------------------------------------------------ */

/*
 * Check a merged output directory: every shard's structure (DESIGN section
 * 8, as ds_model_open checks it), each shard's __metadata__ "format": "pt",
 * the index against the shards (every tensor mapped, metadata.total_size
 * the sum of their bytes), and CHECKSUMS.xxh128: every visible file of dir
 * listed, every listed file present, each XXH3-128 recomputed and compared.
 * report (may be NULL) gets a DS_LOG_NOTICE "NAME: ok" per file checked,
 * then, last, "N files, M tensors".  Returns 0; DS_E_FORMAT when the
 * content is corrupt (bad structure, checksum mismatch, a file missing or
 * not listed), with ds_ctx_error() naming the file; a negative errno when a
 * file cannot be read.
 */
int ds_verify(ds_ctx *ctx, const char *dir, ds_log_fn *report, void *user);

#ifdef __cplusplus
}
#endif
#endif

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
/* 1 when name is a merge method of mergekit that dare-stream does not
 * have (arcee_fusion, multislerp, nearswap, ram, ramplus_tl), else 0. */
int ds_method_mergekit_only(const char *name);

/* ---- recipe ------------------------------------------------------------ */

typedef struct ds_recipe ds_recipe;

#define DS_MAX_MODELS 64

/* Create an empty recipe (method dare_linear, weights 1, p 0, seed 0). */
ds_recipe *ds_recipe_create(void);
/* Free a recipe and the strings it copied (NULL is a no-op). */
void ds_recipe_free(ds_recipe *r);
/*
 * The setters below copy their strings and return 0, -ENOMEM, or DS_E_USAGE
 * for a value out of range or a model index j not yet added; values are
 * checked as a whole by ds_recipe_check().
 */
/* Merge method. */
int ds_recipe_set_method(ds_recipe *r, enum ds_method m);
/* Base model argument (directory, file, index, HF id). */
int ds_recipe_set_base(ds_recipe *r, const char *path);
/*
 * Append a fine-tuned model; returns its model index j (0, 1, ...: its
 * position), DS_E_USAGE beyond DS_MAX_MODELS models, or -ENOMEM.
 */
int ds_recipe_add_model(ds_recipe *r, const char *path);
/* Weight of model j, or of every model when j < 0. */
int ds_recipe_set_weight(ds_recipe *r, int j, double w);
/* DARE drop probability of model j (every model when j < 0), 0 <= p <= 1. */
int ds_recipe_set_drop_rate(ds_recipe *r, int j, double p);
/*
 * Density 1 - p of model j (every model when j < 0).  The DARE mask uses
 * p = 1 - d; top-k methods (ties, breadcrumbs) use d as given, and 1 - p
 * when a drop rate was set instead.
 */
int ds_recipe_set_density(ds_recipe *r, int j, double d);
/*
 * Parameter par of model j (every model when j < 0) for DS_P_GAMMA and
 * DS_P_EPSILON, of the merge for the others (j ignored).  Defaults are
 * mergekit's: gamma 0.01, epsilon 0.15, t 0.5, select_topk 1, max_iter 10,
 * tol 1e-5, scale 1, filter_wise 0, nuslerp_flatten 1, nuslerp_row_wise 0.
 */
int ds_recipe_set_param(ds_recipe *r, int j, enum ds_param par, double v);
/* Name of a parameter ("gamma", "select_topk"), NULL when out of range. */
const char *ds_param_name(enum ds_param par);
/* Mask stream index of model j (DESIGN 4; default: its position). */
int ds_recipe_set_stream(ds_recipe *r, int j, unsigned stream);
/* Global lambda (scale of the merged delta), default 1. */
int ds_recipe_set_lambda(ds_recipe *r, double lambda);
/* 1 on, 0 off, -1 the method's default. */
int ds_recipe_set_normalize(ds_recipe *r, int normalize);
/* Rescale of kept deltas (default DS_RESCALE_INVERSE). */
int ds_recipe_set_rescale(ds_recipe *r, enum ds_rescale rescale);
/* 64-bit seed of the DARE mask (default 0). */
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
 * Returns 0 with *out set; DS_E_NOTFOUND, DS_E_FORMAT or a negative errno
 * with *out NULL and the reason in ctx.
 */
int ds_model_open(ds_ctx *ctx, const char *arg, ds_model **out);
/* Free a model and its tensor names (NULL is a no-op). */
void ds_model_free(ds_model *m);
/* Number of tensors; they are listed shard by shard, in data order. */
size_t ds_model_tensor_count(const ds_model *m);
/*
 * Describe tensor i into info; 0, or -EINVAL when i is out of range.
 * info->name belongs to m and lives as long as it.
 */
int ds_model_tensor(const ds_model *m, size_t i, struct ds_tensor_info *info);
/* Number of shard files (1 for a single .safetensors file). */
unsigned ds_model_shard_count(const ds_model *m);
/* Path of shard i as resolved (symlinks not followed); NULL out of range. */
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
	uint64_t shard_size;      /* output shards of at most this many tensor
				   * bytes, Hugging Face names; 0: the base's
				   * layout (5 GB with slices) */
	unsigned part, parts;     /* write only part `part` (0 .. parts - 1)
				   * of the output shards, for
				   * ds_finalize() to join; parts 0: all */
};

#define DS_DEFAULT_MEMORY (64ull << 20)

struct ds_plan_info {
	size_t tensors;           /* output tensors */
	size_t merged;            /* of which merged (the rest copied) */
	unsigned shards;          /* output shards */
	uint64_t bytes_read;      /* input tensor bytes read */
	uint64_t bytes_written;   /* output bytes written (shards) */
	uint64_t memory;          /* bytes of window buffers allocated */
	uint64_t overhead;        /* method tables and scratch, beyond them */
	unsigned max_passes;      /* most streams of one tensor's inputs */
	unsigned layers;          /* output layers (with slices; else 0) */
	int index;                /* an index file is written */
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
 * touched.  opts may be NULL (defaults).  Returns 0 with *out set, or with
 * *out NULL: DS_E_USAGE (recipe, budget too small), DS_E_NOTFOUND,
 * DS_E_FORMAT, DS_E_MISMATCH (inputs), DS_E_OUTPUT (out_dir refused) or a
 * negative errno.  The merge keeps r (and ctx): neither may be changed or
 * freed before ds_merge_free().
 */
int ds_merge_create(ds_ctx *ctx, const ds_recipe *r, const char *out_dir,
		    const struct ds_merge_opts *opts, ds_merge **out);
/* Figures of a planned merge (io: the backend asked for, then the one used). */
void ds_merge_info(const ds_merge *mg, struct ds_plan_info *info);
/* How one output tensor is made. */
struct ds_tensor_plan {
	const char *name;         /* output tensor */
	int merged;               /* 1 merged, 0 copied from an input */
	unsigned passes;          /* streams of its inputs (1 when copied) */
	const char *pass[8];      /* their names: hist_hi, hist_lo, count_eq,
				   * sums, write */
	uint64_t pass_bytes;      /* input bytes each pass reads */
};

/* Output tensor i (0 .. ds_plan_info.tensors - 1); 0 or DS_E_USAGE. */
int ds_merge_tensor(const ds_merge *mg, size_t i, struct ds_tensor_plan *tp);
/*
 * Output tensor i as the one line `dare-stream merge --dry-run` prints,
 * into buf (len bytes, NUL-terminated): "tensor NAME copy from=MODEL:NAME
 * bytes=N" or "tensor NAME merge passes=... pass_bytes=N j=... weight=...
 * p=... gamma=... epsilon=... lambda=... t=... scale=... rescale=...
 * normalize=... from=MODEL:NAME,...", every parameter resolved.  Returns 0,
 * DS_E_USAGE (i out of range) or -ENOSPC (buf too short).
 */
int ds_merge_tensor_text(const ds_merge *mg, size_t i, char *buf, size_t len);

/*
 * Run a planned merge.  Output files are written under temporary names and
 * renamed into place only when everything is complete; on failure they are
 * removed.  progress may be NULL; it is called from the thread that called
 * ds_merge_run.  Returns 0, or a negative errno (-ENOSPC, -EIO, ...),
 * DS_E_OUTPUT or DS_E_USAGE (DARE_STREAM_KERNEL names a path this machine
 * cannot run) with the reason, naming the file, in the context.
 */
int ds_merge_run(ds_merge *mg, ds_progress_fn *progress, void *user);
/* Free a merge handle, run or not (NULL is a no-op). */
void ds_merge_free(ds_merge *mg);

/* ---- delta packs ------------------------------------------------------- */

/* What extract keeps: the DARE mask of DESIGN 4 with these parameters. */
struct ds_extract_opts {
	double p;                 /* drop rate, 0 <= p <= 1 */
	uint64_t seed;
	uint32_t stream;          /* J: the model index of the mask */
	int level;                /* zstd level (3 is zstd's default) */
	int force;                /* replace an existing output file */
};

/*
 * Write the delta pack of model against base to the file out (via
 * out.partial, renamed when complete): per tensor, the model's values that
 * the mask keeps, in its dtype, zstd-compressed in frames of 65536
 * elements with a seek table (dare-stream-pack(5)).  Tensors the base
 * lacks, or that are not F16/BF16/F32, are stored whole.  Returns 0 or a
 * negative error, with ds_ctx_error() naming the file.
 */
int ds_extract(ds_ctx *ctx, const char *base, const char *model,
	       const struct ds_extract_opts *o, const char *out,
	       ds_progress_fn *progress, void *user);
/* The mask a pack was extracted with: seed, stream J, drop rate p. */
int ds_pack_params(ds_ctx *ctx, const char *path, uint64_t *seed,
		   uint32_t *stream, double *p);

/* ---- interruption and changing inputs --------------------------------- */

enum {
	/* ds_merge_run() stopped by ds_merge_cancel() */
	DS_E_CANCELED = -4110,
	/* an input file was replaced, truncated or rewritten during the run */
	DS_E_CHANGED  = -4111,
};

/*
 * Ask ds_merge_run() on mg to stop: no further window is read, what is in
 * flight completes, and the run returns DS_E_CANCELED with OUT left for
 * --resume (the journal and the shards' temporaries holding the tensors it
 * lists; every other temporary is removed).  Safe to call from a signal
 * handler and from any thread, before or during ds_merge_run(): it only
 * stores an atomic flag and writes to an eventfd.  The library installs no
 * signal handler of its own; a signal arriving once the output is complete
 * (during the final renames) no longer stops the run.
 */
void ds_merge_cancel(ds_merge *mg);

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

/* What ds_finalize() did. */
struct ds_finalize_info {
	unsigned parts;           /* parts joined; 0: nothing to finalize */
	unsigned files;           /* files of the parts checked */
	uint64_t bytes;           /* bytes read back to check them */
};

/*
 * Join the parts of a partitioned merge (ds_merge_opts.part, .parts) in
 * dir: check that every part 0 .. N-1 has ended and left its manifest
 * (dir/.dare-stream.part-K-of-N.json), that all are of the same run (same
 * recipe, inputs and N) and none is duplicated, and read every file they
 * list back to compare its size and XXH3-128 with the manifest; then write
 * model.safetensors.index.json (when the merge is sharded) and
 * CHECKSUMS.xxh128, byte for byte what one process merging the whole into
 * dir writes, each under a temporary name and renamed into place, and
 * remove the manifests and the parts' lock files.  Constant memory (a
 * 1 MiB buffer; the tables grow with the number of tensors only).  info
 * may be NULL.  Returns 0 (info->parts 0 when dir is a finished merge with
 * nothing to finalize); DS_E_FORMAT when a part is missing, unfinished
 * (still running, or stopped: a journal without a manifest), foreign,
 * duplicated, or a file differs from its manifest, with ds_ctx_error()
 * naming the part and the file; DS_E_OUTPUT when dir holds no merge or
 * another process holds its lock; a negative errno on an I/O error.
 * Nothing is written unless every check passes.
 */
int ds_finalize(ds_ctx *ctx, const char *dir, struct ds_finalize_info *info);


/* ---- delta statistics (delta-stats) ------------------------------------ */

/*
 * Figures of |d|, d = x - b in binary32 for every element of a tensor (or
 * of every compared tensor of a model), BF16 and F16 converted exactly.
 * NaN deltas are counted in nan and left out of every other figure; an
 * infinite |d| is an ordinary value.  Percentiles come from a histogram on
 * the top 16 bits of the binary32 |d| below its sign bit, 256 bins per
 * power of two: the nearest-rank percentile t (the ceil(q N)-th smallest of
 * the N non-NaN values) is reported as the upper edge of its bin, clamped
 * to max, so t <= reported <= t * (1 + 2^-8) for a normal t; 0 when t is an
 * exact zero.  With N = 0 every figure but n and nan is 0.
 */
struct ds_delta_stats {
	uint64_t n;               /* elements compared */
	uint64_t nan;             /* NaN deltas (left out of what follows) */
	uint64_t zeros;           /* deltas that are exactly +0 or -0 */
	double sum;               /* binary64 sum of |d|, in element order */
	double mean;              /* sum / (n - nan) */
	float max;                /* largest |d| */
	float p50, p99, p999;     /* percentiles of |d| */
};

/* Relative width of a histogram bin: the percentiles' resolution. */
#define DS_DELTA_RESOLUTION (1.0 / 256)

/*
 * The verdict on the overall p99 of |d| (DESIGN 6, dare-stream(1)):
 * SFT-like when p99 <= DS_DELTA_SFT_P99 (DARE at p >= 0.9 is usually
 * safe), continued-pre-training-like when p99 >= DS_DELTA_CPT_P99 (DARE is
 * likely to hurt), in between otherwise; NONE when nothing was compared.
 */
#define DS_DELTA_SFT_P99 0.01
#define DS_DELTA_CPT_P99 0.03
enum ds_delta_verdict {
	DS_DELTA_NONE, DS_DELTA_SFT, DS_DELTA_BETWEEN, DS_DELTA_CPT
};
/* The verdict of the figures s, by the rule above. */
enum ds_delta_verdict ds_delta_verdict(const struct ds_delta_stats *s);
/* "none", "sft", "between", "cpt"; NULL when out of range. */
const char *ds_delta_verdict_name(enum ds_delta_verdict v);

/* Why a tensor was not compared (DS_DELTA_COMPARED: it was). */
enum ds_delta_skip {
	DS_DELTA_COMPARED,
	DS_DELTA_NOT_FLOAT,       /* integer or BOOL in both: nothing to say */
	DS_DELTA_DTYPE,           /* F64, F8, or float in one, not the other */
	DS_DELTA_MISSING,         /* in the base, not in the model */
	DS_DELTA_EXTRA,           /* in the model, not in the base */
	DS_DELTA_SHAPE,           /* shapes differ */
};
/* "compared", "not-float", "dtype", "missing", "extra", "shape". */
const char *ds_delta_skip_name(enum ds_delta_skip why);

/* One tensor of a model against the base, as ds_delta_scan_run() ends it. */
struct ds_delta_tensor {
	const char *name;
	enum ds_delta_skip skip;
	int base_dtype, dtype;    /* enum ds_dtype; -1 where the tensor is absent */
	unsigned ndim;            /* the model's shape (the base's if missing) */
	const uint64_t *shape;
	struct ds_delta_stats s;  /* zero unless compared */
};

typedef void ds_delta_fn(void *user, const struct ds_delta_tensor *t);

struct ds_delta_opts {
	uint64_t memory;          /* window buffers in bytes; 0: default */
	enum ds_io_backend io;
};

typedef struct ds_delta_scan ds_delta_scan;

/*
 * Open the base model and allocate every buffer the scans will use: two
 * read windows each of the base and of a model, their binary32 copies and
 * two histograms (1 MiB).  Nothing later is sized by a tensor or a model.
 * Returns 0, DS_E_USAGE (memory below 64 KiB), or ds_model_open's errors.
 */
int ds_delta_scan_create(ds_ctx *ctx, const char *base,
			 const struct ds_delta_opts *opts, ds_delta_scan **out);
/* Elements per window and bytes of buffers allocated. */
void ds_delta_scan_info(const ds_delta_scan *sc, uint64_t *window,
			uint64_t *memory, const char **io);

/*
 * Stream model against the base, tensor by tensor in the base's order
 * (then the model's tensors the base lacks), in one pass over each.  fn
 * (may be NULL) gets every tensor, compared or skipped, as it is done;
 * missing tensors and shape or dtype mismatches are also logged as
 * warnings through ctx.  overall gets the figures of every compared element
 * (its sum adds the tensors' sums in that order).  Returns 0; DS_E_MISMATCH
 * when no tensor could be compared; a negative errno naming file and
 * tensor when a read fails.
 */
int ds_delta_scan_run(ds_delta_scan *sc, const char *model, ds_delta_fn *fn,
		      void *user, struct ds_delta_stats *overall);
/* Free a scan (NULL is a no-op). */
void ds_delta_scan_free(ds_delta_scan *sc);

#ifdef __cplusplus
}
#endif
#endif

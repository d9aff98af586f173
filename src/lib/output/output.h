/* SPDX-License-Identifier: MIT */
/* output.h - the output directory: temporary files, checksums, rename */
#ifndef DS_OUTPUT_H
#define DS_OUTPUT_H

#include <stddef.h>
#include <jansson.h>
#include <xxhash.h>
#include "plan/plan.h"

struct ds_out;

/* Files of a partitioned merge in OUT (K, N: --partition K/N). */
#define DS_PART_MANIFEST ".dare-stream.part-%u-of-%u.json"
#define DS_PART_JOURNAL ".dare-stream.%u-of-%u.journal"
#define DS_PART_LOCK ".dare-stream.%u-of-%u.lock"
#define DS_CHECKSUMS "CHECKSUMS.xxh128"
#define DS_INDEX "model.safetensors.index.json"
#define DS_TMP_SUFFIX ".partial"

/* The kind of a part's file name, with its K and N. */
enum ds_part_file { DS_PF_NONE, DS_PF_MANIFEST, DS_PF_JOURNAL, DS_PF_LOCK };
enum ds_part_file ds_part_file(const char *name, unsigned *k, unsigned *n);
/* The run named in a part journal's first line; 0 when none. */
uint64_t ds_part_journal_run(const char *path);
/* model.safetensors.index.json's text (map is taken), NULL when out of
 * memory. */
char *ds_index_text(json_t *map, uint64_t total);
/* An XXH3-128 as xxhsum prints it: 32 hex digits. */
void ds_hex128(XXH128_hash_t h, char out[33]);

/*
 * Refuse an output directory that another run holds (its lock, see
 * lock.h), is non-empty (without force), is not a directory, or lies
 * inside an input's directory or contains one.
 */
int ds_out_check(ds_ctx *ctx, const struct ds_plan *p, const char *dir,
		 int force, int resume);
/*
 * Create the directory, take its lock (held until ds_out_free()), and one
 * temporary file per output shard, with its header written, and the
 * journal.  Nothing carries a final name until
 * ds_out_finish().  With resume, a journal left by an interrupted run of
 * the same merge is checked: each tensor it lists is read back and its
 * checksum compared, and *first is set to the first tensor still to write
 * (0 for a fresh start).
 */
int ds_out_open(ds_ctx *ctx, const struct ds_plan *p, const char *dir,
		int resume, struct ds_out **out, size_t *first);
/* Record that tensor t is written, all of its bytes; digest: its shard's
 * ds_out_digest() after them. */
int ds_out_journal(struct ds_out *o, size_t t, uint64_t digest);
/* Descriptor of shard s's temporary file. */
int ds_out_fd(const struct ds_out *o, unsigned s);
/* Shard s opened O_DIRECT (io.h, ds_open_direct), or -1: the pipeline
 * writes a window's whole blocks through it, the rest through ds_out_fd. */
int ds_out_dfd(const struct ds_out *o, unsigned s);
/* Path of shard s's final name (for messages). */
const char *ds_out_path(const struct ds_out *o, unsigned s);
/* Feed the next bytes of shard s, in file order, to its checksum. */
void ds_out_hash(struct ds_out *o, unsigned s, const void *buf, size_t len);
/* XXH3-64 of shard s's bytes fed so far: its journal digest. */
uint64_t ds_out_digest(const struct ds_out *o, unsigned s);
/* Write the index, recipe, copied files and CHECKSUMS.xxh128, fsync, and
 * rename everything into place (CHECKSUMS.xxh128 last).  A part of a
 * partitioned merge writes no index and no checksums: part 0 writes the
 * recipe and copied files, and each part, last, its manifest
 * (DS_PART_MANIFEST) for ds_finalize(). */
int ds_out_finish(struct ds_out *o, int force);
/* Remove every temporary file (and the directory if this run made it). */
void ds_out_abort(struct ds_out *o);
/* An interrupted run: keep the journal and the shards' temporaries that
 * hold its tensors, remove the rest; the number of tensors kept (0: as
 * ds_out_abort()). */
size_t ds_out_suspend(struct ds_out *o);
void ds_out_free(struct ds_out *o);

#endif

/* SPDX-License-Identifier: MIT */
/* output.h - the output directory: temporary files, checksums, rename */
#ifndef DS_OUTPUT_H
#define DS_OUTPUT_H

#include <stddef.h>
#include "plan.h"

struct ds_out;

/*
 * Refuse an output directory that is non-empty (without force), is not a
 * directory, or lies inside an input's directory or contains one.
 */
int ds_out_check(ds_ctx *ctx, const struct ds_plan *p, const char *dir,
		 int force);
/* Create the directory and one temporary file per output shard, with its
 * header written.  Nothing carries a final name until ds_out_finish(). */
int ds_out_open(ds_ctx *ctx, const struct ds_plan *p, const char *dir,
		struct ds_out **out);
/* Descriptor of shard s's temporary file. */
int ds_out_fd(const struct ds_out *o, unsigned s);
/* Path of shard s's final name (for messages). */
const char *ds_out_path(const struct ds_out *o, unsigned s);
/* Feed the next bytes of shard s, in file order, to its checksum. */
void ds_out_hash(struct ds_out *o, unsigned s, const void *buf, size_t len);
/* Write the index, recipe, copied files and CHECKSUMS.xxh128, fsync, and
 * rename everything into place (CHECKSUMS.xxh128 last). */
int ds_out_finish(struct ds_out *o, int force);
/* Remove every temporary file (and the directory if this run made it). */
void ds_out_abort(struct ds_out *o);
void ds_out_free(struct ds_out *o);

#endif

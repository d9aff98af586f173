/* SPDX-License-Identifier: MIT */
/* pack.h - DARE delta packs (.dsd): the kept values of a fine-tune, zstd */
#ifndef DS_PACK_H
#define DS_PACK_H

#include <stdbool.h>
#include <stdint.h>
#include <zstd.h>
#include "dare-stream.h"
#include "inputs/model.h"
#include "kernels/kernels.h"

/*
 * File layout (dare-stream-pack(5)), integers little-endian:
 *
 *   0   magic "DSDPACK\0", u32 version (1), u32 flags (0)
 *   16  seek table: one entry per frame, { u64 end, u64 xxh3 }: the file
 *       offset just past the frame, and XXH3-64 of its decompressed bytes
 *   ..  frames: independent zstd frames, in tensor order; frame f of a
 *       tensor holds elements f*65536 .. f*65536+65535: the values the
 *       DARE mask keeps (all of them for a "whole" tensor), in element
 *       order, in the tensor's dtype
 *   ..  header: JSON (format, version, seed, stream, p, tensors)
 *   end-32  footer { u64 header offset, u64 header length, u64 frames,
 *           magic "DSDPEND\0" }
 */
#define DS_PACK_FRAME 65536u
#define DS_PACK_VERSION 1u

struct ds_pack_tensor {
	uint64_t numel;
	uint64_t first;          /* its first frame (global index) */
	uint64_t frames;
	uint64_t base_xxh3;      /* of the base tensor's bytes */
	uint64_t bytes;          /* of its frames */
	uint32_t name_hash;      /* XXH32 of its name: its mask's counter word 3 */
	bool whole;              /* every value stored, no mask */
};

struct ds_pack {
	uint64_t seed;
	uint32_t stream;         /* J: the mask's model index */
	double p;
	uint64_t thr;            /* drop iff u < thr; 2^32 drops all */
	uint64_t nframes, frames_off, header_off;
	struct ds_pack_tensor *pt;   /* parallel to ds_model.tensors */
};

/* One frame of a window: its bytes' length and the digest of its values. */
struct ds_pack_frame {
	uint64_t clen, xxh3;
};

/* True when the argument names a pack (a file ending in .dsd). */
bool ds_pack_is(const char *arg);

/* Open a pack as a model: one shard (the file), its tensors, m->pack. */
int ds_pack_open(ds_ctx *ctx, const char *arg, struct ds_model *m);
void ds_pack_free(struct ds_pack *pk);

/*
 * The bytes of the frames holding elements i0 .. i0+n-1 of tensor t:
 * [*off, *off + *len), and each frame's entry into fr (at most
 * n / DS_PACK_FRAME + 2).  Reads the seek table (fd).  0, -errno or
 * DS_E_FORMAT.
 */
int ds_pack_window(int fd, const struct ds_pack *pk, size_t t, uint64_t i0,
		   uint64_t n, uint64_t *off, uint64_t *len,
		   struct ds_pack_frame *fr, unsigned *nfr);

/* Bytes a window of n elements of dtype dt may take compressed. */
uint64_t ds_pack_window_bound(uint64_t n, enum ds_dtype dt);

/*
 * Rebuild elements i0 .. i0+n-1 of tensor t (dtype dt) into out from the
 * window's frames in src: kept positions get their stored values, the
 * others the base's (base, of dtype bdt, converted to dt).  vals: scratch
 * of DS_PACK_FRAME elements of dt.  0, or
 * DS_E_FORMAT (a frame that does not decompress, has the wrong size or
 * digest), with *bad the frame's index within the tensor.
 */
int ds_pack_expand(ZSTD_DCtx *dc, const struct ds_kernel_ops *k,
		   const struct ds_pack *pk, size_t t, uint32_t name_hash,
		   enum ds_dtype dt, const void *src,
		   const struct ds_pack_frame *fr, unsigned nfr, uint64_t i0,
		   uint64_t n, const void *base, enum ds_dtype bdt, void *out,
		   void *vals, uint64_t *bad);

/*
 * True when tensor t of the pack (not stored whole) has the mask of model
 * stream j of a merge with this seed, drop threshold thr (< 2^32) and
 * name hash: the merge may then take the pack's mask and kept values as
 * they are (ds_pack_kept) instead of a rebuilt window (DESIGN 7).
 */
bool ds_pack_mask_is(const struct ds_pack *pk, size_t t, uint32_t name_hash,
		     uint64_t seed, uint32_t j, uint64_t thr);

/*
 * Elements i0 .. i0+n-1 of tensor t (dtype dt), from the window's nfr
 * frames in src (ds_pack_window), as their mask and kept values
 * (methods.h, ds_window.keep): bit i of bits[i / 64] set where element
 * i0+i is kept (the rest of the last word clear; room for n / 64 + 1
 * words), the kept values in order into vals (room for n elements).  The
 * window holds whole frames: i0 is a multiple of DS_PACK_FRAME, and so is
 * n unless the window ends the tensor.  0, or DS_E_FORMAT as
 * ds_pack_expand.
 */
int ds_pack_kept(ZSTD_DCtx *dc, const struct ds_kernel_ops *k,
		 const struct ds_pack *pk, size_t t, enum ds_dtype dt,
		 const void *src, const struct ds_pack_frame *fr, unsigned nfr,
		 uint64_t i0, void *vals, uint64_t *bits, uint64_t *bad);

#endif

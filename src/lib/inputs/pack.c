/* SPDX-License-Identifier: MIT */
/* pack.c - read DARE delta packs: header, seek table, frames back to values */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include "common/ctx.h"
#include "kernels/bits.h"
#include "kernels/philox.h"
#include "inputs/pack.h"

static uint64_t le64(const unsigned char *b)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

bool ds_pack_is(const char *arg)
{
	size_t n = strlen(arg);

	return n > 4 && !strcmp(arg + n - 4, ".dsd");
}

void ds_pack_free(struct ds_pack *pk)
{
	if (pk)
		free(pk->pt);
	free(pk);
}

static int bad(ds_ctx *ctx, const char *path, const char *what)
{
	return ds_fail(ctx, DS_E_FORMAT, "%s: not a valid dare-stream pack: %s",
		       path, what);
}

/* A u64 written as a decimal or 0x string (JSON numbers lose bits). */
static int json_u64(json_t *v, uint64_t *out)
{
	const char *s = json_string_value(v);
	char *end;

	if (!s || !*s || *s == '-')
		return -1;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return *end || errno ? -1 : 0;
}

static int json_uint(json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

/* One tensor entry of the header into t and pt. */
static int read_tensor(ds_ctx *ctx, const char *path, json_t *e,
		       struct ds_tensor *t, struct ds_pack_tensor *pt)
{
	json_t *shape = json_object_get(e, "shape");
	const char *name = json_string_value(json_object_get(e, "name"));
	const char *dt = json_string_value(json_object_get(e, "dtype"));
	const char *kind = json_string_value(json_object_get(e, "kind"));
	uint64_t numel = 1;
	size_t d;

	if (!name || !dt || ds_dtype_parse(dt, &t->dtype) || !kind ||
	    (strcmp(kind, "delta") && strcmp(kind, "whole")) ||
	    !json_is_array(shape) || json_array_size(shape) > DS_MAX_DIMS ||
	    json_u64(json_object_get(e, "base_xxh3"), &pt->base_xxh3) ||
	    json_uint(json_object_get(e, "first_frame"), &pt->first) ||
	    json_uint(json_object_get(e, "frames"), &pt->frames))
		return bad(ctx, path, "a tensor entry lacks name, dtype, kind, "
			   "shape, base_xxh3, first_frame or frames");
	if (!(t->name = strdup(name)))
		return -ENOMEM;
	t->ndim = (unsigned)json_array_size(shape);
	for (d = 0; d < t->ndim; d++)
		if (json_uint(json_array_get(shape, d), &t->shape[d]) ||
		    ds_mul_u64(numel, t->shape[d], &numel))
			return bad(ctx, path, "a shape is not a list of sizes");
	t->numel = pt->numel = numel;
	pt->name_hash = XXH32(name, strlen(name), 0);
	t->begin = 0;
	t->end = numel * ds_dtype_size(t->dtype);
	pt->whole = !strcmp(kind, "whole");
	if (pt->frames != (numel + DS_PACK_FRAME - 1) / DS_PACK_FRAME)
		return ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s' has %llu "
			       "frames, expected %llu for %llu elements", path,
			       name, (unsigned long long)pt->frames,
			       (unsigned long long)((numel + DS_PACK_FRAME - 1) /
						    DS_PACK_FRAME),
			       (unsigned long long)numel);
	return 0;
}

/* The header's mask parameters and tensors. */
static int read_header(ds_ctx *ctx, const char *path, json_t *h,
		       struct ds_model *m, struct ds_pack *pk)
{
	json_t *ts = json_object_get(h, "tensors");
	const char *fmt = json_string_value(json_object_get(h, "format"));
	const char *p = json_string_value(json_object_get(h, "p"));
	uint64_t ver = 0, stream = 0, next = 0;
	int rc = 0;

	if (!fmt || strcmp(fmt, "dare-stream-pack"))
		return bad(ctx, path, "format is not dare-stream-pack");
	if (json_uint(json_object_get(h, "version"), &ver) ||
	    ver != DS_PACK_VERSION)
		return ds_fail(ctx, DS_E_FORMAT, "%s: pack version %llu; this "
			       "dare-stream reads version %u", path,
			       (unsigned long long)ver, DS_PACK_VERSION);
	if (json_u64(json_object_get(h, "seed"), &pk->seed) ||
	    json_uint(json_object_get(h, "stream"), &stream) ||
	    stream > UINT32_MAX || !p || !json_is_array(ts))
		return bad(ctx, path, "seed, stream, p or tensors missing");
	pk->stream = (uint32_t)stream;
	pk->p = strtod(p, NULL);
	if (!(pk->p >= 0.0 && pk->p <= 1.0))
		return bad(ctx, path, "p is outside [0, 1]");
	m->ntensors = json_array_size(ts);
	m->tensors = calloc(m->ntensors + 1, sizeof(*m->tensors));
	pk->pt = calloc(m->ntensors + 1, sizeof(*pk->pt));
	if (!m->tensors || !pk->pt)
		return -ENOMEM;
	for (size_t i = 0; !rc && i < m->ntensors; i++) {
		rc = read_tensor(ctx, path, json_array_get(ts, i),
				 &m->tensors[i], &pk->pt[i]);
		if (!rc && pk->pt[i].first != next)
			rc = bad(ctx, path, "tensor frames are not in order");
		next += pk->pt[i].frames;
	}
	if (!rc && next != pk->nframes)
		rc = bad(ctx, path, "the tensors' frames do not add up to the "
			 "seek table");
	return rc;
}

/*
 * Walk the seek table once: every frame ends after the previous one and
 * before the header, so a damaged table is refused before any merge, and
 * each tensor learns its compressed size.
 */
static int check_table(ds_ctx *ctx, int fd, const char *path,
		       struct ds_model *m, struct ds_pack *pk)
{
	unsigned char ent[64 * 16];
	uint64_t prev = pk->frames_off, g = 0;
	size_t t = 0;

	while (g < pk->nframes) {
		unsigned cnt = pk->nframes - g < 64 ? (unsigned)(pk->nframes - g) : 64;
		int rc = ds_pread_all(fd, ent, cnt * 16u, 16 + g * 16);

		if (rc)
			return ds_fail(ctx, rc, "%s: %s", path, strerror(-rc));
		for (unsigned i = 0; i < cnt; i++, g++) {
			uint64_t end = le64(ent + 16 * i);

			if (end < prev || end > pk->header_off)
				return ds_fail(ctx, DS_E_FORMAT, "%s: seek table "
					       "entry %llu points outside the "
					       "frames", path,
					       (unsigned long long)g);
			while (t < m->ntensors &&
			       g >= pk->pt[t].first + pk->pt[t].frames)
				t++;
			if (t < m->ntensors)
				pk->pt[t].bytes += end - prev;
			prev = end;
		}
	}
	return 0;
}

/* Footer, then the header it points at. */
static int read_pack(ds_ctx *ctx, int fd, const char *path, uint64_t size,
		     struct ds_model *m, struct ds_pack *pk)
{
	unsigned char head[16], foot[32];
	uint64_t hoff, hlen;
	json_error_t je;
	json_t *h;
	char *text;
	int rc;

	if (size < 48 || ds_pread_all(fd, head, 16, 0) ||
	    ds_pread_all(fd, foot, 32, size - 32))
		return bad(ctx, path, "too short");
	if (memcmp(head, "DSDPACK\0", 8) || memcmp(foot + 24, "DSDPEND\0", 8))
		return bad(ctx, path, "no pack magic at its start and end");
	if (le64(head + 8) != DS_PACK_VERSION)
		return ds_fail(ctx, DS_E_FORMAT, "%s: pack version %u; this "
			       "dare-stream reads version %u", path,
			       (unsigned)le64(head + 8), DS_PACK_VERSION);
	hoff = le64(foot);
	hlen = le64(foot + 8);
	pk->nframes = le64(foot + 16);
	pk->frames_off = 16 + pk->nframes * 16;
	pk->header_off = hoff;
	if (pk->nframes > size / 16 || hlen > 100000000 ||
	    hoff < pk->frames_off || hoff > size - 32 || hlen > size - 32 - hoff)
		return bad(ctx, path, "the footer's offsets lie outside the file");
	if (!(text = malloc(hlen + 1)))
		return -ENOMEM;
	rc = ds_pread_all(fd, text, hlen, hoff);
	h = rc ? NULL : json_loadb(text, hlen, JSON_REJECT_DUPLICATES, &je);
	free(text);
	if (rc)
		return ds_fail(ctx, rc, "%s: %s", path, strerror(-rc));
	if (!h)
		return bad(ctx, path, "the header is not JSON");
	rc = read_header(ctx, path, h, m, pk);
	json_decref(h);
	return rc ? rc : check_table(ctx, fd, path, m, pk);
}

int ds_pack_open(ds_ctx *ctx, const char *arg, struct ds_model *m)
{
	struct ds_pack *pk = calloc(1, sizeof(*pk));
	int fd = -1, rc;
	uint64_t size = 0;
	char *slash;

	m->arg = strdup(arg);
	m->shards = calloc(1, sizeof(*m->shards));
	if (!pk || !m->arg || !m->shards || !(m->shards[0].path = strdup(arg))) {
		ds_pack_free(pk);
		return -ENOMEM;
	}
	m->nshards = 1;
	m->pack = pk;
	m->file = true;
	slash = strrchr(arg, '/');
	m->shards[0].name = strdup(slash ? slash + 1 : arg);
	m->dir = slash ? strndup(arg, (size_t)(slash - arg)) : strdup(".");
	if (!m->shards[0].name || !m->dir)
		return -ENOMEM;
	fd = open(arg, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return ds_fail(ctx, -errno, "%s: %s", arg, strerror(errno));
	rc = ds_regular_size(ctx, fd, arg, &size);
	if (!rc)
		rc = read_pack(ctx, fd, arg, size, m, pk);
	close(fd);
	m->shards[0].size = size;
	m->shards[0].data_off = 0;
	pk->thr = ds_drop_threshold(pk->p);
	return rc;
}

uint64_t ds_pack_window_bound(uint64_t n, enum ds_dtype dt)
{
	uint64_t frames = n / DS_PACK_FRAME + 2;

	return frames * ZSTD_compressBound((size_t)DS_PACK_FRAME *
					   ds_dtype_size(dt));
}

int ds_pack_window(int fd, const struct ds_pack *pk, size_t t, uint64_t i0,
		   uint64_t n, uint64_t *off, uint64_t *len,
		   struct ds_pack_frame *fr, unsigned *nfr)
{
	const struct ds_pack_tensor *pt = &pk->pt[t];
	uint64_t g0 = pt->first + i0 / DS_PACK_FRAME;
	uint64_t g1 = pt->first + (i0 + n + DS_PACK_FRAME - 1) / DS_PACK_FRAME;
	uint64_t prev = pk->frames_off;
	unsigned char ent[64 * 16];
	int rc;

	*nfr = 0;
	/* Entries g0 - 1 (where frame g0 starts) .. g1 - 1, 64 at a time. */
	for (uint64_t g = g0 ? g0 - 1 : 0; g < g1;) {
		unsigned cnt = g1 - g < 64 ? (unsigned)(g1 - g) : 64;

		if ((rc = ds_pread_all(fd, ent, cnt * 16u, 16 + g * 16)))
			return rc;
		for (unsigned i = 0; i < cnt; i++, g++) {
			uint64_t end = le64(ent + 16 * i);

			if (end < prev || end > pk->header_off)
				return DS_E_FORMAT;
			if (g >= g0) {
				fr[*nfr].clen = end - prev;
				fr[*nfr].xxh3 = le64(ent + 16 * i + 8);
				(*nfr)++;
			} else {
				*off = end;
			}
			prev = end;
		}
	}
	if (g0 == 0)
		*off = pk->frames_off;
	*len = n ? prev - *off : 0;
	if (!n)
		*off = pk->frames_off;
	return 0;
}

/* The mask of the pack for elements i0 .. i0+m-1 of tensor t (m at most
 * DS_PACK_FRAME), as bits: bit i of bits[i / 64] set where element i0+i is
 * kept, the rest of the last word clear.  Returns how many are kept. */
static size_t pack_mask(const struct ds_kernel_ops *k, const struct ds_pack *pk,
			size_t t, uint32_t name_hash, uint64_t i0, size_t m,
			uint64_t *bits)
{
	size_t nw = (m + 63) / 64;

	if (pk->pt[t].whole || pk->thr == 0 || pk->thr > UINT32_MAX) {
		uint64_t all = pk->thr > UINT32_MAX && !pk->pt[t].whole ? 0 :
			       ~0ull;

		for (size_t w = 0; w < nw; w++)
			bits[w] = all;
		if (m % 64)
			bits[nw - 1] &= (1ull << (m % 64)) - 1;
		return all ? m : 0;
	}
	return k->keep_bits(pk->seed, pk->stream, name_hash, i0, m,
			    (uint32_t)pk->thr, bits);
}

/* Elements [a, b) of a frame into o (element a of the window): the base's
 * values (b0: its element a, of dtype bdt), then the kept ones (bits) from
 * vals, which holds the frame's kept values from its start.  A random mask
 * keeps few and scattered elements: the base is copied in bulk and the
 * kept positions are found a word of the mask at a time. */
#define PLACE(T)                                                             \
	static void place_##T(char *o, const uint64_t *bits, size_t a,       \
			      size_t b, const char *vals, size_t v)          \
	{                                                                    \
		for (size_t w = a / 64; w * 64 < b; w++) {                   \
			uint64_t x = bits[w];                                \
									     \
			if (w * 64 < a)                                      \
				x &= ~0ull << (a % 64);                      \
			if (b - w * 64 < 64)                                 \
				x &= (1ull << (b - w * 64)) - 1;             \
			for (; x; x &= x - 1, v++)                           \
				memcpy(o + (w * 64 + (size_t)                \
					    __builtin_ctzll(x) - a) *        \
					   sizeof(T),                        \
				       vals + v * sizeof(T), sizeof(T));     \
		}                                                            \
	}
PLACE(uint8_t)
PLACE(uint16_t)
PLACE(uint32_t)
PLACE(uint64_t)

static void place_any(char *o, size_t es, const uint64_t *bits, size_t a,
		      size_t b, const char *vals, size_t v)
{
	for (size_t i = a; i < b; i++)
		if (bits[i / 64] >> (i % 64) & 1)
			memcpy(o + (i - a) * es, vals + v++ * es, es);
}

/* The kept elements before element a of a frame. */
static size_t kept_before(const uint64_t *bits, size_t a)
{
	size_t v = 0;

	for (size_t w = 0; w < a / 64; w++)
		v += ds_popcount64(bits[w]);
	if (a % 64)
		v += ds_popcount64(bits[a / 64] & ((1ull << (a % 64)) - 1));
	return v;
}

int ds_pack_expand(ZSTD_DCtx *dc, const struct ds_kernel_ops *k,
		   const struct ds_pack *pk, size_t t, uint32_t name_hash,
		   enum ds_dtype dt, const void *src,
		   const struct ds_pack_frame *fr, unsigned nfr, uint64_t i0,
		   uint64_t n, const void *base, enum ds_dtype bdt, void *out,
		   void *vals, uint64_t *bad_frame)
{
	size_t es = ds_dtype_size(dt), bes = ds_dtype_size(bdt);
	const char *s = src;
	uint64_t f = i0 / DS_PACK_FRAME;
	uint64_t bits[DS_PACK_FRAME / 64];
	float tmp[256];

	for (unsigned q = 0; q < nfr; q++, f++) {
		uint64_t fs = f * DS_PACK_FRAME, numel = pk->pt[t].numel;
		/* The whole frame is decoded: its values are counted from its
		 * start, whatever part of it the window wants. */
		size_t m = (size_t)(numel - fs < DS_PACK_FRAME ? numel - fs :
				    DS_PACK_FRAME), kept, got, v, a, b;
		const char *b0;
		char *o;

		*bad_frame = f;
		kept = pack_mask(k, pk, t, name_hash, fs, m, bits);
		got = ZSTD_decompressDCtx(dc, vals, DS_PACK_FRAME * es, s,
					  fr[q].clen);
		if (ZSTD_isError(got) || got != kept * es ||
		    XXH3_64bits(vals, got) != fr[q].xxh3)
			return DS_E_FORMAT;
		s += fr[q].clen;
		a = (size_t)(i0 > fs ? i0 - fs : 0);
		b = (size_t)(i0 + n - fs < m ? i0 + n - fs : m);
		v = kept_before(bits, a);
		o = (char *)out + (fs + a - i0) * es;
		b0 = (const char *)base + (fs + a - i0) * bes;
		if (bdt == dt)
			memcpy(o, b0, (b - a) * es);
		for (size_t i = 0; bdt != dt && i < b - a; i += 256) {
			size_t c = b - a - i < 256 ? b - a - i : 256;

			k->load(bdt, b0 + i * bes, tmp, c);
			k->store(dt, tmp, o + i * es, c);
		}
		if (es == 2)
			place_uint16_t(o, bits, a, b, vals, v);
		else if (es == 4)
			place_uint32_t(o, bits, a, b, vals, v);
		else if (es == 1)
			place_uint8_t(o, bits, a, b, vals, v);
		else if (es == 8)
			place_uint64_t(o, bits, a, b, vals, v);
		else
			place_any(o, es, bits, a, b, vals, v);
	}
	return 0;
}

bool ds_pack_mask_is(const struct ds_pack *pk, size_t t, uint32_t name_hash,
		     uint64_t seed, uint32_t j, uint64_t thr)
{
	return !pk->pt[t].whole && pk->thr <= UINT32_MAX && pk->thr == thr &&
	       pk->seed == seed && pk->stream == j &&
	       pk->pt[t].name_hash == name_hash;
}

int ds_pack_kept(ZSTD_DCtx *dc, const struct ds_kernel_ops *k,
		 const struct ds_pack *pk, size_t t, enum ds_dtype dt,
		 const void *src, const struct ds_pack_frame *fr, unsigned nfr,
		 uint64_t i0, void *vals, uint64_t *bits, uint64_t *bad_frame)
{
	size_t es = ds_dtype_size(dt);
	const char *s = src;
	char *o = vals;
	uint64_t f = i0 / DS_PACK_FRAME, numel = pk->pt[t].numel;

	for (unsigned q = 0; q < nfr; q++, f++) {
		uint64_t fs = f * DS_PACK_FRAME;
		size_t m = (size_t)(numel - fs < DS_PACK_FRAME ? numel - fs :
				    DS_PACK_FRAME), kept, got;

		*bad_frame = f;
		kept = pack_mask(k, pk, t, pk->pt[t].name_hash, fs, m,
				 bits + (fs - i0) / 64);
		/* room for exactly the values the mask keeps: a frame that
		 * holds more fails here, one that holds fewer below */
		got = ZSTD_decompressDCtx(dc, o, kept * es, s, fr[q].clen);
		if (ZSTD_isError(got) || got != kept * es ||
		    XXH3_64bits(o, got) != fr[q].xxh3)
			return DS_E_FORMAT;
		s += fr[q].clen;
		o += got;
	}
	return 0;
}

int ds_pack_params(ds_ctx *ctx, const char *path, uint64_t *seed,
		   uint32_t *stream, double *p)
{
	struct ds_model m;
	int rc;

	memset(&m, 0, sizeof(m));
	rc = ds_pack_open(ctx, path, &m);
	if (!rc) {
		*seed = m.pack->seed;
		*stream = m.pack->stream;
		*p = m.pack->p;
	}
	ds_model_clear(&m);
	return rc;
}

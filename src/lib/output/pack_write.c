/* SPDX-License-Identifier: MIT */
/* pack_write.c - dare-stream extract: a fine-tune's DARE-kept values, zstd */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>
#include "common/ctx.h"
#include "inputs/pack.h"
#include "io/io.h"
#include "kernels/philox.h"
#include "kernels/xxh.h"

/*
 * What extract reads leaves the page cache behind it, as a merge's reads
 * do (unless the file was mostly cached before: it is left so).  Ranges
 * read in a row are dropped DROP_STEP at a time, cut on DROP_STEP
 * boundaries: a large folio of the cache (2 MiB at most) goes only when it
 * lies wholly in a range dropped.  Keeping the pages made the kernel find
 * a fresh one for every read, most of extract's time where the RAM is a
 * virtual machine's; the kernel's own read-ahead, not WILLNEED hints
 * (served one page a folio), reads ahead.
 */
#define DROP_STEP ((uint64_t)2 << 20)

struct behind {
	int fd;                         /* -1: nothing pending */
	uint64_t from, to;              /* read, not yet dropped */
};

/*
 * One pass over base and model, frame by frame (65536 elements): the
 * model's values at the positions the mask of DESIGN 4 keeps, in its own
 * dtype, compressed as one zstd frame each; the seek table sits before
 * the frames at a place known from the tensor sizes alone, so each entry
 * is written as its frame is, and nothing grows with the model.
 */
struct writer {
	ds_ctx *ctx;
	const struct ds_extract_opts *o;
	const struct ds_kernel_ops *k;
	int fd;
	const char *tmp;
	uint64_t pos, frame, thr;
	ZSTD_CCtx *cc;
	char *raw, *kept, *z;
	uint64_t *bits;
	size_t zcap;
	json_t *tensors;
	ds_progress_fn *progress;
	void *user;
	uint64_t done, total;
	struct behind behind;           /* of the model's reads */
	const bool *mkeep;              /* per shard: the model's, cached */
};

static void put_le64(unsigned char *b, uint64_t v)
{
	for (int i = 0; i < 8; i++, v >>= 8)
		b[i] = (unsigned char)v;
}

static int write_at(struct writer *w, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t r = pwrite(w->fd, p, len, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return ds_fail(w->ctx, -errno, "%s: %s", w->tmp,
				       strerror(errno));
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static int read_at(ds_ctx *ctx, int fd, const char *path, void *buf,
		   size_t len, uint64_t off)
{
	int rc = ds_pread_all(fd, buf, len, off);

	if (rc)
		return ds_fail(ctx, rc, "%s: reading at offset %llu: %s", path,
			       (unsigned long long)off, rc == -EIO ?
			       "file shorter than its header says" :
			       strerror(-rc));
	return 0;
}

/* The kept values of elements i0 .. i0+m-1 into w->kept; their bytes. */
/* The kept elements, in element order, copied a mask word at a time (a
 * mask of p = 0.9 keeps one element in ten): constant-size copies for the
 * common element sizes. */
#define GATHER(T)                                                            \
	static size_t gather_##T(char *kept, const char *raw,                \
				 const uint64_t *bits, size_t m)             \
	{                                                                    \
		size_t n = 0;                                                \
									     \
		for (size_t w = 0; w * 64 < m; w++)                          \
			for (uint64_t x = bits[w]; x; x &= x - 1, n++)       \
				memcpy(kept + n * sizeof(T), raw +           \
				       (w * 64 + (size_t)__builtin_ctzll(x)) * \
				       sizeof(T), sizeof(T));                \
		return n * sizeof(T);                                        \
	}
GATHER(uint16_t)
GATHER(uint32_t)

static size_t gather(struct writer *w, uint32_t hash, bool whole,
		     const char *raw, uint64_t i0, size_t m, size_t es)
{
	size_t n = 0;

	if (whole || w->thr == 0) {
		memcpy(w->kept, raw, m * es);
		return m * es;
	}
	if (w->thr > UINT32_MAX)
		return 0;
	w->k->keep_bits(w->o->seed, w->o->stream, hash, i0, m,
			(uint32_t)w->thr, w->bits);
	if (es == 2)
		return gather_uint16_t(w->kept, raw, w->bits, m);
	if (es == 4)
		return gather_uint32_t(w->kept, raw, w->bits, m);
	for (size_t i = 0; i < m; i++)
		if (w->bits[i / 64] >> (i % 64) & 1)
			memcpy(w->kept + es * n++, raw + es * i, es);
	return n * es;
}

static void behind_flush(struct behind *b)
{
	if (b->fd >= 0 && b->to > b->from)
		(void)posix_fadvise(b->fd, (off_t)b->from,
				    (off_t)(b->to - b->from),
				    POSIX_FADV_DONTNEED);
	b->fd = -1;
}

/* [off, off + len) of fd was read; keep: fd's file stays cached. */
static void behind_read(struct behind *b, int fd, bool keep, uint64_t off,
			uint64_t len)
{
	uint64_t cut;

	if (keep)
		return;
	if (b->fd != fd || off != b->to) {
		behind_flush(b);
		*b = (struct behind){ fd, off, off };
	}
	b->to = off + len;
	cut = b->to & ~(DROP_STEP - 1);
	if (cut >= b->from + DROP_STEP) {
		(void)posix_fadvise(fd, (off_t)b->from, (off_t)(cut - b->from),
				    POSIX_FADV_DONTNEED);
		b->from = cut;
	}
}

static int put_frame(struct writer *w, size_t bytes)
{
	size_t z = ZSTD_compressCCtx(w->cc, w->z, w->zcap, w->kept, bytes,
				     w->o->level);
	unsigned char ent[16];
	int rc;

	if (ZSTD_isError(z))
		return ds_fail(w->ctx, DS_E_FORMAT, "zstd: %s",
			       ZSTD_getErrorName(z));
	if ((rc = write_at(w, w->z, z, w->pos)))
		return rc;
	w->pos += z;
	put_le64(ent, w->pos);
	put_le64(ent + 8, XXH3_64bits(w->kept, bytes));
	rc = write_at(w, ent, 16, 16 + w->frame * 16);
	w->frame++;
	return rc;
}

/* Read a model's and the base's bytes of one tensor and pack them. */
static int pack_tensor(struct writer *w, int mfd, const struct ds_model *m,
		       const struct ds_tensor *t, const struct ds_tensor *bt)
{
	size_t es = ds_dtype_size(t->dtype);
	uint32_t hash = XXH32(t->name, strlen(t->name), 0);
	bool whole = !bt || !(t->dtype == DS_DT_F16 || t->dtype == DS_DT_BF16 ||
			      t->dtype == DS_DT_F32);
	uint64_t first = w->frame;
	int rc = 0;

	if (es == 0)
		rc = ds_fail(w->ctx, DS_E_USAGE, "%s: tensor '%s' is %s, of less "
			     "than a byte per element: packs store whole "
			     "elements", m->arg, t->name, ds_dtype_name(t->dtype));
	for (uint64_t i0 = 0; !rc && i0 < t->numel; i0 += DS_PACK_FRAME) {
		size_t mlen = (size_t)(t->numel - i0 < DS_PACK_FRAME ?
				       t->numel - i0 : DS_PACK_FRAME);
		uint64_t off = m->shards[t->shard].data_off + t->begin + i0 * es;

		rc = read_at(w->ctx, mfd, m->shards[t->shard].path, w->raw,
			     mlen * es, off);
		if (!rc)
			behind_read(&w->behind, mfd, w->mkeep[t->shard], off,
				    mlen * es);
		if (!rc)
			rc = put_frame(w, gather(w, hash, whole, w->raw, i0, mlen,
						 es));
		w->done += mlen * es;
		if (w->progress) {
			struct ds_progress pr = { t->name, w->done, w->total };

			w->progress(w->user, &pr);
		}
	}
	if (!rc) {
		json_t *e = json_object(), *shape = json_array();

		for (unsigned d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer(
					      (json_int_t)t->shape[d]));
		json_object_set_new(e, "name", json_string(t->name));
		json_object_set_new(e, "dtype", json_string(ds_dtype_name(t->dtype)));
		json_object_set_new(e, "shape", shape);
		json_object_set_new(e, "kind", json_string(whole ? "whole" : "delta"));
		/* the digest once the hasher is done (put_digests) */
		json_object_set_new(e, "base_xxh3", json_string(""));
		json_object_set_new(e, "first_frame", json_integer((json_int_t)first));
		json_object_set_new(e, "frames",
				    json_integer((json_int_t)(w->frame - first)));
		json_array_append_new(w->tensors, e);
	}
	return rc;
}

/* The header after the frames, then the footer. */
static int finish(struct writer *w)
{
	json_t *h = json_object();
	unsigned char foot[32];
	char num[40], pstr[40];
	char *text;
	size_t len;
	int rc;

	snprintf(num, sizeof(num), "%llu", (unsigned long long)w->o->seed);
	snprintf(pstr, sizeof(pstr), "%a", w->o->p);
	json_object_set_new(h, "format", json_string("dare-stream-pack"));
	json_object_set_new(h, "version", json_integer(DS_PACK_VERSION));
	json_object_set_new(h, "seed", json_string(num));
	json_object_set_new(h, "stream", json_integer(w->o->stream));
	json_object_set_new(h, "p", json_string(pstr));
	json_object_set_new(h, "p_decimal", json_real(w->o->p));
	json_object_set_new(h, "frame_elements", json_integer(DS_PACK_FRAME));
	json_object_set_new(h, "dare_stream_version",
			    json_string(DS_VERSION_STRING));
	json_object_set(h, "tensors", w->tensors);
	text = json_dumps(h, JSON_COMPACT);
	json_decref(h);
	if (!text)
		return ds_fail(w->ctx, -ENOMEM, "out of memory");
	len = strlen(text);
	rc = write_at(w, text, len, w->pos);
	free(text);
	put_le64(foot, w->pos);
	put_le64(foot + 8, len);
	put_le64(foot + 16, w->frame);
	memcpy(foot + 24, "DSDPEND\0", 8);
	if (!rc)
		rc = write_at(w, foot, 32, w->pos + len);
	if (!rc && fsync(w->fd))
		rc = ds_fail(w->ctx, -errno, "%s: %s", w->tmp, strerror(errno));
	return rc;
}

static int open_fds(ds_ctx *ctx, const struct ds_model *m, int *fd,
		    bool *keep)
{
	for (unsigned s = 0; s < m->nshards; s++) {
		fd[s] = open(m->shards[s].path, O_RDONLY | O_CLOEXEC);
		if (fd[s] < 0)
			return ds_fail(ctx, -errno, "%s: %s", m->shards[s].path,
				       strerror(errno));
		keep[s] = ds_mostly_cached(fd[s]);
		(void)posix_fadvise(fd[s], 0, 0, POSIX_FADV_SEQUENTIAL);
	}
	return 0;
}

/*
 * The digest of each base tensor (a pack applied to another base is
 * refused), computed by a thread of its own while the model's frames are
 * gathered and compressed: reading the base is half of extract's bytes.
 */
struct hasher {
	const struct ds_model *b, *m;
	const int *bfd;
	const bool *bkeep;              /* per shard: cached before */
	uint64_t *digest;               /* per tensor of the model */
	char *buf;
	atomic_bool stop;
	int rc;                         /* 0, or -errno at tensor bad */
	size_t bad;
	uint64_t bad_off;
};

#define HASH_CHUNK (1u << 20)

/* The base tensor model tensor t is packed against, or NULL (stored
 * whole: none of that name, or another number of elements). */
static const struct ds_tensor *base_of(const struct ds_model *b,
				       const struct ds_tensor *t)
{
	const struct ds_tensor *bt = ds_model_find(b, t->name);

	return bt && bt->numel == t->numel ? bt : NULL;
}

static void *hash_bases(void *arg)
{
	struct hasher *h = arg;
	XXH3_state_t *st = XXH3_createState();
	struct behind bh = { .fd = -1 };

	if (!st)
		h->rc = -ENOMEM;
	for (size_t i = 0; !h->rc && i < h->m->ntensors; i++) {
		const struct ds_tensor *bt = base_of(h->b, &h->m->tensors[i]);
		uint64_t len = bt ? bt->end - bt->begin : 0;

		XXH3_64bits_reset(st);
		for (uint64_t o = 0; !h->rc && o < len; o += HASH_CHUNK) {
			size_t n = len - o < HASH_CHUNK ? (size_t)(len - o) :
				   HASH_CHUNK;
			uint64_t off = h->b->shards[bt->shard].data_off +
				       bt->begin + o;

			if (atomic_load_explicit(&h->stop, memory_order_relaxed))
				h->rc = -ECANCELED;
			else if ((h->rc = ds_pread_all(h->bfd[bt->shard], h->buf,
						       n, off)))
				h->bad_off = off;
			else
				ds_xxh3_64_update(st, h->buf, n);
			if (!h->rc)
				behind_read(&bh, h->bfd[bt->shard],
					    h->bkeep[bt->shard], off, n);
			h->bad = i;
		}
		h->digest[i] = XXH3_64bits_digest(st);
	}
	behind_flush(&bh);
	XXH3_freeState(st);
	return NULL;
}

/* Every entry of w->tensors gets the digest of its base tensor. */
static int put_digests(struct writer *w, const struct hasher *h)
{
	char hex[20];

	if (h->rc == -ENOMEM)
		return ds_fail(w->ctx, -ENOMEM, "out of memory");
	if (h->rc) {
		const struct ds_tensor *bt = base_of(h->b, &h->m->tensors[h->bad]);

		return ds_fail(w->ctx, h->rc, "%s: reading at offset %llu: %s",
			       h->b->shards[bt->shard].path,
			       (unsigned long long)h->bad_off, h->rc == -EIO ?
			       "file shorter than its header says" :
			       strerror(-h->rc));
	}
	for (size_t i = 0; i < json_array_size(w->tensors); i++) {
		snprintf(hex, sizeof(hex), "0x%016llx",
			 (unsigned long long)h->digest[i]);
		json_object_set_new(json_array_get(w->tensors, i), "base_xxh3",
				    json_string(hex));
	}
	return 0;
}

static int run(struct writer *w, const struct ds_model *b,
	       const struct ds_model *m)
{
	int *bfd = calloc(b->nshards + 1, sizeof(int));
	int *mfd = calloc(m->nshards + 1, sizeof(int));
	bool *bkeep = calloc(b->nshards + 1, sizeof(bool));
	bool *mkeep = calloc(m->nshards + 1, sizeof(bool));
	uint64_t frames = 0;
	unsigned char head[16] = "DSDPACK";
	struct hasher h = { .b = b, .m = m, .bfd = bfd, .bkeep = bkeep };
	pthread_t th;
	bool started;
	int rc = bfd && mfd && bkeep && mkeep ? 0 : -ENOMEM, e;

	for (unsigned s = 0; bfd && s < b->nshards; s++)
		bfd[s] = -1;
	for (unsigned s = 0; mfd && s < m->nshards; s++)
		mfd[s] = -1;
	if (!rc)
		rc = open_fds(w->ctx, b, bfd, bkeep);
	if (!rc)
		rc = open_fds(w->ctx, m, mfd, mkeep);
	w->behind.fd = -1;
	w->mkeep = mkeep;
	for (size_t i = 0; i < m->ntensors; i++) {
		frames += (m->tensors[i].numel + DS_PACK_FRAME - 1) / DS_PACK_FRAME;
		w->total += m->tensors[i].end - m->tensors[i].begin;
	}
	put_le64(head + 8, DS_PACK_VERSION);
	if (!rc)
		rc = write_at(w, head, 16, 0);
	w->pos = 16 + frames * 16;
	atomic_init(&h.stop, false);
	h.digest = calloc(m->ntensors + 1, sizeof(*h.digest));
	h.buf = malloc(HASH_CHUNK);
	if (!rc && (!h.digest || !h.buf))
		rc = ds_fail(w->ctx, -ENOMEM, "out of memory");
	if (!rc && (e = pthread_create(&th, NULL, hash_bases, &h)))
		rc = ds_fail(w->ctx, -e, "cannot start a thread: %s",
			     strerror(e));
	started = !rc;
	for (size_t i = 0; !rc && i < m->ntensors; i++) {
		const struct ds_tensor *t = &m->tensors[i];

		rc = pack_tensor(w, mfd[t->shard], m, t, base_of(b, t));
	}
	behind_flush(&w->behind);
	if (started) {
		atomic_store(&h.stop, rc != 0);
		pthread_join(th, NULL);
		if (!rc)
			rc = put_digests(w, &h);
	}
	if (!rc)
		rc = finish(w);
	free(h.digest);
	free(h.buf);
	for (unsigned s = 0; bfd && s < b->nshards; s++)
		if (bfd[s] >= 0)
			close(bfd[s]);
	for (unsigned s = 0; mfd && s < m->nshards; s++)
		if (mfd[s] >= 0)
			close(mfd[s]);
	free(bfd);
	free(mfd);
	free(bkeep);
	free(mkeep);
	return rc;
}

int ds_extract(ds_ctx *ctx, const char *base, const char *model,
	       const struct ds_extract_opts *o, const char *out,
	       ds_progress_fn *progress, void *user)
{
	struct writer w = { .ctx = ctx, .o = o, .fd = -1, .progress = progress,
			    .user = user };
	ds_model *b = NULL, *m = NULL;
	char *tmp = malloc(strlen(out) + 16);
	struct stat st;
	int rc;

	if (!tmp)
		return ds_fail(ctx, -ENOMEM, "out of memory");
	sprintf(tmp, "%s.partial", out);
	w.tmp = tmp;
	w.thr = ds_drop_threshold(o->p);
	w.k = ds_kernel_select();
	if (!(o->p >= 0.0 && o->p <= 1.0))
		rc = ds_fail(ctx, DS_E_USAGE, "drop rate %g is outside [0, 1]",
			     o->p);
	else if (!w.k)
		rc = ds_fail(ctx, DS_E_USAGE, "DARE_STREAM_KERNEL names a "
			     "kernel path this machine cannot run");
	else if (!o->force && stat(out, &st) == 0)
		rc = ds_fail(ctx, DS_E_OUTPUT, "%s exists; use --force to "
			     "replace it", out);
	else
		rc = ds_model_open(ctx, base, &b);
	if (!rc)
		rc = ds_model_open(ctx, model, &m);
	if (!rc && (b->pack || m->pack))
		rc = ds_fail(ctx, DS_E_USAGE, "%s: extract reads full models, "
			     "not packs", b->pack ? base : model);
	w.zcap = ZSTD_compressBound(DS_PACK_FRAME * 8);
	w.raw = malloc(DS_PACK_FRAME * 8);
	w.kept = malloc(DS_PACK_FRAME * 8);
	w.z = malloc(w.zcap);
	w.bits = malloc(DS_PACK_FRAME / 8);
	w.cc = ZSTD_createCCtx();
	w.tensors = json_array();
	if (!rc && (!w.raw || !w.kept || !w.z || !w.bits || !w.cc ||
		    !w.tensors))
		rc = ds_fail(ctx, -ENOMEM, "out of memory");
	if (!rc && (w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
				O_NOFOLLOW, 0644)) < 0)
		rc = ds_fail(ctx, -errno, "%s: %s", tmp, strerror(errno));
	if (!rc)
		rc = run(&w, b, m);
	if (w.fd >= 0 && close(w.fd) && !rc)
		rc = ds_fail(ctx, -errno, "%s: %s", tmp, strerror(errno));
	if (!rc && rename(tmp, out))
		rc = ds_fail(ctx, -errno, "%s: %s", out, strerror(errno));
	if (rc && w.fd >= 0)
		unlink(tmp);
	ZSTD_freeCCtx(w.cc);
	json_decref(w.tensors);
	free(w.raw);
	free(w.kept);
	free(w.z);
	free(w.bits);
	free(tmp);
	ds_model_free(b);
	ds_model_free(m);
	return rc;
}

/* SPDX-License-Identifier: MIT */
/* output.c - write the output directory safely: temp names, fsync, rename */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include "common/ctx.h"
#include "common/fault.h"
#include "io/io.h"
#include "output/lock.h"
#include "output/output.h"
#include "kernels/xxh.h"

#define TMP_SUFFIX DS_TMP_SUFFIX
#define CHECKSUMS DS_CHECKSUMS
#define RECIPE "dare-stream.yml"
#define INDEX DS_INDEX
#define JOURNAL ".dare-stream.journal"
/* A journal's first words; version 1 held each tensor's own digest. */
#define JOURNAL_HEAD "dare-stream-journal 2 "
#define JOURNAL_HEAD_V1 "dare-stream-journal 1 "

/* One file of the output: written as .NAME.partial, renamed to NAME. */
struct ofile {
	char *name;
	char *tmp;                  /* full path of the temporary */
	char *final;                /* full path of the final name */
	uint64_t size;              /* bytes written through put() */
	int fd;
	int dfd;                    /* the same opened O_DIRECT, or -1 */
	XXH3_state_t *h;
	XXH128_hash_t digest;
};

struct ds_out {
	ds_ctx *ctx;
	const struct ds_plan *p;
	char *dir;
	int made_dir;
	struct ofile *f;
	size_t nf, cap;
	int jfd;                    /* journal, appended to */
	uint64_t fingerprint;       /* of the recipe, layout and inputs */
	struct ds_lock lock;        /* held from open to free */
	struct ds_lock plock;       /* a part's own lock (--partition) */
	char jpath[PATH_MAX];       /* the journal */
	size_t done;                /* tensors 0 .. done-1 journaled */
	size_t renamed;             /* files 0 .. renamed-1 have final names */
};

/* ---- the files of a partitioned merge --------------------------------------- */

/* The name of a part's file of kind t into buf. */
static void part_name(enum ds_part_file t, unsigned k, unsigned n, char *buf,
		      size_t len)
{
	switch (t) {
	case DS_PF_MANIFEST:
		snprintf(buf, len, DS_PART_MANIFEST, k, n);
		break;
	case DS_PF_JOURNAL:
		snprintf(buf, len, DS_PART_JOURNAL, k, n);
		break;
	case DS_PF_LOCK:
		snprintf(buf, len, DS_PART_LOCK, k, n);
		break;
	default:
		snprintf(buf, len, "-");
	}
}

enum ds_part_file ds_part_file(const char *name, unsigned *k, unsigned *n)
{
	static const char pre[] = ".dare-stream.";
	enum ds_part_file t = DS_PF_NONE;
	const char *s;
	char back[PATH_MAX];
	bool man;
	int end = -1;

	if (strncmp(name, pre, sizeof(pre) - 1))
		return DS_PF_NONE;
	s = name + sizeof(pre) - 1;
	if ((man = !strncmp(s, "part-", 5)))
		s += 5;
	if (sscanf(s, "%u-of-%u%n", k, n, &end) != 2 || end < 0)
		return DS_PF_NONE;
	if (man && !strcmp(s + end, ".json"))
		t = DS_PF_MANIFEST;
	else if (!man && !strcmp(s + end, ".journal"))
		t = DS_PF_JOURNAL;
	else if (!man && !strcmp(s + end, ".lock"))
		t = DS_PF_LOCK;
	/* exactly as a part writes it: no "+1", no leading zeros */
	part_name(t, *k, *n, back, sizeof(back));
	return t != DS_PF_NONE && !strcmp(back, name) ? t : DS_PF_NONE;
}

uint64_t ds_part_journal_run(const char *path)
{
	unsigned long long fp, run = 0;
	FILE *j = fopen(path, "r");

	if (!j)
		return 0;
	if (fscanf(j, JOURNAL_HEAD "%llx run %llx\n", &fp,
		   &run) != 2)
		run = 0;
	fclose(j);
	return run;
}

char *ds_index_text(json_t *map, uint64_t total)
{
	json_t *root = json_object(), *meta = json_object();
	char *text, *all = NULL;

	json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
	json_object_set_new(root, "metadata", meta);
	json_object_set_new(root, "weight_map", map);
	text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(root);
	if (text && asprintf(&all, "%s\n", text) < 0)
		all = NULL;
	free(text);
	return all;
}

void ds_hex128(XXH128_hash_t h, char out[33])
{
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, h);
	for (size_t b = 0; b < sizeof(c.digest); b++)
		sprintf(out + 2 * b, "%02x", c.digest[b]);
}

/* ---- output directory checks ------------------------------------------- */

/* Canonical form of a path that may not exist yet: realpath of its longest
 * existing prefix, then the rest as written. */
static char *canon(const char *path)
{
	char buf[PATH_MAX], *slash, *r;
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(buf))
		return NULL;
	memcpy(buf, path, n + 1);
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = 0;
	if ((r = realpath(buf, NULL)))
		return r;
	slash = strrchr(buf, '/');
	if (!slash)
		r = realpath(".", NULL);
	else if (slash == buf)
		r = strdup("/");
	else {
		*slash = 0;
		r = canon(buf);
	}
	if (r) {
		char *j = malloc(strlen(r) + strlen(slash ? slash + 1 : buf) + 2);
		if (j)
			sprintf(j, "%s/%s", strcmp(r, "/") ? r : "",
				slash ? slash + 1 : buf);
		free(r);
		r = j;
	}
	return r;
}

/* a is b or lies below it. */
static int within(const char *a, const char *b)
{
	size_t n = strlen(b);

	return !strncmp(a, b, n) && (a[n] == 0 || a[n] == '/' || n == 1);
}

/* Refuse out when it is, lies in or holds input path (a directory, or a
 * file of its own). */
static int check_overlap(ds_ctx *ctx, const char *out, const char *path,
			 const char *arg)
{
	char *d = realpath(path, NULL);
	int rc = 0;

	if (!d)
		return 0;
	if (within(out, d))
		rc = ds_fail(ctx, DS_E_OUTPUT, "output directory %s is inside "
			     "the input %s (%s); choose another -o", out, d,
			     arg);
	else if (within(d, out))
		rc = ds_fail(ctx, DS_E_OUTPUT, "output directory %s contains "
			     "the input %s (%s); choose another -o", out, d,
			     arg);
	free(d);
	return rc;
}

/*
 * A model directory may neither hold the output nor lie in it, nor may
 * the directory of any of its shards.  A model that is one file (a
 * .safetensors file, a pack) is only that file: the output may be made
 * next to it, not over it or around it.
 */
static int check_inputs(ds_ctx *ctx, const struct ds_plan *p, const char *out)
{
	for (unsigned k = 0; k < p->ninputs; k++) {
		const struct ds_model *m = p->in[k];
		int rc = m->file ? 0 : check_overlap(ctx, out, m->dir, m->arg);

		for (unsigned s = 0; !rc && s < m->nshards; s++) {
			char *real = realpath(m->shards[s].path, NULL);
			char *slash = real ? strrchr(real, '/') : NULL;

			if (m->file && real) {
				rc = check_overlap(ctx, out, real, m->arg);
			} else if (slash && slash != real) {
				*slash = 0;
				rc = check_overlap(ctx, out, real, m->arg);
			}
			free(real);
		}
		if (rc)
			return rc;
	}
	return 0;
}

static int dir_empty(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int empty = 1;

	if (!d)
		return -errno;
	while (empty && (e = readdir(d)))      /* a lock left by a kill too */
		empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
			!strcmp(e->d_name, DS_LOCK_NAME);
	closedir(d);
	return empty;
}

static int has_journal(const char *dir)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/" JOURNAL, dir);
	return access(path, F_OK) == 0;
}

/* Refuse a non-empty directory unless forced, or resuming what it holds. */
static int check_contents(ds_ctx *ctx, const char *dir, int force,
			  int resume)
{
	struct stat st;

	if (stat(dir, &st) != 0)
		return 0;
	if (!S_ISDIR(st.st_mode))
		return ds_fail(ctx, DS_E_OUTPUT, "%s: exists and is not a "
			       "directory", dir);
	if (force || dir_empty(dir) == 1 || (resume && has_journal(dir)))
		return 0;
	if (has_journal(dir))
		return ds_fail(ctx, DS_E_OUTPUT, "%s: holds an interrupted "
			       "merge; use --resume to continue it or --force "
			       "to start again", dir);
	return ds_fail(ctx, DS_E_OUTPUT, "%s: exists and is not empty%s; use "
		       "--force to replace its merge", dir, resume ?
		       " and has no interrupted merge to resume" : "");
}

/* ---- a partition's output directory ----------------------------------------
 * Parts run at once into one OUT, so a part accepts the files of the other
 * parts of its own run: their locks, journals, manifests, temporaries and
 * finished shards, the recipe and copied files.  Anything else (a finished
 * merge, another run's parts, unknown files) still needs --force.
 */

static int is_companion(const char *name);

/* A file name the merge of p writes (or a temporary of one). */
static bool run_writes(const struct ds_plan *p, const char *name)
{
	size_t n = strlen(name), ns = strlen(TMP_SUFFIX);
	char base[PATH_MAX];

	if (name[0] == '.' && n > ns + 1 &&
	    !strcmp(name + n - ns, TMP_SUFFIX) && n - ns - 1 < sizeof(base)) {
		snprintf(base, sizeof(base), "%.*s", (int)(n - ns - 1),
			 name + 1);
		name = base;
	}
	for (unsigned s = 0; s < p->all_nos; s++)
		if (!strcmp(p->all_names[s], name))
			return true;
	return !strcmp(name, RECIPE) || !strcmp(name, INDEX) ||
	       is_companion(name);
}

/* 1: a file of this run's parts; 0: not a part's file; -1: another run's. */
static int ours(const struct ds_plan *p, const char *dir, const char *name)
{
	char path[PATH_MAX];
	unsigned k, n;
	enum ds_part_file t = ds_part_file(name, &k, &n);
	json_t *m;
	int r;

	if (t == DS_PF_NONE) {
		size_t len = strlen(name), ns = strlen(TMP_SUFFIX);

		/* a manifest being written */
		if (len <= ns || strcmp(name + len - ns, TMP_SUFFIX))
			return 0;
		snprintf(path, sizeof(path), "%.*s", (int)(len - ns), name);
		t = ds_part_file(path, &k, &n);
		if (t != DS_PF_MANIFEST)
			return 0;
		return n == p->parts ? 1 : -1;
	}
	if (n != p->parts || k >= n)
		return -1;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (t == DS_PF_LOCK)
		return 1;
	if (t == DS_PF_JOURNAL) {
		uint64_t run = ds_part_journal_run(path);

		return run == 0 || run == p->run ? 1 : -1;  /* 0: torn */
	}
	if (!(m = json_load_file(path, 0, NULL)))
		return -1;
	r = json_is_string(json_object_get(m, "run")) &&
	    strtoull(json_string_value(json_object_get(m, "run")), NULL,
		     16) == p->run ? 1 : -1;
	json_decref(m);
	return r;
}

/* With --force, another run's part files go (a lock still held stays:
 * its part is running, and finalize names it when it ends). */
static void drop_foreign(DIR *d, const char *dir, const char *name)
{
	unsigned k, n;

	if (ds_part_file(name, &k, &n) != DS_PF_LOCK ||
	    !ds_lock_holder(dir, name))
		unlinkat(dirfd(d), name, 0);
}

/* What one reading of a partition's OUT found. */
struct part_scan {
	char foreign[NAME_MAX + 1];     /* a file of another run's parts */
	bool seen, finished, unknown, any;
};

static int scan_parts(const struct ds_plan *p, const char *dir, int force,
		      struct part_scan *sc)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	memset(sc, 0, sizeof(*sc));
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d))) {
		const char *nm = e->d_name;
		int r;

		if (!strcmp(nm, ".") || !strcmp(nm, "..") ||
		    !strcmp(nm, DS_LOCK_NAME))
			continue;
		sc->any = true;
		if ((r = ours(p, dir, nm)) > 0)
			sc->seen = true;
		else if (r < 0 && force)
			drop_foreign(d, dir, nm);
		else if (r < 0 && !sc->foreign[0])
			snprintf(sc->foreign, sizeof(sc->foreign), "%s", nm);
		else if (!strcmp(nm, CHECKSUMS))
			sc->finished = true;
		else if (!run_writes(p, nm))
			sc->unknown = true;
	}
	closedir(d);
	return 0;
}

static int check_part_contents(ds_ctx *ctx, const struct ds_plan *p,
			       const char *dir, int force)
{
	struct part_scan sc;
	int rc = scan_parts(p, dir, force, &sc);

	/*
	 * The parts start at once: files of this run seen without a part's
	 * own file (its lock comes first) are of a part that began during
	 * the reading, whose lock readdir need not have returned.  Read
	 * again: the lock is there now.  (Emptiness is judged from the same
	 * reading: a second opendir saw the files of parts begun in between
	 * and refused the directory as not empty.)
	 */
	if (!rc && !force && sc.any && !sc.seen && !sc.foreign[0] &&
	    !sc.finished && !sc.unknown)
		rc = scan_parts(p, dir, force, &sc);
	if (rc)
		return ds_fail(ctx, rc, "%s: %s", dir, strerror(-rc));
	if (force) {            /* nothing may look finished meanwhile */
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/" CHECKSUMS, dir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/" INDEX, dir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/" JOURNAL, dir);
		unlink(path);
		return 0;
	}
	if (sc.foreign[0])
		return ds_fail(ctx, DS_E_OUTPUT, "%s: holds %s, a part of "
			       "another partitioned merge (another recipe, "
			       "other inputs or another number of parts); "
			       "finalize or remove it, or use --force to "
			       "replace it", dir, sc.foreign);
	if (sc.finished)
		return ds_fail(ctx, DS_E_OUTPUT, "%s: holds a finished merge "
			       "(" CHECKSUMS "); use --force to replace it",
			       dir);
	if (sc.unknown || (!sc.seen && sc.any))
		return ds_fail(ctx, DS_E_OUTPUT, "%s: exists and is not empty "
			       "and holds no part of this partitioned merge; "
			       "use --force to replace its merge", dir);
	return 0;
}

int ds_out_check(ds_ctx *ctx, const struct ds_plan *p, const char *dir,
		 int force, int resume)
{
	char *out = canon(dir);
	char name[64];
	struct stat st;
	int rc;

	if (!out)
		return ds_fail(ctx, DS_E_OUTPUT, "%s: invalid output path", dir);
	if (p->parts) {
		snprintf(name, sizeof(name), DS_PART_LOCK, p->part, p->parts);
		rc = ds_lock_probe_shared(ctx, dir, DS_LOCK_NAME, true);
		if (!rc)
			rc = ds_lock_probe(ctx, dir, name);
		if (!rc && stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
			rc = ds_fail(ctx, DS_E_OUTPUT, "%s: exists and is not "
				     "a directory", dir);
		if (!rc)
			rc = check_part_contents(ctx, p, dir, force);
	} else {
		rc = ds_lock_probe(ctx, dir, DS_LOCK_NAME);
		if (!rc)
			rc = check_contents(ctx, dir, force, resume);
	}
	if (!rc)
		rc = check_inputs(ctx, p, out);
	free(out);
	return rc;
}

/* ---- temporary files ------------------------------------------------------ */

/* dir/PRE NAME SUF */
static char *join(const char *dir, const char *pre, const char *name,
		  const char *suf)
{
	char *s = malloc(strlen(dir) + strlen(pre) + strlen(name) +
			 strlen(suf) + 2);

	if (s)
		sprintf(s, "%s/%s%s%s", dir, pre, name, suf);
	return s;
}

/* The open file fd is one of the inputs' shards (a hard link, say). */
static int is_input(const struct ds_out *o, int fd)
{
	const struct ds_plan *p = o->p;
	struct stat a, b;

	if (fstat(fd, &a))
		return 0;
	for (unsigned k = 0; k < p->ninputs; k++)
		for (unsigned s = 0; s < p->in[k]->nshards; s++)
			if (stat(p->in[k]->shards[s].path, &b) == 0 &&
			    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
				return 1;
	return 0;
}

/* Create .NAME.partial, of size bytes when known (so a full disk shows
 * now, not hours later). */
static int add_file(struct ds_out *o, const char *name, uint64_t size,
		    int keep)
{
	struct ofile *f;
	int rc;

	if (o->nf == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : 16;
		struct ofile *nf = realloc(o->f, cap * sizeof(*nf));
		if (!nf)
			return ds_fail(o->ctx, -ENOMEM, "out of memory");
		o->f = nf;
		o->cap = cap;
	}
	f = memset(&o->f[o->nf], 0, sizeof(*f));
	f->fd = f->dfd = -1;
	f->name = strdup(name);
	f->final = join(o->dir, "", name, "");
	f->tmp = join(o->dir, ".", name, TMP_SUFFIX);
	f->h = XXH3_createState();
	o->nf++;
	if (!f->name || !f->final || !f->tmp || !f->h)
		return ds_fail(o->ctx, -ENOMEM, "out of memory");
	XXH3_128bits_reset(f->h);
	/* A fresh file is created new (a planted link is replaced, never
	 * followed); a kept one must not be a link to an input. */
	if (!keep)
		unlink(f->tmp);
	/* 0666 and 0777 below: the umask decides, as for cp or tar. */
	f->fd = open(f->tmp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
		     (keep ? 0 : O_EXCL), 0666);
	if (f->fd < 0)
		return ds_fail(o->ctx, -errno, "%s: %s", f->tmp,
			       strerror(errno));
	if (is_input(o, f->fd))
		return ds_fail(o->ctx, DS_E_OUTPUT, "%s: is an input file "
			       "(same inode); refusing to write it", f->tmp);
	if (size && fallocate(f->fd, 0, 0, (off_t)size) &&
	    errno != EOPNOTSUPP && errno != ENOSYS)
		return ds_fail(o->ctx, -errno, "%s: %s", f->final,
			       strerror(errno));
	/* a shard's windows are written direct where they can be */
	if (size && (rc = ds_open_direct(f->tmp, O_WRONLY, &f->dfd)))
		return ds_fail(o->ctx, rc, "%s: %s", f->tmp, strerror(-rc));
	return 0;
}

static void close_direct(struct ofile *f)
{
	if (f->dfd >= 0)
		close(f->dfd);
	f->dfd = -1;
}

/* Write buf at offset off of file f and feed it to the checksum. */
static int put(struct ds_out *o, struct ofile *f, const void *buf,
	       size_t len, uint64_t off)
{
	struct ds_io_req r = { .fd = f->fd, .write = true, .buf = (void *)buf,
			       .len = len, .off = off };

	if (ds_io_rw_full(&r))
		return ds_fail(o->ctx, r.res, "%s: %s", f->final,
			       strerror(-r.res));
	ds_xxh3_128_update(f->h, buf, len);
	if (off + len > f->size)
		f->size = off + len;
	return 0;
}

/* ---- journal ---------------------------------------------------------------
 * .dare-stream.journal: a first line naming the merge (fingerprint of the
 * recipe, the output layout and the input files), then one line per finished
 * tensor, in output order: "T index xxh3-64-of-its-shard-so-far".  A line is
 * appended with one write() once every byte of the tensor is written, so a
 * killed run leaves a valid prefix (a torn last line is ignored).  Resuming
 * reads each listed tensor back and checks its digest, so data lost after
 * the journal line (a crash of the machine) is detected and redone.
 *
 * The digest is the XXH3-64 of the tensor's shard from its first byte to
 * the tensor's last, read off the state that hashes the shard for
 * CHECKSUMS.xxh128 (XXH3's 64- and 128-bit variants accumulate the same
 * state), so the bytes written are hashed once.  Resuming reads the
 * journaled tensors of a shard in order, feeding that state as it goes,
 * which gives each the same digest.  Version 1 journals held each
 * tensor's own XXH3-64; --resume over one is refused (check_journal),
 * naming the version.
 */

static uint64_t fingerprint(const struct ds_plan *p)
{
	XXH3_state_t *h = XXH3_createState();
	char *yml = NULL;
	uint64_t fp;

	if (!h)
		return 0;
	XXH3_64bits_reset(h);
	if (ds_recipe_to_yaml(p->r, &yml) == 0)
		XXH3_64bits_update(h, yml, strlen(yml));
	free(yml);
	for (unsigned s = 0; s < p->nos; s++)
		XXH3_64bits_update(h, p->os[s].header, p->os[s].hlen);
	for (unsigned k = 0; k < p->ninputs; k++)
		for (unsigned s = 0; s < p->in[k]->nshards; s++) {
			struct stat st = { 0 };
			const char *path = p->in[k]->shards[s].path;
			uint64_t v[2];

			stat(path, &st);
			v[0] = (uint64_t)st.st_size;
			v[1] = (uint64_t)st.st_mtim.tv_sec * 1000000000u +
			       (uint64_t)st.st_mtim.tv_nsec;
			XXH3_64bits_update(h, path, strlen(path));
			XXH3_64bits_update(h, v, sizeof(v));
		}
	if (p->parts) {
		uint64_t v[3] = { p->part, p->parts, p->run };

		XXH3_64bits_update(h, v, sizeof(v));
	}
	fp = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	return fp;
}

/* A run killed while renaming left some shards under their final names:
 * take them back, and drop a checksum file so nothing looks finished. */
static void reclaim(struct ds_out *o)
{
	char fin[PATH_MAX], tmp[PATH_MAX];

	snprintf(fin, sizeof(fin), "%s/" CHECKSUMS, o->dir);
	unlink(fin);
	for (unsigned s = 0; s < o->p->nos; s++) {
		snprintf(fin, sizeof(fin), "%s/%s", o->dir, o->p->os[s].name);
		snprintf(tmp, sizeof(tmp), "%s/.%s" TMP_SUFFIX, o->dir,
			 o->p->os[s].name);
		if (access(tmp, F_OK) != 0 && access(fin, F_OK) == 0)
			rename(fin, tmp);
	}
}

static uint64_t tensor_bytes(const struct ds_plan *p, size_t t)
{
	return ds_otensor_bytes(&p->ot[t]);
}

/* Read tensor t back from its shard; 1 when its digest is d (the shard's
 * checksum is then fed with it), 0 when not, negative on error. */
static int verify_tensor(struct ds_out *o, size_t t, uint64_t d, char *buf,
			 size_t cap, XXH3_state_t *save)
{
	const struct ds_otensor *ot = &o->p->ot[t];
	const struct ds_oshard *os = &o->p->os[ot->oshard];
	struct ofile *f = &o->f[ot->oshard];
	uint64_t left = tensor_bytes(o->p, t), off = os->hlen + ot->obegin;

	XXH3_copyState(save, f->h);
	while (left) {
		struct ds_io_req r = { .fd = f->fd, .buf = buf, .off = off,
				       .len = left < cap ? left : cap };

		if (ds_io_rw_full(&r))
			break;          /* short file: not written after all */
		ds_xxh3_128_update(f->h, buf, r.len);
		left -= r.len;
		off += r.len;
	}
	if (!left && XXH3_64bits_digest(f->h) == d)
		return 1;
	XXH3_copyState(f->h, save);     /* as if never read */
	return 0;
}

/* Verify the journal's records in order; the number of tensors done, and
 * in *end the journal offset just after the last verified record. */
static size_t verify_records(struct ds_out *o, FILE *j, long *end)
{
	XXH3_state_t *save = XXH3_createState();
	size_t t = 0, idx, cap = 1 << 20;
	char *buf = malloc(cap);
	unsigned long long d;

	*end = ftell(j);
	while (buf && save) {
		while (t < o->p->not && tensor_bytes(o->p, t) == 0)
			t++;
		if (t == o->p->not || fscanf(j, "T %zu %llx\n", &idx, &d) != 2 ||
		    idx != t || verify_tensor(o, t, d, buf, cap, save) != 1)
			break;
		*end = ftell(j);
		t++;
	}
	free(buf);
	XXH3_freeState(save);
	return t;
}

static int open_journal(struct ds_out *o, const char *path, int trunc)
{
	o->jfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC |
		      (trunc ? O_TRUNC : 0), 0666);
	return o->jfd < 0 ? ds_fail(o->ctx, -errno, "%s: %s", path,
				    strerror(errno)) : 0;
}

/*
 * Start the journal: with resume, keep the prefix of an earlier run's
 * journal whose tensors verify (*first: how many tensors that covers);
 * otherwise, or when it belongs to another merge, begin a new one.
 */
static int journal_head(const struct ds_out *o, char *head, size_t size)
{
	if (o->p->parts)        /* the run, for the other parts to see */
		return snprintf(head, size, JOURNAL_HEAD "%016llx run %016llx\n",
				(unsigned long long)o->fingerprint,
				(unsigned long long)o->p->run);
	return snprintf(head, size, JOURNAL_HEAD "%016llx\n",
			(unsigned long long)o->fingerprint);
}

/*
 * Resuming is for the same merge only: a journal whose first line names
 * another recipe, layout or inputs is refused rather than overwritten (an
 * empty or torn first line is a run killed while starting: nothing to
 * lose).
 */
static int check_journal(struct ds_out *o)
{
	char head[80], line[80] = "";
	FILE *j;

	if (!(j = fopen(o->jpath, "r")))
		return 0;
	if (!fgets(line, sizeof(line), j))
		line[0] = 0;
	fclose(j);
	journal_head(o, head, sizeof(head));
	if (!strchr(line, '\n') || !strcmp(line, head))
		return 0;
	if (!strncmp(line, JOURNAL_HEAD_V1, strlen(JOURNAL_HEAD_V1)))
		return ds_fail(o->ctx, DS_E_OUTPUT, "%s: its interrupted merge "
			       "was journaled by an earlier dare-stream (journal "
			       "version 1), which this one cannot resume; use "
			       "--force to start again", o->dir);
	return ds_fail(o->ctx, DS_E_OUTPUT, "%s: its interrupted merge was "
		       "of another recipe or other inputs; rerun that one with "
		       "--resume, or use --force to start again", o->dir);
}

static int replay(struct ds_out *o, int resume, size_t *first)
{
	const char *path = o->jpath;
	char head[80], line[80];
	FILE *j;
	long end = 0;
	int len, rc;

	len = journal_head(o, head, sizeof(head));
	if (resume && (j = fopen(path, "r"))) {
		if (fgets(line, sizeof(line), j) && !strcmp(line, head))
			*first = verify_records(o, j, &end);
		fclose(j);
		if (end > 0 && truncate(path, end) == 0) {
			o->done = *first;
			return open_journal(o, path, 0);
		}
		*first = 0;
	}
	if ((rc = open_journal(o, path, 1)))
		return rc;
	if (write(o->jfd, head, (size_t)len) != len)
		return ds_fail(o->ctx, -errno, "%s: %s", path, strerror(errno));
	return 0;
}

int ds_out_journal(struct ds_out *o, size_t t, uint64_t digest)
{
	char line[64];
	int len = snprintf(line, sizeof(line), "T %zu %016llx\n", t,
			   (unsigned long long)digest);

	errno = 0;
	if (write(o->jfd, line, (size_t)len) != len)
		return ds_fail(o->ctx, errno ? -errno : -ENOSPC, "%s: %s",
			       o->jpath, strerror(errno ? errno : ENOSPC));
	o->done = t + 1;
	return 0;
}

/* A part: its manifest of an earlier run of it goes (what it lists is
 * about to be rewritten). */
static void part_start(struct ds_out *o)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/" DS_PART_MANIFEST, o->dir,
		 o->p->part, o->p->parts);
	unlink(path);
}

/* A whole merge locks OUT; a part shares that lock with the other parts
 * and holds its own (lock.h). */
static int take_locks(struct ds_out *o)
{
	const struct ds_plan *p = o->p;
	char name[64];
	int rc;

	if (!p->parts) {
		snprintf(o->jpath, sizeof(o->jpath), "%s/" JOURNAL, o->dir);
		return ds_lock_take(o->ctx, o->dir, DS_LOCK_NAME, true,
				    &o->lock);
	}
	snprintf(o->jpath, sizeof(o->jpath), "%s/" DS_PART_JOURNAL, o->dir,
		 p->part, p->parts);
	snprintf(name, sizeof(name), DS_PART_LOCK, p->part, p->parts);
	if ((rc = ds_lock_take(o->ctx, o->dir, DS_LOCK_NAME, false,
			       &o->lock)) ||
	    (rc = ds_lock_take(o->ctx, o->dir, name, true, &o->plock)))
		return rc;
	part_start(o);
	return 0;
}

int ds_out_open(ds_ctx *ctx, const struct ds_plan *p, const char *dir,
		int resume, struct ds_out **out, size_t *first)
{
	struct ds_out *o = calloc(1, sizeof(*o));
	int rc = 0;

	*first = 0;
	if (!o || !(o->dir = strdup(dir))) {
		free(o);
		return ds_fail(ctx, -ENOMEM, "out of memory");
	}
	o->ctx = ctx;
	o->p = p;
	o->jfd = -1;
	o->lock.fd = -1;
	o->plock.fd = -1;
	*out = o;
	if (mkdir(dir, 0777) == 0)
		o->made_dir = 1;
	else if (errno != EEXIST)
		return ds_fail(ctx, -errno, "%s: cannot create the output "
			       "directory: %s", dir, strerror(errno));
	if ((rc = take_locks(o)))
		return rc;
	o->fingerprint = fingerprint(p);
	if (resume && (rc = check_journal(o)))
		return rc;
	if (resume)
		reclaim(o);
	for (unsigned s = 0; !rc && s < p->nos; s++) {
		rc = add_file(o, p->os[s].name, p->os[s].size, resume);
		if (!rc)
			rc = put(o, &o->f[s], p->os[s].header, p->os[s].hlen,
				 0);
	}
	if (!rc)
		rc = replay(o, resume, first);
	return rc;
}

int ds_out_fd(const struct ds_out *o, unsigned s)
{
	return o->f[s].fd;
}

int ds_out_dfd(const struct ds_out *o, unsigned s)
{
	return o->f[s].dfd;
}

const char *ds_out_path(const struct ds_out *o, unsigned s)
{
	return o->f[s].final;
}

void ds_out_hash(struct ds_out *o, unsigned s, const void *buf, size_t len)
{
	ds_xxh3_128_update(o->f[s].h, buf, len);
}

/* XXH3-64 and XXH3-128 accumulate the same state: one pass, two digests. */
uint64_t ds_out_digest(const struct ds_out *o, unsigned s)
{
	return XXH3_64bits_digest(o->f[s].h);
}

/* ---- finishing ----------------------------------------------------------- */

/* A small file written whole: the index, the recipe, the checksums. */
static int add_text(struct ds_out *o, const char *name, const char *text)
{
	int rc = add_file(o, name, 0, 0);

	return rc ? rc : put(o, &o->f[o->nf - 1], text, strlen(text), 0);
}

/* The index; ds_finalize() writes a partitioned merge's with the same
 * ds_index_text(). */
static int write_index(struct ds_out *o)
{
	const struct ds_plan *p = o->p;
	json_t *map = json_object();
	uint64_t total = 0;
	char *text;
	int rc;

	for (size_t i = 0; i < p->not; i++) {
		const struct ds_otensor *t = &p->ot[i];

		total += ds_otensor_bytes(t);
		if (t->tail)
			continue;
		json_object_set_new(map, t->name,
				    json_string(p->os[t->oshard].name));
	}
	if (!(text = ds_index_text(map, total)))
		return ds_fail(o->ctx, -ENOMEM, "out of memory");
	rc = add_text(o, INDEX, text);
	free(text);
	return rc;
}

/*
 * dare-stream.yml; a --shard-size the recipe does not carry is recorded
 * too, so that rerunning it lays the shards out the same.
 */
static int write_recipe(struct ds_out *o)
{
	const struct ds_plan *p = o->p;
	char *yml, *all = NULL;
	int rc = ds_recipe_to_yaml(p->r, &yml);

	if (rc)
		return ds_fail(o->ctx, rc, "out of memory");
	if (p->shard_size && !p->r->shard_size &&
	    asprintf(&all, "%sshard_size: %llu\n", yml,
		     (unsigned long long)p->shard_size) < 0)
		all = NULL;
	rc = add_text(o, RECIPE, all ? all : yml);
	free(all);
	free(yml);
	return rc;
}

/* Files of the base directory that are not weights: config, tokenizer... */
static int is_companion(const char *name)
{
	static const char *const skip[] = {
		".*", "*.safetensors", "*.safetensors.index.json", "*.bin",
		"*.bin.index.json", "*.pt", "*.pth", "*.ckpt", "*.h5",
		"*.msgpack", "*.gguf", "*.onnx", "*.dsd", "README*",
		RECIPE, CHECKSUMS,
	};

	for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
		if (fnmatch(skip[i], name, 0) == 0)
			return 0;
	return 1;
}

static int copy_file(struct ds_out *o, const char *src, const char *name,
		     char *buf, size_t cap)
{
	int fd = open(src, O_RDONLY | O_CLOEXEC), rc;
	uint64_t off = 0;
	ssize_t k;

	if (fd < 0)
		return ds_fail(o->ctx, -errno, "%s: %s", src, strerror(errno));
	rc = add_file(o, name, 0, 0);
	while (!rc && (k = pread(fd, buf, cap, (off_t)off)) != 0) {
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			rc = ds_fail(o->ctx, -errno, "%s: %s", src,
				     strerror(errno));
		else
			rc = put(o, &o->f[o->nf - 1], buf, (size_t)k, off);
		off += k > 0 ? (uint64_t)k : 0;
	}
	close(fd);
	return rc;
}

/* The files of a tokenizer (taken whole from tokenizer_source). */
static bool is_tokenizer_file(const char *name)
{
	static const char *const tok[] = {
		"tokenizer.json", "tokenizer_config.json",
		"special_tokens_map.json", "tokenizer.model", "vocab.json",
		"merges.txt", "added_tokens.json", "chat_template.jinja",
	};

	for (size_t i = 0; i < sizeof(tok) / sizeof(tok[0]); i++)
		if (!strcmp(name, tok[i]))
			return true;
	return false;
}

/* A JSON object written as the output's file name (2-space indent). */
static int add_json(struct ds_out *o, const char *name, json_t *j)
{
	char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	int rc;

	if (!text)
		return ds_fail(o->ctx, -ENOMEM, "out of memory");
	rc = add_text(o, name, text);
	if (!rc)
		rc = put(o, &o->f[o->nf - 1], "\n", 1, strlen(text));
	free(text);
	return rc;
}

static json_t *load_object(struct ds_out *o, const char *path)
{
	json_error_t err;
	json_t *j = json_load_file(path, 0, &err);

	if (!j || !json_is_object(j)) {
		ds_fail(o->ctx, DS_E_FORMAT, "%s:%d: %s", path, err.line,
			j ? "not a JSON object" : err.text);
		json_decref(j);
		return NULL;
	}
	return j;
}

/* config.json of input k (loaded once; NULL when it has none). */
static json_t *input_config(struct ds_out *o, json_t **cfg, unsigned k)
{
	char *path;

	if (!cfg[k] && (path = join(o->p->in[k]->dir, "", "config.json", ""))) {
		if (access(path, F_OK) == 0)
			cfg[k] = load_object(o, path);
		free(path);
	}
	return cfg[k];
}

/* Lists with one entry per layer, re-assembled from each output layer's
 * source (DESIGN 5.3); L0 is the layout config's layer count. */
static void relayer_lists(struct ds_out *o, json_t *c, json_t **cfg,
			  size_t L0)
{
	const struct ds_plan *p = o->p;
	const char *key;
	json_t *v;

	json_object_foreach(c, key, v) {
		json_t *a;

		if (!json_is_array(v) || json_array_size(v) != L0 ||
		    !strcmp(key, "architectures") || !(a = json_array()))
			continue;
		for (unsigned l = 0; l < p->layers; l++) {
			json_t *sc = input_config(o, cfg, p->lsrc[l]);
			json_t *sv = sc ? json_object_get(sc, key) : NULL;
			json_t *e = json_is_array(sv) ?
				    json_array_get(sv, p->lin[l]) : NULL;

			json_array_append(a, e ? e : json_null());
		}
		json_object_set_new(c, key, a);
	}
}

/* The name transformers gives a dtype in config.json ("torch_dtype"). */
static const char *torch_name(int dt)
{
	return dt == DS_DT_BF16 ? "bfloat16" : dt == DS_DT_F16 ? "float16" :
	       dt == DS_DT_F32 ? "float32" : NULL;
}

/* config.json of the layout model with the output's layer count, its
 * per-layer lists, the tokenizer model's vocabulary size and the output
 * dtype, when the merge sets one (as mergekit writes it: torch_dtype, and
 * dtype where newer transformers keep it). */
static int write_config(struct ds_out *o, const char *src)
{
	static const char *const keys[] = {
		"num_hidden_layers", "n_layer", "num_layers"
	};
	const struct ds_plan *p = o->p;
	json_t *cfg[DS_MAX_INPUTS] = { NULL }, *c = load_object(o, src), *tc;
	int rc = c ? 0 : DS_E_FORMAT;

	for (size_t i = 0; c && p->layers && i < 3; i++) {
		json_t *n = json_object_get(c, keys[i]);

		if (!json_is_integer(n))
			continue;
		relayer_lists(o, c, cfg, (size_t)json_integer_value(n));
		json_object_set_new(c, keys[i], json_integer(p->layers));
		break;
	}
	if (c && p->r->tokenizer >= 0 &&
	    (tc = input_config(o, cfg, 1 + (unsigned)p->r->tokenizer)) &&
	    json_object_get(tc, "vocab_size"))
		json_object_set(c, "vocab_size",
				json_object_get(tc, "vocab_size"));
	if (c && torch_name(p->r->dtype)) {
		json_object_set_new(c, "torch_dtype",
				    json_string(torch_name(p->r->dtype)));
		if (json_is_string(json_object_get(c, "dtype")))
			json_object_set_new(c, "dtype",
					    json_string(torch_name(p->r->dtype)));
	}
	if (c)
		rc = add_json(o, "config.json", c);
	json_decref(c);
	for (unsigned k = 0; k < DS_MAX_INPUTS; k++)
		json_decref(cfg[k]);
	return rc;
}

/* tokenizer_config.json with the recipe's chat_template. */
static int write_chat(struct ds_out *o, const char *src)
{
	json_t *c = src ? load_object(o, src) : json_object();
	int rc;

	if (!c)
		return src ? DS_E_FORMAT : ds_fail(o->ctx, -ENOMEM,
						   "out of memory");
	json_object_set_new(c, "chat_template", json_string(o->p->chat));
	rc = add_json(o, "tokenizer_config.json", c);
	json_decref(c);
	return rc;
}

/* One companion file: copied, or rewritten where the recipe changes it. */
static int companion(struct ds_out *o, const char *dir, const char *name,
		     char *buf, size_t cap)
{
	const struct ds_plan *p = o->p;
	char *src = join(dir, "", name, "");
	struct stat st;
	int rc = 0;

	if (!src)
		return ds_fail(o->ctx, -ENOMEM, "out of memory");
	if (stat(src, &st) || !S_ISREG(st.st_mode))
		;
	else if (!strcmp(name, "config.json") &&
		 (p->layers || p->r->tokenizer >= 0 || torch_name(p->r->dtype)))
		rc = write_config(o, src);
	else if (!strcmp(name, "tokenizer_config.json") && p->chat)
		rc = write_chat(o, src);
	else
		rc = copy_file(o, src, name, buf, cap);
	free(src);
	return rc;
}

/* Copy the companions of one directory; tok: only (1) or all but (0) the
 * tokenizer's files, or all (-1). */
static int companions_of(struct ds_out *o, const char *dir, int tok,
			 char *buf)
{
	struct dirent *e;
	DIR *d = opendir(dir);
	int rc = 0;

	if (!d)
		return ds_fail(o->ctx, -errno, "%s: %s", dir, strerror(errno));
	while (!rc && (e = readdir(d)))
		if (is_companion(e->d_name) &&
		    (tok < 0 || is_tokenizer_file(e->d_name) == (tok == 1)))
			rc = companion(o, dir, e->d_name, buf, 1 << 20);
	closedir(d);
	return rc;
}

/* Whether the output has a file of that name yet. */
static bool has_file(const struct ds_out *o, const char *name)
{
	for (size_t i = 0; i < o->nf; i++)
		if (!strcmp(o->f[i].name, name))
			return true;
	return false;
}

/* Copy the companions when the base is a directory (not a lone file); the
 * tokenizer's files come from the tokenizer model when the recipe says. */
static int copy_companions(struct ds_out *o)
{
	const struct ds_plan *p = o->p;
	const struct ds_model *b = p->in[0];
	struct stat st;
	char *buf;
	int rc = 0, tok = p->r->tokenizer;

	if (stat(b->arg, &st) == 0 && S_ISREG(st.st_mode) && !b->index)
		return 0;
	if (!(buf = malloc(1 << 20)))
		return ds_fail(o->ctx, -ENOMEM, "out of memory");
	rc = companions_of(o, b->dir, tok >= 0 ? 0 : -1, buf);
	if (!rc && tok >= 0)
		rc = companions_of(o, p->in[1 + tok]->dir, 1, buf);
	if (!rc && p->chat && !has_file(o, "tokenizer_config.json"))
		rc = write_chat(o, NULL);
	free(buf);
	return rc;
}

static int by_name(const void *a, const void *b)
{
	return strcmp((*(struct ofile *const *)a)->name,
		      (*(struct ofile *const *)b)->name);
}

/* xxhsum's format, so that `xxh128sum -c CHECKSUMS.xxh128` verifies. */
static int write_checksums(struct ds_out *o)
{
	struct ofile **v = malloc(o->nf * sizeof(*v));
	char *text = malloc(o->nf * (PATH_MAX + 40) + 1);
	size_t len = 0, n = o->nf;
	int rc;

	if (!v || !text) {
		free(v);
		free(text);
		return ds_fail(o->ctx, -ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		v[i] = &o->f[i];
		v[i]->digest = XXH3_128bits_digest(v[i]->h);
	}
	qsort(v, n, sizeof(*v), by_name);
	for (size_t i = 0; i < n; i++) {
		char hex[33];

		ds_hex128(v[i]->digest, hex);
		len += (size_t)sprintf(text + len, "%s  %s\n", hex,
				       v[i]->name);
	}
	free(v);
	rc = add_text(o, CHECKSUMS, text);
	free(text);
	return rc;
}

/* With --force, the regular files this merge does not write go (hidden
 * files and subdirectories stay): the checksums first, so the directory
 * never looks finished meanwhile. */
static void remove_stale(struct ds_out *o)
{
	DIR *d = opendir(o->dir);
	struct dirent *e;
	struct stat st;

	if (!d)
		return;
	unlinkat(dirfd(d), CHECKSUMS, 0);
	while ((e = readdir(d))) {
		unsigned k, n;
		int ours = 0;

		/* parts of a partitioned merge: none runs while this holds
		 * the lock, and they are not this merge */
		if (ds_part_file(e->d_name, &k, &n) != DS_PF_NONE) {
			unlinkat(dirfd(d), e->d_name, 0);
			continue;
		}
		if (e->d_name[0] == '.' ||
		    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) ||
		    (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)))
			continue;
		for (size_t i = 0; i < o->nf && !ours; i++)
			ours = !strcmp(o->f[i].name, e->d_name);
		if (!ours)
			unlinkat(dirfd(d), e->d_name, 0);
	}
	closedir(d);
}

/* The merge is complete: the journal goes. */
static void finish_journal(struct ds_out *o)
{
	close(o->jfd);
	o->jfd = -1;
	unlink(o->jpath);
}

/* fsync directory dir, so the names given in it last a power cut; a file
 * system that cannot sync a directory (EINVAL) is let be. */
static int sync_dir(struct ds_out *o, const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0 || (fsync(fd) && errno != EINVAL && errno != ENOTSUP))
		rc = ds_fail(o->ctx, -errno, "%s: cannot sync the directory "
			     "after the output was renamed into place: %s",
			     dir, strerror(errno));
	if (fd >= 0)
		close(fd);
	return rc;
}

/* The output directory, then its parent (which names it when it was
 * made here): after both, "done" survives a power cut. */
static int sync_dirs(struct ds_out *o)
{
	char parent[PATH_MAX];
	size_t n = strlen(o->dir);
	char *s;
	int rc;

	if ((rc = sync_dir(o, o->dir)))
		return rc;
	while (n > 1 && o->dir[n - 1] == '/')
		n--;
	snprintf(parent, sizeof(parent), "%.*s", (int)n, o->dir);
	if (!(s = strrchr(parent, '/')))
		snprintf(parent, sizeof(parent), ".");
	else
		s[s == parent] = '\0';     /* "/out" -> "/" */
	return sync_dir(o, parent);
}

static int sync_close(struct ds_out *o, struct ofile *f)
{
	int rc = 0;

	close_direct(f);
	if (fsync(f->fd) || close(f->fd))
		rc = ds_fail(o->ctx, -errno, "%s: %s", f->final,
			     strerror(errno));
	f->fd = -1;
	return rc;
}

/*
 * The part's manifest, for ds_finalize(): the run, the part, each file it
 * wrote with its size and XXH3-128, and its tensors' shards and bytes for
 * the index.  Written under a temporary name, synced, renamed: last.
 */
static json_t *manifest(struct ds_out *o, int force)
{
	const struct ds_plan *p = o->p;
	json_t *m = json_object(), *files = json_array(), *map = json_object();
	uint64_t total = 0;
	char hex[33];

	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)p->run);
	json_object_set_new(m, "dare_stream_part", json_integer(1));
	json_object_set_new(m, "run", json_string(hex));
	json_object_set_new(m, "part", json_integer(p->part));
	json_object_set_new(m, "parts", json_integer(p->parts));
	json_object_set_new(m, "shards", json_integer(p->all_nos));
	json_object_set_new(m, "index", json_boolean(p->index));
	json_object_set_new(m, "force", json_boolean(force));
	for (size_t i = 0; i < o->nf; i++) {
		json_t *f = json_object();

		ds_hex128(XXH3_128bits_digest(o->f[i].h), hex);
		json_object_set_new(f, "name", json_string(o->f[i].name));
		json_object_set_new(f, "size", json_integer((json_int_t)
				    (i < p->nos ? p->os[i].size :
				     o->f[i].size)));
		json_object_set_new(f, "xxh128", json_string(hex));
		json_object_set_new(f, "shard", json_boolean(i < p->nos));
		json_array_append_new(files, f);
	}
	for (size_t i = 0; i < p->not; i++) {
		total += ds_otensor_bytes(&p->ot[i]);
		if (!p->ot[i].tail)
			json_object_set_new(map, p->ot[i].name, json_string(
					    p->os[p->ot[i].oshard].name));
	}
	json_object_set_new(m, "total_size", json_integer((json_int_t)total));
	json_object_set_new(m, "files", files);
	json_object_set_new(m, "weight_map", map);
	return m;
}

static int write_manifest(struct ds_out *o, int force)
{
	char name[64], tmp[PATH_MAX], fin[PATH_MAX];
	json_t *m = manifest(o, force);
	char *text = json_dumps(m, JSON_INDENT(1) | JSON_SORT_KEYS);
	size_t len = text ? strlen(text) : 0;
	int fd, rc = 0;

	json_decref(m);
	if (!text)
		return ds_fail(o->ctx, -ENOMEM, "out of memory");
	snprintf(name, sizeof(name), DS_PART_MANIFEST, o->p->part,
		 o->p->parts);
	snprintf(fin, sizeof(fin), "%s/%s", o->dir, name);
	snprintf(tmp, sizeof(tmp), "%s/%s" TMP_SUFFIX, o->dir, name);
	text[len] = '\n';      /* json_dumps' NUL: a last line */
	errno = 0;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  0666);
	if (fd < 0 || write(fd, text, len + 1) != (ssize_t)(len + 1) ||
	    fsync(fd))
		rc = ds_fail(o->ctx, errno ? -errno : -ENOSPC, "%s: %s", tmp,
			     strerror(errno ? errno : ENOSPC));
	if (fd >= 0 && close(fd) && !rc)
		rc = ds_fail(o->ctx, -errno, "%s: %s", tmp, strerror(errno));
	if (!rc && rename(tmp, fin))
		rc = ds_fail(o->ctx, -errno, "%s: %s", fin, strerror(errno));
	if (rc)
		unlink(tmp);
	free(text);
	return rc;
}

/* A part: its shards (part 0: and the recipe and copied files) renamed
 * into place and synced, then its manifest. */
static int finish_part(struct ds_out *o, int force)
{
	int rc = 0;

	if (o->p->part == 0)
		rc = write_recipe(o);
	if (!rc && o->p->part == 0)
		rc = copy_companions(o);
	for (size_t i = 0; !rc && i < o->nf; i++)
		rc = sync_close(o, &o->f[i]);
	for (size_t i = 0; !rc && i < o->nf; i++) {
		if (rename(o->f[i].tmp, o->f[i].final))
			return ds_fail(o->ctx, -errno, "%s: %s", o->f[i].final,
				       strerror(errno));
		o->renamed = i + 1;
		ds_fault("finish");
	}
	if (!rc)
		rc = sync_dir(o, o->dir);
	if (!rc)
		rc = write_manifest(o, force);
	if (rc)
		return rc;
	finish_journal(o);
	for (size_t i = 0; i < o->nf; i++) {
		free(o->f[i].tmp);
		o->f[i].tmp = NULL;
	}
	return sync_dirs(o);
}

int ds_out_finish(struct ds_out *o, int force)
{
	int rc = 0;

	if (o->p->parts)
		return finish_part(o, force);
	if (o->p->index)
		rc = write_index(o);
	if (!rc)
		rc = write_recipe(o);
	if (!rc)
		rc = copy_companions(o);
	if (!rc)
		rc = write_checksums(o);
	for (size_t i = 0; !rc && i < o->nf; i++)
		rc = sync_close(o, &o->f[i]);
	if (rc)
		return rc;
	if (force)
		remove_stale(o);
	/* CHECKSUMS.xxh128 was added last: it takes its name last. */
	for (size_t i = 0; i < o->nf; i++) {
		if (rename(o->f[i].tmp, o->f[i].final))
			return ds_fail(o->ctx, -errno, "%s: %s", o->f[i].final,
				       strerror(errno));
		o->renamed = i + 1;
		ds_fault("finish");
	}
	finish_journal(o);
	for (size_t i = 0; i < o->nf; i++) {
		free(o->f[i].tmp);
		o->f[i].tmp = NULL;         /* nothing left to abort */
	}
	return sync_dirs(o);
}

void ds_out_abort(struct ds_out *o)
{
	if (!o)
		return;
	for (size_t i = 0; i < o->nf; i++) {
		close_direct(&o->f[i]);
		if (o->f[i].fd >= 0)
			close(o->f[i].fd);
		o->f[i].fd = -1;
		if (o->f[i].tmp)
			unlink(o->f[i].tmp);
	}
	if (o->jfd >= 0) {
		close(o->jfd);
		o->jfd = -1;
		unlink(o->jpath);
	}
	ds_lock_release(&o->plock);
	ds_lock_release(&o->lock);
	if (o->made_dir)
		rmdir(o->dir);
}

/*
 * Keep what --resume continues from: the journal and the temporaries of
 * the shards holding the tensors it lists (a shard renamed already takes
 * its temporary name back).  The rest goes: the index, recipe, copied
 * files and checksums are written again at the end anyway, and shards not
 * yet begun only hold disk space.  A Ctrl-C or a scheduler's SIGTERM after
 * hours of work must not throw the work away.
 */
size_t ds_out_suspend(struct ds_out *o)
{
	unsigned last;

	if (!o)
		return 0;
	if (!o->done) {
		ds_out_abort(o);
		return 0;
	}
	last = o->p->ot[o->done - 1].oshard;
	for (size_t i = 0; i < o->nf; i++) {
		struct ofile *f = &o->f[i];
		int keep = i < o->p->nos && i <= last;

		close_direct(f);
		if (f->fd >= 0)
			close(f->fd);
		f->fd = -1;
		if (i < o->renamed && keep)
			rename(f->final, f->tmp);
		else if (i < o->renamed)
			unlink(f->final);
		else if (!keep && f->tmp)
			unlink(f->tmp);
	}
	if (o->jfd >= 0)
		close(o->jfd);
	o->jfd = -1;
	ds_lock_release(&o->plock);
	ds_lock_release(&o->lock);
	return o->done;
}

void ds_out_free(struct ds_out *o)
{
	if (!o)
		return;
	for (size_t i = 0; i < o->nf; i++) {
		close_direct(&o->f[i]);
		if (o->f[i].fd >= 0)
			close(o->f[i].fd);
		free(o->f[i].name);
		free(o->f[i].tmp);
		free(o->f[i].final);
		XXH3_freeState(o->f[i].h);
	}
	if (o->jfd >= 0)
		close(o->jfd);
	ds_lock_release(&o->plock);
	ds_lock_release(&o->lock);
	free(o->f);
	free(o->dir);
	free(o);
}

/* SPDX-License-Identifier: MIT */
/* finalize.c - join the parts of a partitioned merge: check, index, sums */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include "output/lock.h"
#include "output/output.h"
#include "kernels/xxh.h"

/* One file a part wrote, as its manifest records it. */
struct pfile {
	const char *name;           /* in the manifest's JSON */
	uint64_t size;
	const char *hex;            /* its XXH3-128 */
	unsigned part;
};

struct fin {
	ds_ctx *ctx;
	const char *dir;
	unsigned n;                 /* parts */
	json_t **m;                 /* each part's manifest */
	struct pfile *f;
	size_t nf;
	json_t *map;                /* the index's weight_map */
	uint64_t total;
	bool index, force;
	struct ds_finalize_info *info;
};

/* ---- which parts OUT holds --------------------------------------------- */

struct scan {
	unsigned n;                 /* the parts of the most manifests */
	unsigned nman, nfiles;      /* manifests and part files of any n */
	char odd[NAME_MAX + 1];     /* a part file of another n */
	bool finished;              /* CHECKSUMS.xxh128 */
};

/* The number of parts most manifests name (the smaller on a tie). */
static unsigned common_n(DIR *d)
{
	unsigned ns[64], cs[64], nn = 0, best = 0, bestc = 0;
	struct dirent *e;

	while ((e = readdir(d))) {
		unsigned k, n, i;

		if (ds_part_file(e->d_name, &k, &n) != DS_PF_MANIFEST)
			continue;
		for (i = 0; i < nn && ns[i] != n; i++)
			;
		if (i == nn && nn < 64) {
			ns[nn] = n;
			cs[nn++] = 0;
		}
		if (i < nn)
			cs[i]++;
	}
	for (unsigned i = 0; i < nn; i++)
		if (cs[i] > bestc || (cs[i] == bestc && ns[i] < best)) {
			best = ns[i];
			bestc = cs[i];
		}
	return best;
}

static int scan_dir(struct fin *fz, struct scan *sc)
{
	DIR *d = opendir(fz->dir);
	struct dirent *e;

	memset(sc, 0, sizeof(*sc));
	if (!d)
		return ds_fail(fz->ctx, errno == ENOENT || errno == ENOTDIR ?
			       DS_E_OUTPUT : -errno, "%s: %s", fz->dir,
			       strerror(errno));
	sc->n = common_n(d);
	rewinddir(d);
	while ((e = readdir(d))) {
		unsigned k, n;
		enum ds_part_file t = ds_part_file(e->d_name, &k, &n);

		if (!strcmp(e->d_name, DS_CHECKSUMS))
			sc->finished = true;
		if (t == DS_PF_NONE)
			continue;
		sc->nfiles++;
		sc->nman += t == DS_PF_MANIFEST;
		if (!sc->n && t != DS_PF_MANIFEST)
			sc->n = n;      /* no manifest: the parts begun */
		if ((n != sc->n || k >= n) && !sc->odd[0])
			snprintf(sc->odd, sizeof(sc->odd), "%s", e->d_name);
	}
	closedir(d);
	return 0;
}

static bool exists(const char *dir, const char *fmt, unsigned k, unsigned n)
{
	char path[PATH_MAX], name[64];

	snprintf(name, sizeof(name), fmt, k, n);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

/* Every part 0 .. n-1 has ended (no one holds its lock) and left its
 * manifest; parts of another n are foreign. */
static int check_parts(struct fin *fz, const struct scan *sc)
{
	const char *d = fz->dir;
	unsigned n = sc->n;

	if (sc->odd[0]) {
		unsigned k, on;

		ds_part_file(sc->odd, &k, &on);
		return ds_fail(fz->ctx, DS_E_FORMAT, "%s/%s: a part of a "
			       "merge in %u parts, the others' is in %u: a "
			       "foreign part (remove it, or the other run's)",
			       d, sc->odd, on, n);
	}
	for (unsigned k = 0; k < n; k++) {
		char lk[64];
		long pid;

		snprintf(lk, sizeof(lk), DS_PART_LOCK, k, n);
		if ((pid = ds_lock_holder(d, lk)) > 0)
			return ds_fail(fz->ctx, DS_E_FORMAT, "part %u of %u is "
				       "unfinished: pid %ld holds %s/%s (still "
				       "running)", k, n, pid, d, lk);
		if (pid < 0)
			return ds_fail(fz->ctx, DS_E_FORMAT, "part %u of %u is "
				       "unfinished: %s/%s is held (still "
				       "running)", k, n, d, lk);
	}
	for (unsigned k = 0; k < n; k++) {
		char man[64], jn[64];

		snprintf(man, sizeof(man), DS_PART_MANIFEST, k, n);
		snprintf(jn, sizeof(jn), DS_PART_JOURNAL, k, n);
		if (exists(d, DS_PART_MANIFEST, k, n))
			continue;
		if (exists(d, DS_PART_JOURNAL, k, n))
			return ds_fail(fz->ctx, DS_E_FORMAT, "part %u of %u is "
				       "unfinished: %s/%s without %s/%s (the "
				       "part was stopped; continue it with "
				       "--resume)", k, n, d, jn, d, man);
		return ds_fail(fz->ctx, DS_E_FORMAT, "part %u of %u missing: "
			       "no %s/%s", k, n, d, man);
	}
	return 0;
}

/* ---- the manifests ----------------------------------------------------- */

static const char *run_of(json_t *m)
{
	const char *r = json_string_value(json_object_get(m, "run"));

	return r ? r : "";
}

static int load_manifests(struct fin *fz)
{
	for (unsigned k = 0; k < fz->n; k++) {
		char path[PATH_MAX], name[64];
		json_error_t err;
		json_t *m;

		snprintf(name, sizeof(name), DS_PART_MANIFEST, k, fz->n);
		snprintf(path, sizeof(path), "%s/%s", fz->dir, name);
		m = fz->m[k] = json_load_file(path, 0, &err);
		if (!m || !json_is_object(m) ||
		    !json_is_array(json_object_get(m, "files")) ||
		    !json_is_object(json_object_get(m, "weight_map")))
			return ds_fail(fz->ctx, DS_E_FORMAT, "%s: %s: not the "
				       "manifest of a part", path,
				       m ? "fields missing" : err.text);
		if (json_integer_value(json_object_get(m, "part")) != k ||
		    json_integer_value(json_object_get(m, "parts")) != fz->n)
			return ds_fail(fz->ctx, DS_E_FORMAT, "%s: is the "
				       "manifest of part %lld of %lld, not of "
				       "part %u: a duplicated part (copied "
				       "under another name?)", path,
				       json_integer_value(json_object_get(m,
								"part")),
				       json_integer_value(json_object_get(m,
								"parts")),
				       k);
	}
	return 0;
}

/* The parts are of one run: the run most of them name (on a tie, the
 * lowest part's) is the merge, any other part is foreign. */
static int check_run(struct fin *fz)
{
	unsigned best = 0, bestc = 0;

	for (unsigned k = 0; k < fz->n; k++) {
		unsigned c = 0;

		for (unsigned j = 0; j < fz->n; j++)
			c += !strcmp(run_of(fz->m[k]), run_of(fz->m[j]));
		if (c > bestc) {
			bestc = c;
			best = k;
		}
	}
	for (unsigned k = 0; k < fz->n; k++) {
		json_t *m = fz->m[k];

		if (strcmp(run_of(m), run_of(fz->m[best])) ||
		    json_integer_value(json_object_get(m, "shards")) !=
		    json_integer_value(json_object_get(fz->m[best], "shards")))
			return ds_fail(fz->ctx, DS_E_FORMAT, "part %u of %u ("
				       "%s/" DS_PART_MANIFEST ") is foreign: "
				       "of the merge %s, part %u's is %s "
				       "(another recipe, other inputs or "
				       "another number of parts)", k, fz->n,
				       fz->dir, k, fz->n, run_of(m), best,
				       run_of(fz->m[best]));
	}
	fz->index = json_is_true(json_object_get(fz->m[0], "index"));
	return 0;
}

/* A plain file name of OUT (what a manifest may name). */
static bool plain(const char *name)
{
	return name[0] && name[0] != '.' && !strchr(name, '/');
}

static int add_files(struct fin *fz, unsigned k, size_t *nshards)
{
	json_t *files = json_object_get(fz->m[k], "files"), *f;
	size_t i;

	json_array_foreach(files, i, f) {
		struct pfile *pf = &fz->f[fz->nf];
		json_t *sz = json_object_get(f, "size");

		pf->name = json_string_value(json_object_get(f, "name"));
		pf->hex = json_string_value(json_object_get(f, "xxh128"));
		pf->part = k;
		if (!pf->name || !plain(pf->name) || !pf->hex ||
		    strlen(pf->hex) != 32 || !json_is_integer(sz) ||
		    json_integer_value(sz) < 0)
			return ds_fail(fz->ctx, DS_E_FORMAT, "%s/"
				       DS_PART_MANIFEST ": file %zu: no plain "
				       "name, size and xxh128", fz->dir, k,
				       fz->n, i);
		pf->size = (uint64_t)json_integer_value(sz);
		for (size_t j = 0; j < fz->nf; j++)
			if (!strcmp(fz->f[j].name, pf->name))
				return ds_fail(fz->ctx, DS_E_FORMAT, "%s/%s: "
					       "written by part %u and by part "
					       "%u of %u: a duplicated part",
					       fz->dir, pf->name,
					       fz->f[j].part, k, fz->n);
		*nshards += json_is_true(json_object_get(f, "shard"));
		fz->nf++;
	}
	return 0;
}

/* Every file of every part, once; the weight map of all tensors. */
static int collect(struct fin *fz)
{
	size_t cap = 0, nshards = 0;
	json_int_t want = json_integer_value(json_object_get(fz->m[0],
							     "shards"));
	int rc = 0;

	for (unsigned k = 0; k < fz->n; k++)
		cap += json_array_size(json_object_get(fz->m[k], "files"));
	if (!(fz->f = calloc(cap ? cap : 1, sizeof(*fz->f))) ||
	    !(fz->map = json_object()))
		return ds_fail(fz->ctx, -ENOMEM, "out of memory");
	for (unsigned k = 0; !rc && k < fz->n; k++) {
		json_t *m = fz->m[k], *v;
		const char *key;

		if ((rc = add_files(fz, k, &nshards)))
			break;
		json_object_foreach(json_object_get(m, "weight_map"), key, v) {
			if (json_object_get(fz->map, key))
				return ds_fail(fz->ctx, DS_E_FORMAT, "tensor "
					       "'%s' is in two parts (part %u "
					       "of %u too): a duplicated part",
					       key, k, fz->n);
			json_object_set(fz->map, key, v);
		}
		fz->total += (uint64_t)json_integer_value(
				json_object_get(m, "total_size"));
		fz->force |= json_is_true(json_object_get(m, "force"));
	}
	if (!rc && (json_int_t)nshards != want)
		rc = ds_fail(fz->ctx, DS_E_FORMAT, "%s: the parts wrote %zu "
			     "of the merge's %lld shards", fz->dir, nshards,
			     (long long)want);
	return rc;
}

/* ---- reading every byte back ------------------------------------------- */

static int check_file(struct fin *fz, const struct pfile *pf, char *buf,
		      size_t cap, XXH3_state_t *h)
{
	char path[PATH_MAX], hex[33];
	struct stat st;
	uint64_t left;
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", fz->dir, pf->name);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return ds_fail(fz->ctx, errno == ENOENT ? DS_E_FORMAT : -errno,
			       "%s (part %u of %u): %s", path, pf->part,
			       fz->n, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != pf->size) {
		close(fd);
		return ds_fail(fz->ctx, DS_E_FORMAT, "%s (part %u of %u): %llu "
			       "bytes, its part's manifest says %llu", path,
			       pf->part, fz->n,
			       (unsigned long long)st.st_size,
			       (unsigned long long)pf->size);
	}
	XXH3_128bits_reset(h);
	for (left = pf->size; left && !rc;) {
		ssize_t k = read(fd, buf, left < cap ? left : cap);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			rc = ds_fail(fz->ctx, k ? -errno : DS_E_FORMAT, "%s: %s",
				     path, k ? strerror(errno) : "shorter "
				     "than its size");
		else {
			ds_xxh3_128_update(h, buf, (size_t)k);
			left -= (uint64_t)k;
		}
	}
	close(fd);
	fz->info->bytes += pf->size - left;
	ds_hex128(XXH3_128bits_digest(h), hex);
	if (!rc && strcmp(hex, pf->hex))
		rc = ds_fail(fz->ctx, DS_E_FORMAT, "%s (part %u of %u): "
			     "xxh128 %s, its part's manifest recorded %s: "
			     "changed since the part wrote it", path,
			     pf->part, fz->n, hex, pf->hex);
	return rc;
}

static int check_files(struct fin *fz)
{
	size_t cap = 1 << 20;
	char *buf = malloc(cap);
	XXH3_state_t *h = XXH3_createState();
	int rc = buf && h ? 0 : ds_fail(fz->ctx, -ENOMEM, "out of memory");

	for (size_t i = 0; !rc && i < fz->nf; i++)
		rc = check_file(fz, &fz->f[i], buf, cap, h);
	fz->info->files = (unsigned)fz->nf;
	free(buf);
	XXH3_freeState(h);
	return rc;
}

/* ---- writing the index and the checksums --------------------------------- */

/* dir/name written whole under .name.partial, synced, renamed. */
static int put_file(struct fin *fz, const char *name, const char *text)
{
	char tmp[PATH_MAX], fin[PATH_MAX];
	size_t len = strlen(text);
	int fd, rc = 0;

	snprintf(fin, sizeof(fin), "%s/%s", fz->dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s" DS_TMP_SUFFIX, fz->dir, name);
	unlink(tmp);
	errno = 0;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0666);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd))
		rc = ds_fail(fz->ctx, errno ? -errno : -ENOSPC, "%s: %s", fin,
			     strerror(errno ? errno : ENOSPC));
	if (fd >= 0 && close(fd) && !rc)
		rc = ds_fail(fz->ctx, -errno, "%s: %s", fin, strerror(errno));
	if (!rc && rename(tmp, fin))
		rc = ds_fail(fz->ctx, -errno, "%s: %s", fin, strerror(errno));
	if (rc)
		unlink(tmp);
	return rc;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct pfile *)a)->name,
		      ((const struct pfile *)b)->name);
}

/* The same text as a whole merge's: every file, sorted by name. */
static int write_sums(struct fin *fz, const char *index_hex)
{
	struct pfile *v = calloc(fz->nf + 1, sizeof(*v));
	char *text = malloc((fz->nf + 1) * (NAME_MAX + 40) + 1);
	size_t n = fz->nf, len = 0;
	int rc;

	if (!v || !text) {
		free(v);
		free(text);
		return ds_fail(fz->ctx, -ENOMEM, "out of memory");
	}
	memcpy(v, fz->f, n * sizeof(*v));
	if (index_hex)
		v[n++] = (struct pfile){ .name = DS_INDEX, .hex = index_hex };
	qsort(v, n, sizeof(*v), by_name);
	text[0] = 0;
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(text + len, "%s  %s\n", v[i].hex,
				       v[i].name);
	rc = put_file(fz, DS_CHECKSUMS, text);
	free(text);
	free(v);
	return rc;
}

static int write_outputs(struct fin *fz)
{
	char hex[33], *text = NULL;
	int rc = 0;

	if (fz->index) {
		json_incref(fz->map);
		if (!(text = ds_index_text(fz->map, fz->total)))
			return ds_fail(fz->ctx, -ENOMEM, "out of memory");
		ds_hex128(XXH3_128bits(text, strlen(text)), hex);
		rc = put_file(fz, DS_INDEX, text);
		free(text);
	}
	/* CHECKSUMS.xxh128 last: OUT looks finished only once it is */
	if (!rc)
		rc = write_sums(fz, fz->index ? hex : NULL);
	return rc;
}

/* The parts' files go; with a part run with --force, so do the visible
 * files that are not the merge's (as a whole merge with --force does). */
static void clean_up(struct fin *fz)
{
	DIR *d = opendir(fz->dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		const char *nm = e->d_name;
		unsigned k, n;
		bool ours = !strcmp(nm, DS_INDEX) || !strcmp(nm, DS_CHECKSUMS);
		struct stat st;

		if (ds_part_file(nm, &k, &n) != DS_PF_NONE) {
			unlinkat(dirfd(d), nm, 0);
			continue;
		}
		if (!fz->force || nm[0] == '.' ||
		    fstatat(dirfd(d), nm, &st, AT_SYMLINK_NOFOLLOW) ||
		    (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)))
			continue;
		for (size_t i = 0; i < fz->nf && !ours; i++)
			ours = !strcmp(fz->f[i].name, nm);
		if (!ours)
			unlinkat(dirfd(d), nm, 0);
	}
	closedir(d);
}

static int sync_out(struct fin *fz)
{
	int fd = open(fz->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0 || (fsync(fd) && errno != EINVAL && errno != ENOTSUP))
		rc = ds_fail(fz->ctx, -errno, "%s: cannot sync the directory: "
			     "%s", fz->dir, strerror(errno));
	if (fd >= 0)
		close(fd);
	return rc;
}

static int join(struct fin *fz)
{
	int rc;

	if ((rc = load_manifests(fz)) || (rc = check_run(fz)) ||
	    (rc = collect(fz)) || (rc = check_files(fz)))
		return rc;
	if ((rc = write_outputs(fz)) || (rc = sync_out(fz)))
		return rc;
	clean_up(fz);
	fz->info->parts = fz->n;
	return sync_out(fz);
}

int ds_finalize(ds_ctx *ctx, const char *dir, struct ds_finalize_info *info)
{
	struct ds_finalize_info none;
	struct fin fz = { .ctx = ctx, .dir = dir, .info = info ? info : &none };
	struct ds_lock lk = { .fd = -1 };
	struct scan sc;
	int rc;

	memset(fz.info, 0, sizeof(*fz.info));
	if ((rc = scan_dir(&fz, &sc)))
		return rc;
	if (!sc.nfiles && sc.finished)
		return 0;       /* a finished merge: nothing to finalize */
	if (!sc.nfiles)
		return ds_fail(ctx, DS_E_OUTPUT, "%s: holds no part of a "
			       "partitioned merge (no .dare-stream.part-K-of-"
			       "N.json) and no finished merge: nothing to "
			       "finalize", dir);
	fz.n = sc.n;
	if ((rc = check_parts(&fz, &sc)) ||
	    (rc = ds_lock_take(ctx, dir, DS_LOCK_NAME, true, &lk)))
		return rc;
	/* parts may have ended, or begun, between the checks and the lock */
	if (!(rc = check_parts(&fz, &sc))) {
		if (!(fz.m = calloc(fz.n, sizeof(*fz.m))))
			rc = ds_fail(ctx, -ENOMEM, "out of memory");
		else
			rc = join(&fz);
	}
	for (unsigned k = 0; fz.m && k < fz.n; k++)
		json_decref(fz.m[k]);
	free(fz.m);
	free(fz.f);
	json_decref(fz.map);
	ds_lock_release(&lk);
	return rc;
}

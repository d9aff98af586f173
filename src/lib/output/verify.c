/* SPDX-License-Identifier: MIT */
/* verify.c - check a merged directory: shards, index, CHECKSUMS.xxh128 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include <xxhash.h>
#include "common/ctx.h"
#include "inputs/model.h"
#include "kernels/xxh.h"

#define CHECKSUMS   "CHECKSUMS.xxh128"
#define ST_SUFFIX   ".safetensors"
#define HASH_BUF    (1u << 20)
/* Far more lines than any output has; this only bounds malloc. */
#define SUMS_MAX    (16u << 20)

/* One line of CHECKSUMS.xxh128: the digest in canonical (big-endian) form. */
struct sum {
	char *name;
	unsigned char digest[16];
};

struct verify {
	ds_ctx *ctx;
	const char *dir;
	int dfd;                    /* the directory, for the *at() calls */
	ds_log_fn *report;
	void *user;
	struct sum *sums;           /* sorted by name */
	size_t nsums;
};

static void notice(const struct verify *v, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void notice(const struct verify *v, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!v->report)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	v->report(v->user, DS_LOG_NOTICE, msg);
}

static int sys_fail(const struct verify *v, const char *name, int e)
{
	return ds_fail(v->ctx, -e, "%s/%s: %s", v->dir, name, strerror(e));
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void to_hex(const unsigned char d[16], char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* ---- CHECKSUMS.xxh128 --------------------------------------------------- */

/* "<32 hex digits>  <file name>": the name plain, inside the directory. */
static int parse_line(struct verify *v, unsigned lineno, const char *line,
		      struct sum *s)
{
	const char *name = line + 34;
	bool ok = strlen(line) > 34 && line[32] == ' ' && line[33] == ' ' &&
		  !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");

	for (int i = 0; ok && i < 16; i++) {
		int hi = hexval(line[2 * i]), lo = hexval(line[2 * i + 1]);

		ok = hi >= 0 && lo >= 0;
		s->digest[i] = (unsigned char)(hi << 4 | lo);
	}
	if (!ok)
		return ds_fail(v->ctx, DS_E_FORMAT, "%s/%s:%u: expected '<32 "
			       "hex digits>  <file name>', found '%.80s'",
			       v->dir, CHECKSUMS, lineno, line);
	if (!(s->name = strdup(name)))
		return ds_fail(v->ctx, -ENOMEM, "out of memory");
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct sum *)a)->name,
		      ((const struct sum *)b)->name);
}

/* Every line of text (NUL-terminated, modified in place) into v->sums. */
static int parse_sums(struct verify *v, char *text, size_t len)
{
	size_t lines = 1;
	unsigned lineno = 0;
	char *line = text, *nl;
	int rc = 0;

	if (strlen(text) != len)
		return ds_fail(v->ctx, DS_E_FORMAT, "%s/%s: contains a NUL "
			       "byte", v->dir, CHECKSUMS);
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	if (!(v->sums = calloc(lines, sizeof(*v->sums))))
		return ds_fail(v->ctx, -ENOMEM, "out of memory");
	for (; rc == 0 && *line; line = nl ? nl + 1 : line + strlen(line)) {
		if ((nl = strchr(line, '\n')))
			*nl = '\0';
		rc = parse_line(v, ++lineno, line, &v->sums[v->nsums]);
		v->nsums += rc == 0;
	}
	if (rc == 0 && v->nsums == 0)
		rc = ds_fail(v->ctx, DS_E_FORMAT, "%s/%s: empty, expected one "
			     "line per file", v->dir, CHECKSUMS);
	qsort(v->sums, v->nsums, sizeof(*v->sums), by_name);
	for (size_t i = 1; rc == 0 && i < v->nsums; i++)
		if (!strcmp(v->sums[i - 1].name, v->sums[i].name))
			rc = ds_fail(v->ctx, DS_E_FORMAT, "%s/%s: '%s' is "
				     "listed twice", v->dir, CHECKSUMS,
				     v->sums[i].name);
	return rc;
}

/* The whole checksum file; its absence means an unfinished output. */
static int read_sums(struct verify *v)
{
	int fd = openat(v->dfd, CHECKSUMS, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	ssize_t n = 0;
	char *text = NULL;
	int rc = 0;

	if (fd < 0 && errno == ENOENT)
		return ds_fail(v->ctx, DS_E_FORMAT, "%s: no %s: not a complete "
			       "dare-stream output", v->dir, CHECKSUMS);
	if (fd < 0 || fstat(fd, &st))
		rc = sys_fail(v, CHECKSUMS, errno);
	else if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > SUMS_MAX)
		rc = ds_fail(v->ctx, DS_E_FORMAT, "%s/%s: not a regular file "
			     "of at most %u bytes", v->dir, CHECKSUMS, SUMS_MAX);
	else if (!(text = malloc((size_t)st.st_size + 1)))
		rc = ds_fail(v->ctx, -ENOMEM, "out of memory");
	else if ((n = pread(fd, text, (size_t)st.st_size, 0)) < 0)
		rc = sys_fail(v, CHECKSUMS, errno);
	if (fd >= 0)
		close(fd);
	if (rc == 0) {
		text[n] = '\0';
		rc = parse_sums(v, text, (size_t)n);
	}
	free(text);
	return rc;
}

static const struct sum *find_sum(const struct verify *v, const char *name)
{
	struct sum key = { .name = (char *)name };

	return bsearch(&key, v->sums, v->nsums, sizeof(key), by_name);
}

/* ---- the directory against the list ------------------------------------ */

/* Each visible file of the directory is listed (directories are not). */
static int check_unlisted(struct verify *v)
{
	DIR *d = opendir(v->dir);
	struct dirent *e;
	struct stat st;
	int rc = 0;

	if (!d)
		return ds_fail(v->ctx, -errno, "%s: %s", v->dir,
			       strerror(errno));
	while (rc == 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.' || !strcmp(e->d_name, CHECKSUMS))
			continue;
		if (fstatat(v->dfd, e->d_name, &st, 0))
			rc = sys_fail(v, e->d_name, errno);
		else if (!S_ISDIR(st.st_mode) && !find_sum(v, e->d_name))
			rc = ds_fail(v->ctx, DS_E_FORMAT, "%s/%s: file not "
				     "listed in %s", v->dir, e->d_name,
				     CHECKSUMS);
	}
	closedir(d);
	return rc;
}

/* Each listed file is there and regular (a dangling link cannot be read). */
static int check_listed(struct verify *v)
{
	struct stat st;

	for (size_t i = 0; i < v->nsums; i++) {
		const char *name = v->sums[i].name;

		if (fstatat(v->dfd, name, &st, AT_SYMLINK_NOFOLLOW) &&
		    errno == ENOENT)
			return ds_fail(v->ctx, DS_E_FORMAT, "%s/%s: listed in "
				       "%s but missing", v->dir, name,
				       CHECKSUMS);
		if (fstatat(v->dfd, name, &st, 0))
			return sys_fail(v, name, errno);
		if (!S_ISREG(st.st_mode))
			return ds_fail(v->ctx, DS_E_FORMAT, "%s/%s: listed in "
				       "%s but not a regular file", v->dir,
				       name, CHECKSUMS);
	}
	return 0;
}

/* ---- the model ---------------------------------------------------------- */

/* Every listed *.safetensors is a shard of the model. */
static int check_shard_files(const struct verify *v, const struct ds_model *m)
{
	for (size_t i = 0; i < v->nsums; i++) {
		bool shard = false;

		if (!ends_with(v->sums[i].name, ST_SUFFIX))
			continue;
		for (unsigned s = 0; s < m->nshards && !shard; s++)
			shard = !strcmp(m->shards[s].name, v->sums[i].name);
		if (!shard)
			return ds_fail(v->ctx, DS_E_FORMAT, "%s/%s: not a shard "
				       "of the model%s%s", v->dir,
				       v->sums[i].name, m->index ?
				       " named by " : "", m->index ?
				       m->index : "");
	}
	return 0;
}

/* Each shard's __metadata__ says "format": "pt", as DESIGN 8 requires. */
static int check_format(const struct verify *v, const struct ds_model *m)
{
	for (unsigned s = 0; s < m->nshards; s++) {
		char *fmt;
		int rc = ds_st_metadata(v->ctx, m->shards[s].path, "format",
					&fmt);

		if (rc == 0 && (!fmt || strcmp(fmt, "pt")))
			rc = ds_fail(v->ctx, DS_E_FORMAT, "%s: __metadata__ "
				     "\"format\" is %s%s%s, expected \"pt\"",
				     m->shards[s].path, fmt ? "\"" : "missing",
				     fmt ? fmt : "", fmt ? "\"" : "");
		free(fmt);
		if (rc)
			return rc;
	}
	return 0;
}

/* The index maps every tensor and gives their total size in bytes. */
static int check_index(const struct verify *v, const struct ds_model *m)
{
	json_t *root = json_load_file(m->index, JSON_REJECT_DUPLICATES, NULL);
	json_t *total = json_object_get(json_object_get(root, "metadata"),
					"total_size");
	size_t mapped = json_object_size(json_object_get(root, "weight_map"));
	uint64_t sum = 0;
	int rc = 0;

	for (size_t i = 0; i < m->ntensors; i++)
		sum += m->tensors[i].end - m->tensors[i].begin;
	if (!root)
		rc = ds_fail(v->ctx, DS_E_FORMAT, "%s: cannot be read again",
			     m->index);
	else if (!json_is_integer(total))
		rc = ds_fail(v->ctx, DS_E_FORMAT, "%s: metadata.total_size "
			     "must be %" PRIu64 ", the bytes of all tensors; "
			     "found %s", m->index, sum, total ? "a non-integer"
			     : "none");
	else if ((uint64_t)json_integer_value(total) != sum)
		rc = ds_fail(v->ctx, DS_E_FORMAT, "%s: metadata.total_size is "
			     "%" JSON_INTEGER_FORMAT ", expected %" PRIu64
			     " (the bytes of all tensors)", m->index,
			     json_integer_value(total), sum);
	else if (mapped != m->ntensors)
		rc = ds_fail(v->ctx, DS_E_FORMAT, "%s: weight_map names %zu "
			     "tensors, the shards hold %zu", m->index, mapped,
			     m->ntensors);
	json_decref(root);
	return rc;
}

/* The structure of DESIGN 8 (through ds_model_open), the index, metadata. */
static int check_model(struct verify *v, size_t *ntensors)
{
	ds_model *m;
	int rc = ds_model_open(v->ctx, v->dir, &m);

	/* A shard that cannot be found is a corrupt directory here. */
	if (rc == DS_E_NOTFOUND || rc == DS_E_MISMATCH)
		rc = DS_E_FORMAT;
	if (rc)
		return rc;
	if (!(rc = check_shard_files(v, m)) && !(rc = check_format(v, m)) &&
	    m->index)
		rc = check_index(v, m);
	*ntensors = m->ntensors;
	ds_model_free(m);
	return rc;
}

/* ---- the checksums ------------------------------------------------------ */

/* XXH3-128 of a file of the directory, in canonical form. */
static int hash_file(const struct verify *v, const char *name, void *buf,
		     XXH3_state_t *st, XXH128_canonical_t *out)
{
	int fd = openat(v->dfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	uint64_t off = 0;
	ssize_t k;

	if (fd < 0)
		return sys_fail(v, name, errno);
	XXH3_128bits_reset(st);
	while ((k = pread(fd, buf, HASH_BUF, (off_t)off)) != 0) {
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int e = errno;

			close(fd);
			return sys_fail(v, name, e);
		}
		ds_xxh3_128_update(st, buf, (size_t)k);
		off += (uint64_t)k;
	}
	close(fd);
	XXH128_canonicalFromHash(out, XXH3_128bits_digest(st));
	return 0;
}

static int check_sums(const struct verify *v)
{
	XXH3_state_t *st = XXH3_createState();
	void *buf = malloc(HASH_BUF);
	XXH128_canonical_t got;
	char want_hex[33], got_hex[33];
	int rc = st && buf ? 0 : ds_fail(v->ctx, -ENOMEM, "out of memory");

	for (size_t i = 0; rc == 0 && i < v->nsums; i++) {
		const struct sum *s = &v->sums[i];

		if ((rc = hash_file(v, s->name, buf, st, &got)))
			break;
		if (memcmp(got.digest, s->digest, sizeof(s->digest)) == 0) {
			notice(v, "%s: ok", s->name);
			continue;
		}
		to_hex(s->digest, want_hex);
		to_hex(got.digest, got_hex);
		rc = ds_fail(v->ctx, DS_E_FORMAT, "%s/%s: checksum mismatch: "
			     "%s lists %s, the file hashes to %s", v->dir,
			     s->name, CHECKSUMS, want_hex, got_hex);
	}
	free(buf);
	XXH3_freeState(st);
	return rc;
}

/* ---- the whole check ---------------------------------------------------- */

int ds_verify(ds_ctx *ctx, const char *dir, ds_log_fn *report, void *user)
{
	struct verify v = { .ctx = ctx, .dir = dir, .report = report,
			    .user = user };
	size_t ntensors = 0;
	int rc;

	v.dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (v.dfd < 0)
		return ds_fail(ctx, -errno, "%s: %s", dir, strerror(errno));
	if (!(rc = read_sums(&v)) && !(rc = check_unlisted(&v)) &&
	    !(rc = check_listed(&v)) && !(rc = check_model(&v, &ntensors)) &&
	    !(rc = check_sums(&v)))
		notice(&v, "%zu files, %zu tensors", v.nsums, ntensors);
	for (size_t i = 0; i < v.nsums; i++)
		free(v.sums[i].name);
	free(v.sums);
	close(v.dfd);
	return rc;
}

/* SPDX-License-Identifier: MIT */
/* model.c - resolve a model argument (dir, file, index, HF id) and open it */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include "common/ctx.h"
#include "inputs/model.h"
#include "inputs/lora.h"
#include "inputs/pack.h"

#define INDEX_NAME  "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define ST_SUFFIX   ".safetensors"
/* Indexes of the largest models are a few MB; this only bounds malloc. */
#define INDEX_MAX   (256ull << 20)

/* ---- paths -------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A formatted string in a new buffer (asprintf without _GNU_SOURCE). */
static char *str_printf(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !(p = malloc((size_t)n + 1)))
		return NULL;
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

/* dir/name, without doubling a slash; NULL when out of memory. */
static char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir);

	return str_printf("%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/",
			  name);
}

/* A copy of dir without trailing slashes ("/" stays "/"). */
static char *dir_copy(const char *dir, size_t n)
{
	char *d;

	while (n > 1 && dir[n - 1] == '/')
		n--;
	if (!(d = malloc(n + 1)))
		return NULL;
	memcpy(d, dir, n);
	d[n] = '\0';
	return d;
}

/* Directory part of a file path: "." without a slash, "/" for "/x". */
static char *dir_of(const char *path)
{
	const char *s = strrchr(path, '/');

	if (!s)
		return strdup(".");
	return dir_copy(path, s == path ? 1 : (size_t)(s - path));
}

/*
 * 1 when path is (a symlink to) a regular file, 0 when there is nothing
 * there, a negative errno (with a message) when it cannot be told.
 */
static int file_state(ds_ctx *ctx, const char *path)
{
	struct stat st;
	int e;

	if (stat(path, &st) == 0)
		return S_ISREG(st.st_mode) ? 1 : 0;
	e = errno;
	if (e == ENOENT || e == ENOTDIR)
		return 0;
	return ds_fail(ctx, -e, "%s: %s", path, strerror(e));
}

/* A shard name from an index must stay inside the model's directory. */
static bool plain_name(const char *s)
{
	return *s && !strchr(s, '/') && !strchr(s, '\\') &&
	       strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Append a shard (copies of name and path) to m. */
static int add_shard(struct ds_model *m, const char *name, const char *path)
{
	struct ds_shard *s = realloc(m->shards,
				     (m->nshards + 1) * sizeof(*s));

	if (!s)
		return -ENOMEM;
	m->shards = s;
	s = &m->shards[m->nshards++];
	s->name = strdup(name);
	s->path = strdup(path);
	s->data_off = s->size = 0;
	return s->name && s->path ? 0 : -ENOMEM;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- index files -------------------------------------------------------- */

/* read(2) up to len bytes (fewer at end of file), retrying EINTR. */
static ssize_t read_all(int fd, char *buf, size_t len)
{
	size_t n = 0;

	while (n < len) {
		ssize_t r = read(fd, buf + n, len - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		n += (size_t)r;
	}
	return (ssize_t)n;
}

/* The size of an open file that must be regular and at most max bytes. */
static int small_size(ds_ctx *ctx, int fd, const char *path, uint64_t max,
		      size_t *size)
{
	uint64_t n;
	int rc = ds_regular_size(ctx, fd, path, &n);

	if (rc)
		return rc;
	if (n > max)
		return ds_fail(ctx, DS_E_FORMAT, "%s: %llu bytes, expected at "
			       "most %llu", path, (unsigned long long)n,
			       (unsigned long long)max);
	*size = (size_t)n;
	return 0;
}

/*
 * A whole small file, NUL-terminated; its size checked before malloc.
 * O_NONBLOCK: a FIFO or a terminal named as an input must not hang open().
 */
static int read_small(ds_ctx *ctx, const char *path, uint64_t max,
		      char **buf, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), e, rc;
	ssize_t n = 0;
	size_t size = 0;

	*buf = NULL;
	if (fd < 0) {
		e = errno;
		return ds_fail(ctx, -e, "%s: %s", path, strerror(e));
	}
	if ((rc = small_size(ctx, fd, path, max, &size)) == 0) {
		if (!(*buf = malloc(size + 1)))
			rc = ds_fail(ctx, -ENOMEM, "%s: out of memory", path);
		else if ((n = read_all(fd, *buf, size)) < 0) {
			e = errno;
			rc = ds_fail(ctx, -e, "%s: %s", path, strerror(e));
		}
	}
	close(fd);
	if (rc) {
		free(*buf);
		*buf = NULL;
		return rc;
	}
	(*buf)[n] = '\0';
	*len = (size_t)n;
	return 0;
}

/* The weight_map of an index file, checked for shape; a new reference. */
static int load_weight_map(ds_ctx *ctx, const char *path, json_t **wmap)
{
	json_t *root, *meta, *wm;
	json_error_t err;
	char *text;
	size_t len;
	int rc;

	if ((rc = read_small(ctx, path, INDEX_MAX, &text, &len)))
		return rc;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
	free(text);
	if (!root)
		return ds_fail(ctx, DS_E_FORMAT, "%s: not a valid index: %s%s "
			       "(line %d, column %d)", path,
			       json_error_code(&err) == json_error_invalid_utf8 ?
			       "invalid UTF-8 (tensor names must be UTF-8): " :
			       json_error_code(&err) == json_error_duplicate_key ?
			       "a tensor name appears twice: " : "", err.text,
			       err.line, err.column);
	meta = json_object_get(root, "metadata");
	wm = json_object_get(root, "weight_map");
	if (!json_is_object(root) || !json_is_object(wm) ||
	    (meta && !json_is_object(meta)))
		rc = ds_fail(ctx, DS_E_FORMAT, "%s: expected an index: a JSON "
			     "object with a \"weight_map\" object (tensor name "
			     "-> shard file) and an optional \"metadata\" "
			     "object", path);
	else if (json_object_size(wm) == 0)
		rc = ds_fail(ctx, DS_E_FORMAT, "%s: weight_map is empty, "
			     "expected at least one tensor", path);
	*wmap = rc ? NULL : json_incref(wm);
	json_decref(root);
	return rc;
}

/* Each shard name is a string naming a plain file of the directory. */
static int check_shard_names(ds_ctx *ctx, const char *path, json_t *wmap)
{
	const char *k, *s;
	json_t *v;

	json_object_foreach(wmap, k, v) {
		s = json_string_value(v);
		if (!s)
			return ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s': "
				       "expected a shard file name, found a "
				       "non-string", path, k);
		if (!plain_name(s))
			return ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s': "
				       "shard '%s' is not a plain file name in "
				       "the index's directory", path, k, s);
	}
	return 0;
}

/* Add shard name of the index (must exist) unless it is already there. */
static int add_index_shard(ds_ctx *ctx, struct ds_model *m, const char *name)
{
	char *p;
	int rc;

	if (m->nshards && strcmp(m->shards[m->nshards - 1].name, name) == 0)
		return 0;
	if (!(p = path_join(m->dir, name)))
		return -ENOMEM;
	rc = file_state(ctx, p);
	if (rc == 0)
		rc = ds_fail(ctx, DS_E_NOTFOUND, "%s: shard '%s' named by the "
			     "index is missing: no file %s", m->index, name, p);
	else if (rc > 0)
		rc = add_shard(m, name, p);
	free(p);
	return rc;
}

/* The distinct shards of wmap, sorted by name (the order of the files). */
static int add_index_shards(ds_ctx *ctx, struct ds_model *m, json_t *wmap)
{
	size_t n = 0, cnt = json_object_size(wmap);
	const char **names = malloc(cnt * sizeof(*names));
	const char *k;
	json_t *v;
	int rc = 0;

	if (!names)
		return -ENOMEM;
	json_object_foreach(wmap, k, v)
		names[n++] = json_string_value(v);
	qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; !rc && i < n; i++)
		rc = add_index_shard(ctx, m, names[i]);
	free(names);
	return rc;
}

/* An index file: its shards; its weight_map when wmap is not NULL. */
static int resolve_index(ds_ctx *ctx, struct ds_model *m, const char *path,
			 json_t **wmap)
{
	json_t *wm;
	int rc;

	if (!(m->index = strdup(path)) || !(m->dir = dir_of(path)))
		return -ENOMEM;
	if ((rc = load_weight_map(ctx, path, &wm)))
		return rc;
	if (!(rc = check_shard_names(ctx, path, wm)))
		rc = add_index_shards(ctx, m, wm);
	if (rc == 0 && wmap)
		*wmap = json_incref(wm);
	json_decref(wm);
	return rc;
}

/* ---- directories, files, the Hugging Face cache ------------------------- */

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Names of the visible *.safetensors entries of dir, sorted. */
static int list_st_names(ds_ctx *ctx, const char *dir, char ***out, size_t *n)
{
	DIR *d = opendir(dir);
	char **names = NULL, **nn;
	struct dirent *de;
	int rc = 0;

	*out = NULL;
	*n = 0;
	if (!d) {
		int e = errno;

		return ds_fail(ctx, -e, "%s: %s", dir, strerror(e));
	}
	/* Hidden files are skipped: partial output lives under dot names. */
	while (rc == 0 && (de = readdir(d))) {
		if (de->d_name[0] == '.' || !ends_with(de->d_name, ST_SUFFIX))
			continue;
		if (!(nn = realloc(names, (*n + 1) * sizeof(*names))))
			rc = -ENOMEM;
		else if (!((names = nn)[*n] = strdup(de->d_name)))
			rc = -ENOMEM;
		else
			(*n)++;
	}
	closedir(d);
	if (rc == 0 && *n)
		qsort(names, *n, sizeof(*names), cmp_str);
	*out = names;
	return rc;
}

/* A directory without an index or model.safetensors: all its shards. */
static int scan_dir(ds_ctx *ctx, struct ds_model *m)
{
	char **names, *p;
	size_t n;
	int rc = list_st_names(ctx, m->dir, &names, &n);

	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (!(p = path_join(m->dir, names[i])))
			rc = -ENOMEM;
		else if ((rc = file_state(ctx, p)) > 0)
			rc = add_shard(m, names[i], p);
		free(p);
	}
	free_names(names, n);
	if (rc == 0 && m->nshards == 0)
		rc = ds_fail(ctx, DS_E_NOTFOUND, "%s: no %s, no %s and no "
			     "*%s file", m->dir, SINGLE_NAME, INDEX_NAME,
			     ST_SUFFIX);
	return rc;
}

/* A directory: its index, else model.safetensors, else its shards. */
static int resolve_dir(ds_ctx *ctx, struct ds_model *m, const char *dir,
		       json_t **wmap)
{
	char *d = dir_copy(dir, strlen(dir)), *p;
	int rc;

	if (!d || !(p = path_join(d, INDEX_NAME))) {
		free(d);
		return -ENOMEM;
	}
	if ((rc = file_state(ctx, p)) > 0) {
		rc = resolve_index(ctx, m, p, wmap);
		free(d);
	} else if (rc == 0) {
		m->dir = d;
		free(p);
		if (!(p = path_join(d, SINGLE_NAME)))
			rc = -ENOMEM;
		else if ((rc = file_state(ctx, p)) > 0)
			rc = add_shard(m, SINGLE_NAME, p);
		else if (rc == 0)
			rc = scan_dir(ctx, m);
	} else {
		free(d);
	}
	free(p);
	return rc;
}

/* One .safetensors file: the path as given, its directory. */
static int resolve_file(struct ds_model *m, const char *path)
{
	const char *base = strrchr(path, '/');

	if (!(m->dir = dir_of(path)))
		return -ENOMEM;
	m->file = true;
	return add_shard(m, base ? base + 1 : path, path);
}

/*
 * "org/name" as Hugging Face spells repository ids: exactly one slash,
 * [A-Za-z0-9._-], neither part empty or starting with a dot (so no ".."
 * can reach the cache path).
 */
static bool is_hf_id(const char *s)
{
	const char *slash = strchr(s, '/');

	if (!slash || strchr(slash + 1, '/') || slash == s || !slash[1] ||
	    s[0] == '.' || slash[1] == '.')
		return false;
	for (; *s; s++) {
		if (!isalnum((unsigned char)*s) && !strchr("._-/", *s))
			return false;
	}
	return true;
}

/* The hub directory and where it came from, as huggingface_hub finds it. */
static char *hf_hub_dir(const char **from)
{
	const char *v;

	if ((v = getenv("HF_HUB_CACHE")) && *v) {
		*from = "$HF_HUB_CACHE";
		return strdup(v);
	}
	if ((v = getenv("HF_HOME")) && *v) {
		*from = "$HF_HOME/hub";
		return path_join(v, "hub");
	}
	*from = "$HOME/.cache/huggingface/hub";
	v = getenv("HOME");
	return path_join(v && *v ? v : "/", ".cache/huggingface/hub");
}

static bool is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* text with leading and trailing whitespace cut (in place). */
static char *strip(char *text)
{
	char *e;

	while (isspace((unsigned char)*text))
		text++;
	for (e = text + strlen(text); e > text &&
	     isspace((unsigned char)e[-1]); e--)
		;
	*e = '\0';
	return text;
}

/* The revision refs/main names, whitespace stripped: a snapshot dir name. */
static int hf_revision(ds_ctx *ctx, const char *repo, const char *id,
		       char **rev)
{
	char *ref = path_join(repo, "refs/main"), *text = NULL, *s;
	size_t len;
	int rc;

	*rev = NULL;
	if (!ref)
		return -ENOMEM;
	if ((rc = file_state(ctx, ref)) == 0)
		rc = ds_fail(ctx, DS_E_NOTFOUND, "%s: %s is missing, so the "
			     "Hugging Face cache has no 'main' revision of it; "
			     "nothing is downloaded: fetch it with "
			     "'huggingface-cli download %s'", id, ref, id);
	else if (rc > 0)
		rc = read_small(ctx, ref, 4096, &text, &len);
	if (rc == 0 && !plain_name(s = strip(text)))
		rc = ds_fail(ctx, DS_E_FORMAT, "%s: expected a revision, "
			     "found '%s'", ref, s);
	else if (rc == 0 && !(*rev = strdup(s)))
		rc = -ENOMEM;
	free(text);
	free(ref);
	return rc;
}

/* models--org--name under the hub directory, or NULL. */
static char *hf_repo_dir(const char *hub, const char *id)
{
	const char *slash = strchr(id, '/');

	return str_printf("%s/models--%.*s--%s", hub, (int)(slash - id), id,
			  slash + 1);
}

/* The snapshot directory refs/main of Hugging Face id names, in *dir. */
static int hf_snapshot(ds_ctx *ctx, const char *id, char **dir)
{
	const char *from;
	char *hub = hf_hub_dir(&from), *repo = NULL, *rev = NULL, *snap;
	int rc;

	*dir = NULL;
	if (!hub || !(repo = hf_repo_dir(hub, id)))
		rc = -ENOMEM;
	else if (!is_dir(repo))
		rc = ds_fail(ctx, DS_E_NOTFOUND, "%s: no such file or "
			     "directory, and not in the Hugging Face cache "
			     "(looked in %s, the hub %s from %s); nothing is "
			     "downloaded: fetch it with 'huggingface-cli "
			     "download %s'", id, repo, hub, from, id);
	else if ((rc = hf_revision(ctx, repo, id, &rev)) == 0) {
		if (!(snap = path_join(repo, "snapshots")) ||
		    !(*dir = path_join(snap, rev)))
			rc = -ENOMEM;
		else if (!is_dir(*dir))
			rc = ds_fail(ctx, DS_E_NOTFOUND, "%s: revision %s "
				     "(refs/main) is not in the Hugging Face "
				     "cache: no directory %s; fetch it with "
				     "'huggingface-cli download %s'", id, rev,
				     *dir, id);
		free(snap);
	}
	if (rc) {
		free(*dir);
		*dir = NULL;
	}
	free(rev);
	free(repo);
	free(hub);
	return rc;
}

/* A Hugging Face id: the snapshot refs/main names, resolved as a dir. */
static int resolve_hf(ds_ctx *ctx, struct ds_model *m, const char *id,
		      json_t **wmap)
{
	char *snap;
	int rc = hf_snapshot(ctx, id, &snap);

	if (rc == 0)
		rc = resolve_dir(ctx, m, snap, wmap);
	free(snap);
	return rc;
}

/* The directory of a LoRA adapter argument: as given, or a Hugging Face
 * id in the cache. */
static int adapter_dir(ds_ctx *ctx, const char *arg, char **dir)
{
	if (!is_dir(arg) && is_hf_id(arg))
		return hf_snapshot(ctx, arg, dir);
	return (*dir = strdup(arg)) ? 0 : -ENOMEM;
}

/* Dispatch on what arg is; the model's weight_map goes to *wmap if any. */
static int resolve(ds_ctx *ctx, const char *arg, struct ds_model *m,
		   json_t **wmap)
{
	struct stat st;
	int e;

	if (!(m->arg = strdup(arg)))
		return -ENOMEM;
	if (stat(arg, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return resolve_dir(ctx, m, arg, wmap);
		if (ends_with(arg, ST_SUFFIX))
			return resolve_file(m, arg);
		if (ends_with(arg, ".json"))
			return resolve_index(ctx, m, arg, wmap);
		return ds_fail(ctx, DS_E_FORMAT, "%s: expected a directory, "
			       "a *%s file or an index (*.json)", arg,
			       ST_SUFFIX);
	}
	e = errno;
	if (e != ENOENT && e != ENOTDIR)
		return ds_fail(ctx, -e, "%s: %s", arg, strerror(e));
	if (is_hf_id(arg))
		return resolve_hf(ctx, m, arg, wmap);
	return ds_fail(ctx, DS_E_NOTFOUND, "%s: no such file or directory",
		       arg);
}

int ds_model_resolve(ds_ctx *ctx, const char *arg, struct ds_model *m)
{
	int rc;

	memset(m, 0, sizeof(*m));
	if ((rc = resolve(ctx, arg, m, NULL)))
		ds_model_clear(m);
	return rc;
}

void ds_model_clear(struct ds_model *m)
{
	for (unsigned i = 0; m->shards && i < m->nshards; i++) {
		free(m->shards[i].path);
		free(m->shards[i].name);
	}
	free(m->shards);
	ds_tensors_free(m->tensors, m->ntensors);
	free(m->byname);
	free(m->arg);
	free(m->dir);
	free(m->index);
	ds_pack_free(m->pack);
	ds_lora_free(m->lora);
	memset(m, 0, sizeof(*m));
}

void ds_model_free(ds_model *m)
{
	if (!m)
		return;
	ds_model_clear(m);
	free(m);
}

/* ---- opening: headers, the name table, the index cross-check ------------ */

/* Read the header of shard i and append its tensors to m. */
static int read_shard(ds_ctx *ctx, struct ds_model *m, unsigned i)
{
	struct ds_shard *sh = &m->shards[i];
	struct ds_tensor *t, *all;
	/* O_NONBLOCK: a FIFO must not hang here; ds_st_read refuses it. */
	int fd = open(sh->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), rc, e;
	size_t n;

	if (fd < 0) {
		e = errno;
		return ds_fail(ctx, -e, "%s: %s", sh->path, strerror(e));
	}
	rc = ds_st_read(ctx, fd, sh->path, i, sh, &t, &n);
	close(fd);
	if (rc)
		return rc;
	if (!(all = realloc(m->tensors, (m->ntensors + n + 1) * sizeof(*t)))) {
		ds_tensors_free(t, n);
		return -ENOMEM;
	}
	/* The names move into m; only the array of this shard is freed. */
	if (n)
		memcpy(all + m->ntensors, t, n * sizeof(*t));
	m->tensors = all;
	m->ntensors += n;
	free(t);
	return 0;
}

/* By name, then shard, so a duplicate is reported in shard order. */
static int by_name(const void *a, const void *b)
{
	const struct ds_tensor *x = *(const struct ds_tensor *const *)a;
	const struct ds_tensor *y = *(const struct ds_tensor *const *)b;
	int c = strcmp(x->name, y->name);

	return c ? c : (x->shard > y->shard) - (x->shard < y->shard);
}

/* m->byname; a tensor in two shards is an error. */
static int index_names(ds_ctx *ctx, struct ds_model *m)
{
	const struct ds_tensor **p = malloc((m->ntensors + 1) * sizeof(*p));
	const struct ds_tensor *a, *b;
	int rc = 0;

	m->byname = malloc((m->ntensors + 1) * sizeof(*m->byname));
	if (!p || !m->byname) {
		free(p);
		return -ENOMEM;
	}
	for (size_t i = 0; i < m->ntensors; i++)
		p[i] = &m->tensors[i];
	qsort(p, m->ntensors, sizeof(*p), by_name);
	for (size_t i = 0; i < m->ntensors; i++) {
		m->byname[i] = (size_t)(p[i] - m->tensors);
		a = i ? p[i - 1] : NULL;
		b = p[i];
		if (!rc && a && strcmp(a->name, b->name) == 0)
			rc = ds_fail(ctx, DS_E_FORMAT, "tensor '%s' is in two "
				     "shards: %s and %s", b->name,
				     m->shards[a->shard].path,
				     m->shards[b->shard].path);
	}
	free(p);
	return rc;
}

const struct ds_tensor *ds_model_find(const struct ds_model *m,
				      const char *name)
{
	size_t lo = 0, hi = m->ntensors;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct ds_tensor *t = &m->tensors[m->byname[mid]];
		int c = strcmp(name, t->name);

		if (c == 0)
			return t;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Each weight_map entry is where it says; extra tensors are kept, noted. */
static int check_weight_map(ds_ctx *ctx, const struct ds_model *m,
			    json_t *wmap)
{
	const struct ds_tensor *t;
	const char *k, *s;
	json_t *v;

	json_object_foreach(wmap, k, v) {
		s = json_string_value(v);
		if (!(t = ds_model_find(m, k)))
			return ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s' is "
				       "mapped to shard %s, but %s has no "
				       "tensor '%s'", m->index, k, s, s, k);
		if (strcmp(m->shards[t->shard].name, s) != 0)
			return ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s' is "
				       "mapped to shard %s, but it is in %s",
				       m->index, k, s,
				       m->shards[t->shard].name);
	}
	for (size_t i = 0; i < m->ntensors; i++) {
		t = &m->tensors[i];
		if (!json_object_get(wmap, t->name))
			ds_warn(ctx, "%s: tensor '%s' of shard %s is not in "
				"the weight_map; it is kept", m->index,
				t->name, m->shards[t->shard].name);
	}
	return 0;
}

/*
 * mergekit's BASE+ADAPTER: the last '+' of an argument that does not name
 * an existing path, with something on both sides; NULL otherwise.
 */
static const char *lora_split(const char *arg)
{
	const char *plus = strrchr(arg, '+');
	struct stat st;

	if (!plus || plus == arg || !plus[1] || stat(arg, &st) == 0)
		return NULL;
	return plus;
}

int ds_model_open(ds_ctx *ctx, const char *arg, ds_model **out)
{
	struct ds_model *m = calloc(1, sizeof(*m));
	json_t *wmap = NULL;
	const char *plus = NULL;
	char *base = NULL, *adir = NULL;
	int rc;

	*out = NULL;
	if (!m)
		return ds_fail(ctx, -ENOMEM, "%s: out of memory", arg);
	if ((plus = lora_split(arg)) &&
	    !(base = strndup(arg, (size_t)(plus - arg)))) {
		free(m);
		return ds_fail(ctx, -ENOMEM, "%s: out of memory", arg);
	}
	if (ds_pack_is(base ? base : arg))
		rc = ds_pack_open(ctx, base ? base : arg, m);
	else
		rc = resolve(ctx, base ? base : arg, m, &wmap);
	for (unsigned i = 0; rc == 0 && !m->pack && i < m->nshards; i++)
		rc = read_shard(ctx, m, i);
	if (rc == 0)
		rc = index_names(ctx, m);
	if (rc == 0 && wmap)
		rc = check_weight_map(ctx, m, wmap);
	if (rc == 0 && base && m->pack)
		rc = ds_fail(ctx, DS_E_USAGE, "%s: a LoRA adapter applies to a "
			     "model, not to a delta pack", arg);
	if (rc == 0 && base && (rc = adapter_dir(ctx, plus + 1, &adir)) == 0)
		rc = ds_lora_attach(ctx, m, adir);
	free(adir);
	if (rc == 0 && base) {
		free(m->arg);
		if (!(m->arg = strdup(arg)))
			rc = -ENOMEM;
	}
	free(base);
	json_decref(wmap);
	if (rc == -ENOMEM)
		ds_fail(ctx, rc, "%s: out of memory", arg);
	if (rc) {
		ds_model_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

/* ---- public accessors --------------------------------------------------- */

size_t ds_model_tensor_count(const ds_model *m)
{
	return m->ntensors;
}

int ds_model_tensor(const ds_model *m, size_t i, struct ds_tensor_info *info)
{
	const struct ds_tensor *t;

	if (i >= m->ntensors)
		return -EINVAL;
	t = &m->tensors[i];
	info->name = t->name;
	info->dtype = t->dtype;
	info->ndim = t->ndim;
	memcpy(info->shape, t->shape, sizeof(info->shape));
	info->numel = t->numel;
	info->nbytes = ds_tensor_nbytes(t);
	info->shard = t->shard;
	info->offset = m->shards[t->shard].data_off + t->begin;
	return 0;
}

unsigned ds_model_shard_count(const ds_model *m)
{
	return m->nshards;
}

const char *ds_model_shard_path(const ds_model *m, unsigned i)
{
	return i < m->nshards ? m->shards[i].path : NULL;
}

const char *ds_model_dir(const ds_model *m)
{
	return m->dir;
}

/* SPDX-License-Identifier: MIT */
/* safetensors.c - parse, validate and write safetensors headers */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include "common/ctx.h"
#include "inputs/model.h"

/* The limit huggingface/safetensors enforces; we refuse what it refuses. */
#define ST_MAX_HEADER 100000000ull

static const struct {
	const char *name;
	unsigned size;
} dtypes[DS_DT_COUNT] = {
	[DS_DT_BOOL] = { "BOOL", 1 },       [DS_DT_U8] = { "U8", 1 },
	[DS_DT_I8] = { "I8", 1 },           [DS_DT_U16] = { "U16", 2 },
	[DS_DT_I16] = { "I16", 2 },         [DS_DT_U32] = { "U32", 4 },
	[DS_DT_I32] = { "I32", 4 },         [DS_DT_U64] = { "U64", 8 },
	[DS_DT_I64] = { "I64", 8 },         [DS_DT_F8_E4M3] = { "F8_E4M3", 1 },
	[DS_DT_F8_E5M2] = { "F8_E5M2", 1 }, [DS_DT_F16] = { "F16", 2 },
	[DS_DT_BF16] = { "BF16", 2 },       [DS_DT_F32] = { "F32", 4 },
	[DS_DT_F64] = { "F64", 8 },
};

const char *ds_dtype_name(enum ds_dtype dt)
{
	return (unsigned)dt < DS_DT_COUNT ? dtypes[dt].name : NULL;
}

unsigned ds_dtype_size(enum ds_dtype dt)
{
	return (unsigned)dt < DS_DT_COUNT ? dtypes[dt].size : 0;
}

int ds_dtype_parse(const char *s, enum ds_dtype *out)
{
	for (unsigned i = 0; i < DS_DT_COUNT; i++) {
		if (strcmp(s, dtypes[i].name) == 0) {
			*out = (enum ds_dtype)i;
			return 0;
		}
	}
	return -1;
}

void ds_tensors_free(struct ds_tensor *t, size_t n)
{
	if (!t)
		return;
	for (size_t i = 0; i < n; i++)
		free(t[i].name);
	free(t);
}

/* ---- parsing ------------------------------------------------------------ */

/* Where an entry is being parsed, for the error messages. */
struct st_where {
	ds_ctx *ctx;
	const char *path;
	const char *name;       /* tensor */
};

/*
 * The offending value as compact JSON, cut short, so a message can say what
 * was found and not only what was expected.
 */
static const char *found(const json_t *v, char *buf, size_t size)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

	if (!s)
		snprintf(buf, size, "?");
	else if (strlen(s) < size)
		snprintf(buf, size, "%s", s);
	else
		snprintf(buf, size, "%.*s...", (int)size - 4, s);
	free(s);
	return buf;
}

/* A JSON integer >= 0 (jansson keeps integers and reals apart). */
static int get_u64(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int parse_dtype(const struct st_where *w, const json_t *v,
		       struct ds_tensor *t)
{
	char buf[64];

	if (!json_is_string(v) || ds_dtype_parse(json_string_value(v),
						 &t->dtype))
		return ds_fail(w->ctx, DS_E_FORMAT,
			       "%s: tensor '%s': unknown dtype %s (expected "
			       "one of BOOL, U8, I8, U16, I16, U32, I32, U64, "
			       "I64, F8_E4M3, F8_E5M2, F16, BF16, F32, F64)",
			       w->path, w->name, found(v, buf, sizeof(buf)));
	return 0;
}

/* Shape and element count; numel overflowing 64 bits is refused here. */
static int parse_shape(const struct st_where *w, const json_t *v,
		       struct ds_tensor *t)
{
	char buf[96];
	size_t i;
	json_t *d;

	if (!json_is_array(v))
		return ds_fail(w->ctx, DS_E_FORMAT,
			       "%s: tensor '%s': shape must be an array of "
			       "non-negative integers, found %s",
			       w->path, w->name, found(v, buf, sizeof(buf)));
	if (json_array_size(v) > DS_MAX_DIMS)
		return ds_fail(w->ctx, DS_E_FORMAT,
			       "%s: tensor '%s': shape has %zu dimensions, at "
			       "most %d are supported", w->path, w->name,
			       json_array_size(v), DS_MAX_DIMS);
	t->ndim = (unsigned)json_array_size(v);
	t->numel = 1;
	json_array_foreach(v, i, d) {
		if (get_u64(d, &t->shape[i]))
			return ds_fail(w->ctx, DS_E_FORMAT,
				       "%s: tensor '%s': shape[%zu] must be a "
				       "non-negative integer, found %s",
				       w->path, w->name, i,
				       found(d, buf, sizeof(buf)));
		if (ds_mul_u64(t->numel, t->shape[i], &t->numel))
			return ds_fail(w->ctx, DS_E_FORMAT,
				       "%s: tensor '%s': shape %s has more "
				       "than 2^64 elements", w->path, w->name,
				       found(v, buf, sizeof(buf)));
	}
	return 0;
}

static int parse_offsets(const struct st_where *w, const json_t *v,
			 struct ds_tensor *t)
{
	char buf[96];

	if (!json_is_array(v) || json_array_size(v) != 2 ||
	    get_u64(json_array_get(v, 0), &t->begin) ||
	    get_u64(json_array_get(v, 1), &t->end))
		return ds_fail(w->ctx, DS_E_FORMAT,
			       "%s: tensor '%s': data_offsets must be "
			       "[begin, end], two non-negative integers, "
			       "found %s", w->path, w->name,
			       found(v, buf, sizeof(buf)));
	if (t->begin > t->end)
		return ds_fail(w->ctx, DS_E_FORMAT,
			       "%s: tensor '%s': data_offsets [%" PRIu64 ", %"
			       PRIu64 "] begin after end", w->path, w->name,
			       t->begin, t->end);
	return 0;
}

/* Exactly dtype, shape and data_offsets: an unknown key is not ignored. */
static int check_keys(const struct st_where *w, json_t *e)
{
	static const char *const keys[] = { "dtype", "shape", "data_offsets" };
	const char *k;
	json_t *v;

	json_object_foreach(e, k, v) {
		if (strcmp(k, keys[0]) && strcmp(k, keys[1]) &&
		    strcmp(k, keys[2]))
			return ds_fail(w->ctx, DS_E_FORMAT,
				       "%s: tensor '%s': unknown key '%s' "
				       "(expected dtype, shape, data_offsets)",
				       w->path, w->name, k);
	}
	for (unsigned i = 0; i < 3; i++) {
		if (!json_object_get(e, keys[i]))
			return ds_fail(w->ctx, DS_E_FORMAT,
				       "%s: tensor '%s': missing key '%s' "
				       "(expected dtype, shape, data_offsets)",
				       w->path, w->name, keys[i]);
	}
	return 0;
}

/* One tensor entry; on success t->name is a copy the caller owns. */
static int parse_entry(const struct st_where *w, json_t *e,
		       struct ds_tensor *t)
{
	char buf[64];
	uint64_t nbytes;
	int rc;

	if (!json_is_object(e))
		return ds_fail(w->ctx, DS_E_FORMAT,
			       "%s: tensor '%s': expected an object with "
			       "dtype, shape and data_offsets, found %s",
			       w->path, w->name, found(e, buf, sizeof(buf)));
	if ((rc = check_keys(w, e)) ||
	    (rc = parse_dtype(w, json_object_get(e, "dtype"), t)) ||
	    (rc = parse_shape(w, json_object_get(e, "shape"), t)) ||
	    (rc = parse_offsets(w, json_object_get(e, "data_offsets"), t)))
		return rc;
	if (ds_mul_u64(t->numel, ds_dtype_size(t->dtype), &nbytes))
		return ds_fail(w->ctx, DS_E_FORMAT,
			       "%s: tensor '%s': %" PRIu64 " elements of %s "
			       "take more than 2^64 bytes", w->path, w->name,
			       t->numel, ds_dtype_name(t->dtype));
	if (t->end - t->begin != nbytes)
		return ds_fail(w->ctx, DS_E_FORMAT,
			       "%s: tensor '%s': data_offsets [%" PRIu64 ", %"
			       PRIu64 "] span %" PRIu64 " bytes, expected %"
			       PRIu64 " (%" PRIu64 " elements of %s)", w->path,
			       w->name, t->begin, t->end, t->end - t->begin,
			       nbytes, t->numel, ds_dtype_name(t->dtype));
	t->name = strdup(w->name);
	return t->name ? 0 : -ENOMEM;
}

static int check_metadata(ds_ctx *ctx, const char *path, json_t *meta)
{
	char buf[64];
	const char *k;
	json_t *v;

	if (!json_is_object(meta))
		return ds_fail(ctx, DS_E_FORMAT,
			       "%s: __metadata__ must be an object of strings, "
			       "found %s", path, found(meta, buf, sizeof(buf)));
	json_object_foreach(meta, k, v) {
		if (!json_is_string(v))
			return ds_fail(ctx, DS_E_FORMAT,
				       "%s: __metadata__ '%s' must be a "
				       "string, found %s", path, k,
				       found(v, buf, sizeof(buf)));
	}
	return 0;
}

/* Every entry of the header object, in the order of the text. */
static int parse_entries(ds_ctx *ctx, const char *path, json_t *root,
			 unsigned shard, struct ds_tensor *t, size_t *n)
{
	struct st_where w = { ctx, path, NULL };
	const char *k;
	json_t *v;
	int rc;

	json_object_foreach(root, k, v) {
		if (strcmp(k, "__metadata__") == 0) {
			if ((rc = check_metadata(ctx, path, v)))
				return rc;
			continue;
		}
		w.name = k;
		memset(&t[*n], 0, sizeof(t[*n]));
		if ((rc = parse_entry(&w, v, &t[*n])))
			return rc;
		t[(*n)++].shard = shard;
	}
	return 0;
}

/*
 * Data order.  Ties on begin are broken by end, so zero-byte tensors come
 * before the tensor that starts where they sit (the order huggingface/
 * safetensors uses), then by name, so the order never depends on qsort.
 */
static int by_offset(const void *a, const void *b)
{
	const struct ds_tensor *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return strcmp(x->name, y->name);
}

/*
 * The data of the tensors (tiled without holes) ends beyond the file: the
 * file was cut short or the offsets point past its end; either way the
 * first tensor that is not all there is named.
 */
static int past_end(ds_ctx *ctx, const char *path, size_t hlen,
		    const struct ds_tensor *t, size_t n, uint64_t data_size)
{
	size_t i = 0;

	while (i + 1 < n && t[i].end <= data_size)
		i++;
	return ds_fail(ctx, DS_E_FORMAT,
		       "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
		       "] go past the end of the data (%" PRIu64 " bytes): "
		       "truncated file or offsets past the end; file is %"
		       PRIu64 " bytes, expected %" PRIu64 " (8 + header %zu + "
		       "tensor data %" PRIu64 ")", path, t[i].name, t[i].begin,
		       t[i].end, data_size, 8 + hlen + data_size,
		       8 + hlen + t[n - 1].end, hlen, t[n - 1].end);
}

/* Sorted tensors must tile [0, data_size): no hole, no overlap, no tail. */
static int check_tiling(ds_ctx *ctx, const char *path, size_t hlen,
			const struct ds_tensor *t, size_t n, uint64_t data_size)
{
	uint64_t pos = 0;

	for (size_t i = 0; i < n; pos = t[i++].end) {
		if (t[i].begin == pos)
			continue;
		if (i == 0)
			return ds_fail(ctx, DS_E_FORMAT,
				       "%s: tensor '%s' begins at %" PRIu64
				       ": expected the data to begin at 0 "
				       "(a hole of %" PRIu64 " bytes)", path,
				       t[i].name, t[i].begin, t[i].begin);
		return ds_fail(ctx, DS_E_FORMAT,
			       "%s: tensor '%s' [%" PRIu64 ", %" PRIu64 ") and "
			       "tensor '%s' [%" PRIu64 ", %" PRIu64 ") %s: "
			       "expected '%s' to begin at %" PRIu64, path,
			       t[i - 1].name, t[i - 1].begin, t[i - 1].end,
			       t[i].name, t[i].begin, t[i].end,
			       t[i].begin > pos ? "leave a hole" : "overlap",
			       t[i].name, pos);
	}
	if (pos == data_size)
		return 0;
	/* Integers in JSON are below 2^63, so these sums cannot wrap. */
	if (pos > data_size)
		return past_end(ctx, path, hlen, t, n, data_size);
	return ds_fail(ctx, DS_E_FORMAT,
		       "%s: trailing bytes after the last tensor: file is %"
		       PRIu64 " bytes, expected %" PRIu64 " (8 + header %zu + "
		       "tensor data %" PRIu64 ")", path, 8 + hlen + data_size,
		       8 + hlen + pos, hlen, pos);
}

/* A header jansson refused, with what the refusal means here. */
static int json_fail(ds_ctx *ctx, const char *path, const json_error_t *err)
{
	const char *what = "header is not valid JSON";

	if (json_error_code(err) == json_error_duplicate_key)
		what = "header names a tensor twice (duplicate tensor name)";
	else if (json_error_code(err) == json_error_invalid_utf8)
		what = "header is not valid UTF-8 (tensor names must be UTF-8)";
	return ds_fail(ctx, DS_E_FORMAT, "%s: %s: %s (line %d, column %d)",
		       path, what, err->text, err->line, err->column);
}

int ds_st_parse(ds_ctx *ctx, const char *path, const char *json, size_t len,
		uint64_t data_size, unsigned shard,
		struct ds_tensor **out, size_t *n)
{
	struct ds_tensor *t = NULL;
	json_error_t err;
	json_t *root;
	int rc;

	*out = NULL;
	*n = 0;
	if (len == 0 || json[0] != '{')
		return ds_fail(ctx, DS_E_FORMAT,
			       "%s: header is not a JSON object: it begins "
			       "with byte 0x%02x, expected '{' (not a "
			       "safetensors file?)", path,
			       len ? (unsigned char)json[0] : 0);
	/* Duplicate names and invalid UTF-8 are refused by jansson itself. */
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
	if (!root)
		return json_fail(ctx, path, &err);
	if (!json_is_object(root))
		rc = ds_fail(ctx, DS_E_FORMAT, "%s: header is not a JSON "
			     "object", path);
	else if (!(t = calloc(json_object_size(root) + 1, sizeof(*t))))
		rc = -ENOMEM;
	else
		rc = parse_entries(ctx, path, root, shard, t, n);
	json_decref(root);
	if (rc == 0) {
		qsort(t, *n, sizeof(*t), by_offset);
		rc = check_tiling(ctx, path, len, t, *n, data_size);
	}
	if (rc) {
		ds_tensors_free(t, *n);
		*n = 0;
		return rc;
	}
	*out = t;
	return 0;
}

/* ---- reading a file ----------------------------------------------------- */

/* pread all of len bytes, retrying short reads and EINTR. */
static int pread_full(ds_ctx *ctx, int fd, const char *path, void *buf,
		      size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t r = pread(fd, p, len, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;

			return ds_fail(ctx, -e, "%s: %s", path, strerror(e));
		}
		if (r == 0)
			return ds_fail(ctx, DS_E_FORMAT, "%s: file shrank "
				       "while its header was read", path);
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* The 8-byte length, checked against the file before anything is sized. */
static int read_hlen(ds_ctx *ctx, int fd, const char *path, uint64_t size,
		     uint64_t *hlen)
{
	unsigned char le[8];
	int rc;

	if (size == 0)
		return ds_fail(ctx, DS_E_FORMAT, "%s: empty file, expected a "
			       "safetensors file", path);
	if (size < 8)
		return ds_fail(ctx, DS_E_FORMAT, "%s: file is %" PRIu64 " "
			       "bytes, shorter than the 8-byte header length",
			       path, size);
	if ((rc = pread_full(ctx, fd, path, le, 8, 0)))
		return rc;
	*hlen = 0;
	for (int i = 7; i >= 0; i--)
		*hlen = *hlen << 8 | le[i];
	if (*hlen == 0)
		return ds_fail(ctx, DS_E_FORMAT, "%s: header length is 0, "
			       "expected a JSON header", path);
	if (*hlen > ST_MAX_HEADER)
		return ds_fail(ctx, DS_E_FORMAT, "%s: header length %" PRIu64
			       " exceeds the limit of %llu bytes", path, *hlen,
			       ST_MAX_HEADER);
	if (*hlen > size - 8)
		return ds_fail(ctx, DS_E_FORMAT, "%s: header length %" PRIu64
			       " goes beyond the end of the file (%" PRIu64
			       " bytes)", path, *hlen, size);
	return 0;
}

const char *ds_shape_str(const uint64_t *shape, unsigned ndim, char *buf,
			 size_t len)
{
	size_t o = (size_t)snprintf(buf, len, "[");

	for (unsigned d = 0; d < ndim && o < len; d++)
		o += (size_t)snprintf(buf + o, len - o, "%s%llu", d ? ", " : "",
				      (unsigned long long)shape[d]);
	if (o < len)
		snprintf(buf + o, len - o, "]");
	return buf;
}

int ds_regular_size(ds_ctx *ctx, int fd, const char *path, uint64_t *size)
{
	struct stat st;

	if (fstat(fd, &st)) {
		int e = errno;

		return ds_fail(ctx, -e, "%s: %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode))
		return ds_fail(ctx, DS_E_FORMAT, "%s: not a regular file",
			       path);
	*size = (uint64_t)st.st_size;
	return 0;
}

/* The header text of an open file (a malloc'd copy, not NUL-terminated). */
static int read_header(ds_ctx *ctx, int fd, const char *path, char **hdr,
		       uint64_t *hlen, uint64_t *size)
{
	int rc;

	*hdr = NULL;
	if ((rc = ds_regular_size(ctx, fd, path, size)) ||
	    (rc = read_hlen(ctx, fd, path, *size, hlen)))
		return rc;
	if (!(*hdr = malloc(*hlen)))
		return ds_fail(ctx, -ENOMEM, "%s: out of memory for a header "
			       "of %" PRIu64 " bytes", path, *hlen);
	if ((rc = pread_full(ctx, fd, path, *hdr, *hlen, 8))) {
		free(*hdr);
		*hdr = NULL;
	}
	return rc;
}

int ds_st_read(ds_ctx *ctx, int fd, const char *path, unsigned shard,
	       struct ds_shard *sh, struct ds_tensor **out, size_t *n)
{
	uint64_t size = 0, hlen = 0;
	char *hdr;
	int rc;

	*out = NULL;
	*n = 0;
	if ((rc = read_header(ctx, fd, path, &hdr, &hlen, &size)))
		return rc;
	rc = ds_st_parse(ctx, path, hdr, hlen, size - 8 - hlen, shard, out, n);
	free(hdr);
	if (rc == 0) {
		sh->data_off = 8 + hlen;
		sh->size = size;
	}
	return rc;
}

int ds_st_metadata(ds_ctx *ctx, const char *path, const char *key,
		   char **value)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), rc;
	uint64_t size, hlen;
	json_error_t err;
	json_t *root = NULL, *v;
	char *hdr;

	*value = NULL;
	if (fd < 0) {
		int e = errno;

		return ds_fail(ctx, -e, "%s: %s", path, strerror(e));
	}
	rc = read_header(ctx, fd, path, &hdr, &hlen, &size);
	close(fd);
	if (rc == 0 && !(root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES,
					   &err)))
		rc = json_fail(ctx, path, &err);
	free(hdr);
	v = json_object_get(json_object_get(root, "__metadata__"), key);
	if (rc == 0 && json_is_string(v) &&
	    !(*value = strdup(json_string_value(v))))
		rc = ds_fail(ctx, -ENOMEM, "%s: out of memory", path);
	json_decref(root);
	return rc;
}

/* ---- writing ------------------------------------------------------------ */

/* Append v as a JSON integer; -1 beyond 2^63 - 1 or out of memory. */
static int append_u64(json_t *a, uint64_t v)
{
	if (v > INT64_MAX)
		return -1;
	return json_array_append_new(a, json_integer((json_int_t)v));
}

/* {"dtype":..,"shape":[..],"data_offsets":[b,e]}; NULL when unencodable. */
static json_t *tensor_json(const struct ds_tensor *t)
{
	json_t *e = json_object(), *shape = json_array(), *offs = json_array();
	const char *dt = ds_dtype_name(t->dtype);
	int bad = !e || !shape || !offs || !dt || t->ndim > DS_MAX_DIMS;

	for (unsigned i = 0; !bad && i < t->ndim; i++)
		bad = append_u64(shape, t->shape[i]);
	bad = bad || append_u64(offs, t->begin) || append_u64(offs, t->end) ||
	      json_object_set_new(e, "dtype", json_string(dt)) ||
	      json_object_set(e, "shape", shape) ||
	      json_object_set(e, "data_offsets", offs);
	json_decref(shape);
	json_decref(offs);
	if (bad) {
		json_decref(e);
		return NULL;
	}
	return e;
}

/*
 * The header object, keys in insertion order (jansson >= 2.14 keeps it):
 * __metadata__ first, then the tensors in the order given.
 */
static json_t *header_json(const struct ds_tensor *t, size_t n,
			   const char *const *meta)
{
	json_t *root = json_object(), *m;
	int bad = !root;

	if (!bad && meta) {
		bad = !(m = json_object()) ||
		      json_object_set_new(root, "__metadata__", m);
		for (size_t i = 0; !bad && meta[i]; i += 2)
			bad = !meta[i + 1] ||
			      json_object_set_new(m, meta[i],
						  json_string(meta[i + 1]));
	}
	for (size_t i = 0; !bad && i < n; i++) {
		/* A repeated or reserved name would silently replace a key. */
		bad = !t[i].name || json_object_get(root, t[i].name) ||
		      strcmp(t[i].name, "__metadata__") == 0 ||
		      json_object_set_new(root, t[i].name, tensor_json(&t[i]));
	}
	if (bad) {
		json_decref(root);
		return NULL;
	}
	return root;
}

int ds_st_build(const struct ds_tensor *t, size_t n, const char *const *meta,
		char **buf, size_t *len)
{
	json_t *root = header_json(t, n, meta);
	size_t jlen, pad;
	char *text, *b;

	*buf = NULL;
	*len = 0;
	/*
	 * jansson does not tell a refused value (bad UTF-8, duplicate name,
	 * offset beyond 2^63) from a failed allocation; the inputs here are
	 * small, so a failure is taken to be the caller's data.
	 */
	if (!root)
		return -EINVAL;
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (!text)
		return -ENOMEM;
	jlen = strlen(text);
	pad = (8 - (8 + jlen) % 8) % 8;   /* tensor data starts 8-aligned */
	if (!(b = malloc(8 + jlen + pad))) {
		free(text);
		return -ENOMEM;
	}
	for (int i = 0; i < 8; i++)
		b[i] = (char)((uint64_t)(jlen + pad) >> (8 * i));
	memcpy(b + 8, text, jlen);
	memset(b + 8 + jlen, ' ', pad);
	free(text);
	*buf = b;
	*len = 8 + jlen + pad;
	return 0;
}

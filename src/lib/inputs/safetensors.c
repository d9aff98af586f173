/* SPDX-License-Identifier: MIT */
/* safetensors.c - parse, validate and write safetensors headers */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
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

/* The limit huggingface/safetensors enforces; we refuse what it refuses. */
#define ST_MAX_HEADER 100000000ull

/* Every dtype of the format with its width in bits, as the reference has it. */
static const struct {
	const char *name;
	unsigned bits;
} dtypes[DS_DT_COUNT] = {
	[DS_DT_BOOL] = { "BOOL", 8 },         [DS_DT_U8] = { "U8", 8 },
	[DS_DT_I8] = { "I8", 8 },             [DS_DT_U16] = { "U16", 16 },
	[DS_DT_I16] = { "I16", 16 },          [DS_DT_U32] = { "U32", 32 },
	[DS_DT_I32] = { "I32", 32 },          [DS_DT_U64] = { "U64", 64 },
	[DS_DT_I64] = { "I64", 64 },          [DS_DT_F8_E4M3] = { "F8_E4M3", 8 },
	[DS_DT_F8_E5M2] = { "F8_E5M2", 8 },   [DS_DT_F16] = { "F16", 16 },
	[DS_DT_BF16] = { "BF16", 16 },        [DS_DT_F32] = { "F32", 32 },
	[DS_DT_F64] = { "F64", 64 },          [DS_DT_F8_E8M0] = { "F8_E8M0", 8 },
	[DS_DT_F8_E4M3FNUZ] = { "F8_E4M3FNUZ", 8 },
	[DS_DT_F8_E5M2FNUZ] = { "F8_E5M2FNUZ", 8 },
	[DS_DT_F4] = { "F4", 4 },             [DS_DT_F6_E2M3] = { "F6_E2M3", 6 },
	[DS_DT_F6_E3M2] = { "F6_E3M2", 6 },   [DS_DT_C64] = { "C64", 64 },
};

const char *ds_dtype_name(enum ds_dtype dt)
{
	return (unsigned)dt < DS_DT_COUNT ? dtypes[dt].name : NULL;
}

unsigned ds_dtype_bits(enum ds_dtype dt)
{
	return (unsigned)dt < DS_DT_COUNT ? dtypes[dt].bits : 0;
}

/* 0 for the sub-byte dtypes: no element of theirs is a whole byte. */
unsigned ds_dtype_size(enum ds_dtype dt)
{
	unsigned b = ds_dtype_bits(dt);

	return b % 8 ? 0 : b / 8;
}

/* The reference's rule: numel x bits must not overflow and must be a whole
 * number of bytes (so an F4 tensor has an even number of elements). */
int ds_dtype_nbytes(enum ds_dtype dt, uint64_t numel, uint64_t *nbytes)
{
	uint64_t bits;

	if (ds_mul_u64(numel, ds_dtype_bits(dt), &bits))
		return -EOVERFLOW;
	if (bits % 8)
		return -EINVAL;
	*nbytes = bits / 8;
	return 0;
}

/* A dtype named by len bytes of s (which may hold a NUL); 0 or -1. */
static int dtype_lookup(const char *s, size_t len, enum ds_dtype *out)
{
	for (unsigned i = 0; i < DS_DT_COUNT; i++) {
		if (strlen(dtypes[i].name) == len &&
		    memcmp(s, dtypes[i].name, len) == 0) {
			*out = (enum ds_dtype)i;
			return 0;
		}
	}
	return -1;
}

int ds_dtype_parse(const char *s, enum ds_dtype *out)
{
	return dtype_lookup(s, strlen(s), out);
}

void ds_tensors_free(struct ds_tensor *t, size_t n)
{
	if (!t)
		return;
	for (size_t i = 0; i < n; i++)
		free(t[i].name);
	free(t);
}

/* ---- the header's JSON -------------------------------------------------- */

/*
 * Headers are read by a JSON reader of their own, not by a general library:
 * what is accepted must be what the reference reader (huggingface/
 * safetensors, through serde_json) accepts, and a general library cannot
 * tell -0 from 0, stops at 2^63 - 1 and reports a duplicate key without
 * saying where it is.  As the reference:
 *  - UTF-8 text; after the object only JSON whitespace (space, tab, LF, CR);
 *  - at most 127 arrays and objects nested (serde_json's limit), numbers
 *    within the range of a double, anywhere;
 *  - shape and data_offsets hold integers 0 .. 2^64 - 1 written without
 *    sign, fraction or exponent: -0, 8.0 and 8e0 are not integers;
 *  - a tensor entry is an object with dtype, shape and data_offsets, each
 *    once; any other key is ignored (and noted); __metadata__ is null or
 *    an object of strings, given once.
 * Beyond the reference (it keeps the last of duplicates and takes U+0000;
 * tests/ref/strules.py lists these with the reasons): the header must
 * begin with '{' (the format says so), a tensor name or a __metadata__ key
 * may not appear twice (the format forbids duplicates), a tensor entry
 * must be an object and a dtype a string, no tensor name and nothing in
 * __metadata__ may hold U+0000 (they are C strings here, and a NUL would
 * cut them short), and a shape has at most DS_MAX_DIMS dimensions.
 */
#define ST_MAX_DEPTH 127

/* A header being parsed: the tensors so far and what the rules remember. */
struct st_header {
	struct ds_tensor *t;
	size_t n, cap;
	unsigned shard;
	bool meta_seen;
	char **mkeys;               /* __metadata__ keys, for duplicates */
	size_t nmkeys, mcap;
	const char *want;           /* the __metadata__ key asked for */
	char *value;                /* its value (malloc'd) */
	size_t extra;               /* keys ignored in tensor entries */
	size_t extra_t;             /* the tensor of the first */
	const char *extra_k, *extra_e;  /* its key as written */
};

/* The reader: the text and a cursor, and the last string it decoded. */
struct jr {
	ds_ctx *ctx;
	const char *path;
	const char *s, *p, *e;
	unsigned depth;             /* arrays and objects open */
	char *buf;                  /* the last string, decoded, NUL-ended */
	size_t len, cap;
	bool nul;                   /* it holds U+0000 */
	const char *raw, *raw_e;    /* it as written, without the quotes */
};

static void where(const struct jr *j, const char *q, int *line, int *col)
{
	const char *l = j->s;

	*line = 1;
	for (const char *c = j->s; c < q; c++)
		if (*c == '\n') {
			(*line)++;
			l = c + 1;
		}
	*col = (int)(q - l) + 1;
}

/* An error at the cursor: "PATH: header WHAT (line L, column C)". */
static int at_fail(struct jr *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int at_fail(struct jr *j, const char *fmt, ...)
{
	char what[512];
	va_list ap;
	int line, col;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	where(j, j->p, &line, &col);
	return ds_fail(j->ctx, DS_E_FORMAT, "%s: header %s (line %d, column "
		       "%d)", j->path, what, line, col);
}

/* What is at the cursor, for "expected X, found Y". */
static const char *here(const struct jr *j, char *b, size_t n)
{
	unsigned c;

	if (j->p >= j->e)
		return "the end of the header";
	c = (unsigned char)*j->p;
	if (c > 0x20 && c < 0x7f)
		snprintf(b, n, "'%c'", c);
	else
		snprintf(b, n, "byte 0x%02x", c);
	return b;
}

static int expected(struct jr *j, const char *what)
{
	char b[16];

	return at_fail(j, "is not valid JSON: expected %s, found %s", what,
		       here(j, b, sizeof(b)));
}

/* The text a..b as a message shows it: one line, cut short. */
static const char *raw_text(const char *a, const char *b, char *out,
			    size_t n)
{
	size_t k = (size_t)(b - a), o = 0;

	for (size_t i = 0; i < k && o + 4 < n; i++)
		out[o++] = strchr("\t\n\r", a[i]) ? ' ' : a[i];
	if (o < k)
		memcpy(out + (o > n - 4 ? n - 4 : o), "...", 4);
	else
		out[o] = '\0';
	return out;
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int peek(struct jr *j)
{
	while (j->p < j->e && is_ws(*j->p))
		j->p++;
	return j->p < j->e ? (unsigned char)*j->p : -1;
}

/* Step over c, which must come next (after whitespace). */
static int expect(struct jr *j, char c, const char *what)
{
	if (peek(j) != (unsigned char)c)
		return expected(j, what);
	j->p++;
	return 0;
}

/* Step into an array or object at the cursor. */
static int enter(struct jr *j)
{
	if (++j->depth > ST_MAX_DEPTH)
		return at_fail(j, "nests arrays and objects more than %d deep, "
			       "the most the reference reader takes",
			       ST_MAX_DEPTH);
	j->p++;
	return 0;
}

/* After a member or element: 1 at the closing c, 0 after a comma. */
static int next_item(struct jr *j, char close, const char *what)
{
	int c = peek(j);

	if (c == ',') {
		j->p++;
		return 0;
	}
	if (c != (unsigned char)close)
		return expected(j, what);
	j->p++;
	j->depth--;
	return 1;
}

/* 1 (and the cursor past it) when the container opened is empty. */
static int empty_container(struct jr *j, char close)
{
	if (peek(j) != (unsigned char)close)
		return 0;
	j->p++;
	j->depth--;
	return 1;
}

/* ---- strings ---- */

static int put(struct jr *j, const char *b, size_t n)
{
	if (j->len + n + 1 > j->cap) {
		size_t cap = j->cap ? j->cap : 64;
		char *nb;

		while (j->len + n + 1 > cap)
			cap *= 2;
		if (!(nb = realloc(j->buf, cap)))
			return ds_fail(j->ctx, -ENOMEM, "%s: out of memory "
				       "reading the header", j->path);
		j->buf = nb;
		j->cap = cap;
	}
	memcpy(j->buf + j->len, b, n);
	j->len += n;
	j->buf[j->len] = '\0';
	return 0;
}

/* Four hex digits after \u; -1 when they are not. */
static long hex4(const char *p, const char *e)
{
	long v = 0;

	if (e - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int c = p[i], d = c >= '0' && c <= '9' ? c - '0' :
				  c >= 'a' && c <= 'f' ? c - 'a' + 10 :
				  c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;

		if (d < 0)
			return -1;
		v = v << 4 | d;
	}
	return v;
}

/* \uXXXX (a surrogate pair when it must) at the cursor, as UTF-8. */
static int unicode_escape(struct jr *j)
{
	long cp = hex4(j->p + 2, j->e), lo;
	char u[4];
	size_t n;

	if (cp < 0)
		return at_fail(j, "is not valid JSON: \\u must be followed by "
			       "four hex digits");
	j->p += 6;
	if (cp >= 0xdc00 && cp <= 0xdfff)
		return at_fail(j, "is not valid JSON: \\u%04lx is half of a "
			       "surrogate pair, alone", cp);
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (j->e - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u' ||
		    (lo = hex4(j->p + 2, j->e)) < 0xdc00 || lo > 0xdfff)
			return at_fail(j, "is not valid JSON: \\u%04lx is half "
				       "of a surrogate pair, alone", cp);
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		j->p += 6;
	}
	j->nul |= cp == 0;
	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | cp >> 6);
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | cp >> 12);
		u[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | cp >> 18);
		u[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		u[2] = (char)(0x80 | (cp >> 6 & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return put(j, u, n);
}

static int escape(struct jr *j)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *k;

	if (j->e - j->p >= 2 && j->p[1] == 'u')
		return unicode_escape(j);
	if (j->e - j->p < 2 || !j->p[1] || !(k = strchr(from, j->p[1])))
		return at_fail(j, "is not valid JSON: unknown escape in a "
			       "string");
	j->p += 2;
	return put(j, &to[k - from], 1);
}

/* The string at the cursor (a '"'), decoded into j->buf. */
static int read_string(struct jr *j)
{
	const char *run;
	int rc;

	j->len = 0;
	j->nul = false;
	if ((rc = put(j, "", 0)))
		return rc;
	j->raw = ++j->p;
	for (;;) {
		for (run = j->p; j->p < j->e && *j->p != '"' &&
		     *j->p != '\\' && (unsigned char)*j->p >= 0x20; j->p++)
			;
		if ((rc = put(j, run, (size_t)(j->p - run))))
			return rc;
		if (j->p == j->e)
			return at_fail(j, "is not valid JSON: a string is not "
				       "closed");
		if (*j->p == '"')
			break;
		if (*j->p != '\\')
			return at_fail(j, "is not valid JSON: control character "
				       "0x%02x in a string (write it as "
				       "\\u%04x)", (unsigned char)*j->p,
				       (unsigned char)*j->p);
		if ((rc = escape(j)))
			return rc;
	}
	j->raw_e = j->p++;
	return 0;
}

/* ---- numbers and other values ---- */

enum jnum { JN_UINT, JN_BIG, JN_NEGZERO, JN_OTHER };

static bool digit(const struct jr *j, const char *q)
{
	return q < j->e && *q >= '0' && *q <= '9';
}

/*
 * A number is refused where its value is beyond a double (serde_json
 * refuses it), whatever the key.  d..de are the digits without the point,
 * lead the count of them before it, x the exponent.
 */
static bool beyond_double(const char *d, const char *de, long lead, long x)
{
	char b[64];
	size_t n = 0;
	long e10;

	while (d < de && (*d == '0' || *d == '.')) {
		lead -= *d == '0';
		d++;
	}
	if (d == de)
		return false;           /* zero */
	e10 = lead - 1 + x;             /* the power of ten of the first digit */
	if (e10 != 308)
		return e10 > 308;
	/* Near DBL_MAX: the first digits decide. */
	n = (size_t)snprintf(b, sizeof(b), "0.");
	for (; d < de && n < 40; d++)
		if (*d != '.')
			b[n++] = *d;
	snprintf(b + n, sizeof(b) - n, "e309");
	return isinf(strtod(b, NULL));
}

/* The number at the cursor: its kind, and its value when JN_UINT. */
static int read_number(struct jr *j, enum jnum *kind, uint64_t *v)
{
	const char *q = j->p, *d0, *me;
	bool neg = *q == '-', frac = false, big = false;
	long lead = 0, x = 0, xs = 1;

	*v = 0;
	d0 = q += neg;
	if (!digit(j, q))
		return j->p = q, expected(j, "a digit after '-'");
	if (*q == '0') {
		q++;            /* "01" ends at the 0 and fails after it */
		lead = 1;
	}
	for (; lead == 0 && digit(j, q); q++)
		big |= ds_mul_u64(*v, 10, v) ||
		       ds_add_u64(*v, (uint64_t)(*q - '0'), v);
	if (lead == 0)
		lead = q - d0;
	if (q < j->e && *q == '.') {
		frac = true;
		if (!digit(j, ++q))
			return j->p = q, expected(j, "a digit after '.'");
		while (digit(j, q))
			q++;
	}
	me = q;
	if (q < j->e && (*q == 'e' || *q == 'E')) {
		frac = true;
		q++;
		if (q < j->e && (*q == '+' || *q == '-'))
			xs = *q++ == '-' ? -1 : 1;
		if (!digit(j, q))
			return j->p = q, expected(j, "a digit in the exponent");
		for (; digit(j, q); q++)
			if (x < 1000000000)
				x = x * 10 + (*q - '0');
	}
	if ((big || frac) && beyond_double(d0, me, lead, xs * x))
		return at_fail(j, "holds a number beyond the range of a "
			       "double: %.*s", (int)(q - j->p < 40 ? q - j->p :
						     40), j->p);
	j->p = q;
	if (neg)
		*kind = *v == 0 && !frac && !big ? JN_NEGZERO : JN_OTHER;
	else
		*kind = frac ? JN_OTHER : big ? JN_BIG : JN_UINT;
	return 0;
}

static int literal(struct jr *j)
{
	static const char *const words[] = { "true", "false", "null" };

	for (unsigned i = 0; i < 3; i++) {
		size_t n = strlen(words[i]);

		if ((size_t)(j->e - j->p) >= n && !memcmp(j->p, words[i], n)) {
			j->p += n;
			return 0;
		}
	}
	return expected(j, "a value");
}

static int skip_value(struct jr *j);

/* The rest of an object or array just entered, its values unread. */
static int skip_members(struct jr *j, bool object)
{
	char close = object ? '}' : ']';
	int rc;

	if (empty_container(j, close))
		return 0;
	do {
		if (object && (peek(j) != '"' ? (rc = expected(j, "a key in "
					       "quotes")) : (rc = read_string(j)) ||
			       (rc = expect(j, ':', "':'"))))
			return rc;
		if ((rc = skip_value(j)))
			return rc;
	} while ((rc = next_item(j, close, object ? "',' or '}'" :
				 "',' or ']'")) == 0);
	return rc < 0 ? rc : 0;
}

/* Read over any value, checking it as the reference does. */
static int skip_value(struct jr *j)
{
	enum jnum k;
	uint64_t v;
	int c = peek(j), rc;

	if (c == '{' || c == '[')
		return (rc = enter(j)) ? rc : skip_members(j, c == '{');
	if (c == '"')
		return read_string(j);
	if (c == '-' || (c >= '0' && c <= '9'))
		return read_number(j, &k, &v);
	return literal(j);
}

/* ---- the header's structure ---- */

/* The raw text of the value at the cursor, which is read over. */
static int value_text(struct jr *j, char *out, size_t n)
{
	const char *a;
	int rc;

	peek(j);
	a = j->p;
	if ((rc = skip_value(j)))
		return rc;
	raw_text(a, j->p, out, n);
	return 0;
}

static int entry_fail(struct jr *j, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int entry_fail(struct jr *j, const char *name, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return ds_fail(j->ctx, DS_E_FORMAT, "%s: tensor '%s': %s", j->path,
		       name, what);
}

static int parse_dtype(struct jr *j, struct ds_tensor *t)
{
	char names[256] = "", v[64];
	size_t o = 0;
	int rc;

	if (peek(j) == '"') {
		if ((rc = read_string(j)))
			return rc;
		if (!j->nul && !dtype_lookup(j->buf, j->len, &t->dtype))
			return 0;
		raw_text(j->raw - 1, j->raw_e + 1, v, sizeof(v));
	} else if ((rc = value_text(j, v, sizeof(v)))) {
		return rc;
	}
	for (unsigned i = 0; i < DS_DT_COUNT; i++)
		o += (size_t)snprintf(names + o, sizeof(names) - o, "%s%s",
				      i ? ", " : "", dtypes[i].name);
	return entry_fail(j, t->name, "unknown dtype %s (expected one of %s)",
			  v, names);
}

/* A value that should be an integer 0 .. 2^64 - 1: what kind it is. */
static int scan_u64(struct jr *j, uint64_t *v, enum jnum *k)
{
	int c = peek(j);

	*k = JN_OTHER;
	if (c == '-' || (c >= '0' && c <= '9'))
		return read_number(j, k, v);
	return skip_value(j);
}

/* Why a value a..b of kind k is not an integer of 64 bits. */
static int not_u64(struct jr *j, const struct ds_tensor *t, const char *what,
		   enum jnum k, const char *a, const char *b)
{
	char text[96];

	raw_text(a, b, text, sizeof(text));
	if (k == JN_BIG)
		return entry_fail(j, t->name, "%s %s holds an integer beyond "
				  "2^64 - 1", what, text);
	return entry_fail(j, t->name, "%s must be %s, found %s%s", what,
			  *what == 's' ? "a non-negative integer" :
			  "[begin, end], two non-negative integers", text,
			  k == JN_NEGZERO ? " (-0 is a negative zero, not an "
			  "unsigned integer)" : "");
}

static int parse_shape(struct jr *j, struct ds_tensor *t)
{
	char what[32], v[96];
	enum jnum k;
	const char *a;
	int rc;

	if (peek(j) != '[')
		return (rc = value_text(j, v, sizeof(v))) ? rc :
		       entry_fail(j, t->name, "shape must be an array of "
				  "non-negative integers, found %s", v);
	if ((rc = enter(j)) || empty_container(j, ']'))
		return rc;
	t->ndim = 0;
	do {
		if (t->ndim == DS_MAX_DIMS)
			return entry_fail(j, t->name, "shape has more than %d "
					  "dimensions, the most dare-stream "
					  "takes", DS_MAX_DIMS);
		snprintf(what, sizeof(what), "shape[%u]", t->ndim);
		peek(j);
		a = j->p;
		if ((rc = scan_u64(j, &t->shape[t->ndim++], &k)))
			return rc;
		if (k != JN_UINT)
			return not_u64(j, t, what, k, a, j->p);
	} while ((rc = next_item(j, ']', "',' or ']' in shape")) == 0);
	return rc < 0 ? rc : 0;
}

/* [begin, end]: read over once (syntax, the text a message shows), then
 * read for the two integers. */
static int parse_offsets(struct jr *j, struct ds_tensor *t)
{
	enum jnum k0 = JN_OTHER, k1 = JN_OTHER;
	const char *a, *b;
	bool ok;
	int rc;

	peek(j);
	a = j->p;
	if ((rc = skip_value(j)))
		return rc;
	b = j->p;
	j->p = a + 1;
	ok = *a == '[' && !scan_u64(j, &t->begin, &k0) && k0 == JN_UINT &&
	     peek(j) == ',' && (j->p++, !scan_u64(j, &t->end, &k1)) &&
	     k1 == JN_UINT && peek(j) == ']';
	j->p = b;
	if (!ok)
		return not_u64(j, t, "data_offsets", k0 == JN_UINT ? k1 : k0,
			       a, b);
	if (t->begin > t->end)
		return entry_fail(j, t->name, "data_offsets [%" PRIu64 ", %"
				  PRIu64 "] begin after end", t->begin, t->end);
	return 0;
}

enum { K_DTYPE, K_SHAPE, K_OFFSETS, K_COUNT };
static const char *const entry_keys[K_COUNT] = {
	"dtype", "shape", "data_offsets"
};

/* The key just read, as one of entry_keys, or K_COUNT. */
static unsigned entry_key(const struct jr *j)
{
	for (unsigned k = 0; k < K_COUNT; k++)
		if (j->len == strlen(entry_keys[k]) &&
		    !memcmp(j->buf, entry_keys[k], j->len))
			return k;
	return K_COUNT;
}

/* Elements, bits and bytes of an entry, as the reference has them: the
 * element count and the bit count may not overflow, the bits make whole
 * bytes, and data_offsets span exactly those. */
static int check_size(struct jr *j, struct ds_tensor *t)
{
	char shape[256];
	uint64_t nbytes;
	int rc;

	t->numel = 1;
	for (unsigned d = 0; d < t->ndim; d++)
		if (ds_mul_u64(t->numel, t->shape[d], &t->numel))
			return entry_fail(j, t->name, "shape %s has more than "
					  "2^64 elements", ds_shape_str(
					  t->shape, t->ndim, shape,
					  sizeof(shape)));
	rc = ds_dtype_nbytes(t->dtype, t->numel, &nbytes);
	if (rc == -EOVERFLOW)
		return entry_fail(j, t->name, "%" PRIu64 " elements of %s "
				  "take 2^64 bits or more", t->numel,
				  ds_dtype_name(t->dtype));
	if (rc)
		return entry_fail(j, t->name, "%" PRIu64 " elements of %s "
				  "(%u bits each) are not a whole number of "
				  "bytes", t->numel, ds_dtype_name(t->dtype),
				  ds_dtype_bits(t->dtype));
	if (t->end - t->begin != nbytes)
		return entry_fail(j, t->name, "data_offsets [%" PRIu64 ", %"
				  PRIu64 "] span %" PRIu64 " bytes, expected %"
				  PRIu64 " (%" PRIu64 " elements of %s)",
				  t->begin, t->end, t->end - t->begin, nbytes,
				  t->numel, ds_dtype_name(t->dtype));
	return 0;
}

/* A key of an entry other than the three: read over, remembered once. */
static int extra_key(struct jr *j, struct st_header *h)
{
	if (h->extra++ == 0) {
		h->extra_t = h->n;
		h->extra_k = j->raw;
		h->extra_e = j->raw_e;
	}
	return skip_value(j);
}

/* The member of one key of an entry (the key just read). */
static int entry_member(struct jr *j, struct st_header *h, unsigned *have)
{
	struct ds_tensor *t = &h->t[h->n];
	unsigned k = entry_key(j);
	int rc;

	if (k < K_COUNT && (*have & 1u << k))
		return entry_fail(j, t->name, "key '%s' appears twice in its "
				  "entry", entry_keys[k]);
	if ((rc = expect(j, ':', "':' after a key")))
		return rc;
	if (k == K_COUNT)
		return extra_key(j, h);
	*have |= 1u << k;
	return k == K_DTYPE ? parse_dtype(j, t) : k == K_SHAPE ?
	       parse_shape(j, t) : parse_offsets(j, t);
}

/* The entry of tensor h->t[h->n] (its name set); its size is checked
 * later, after the names (a name given twice is what to report then). */
static int parse_entry(struct jr *j, struct st_header *h)
{
	struct ds_tensor *t = &h->t[h->n];
	unsigned have = 0;
	char v[64];
	int rc;

	if (peek(j) != '{')
		return (rc = value_text(j, v, sizeof(v))) ? rc :
		       entry_fail(j, t->name, "expected an object with dtype, "
				  "shape and data_offsets, found %s", v);
	if ((rc = enter(j)))
		return rc;
	if (!empty_container(j, '}')) {
		do {
			if (peek(j) != '"')
				return expected(j, "a key in quotes");
			if ((rc = read_string(j)) ||
			    (rc = entry_member(j, h, &have)))
				return rc;
		} while ((rc = next_item(j, '}', "',' or '}'")) == 0);
		if (rc < 0)
			return rc;
	}
	for (unsigned k = 0; k < K_COUNT; k++)
		if (!(have & 1u << k))
			return entry_fail(j, t->name, "missing key '%s' "
					  "(expected dtype, shape, "
					  "data_offsets)", entry_keys[k]);
	return 0;
}

/* Text as written of the string just read, for a message. */
static const char *as_written(const struct jr *j, char *out, size_t n)
{
	return raw_text(j->raw, j->raw_e, out, n);
}

static int by_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One __metadata__ member (the key just read); its value is a string. */
static int meta_member(struct jr *j, struct st_header *h)
{
	char key[128], v[64];
	char **mk;
	int rc;

	if (j->nul)
		return ds_fail(j->ctx, DS_E_FORMAT, "%s: __metadata__ key "
			       "\"%s\" holds U+0000, which dare-stream refuses "
			       "(a C string would end there)", j->path,
			       as_written(j, key, sizeof(key)));
	if (h->nmkeys == h->mcap) {
		h->mcap = h->mcap ? 2 * h->mcap : 16;
		if (!(mk = realloc(h->mkeys, h->mcap * sizeof(*mk))))
			return -ENOMEM;
		h->mkeys = mk;
	}
	if (!(h->mkeys[h->nmkeys] = strdup(j->buf)))
		return -ENOMEM;
	snprintf(key, sizeof(key), "%s", h->mkeys[h->nmkeys++]);
	if ((rc = expect(j, ':', "':' after a key")))
		return rc;
	if (peek(j) != '"')
		return (rc = value_text(j, v, sizeof(v))) ? rc :
		       ds_fail(j->ctx, DS_E_FORMAT, "%s: __metadata__ '%s' "
			       "must be a string, found %s", j->path, key, v);
	if ((rc = read_string(j)))
		return rc;
	if (j->nul)
		return ds_fail(j->ctx, DS_E_FORMAT, "%s: __metadata__ '%s' "
			       "holds U+0000, which dare-stream refuses (a C "
			       "string would end there)", j->path, key);
	if (h->want && !strcmp(key, h->want) && !h->value &&
	    !(h->value = strdup(j->buf)))
		return -ENOMEM;
	return 0;
}

/* __metadata__: null, or an object of strings, each key once. */
static int parse_metadata(struct jr *j, struct st_header *h)
{
	int rc;
	char v[64];

	if (h->meta_seen)
		return at_fail(j, "has __metadata__ twice");
	h->meta_seen = true;
	if (peek(j) == 'n')
		return literal(j);      /* null: no metadata, as the reference */
	if (peek(j) != '{')
		return (rc = value_text(j, v, sizeof(v))) ? rc :
		       ds_fail(j->ctx, DS_E_FORMAT, "%s: __metadata__ must be "
			       "an object of strings, found %s", j->path, v);
	if ((rc = enter(j)))
		return rc;
	if (!empty_container(j, '}')) {
		do {
			if (peek(j) != '"')
				return expected(j, "a key in quotes");
			if ((rc = read_string(j)) ||
			    (rc = meta_member(j, h)))
				return rc;
		} while ((rc = next_item(j, '}', "',' or '}'")) == 0);
		if (rc < 0)
			return rc;
	}
	if (h->nmkeys)
		qsort(h->mkeys, h->nmkeys, sizeof(*h->mkeys), by_str);
	for (size_t i = 1; i < h->nmkeys; i++)
		if (!strcmp(h->mkeys[i - 1], h->mkeys[i]))
			return ds_fail(j->ctx, DS_E_FORMAT, "%s: __metadata__ "
				       "has key '%s' twice", j->path,
				       h->mkeys[i]);
	return 0;
}

/* A new tensor named by the key just read, then its entry. */
static int tensor_member(struct jr *j, struct st_header *h)
{
	struct ds_tensor *t;
	char name[128];
	int rc;

	if (j->nul)
		return ds_fail(j->ctx, DS_E_FORMAT, "%s: tensor name \"%s\" "
			       "holds U+0000, which dare-stream refuses (a C "
			       "string would end there)", j->path,
			       as_written(j, name, sizeof(name)));
	if (h->n == h->cap) {
		size_t cap = h->cap ? 2 * h->cap : 64;

		if (!(t = realloc(h->t, cap * sizeof(*t))))
			return -ENOMEM;
		h->t = t;
		h->cap = cap;
	}
	t = memset(&h->t[h->n], 0, sizeof(*t));
	t->shard = h->shard;
	if (!(t->name = strdup(j->buf)))
		return -ENOMEM;
	if ((rc = expect(j, ':', "':' after a tensor name")) == 0)
		rc = parse_entry(j, h);
	h->n++;         /* counted even when its entry fails: h frees it */
	return rc;
}

/* The whole object: tensors and __metadata__, then only whitespace. */
static int parse_object(struct jr *j, struct st_header *h)
{
	char b[16];
	int rc;

	if ((rc = enter(j)))
		return rc;
	if (!empty_container(j, '}')) {
		do {
			if (peek(j) != '"')
				return expected(j, "a tensor name in quotes");
			if ((rc = read_string(j)))
				return rc;
			if (j->len == 12 && !memcmp(j->buf, "__metadata__", 12))
				rc = (rc = expect(j, ':', "':'")) ? rc :
				     parse_metadata(j, h);
			else
				rc = tensor_member(j, h);
			if (rc)
				return rc;
		} while ((rc = next_item(j, '}', "',' or '}'")) == 0);
		if (rc < 0)
			return rc;
	}
	if (peek(j) != -1)
		return at_fail(j, "is not valid JSON: %s after the object "
			       "(only whitespace may follow it)",
			       here(j, b, sizeof(b)));
	return 0;
}

static int by_name_ptr(const void *a, const void *b)
{
	return strcmp((*(struct ds_tensor *const *)a)->name,
		      (*(struct ds_tensor *const *)b)->name);
}

/* No name twice: the format forbids it (the reference keeps the last). */
static int check_names(ds_ctx *ctx, const char *path,
		       const struct st_header *h)
{
	struct ds_tensor **p = malloc((h->n + 1) * sizeof(*p));
	int rc = 0;

	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < h->n; i++)
		p[i] = &h->t[i];
	qsort(p, h->n, sizeof(*p), by_name_ptr);
	for (size_t i = 1; !rc && i < h->n; i++)
		if (!strcmp(p[i - 1]->name, p[i]->name))
			rc = ds_fail(ctx, DS_E_FORMAT, "%s: duplicate tensor "
				     "name '%s': the header names it twice",
				     path, p[i]->name);
	free(p);
	return rc;
}

/* Offset of the first byte of s that is not UTF-8, or len. */
static size_t utf8_end(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i], n, lo = 0x80, hi = 0xbf;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, lo = c == 0xe0 ? 0xa0 : 0x80,
			hi = c == 0xed ? 0x9f : 0xbf;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, lo = c == 0xf0 ? 0x90 : 0x80,
			hi = c == 0xf4 ? 0x8f : 0xbf;
		else
			return i;
		if (len - i <= n || s[i + 1] < lo || s[i + 1] > hi)
			return i;
		for (unsigned k = 2; k <= n; k++)
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
		i += n + 1;
	}
	return len;
}

static void header_free(struct st_header *h)
{
	ds_tensors_free(h->t, h->n);
	for (size_t i = 0; i < h->nmkeys; i++)
		free(h->mkeys[i]);
	free(h->mkeys);
	free(h->value);
	memset(h, 0, sizeof(*h));
}

/* Read the JSON of a header into h (which the caller frees). */
static int read_json(ds_ctx *ctx, const char *path, const char *json,
		     size_t len, struct st_header *h)
{
	struct jr j = { ctx, path, json, json, json + len, 0, NULL, 0, 0,
			false, NULL, NULL };
	size_t bad;
	int rc;

	if (len == 0 || json[0] != '{')
		return ds_fail(ctx, DS_E_FORMAT, "%s: header is not a JSON "
			       "object: it begins with byte 0x%02x, expected "
			       "'{' (the format requires it first; not a "
			       "safetensors file?)", path,
			       len ? (unsigned char)json[0] : 0);
	if ((bad = utf8_end((const unsigned char *)json, len)) < len)
		return ds_fail(ctx, DS_E_FORMAT, "%s: header is not valid "
			       "UTF-8: byte 0x%02x at offset %zu (tensor names "
			       "must be UTF-8)", path,
			       (unsigned char)json[bad], bad);
	rc = parse_object(&j, h);
	free(j.buf);
	if (rc == -ENOMEM)
		return ds_fail(ctx, rc, "%s: out of memory reading the header",
			       path);
	if (rc == 0)
		rc = check_names(ctx, path, h);
	for (size_t i = 0; rc == 0 && i < h->n; i++)
		rc = check_size(&j, &h->t[i]);
	return rc;
}

/* Once a file: the first ignored key, and how many there were. */
static void note_extra(ds_ctx *ctx, const char *path,
		       const struct st_header *h)
{
	char k[96];

	if (h->extra)
		ds_notice(ctx, "%s: tensor '%s': key \"%s\" ignored (a tensor "
			  "entry has dtype, shape and data_offsets; the "
			  "reference reader ignores other keys too)%s%zu "
			  "such key(s) in this file", path, h->t[h->extra_t].name,
			  raw_text(h->extra_k, h->extra_e, k, sizeof(k)),
			  "; ", h->extra);
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
	uint64_t want;
	char w[32] = "more than 2^64";
	size_t i = 0;

	while (i + 1 < n && t[i].end <= data_size)
		i++;
	/* Offsets go up to 2^64 - 1: the expected size may not fit. */
	if (!ds_add_u64(8 + hlen, t[n - 1].end, &want))
		snprintf(w, sizeof(w), "%" PRIu64, want);
	return ds_fail(ctx, DS_E_FORMAT,
		       "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
		       "] go past the end of the data (%" PRIu64 " bytes): "
		       "truncated file or offsets past the end; file is %"
		       PRIu64 " bytes, expected %s (8 + header %zu + "
		       "tensor data %" PRIu64 ")", path, t[i].name, t[i].begin,
		       t[i].end, data_size, 8 + hlen + data_size, w, hlen,
		       t[n - 1].end);
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
	if (pos > data_size)
		return past_end(ctx, path, hlen, t, n, data_size);
	return ds_fail(ctx, DS_E_FORMAT,
		       "%s: trailing bytes after the last tensor: file is %"
		       PRIu64 " bytes, expected %" PRIu64 " (8 + header %zu + "
		       "tensor data %" PRIu64 ")", path, 8 + hlen + data_size,
		       8 + hlen + pos, hlen, pos);
}

int ds_st_parse(ds_ctx *ctx, const char *path, const char *json, size_t len,
		uint64_t data_size, unsigned shard,
		struct ds_tensor **out, size_t *n)
{
	struct st_header h = { .shard = shard };
	int rc;

	*out = NULL;
	*n = 0;
	rc = read_json(ctx, path, json, len, &h);
	/* The array leaves h; a spare slot keeps it non-NULL when empty. */
	if (rc == 0 && !h.t && !(h.t = calloc(1, sizeof(*h.t))))
		rc = ds_fail(ctx, -ENOMEM, "%s: out of memory", path);
	if (rc == 0) {
		qsort(h.t, h.n, sizeof(*h.t), by_offset);
		rc = check_tiling(ctx, path, len, h.t, h.n, data_size);
	}
	if (rc == 0) {
		note_extra(ctx, path, &h);
		*out = h.t;
		*n = h.n;
		h.t = NULL;
		h.n = 0;
	}
	header_free(&h);
	return rc;
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
	struct st_header h = { .want = key };
	uint64_t size, hlen;
	char *hdr;

	*value = NULL;
	if (fd < 0) {
		int e = errno;

		return ds_fail(ctx, -e, "%s: %s", path, strerror(e));
	}
	rc = read_header(ctx, fd, path, &hdr, &hlen, &size);
	close(fd);
	if (rc == 0) {
		rc = read_json(ctx, path, hdr, hlen, &h);
		free(hdr);
	}
	if (rc == 0) {
		*value = h.value;
		h.value = NULL;
	}
	header_free(&h);
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

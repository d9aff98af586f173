/* SPDX-License-Identifier: MIT */
/* test_safetensors.c - header parsing, validation and writing (Check suite) */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/ctx.h"
#include "inputs/model.h"
#include "testutil.h"

static char path[PATH_MAX];
static ds_ctx *ctx;

/* ---- helpers: files of raw bytes ---------------------------------------- */

static void setup(void)
{
	ck_assert_ptr_nonnull(scratch_make("ds-test-st-"));
	snprintf(path, sizeof(path), "%s", P("t.safetensors"));
	ctx = ds_ctx_create();
	ck_assert_ptr_nonnull(ctx);
}

static void teardown(void)
{
	scratch_remove();
	ds_ctx_free(ctx);
}

/* A file of: hlen as u64 LE, hdr, then data_size bytes (0, 1, 2...). */
static void write_st(uint64_t hlen, const char *hdr, size_t hdr_len,
		     uint64_t data_size)
{
	size_t len = 8 + hdr_len + data_size;
	unsigned char *b = malloc(len);

	ck_assert_ptr_nonnull(b);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(hlen >> (8 * i));
	memcpy(b + 8, hdr, hdr_len);
	for (uint64_t i = 0; i < data_size; i++)
		b[8 + hdr_len + i] = (unsigned char)i;
	write_raw(path, b, len);
	free(b);
}

/* ds_st_read on the test file. */
static int read_st(struct ds_shard *sh, struct ds_tensor **t, size_t *n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	ck_assert_int_ge(fd, 0);
	rc = ds_st_read(ctx, fd, path, 3, sh, t, n);
	close(fd);
	return rc;
}

/* Read the test file for its result only. */
static int read_rc(void)
{
	struct ds_shard sh = { 0 };
	struct ds_tensor *t;
	size_t n;
	int rc = read_st(&sh, &t, &n);

	if (rc == 0)
		ds_tensors_free(t, n);
	else
		ck_assert_ptr_null(t);
	return rc;
}

/* Write a file with header json and data_size bytes of data; read it. */
static int try_header(const char *json, uint64_t data_size)
{
	write_st(strlen(json), json, strlen(json), data_size);
	return read_rc();
}

/* The error is DS_E_FORMAT and its text names the file and frag. */
static void expect_format(int rc, const char *frag)
{
	const char *msg = ds_ctx_error(ctx);

	ck_assert_int_eq(rc, DS_E_FORMAT);
	ck_assert_msg(strstr(msg, path), "'%s' does not name %s", msg, path);
	ck_assert_msg(strstr(msg, frag), "'%s' lacks '%s'", msg, frag);
}

/* Header json (one or more entries) with data_size must fail with frag. */
static void bad(const char *json, uint64_t data_size, const char *frag)
{
	expect_format(try_header(json, data_size), frag);
}

#define F32x2(off) "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":" off "}"

/* ---- valid files -------------------------------------------------------- */

/* One header entry "n":{...}. */
#define E(n, dt, shape, offs) "\"" n "\":{\"dtype\":\"" dt "\",\"shape\":" \
	shape ",\"data_offsets\":" offs "}"

START_TEST(valid_several_dtypes)
{
	/* Out of data order on purpose (keys too), padded like real files. */
	static const char hdr[] =
		"{\"__metadata__\":{\"format\":\"pt\"},"
		E("b", "BF16", "[4]", "[24,32]") ","
		"\"a\":{\"shape\":[2,3],\"dtype\":\"F32\","
		"\"data_offsets\":[0,24]},"
		E("z", "U8", "[0]", "[32,32]") ","
		E("e", "F64", "[0,5]", "[32,32]") ","
		E("c", "I64", "[]", "[32,40]") ","
		E("d", "BOOL", "[3]", "[40,43]") ","
		E("f", "F8_E4M3", "[1,1,5]", "[43,48]") "}      ";
	static const struct {
		const char *name;
		enum ds_dtype dt;
		unsigned ndim;
		uint64_t numel, begin, end, dim0;
	} want[] = {
		{ "a", DS_DT_F32, 2, 6, 0, 24, 2 },
		{ "b", DS_DT_BF16, 1, 4, 24, 32, 4 },
		{ "e", DS_DT_F64, 2, 0, 32, 32, 0 },  /* ties: by name */
		{ "z", DS_DT_U8, 1, 0, 32, 32, 0 },
		{ "c", DS_DT_I64, 0, 1, 32, 40, 0 },
		{ "d", DS_DT_BOOL, 1, 3, 40, 43, 3 },
		{ "f", DS_DT_F8_E4M3, 3, 5, 43, 48, 1 },
	};
	struct ds_shard sh = { 0 };
	struct ds_tensor *t;
	size_t n;

	write_st(sizeof(hdr) - 1, hdr, sizeof(hdr) - 1, 48);
	ck_assert_int_eq(read_st(&sh, &t, &n), 0);
	ck_assert_uint_eq(n, 7);
	ck_assert_uint_eq(sh.data_off, 8 + sizeof(hdr) - 1);
	ck_assert_uint_eq(sh.size, 8 + sizeof(hdr) - 1 + 48);
	for (size_t i = 0; i < n; i++) {
		ck_assert_str_eq(t[i].name, want[i].name);
		ck_assert_int_eq(t[i].dtype, want[i].dt);
		ck_assert_uint_eq(t[i].ndim, want[i].ndim);
		ck_assert_uint_eq(t[i].numel, want[i].numel);
		ck_assert_uint_eq(t[i].begin, want[i].begin);
		ck_assert_uint_eq(t[i].end, want[i].end);
		ck_assert_uint_eq(t[i].shard, 3);
		if (want[i].ndim)
			ck_assert_uint_eq(t[i].shape[0], want[i].dim0);
	}
	ck_assert_uint_eq(t[0].shape[1], 3);
	ck_assert_uint_eq(t[6].shape[2], 5);
	ds_tensors_free(t, n);
}
END_TEST

START_TEST(valid_metadata_only)
{
	ck_assert_int_eq(try_header("{\"__metadata__\":{}}", 0), 0);
	ck_assert_int_eq(try_header("{}", 0), 0);
}
END_TEST

START_TEST(dtype_table)
{
	/* The format's dtypes and widths (Dtype::bitsize in the reference's
	 * safetensors/src/tensor.rs). */
	static const struct {
		const char *name;
		enum ds_dtype dt;
		unsigned bits;
	} want[] = {
		{ "BOOL", DS_DT_BOOL, 8 }, { "U8", DS_DT_U8, 8 },
		{ "I8", DS_DT_I8, 8 }, { "U16", DS_DT_U16, 16 },
		{ "I16", DS_DT_I16, 16 }, { "U32", DS_DT_U32, 32 },
		{ "I32", DS_DT_I32, 32 }, { "U64", DS_DT_U64, 64 },
		{ "I64", DS_DT_I64, 64 }, { "F8_E4M3", DS_DT_F8_E4M3, 8 },
		{ "F8_E5M2", DS_DT_F8_E5M2, 8 }, { "F8_E8M0", DS_DT_F8_E8M0, 8 },
		{ "F8_E4M3FNUZ", DS_DT_F8_E4M3FNUZ, 8 },
		{ "F8_E5M2FNUZ", DS_DT_F8_E5M2FNUZ, 8 },
		{ "F4", DS_DT_F4, 4 }, { "F6_E2M3", DS_DT_F6_E2M3, 6 },
		{ "F6_E3M2", DS_DT_F6_E3M2, 6 }, { "F16", DS_DT_F16, 16 },
		{ "BF16", DS_DT_BF16, 16 }, { "F32", DS_DT_F32, 32 },
		{ "F64", DS_DT_F64, 64 }, { "C64", DS_DT_C64, 64 },
	};
	enum ds_dtype dt;

	ck_assert_uint_eq(sizeof(want) / sizeof(want[0]), DS_DT_COUNT);
	for (size_t i = 0; i < DS_DT_COUNT; i++) {
		ck_assert_str_eq(ds_dtype_name(want[i].dt), want[i].name);
		ck_assert_int_eq(ds_dtype_parse(want[i].name, &dt), 0);
		ck_assert_int_eq(dt, want[i].dt);
		ck_assert_uint_eq(ds_dtype_bits(dt), want[i].bits);
		ck_assert_uint_eq(ds_dtype_size(dt), want[i].bits % 8 ? 0 :
				  want[i].bits / 8);
	}
	ck_assert_ptr_null(ds_dtype_name(DS_DT_COUNT));
	ck_assert_uint_eq(ds_dtype_size(DS_DT_COUNT), 0);
	ck_assert_uint_eq(ds_dtype_bits(DS_DT_COUNT), 0);
	ck_assert_int_eq(ds_dtype_parse("bf16", &dt), -1);
	ck_assert_int_eq(ds_dtype_parse("F8", &dt), -1);
	ck_assert_int_eq(ds_dtype_parse("", &dt), -1);
}
END_TEST

START_TEST(dtype_bytes)
{
	uint64_t b = 99;

	ck_assert_int_eq(ds_dtype_nbytes(DS_DT_F4, 4, &b), 0);
	ck_assert_uint_eq(b, 2);
	ck_assert_int_eq(ds_dtype_nbytes(DS_DT_F4, 3, &b), -EINVAL);
	ck_assert_int_eq(ds_dtype_nbytes(DS_DT_F6_E3M2, 4, &b), 0);
	ck_assert_uint_eq(b, 3);
	ck_assert_int_eq(ds_dtype_nbytes(DS_DT_F6_E2M3, 2, &b), -EINVAL);
	ck_assert_int_eq(ds_dtype_nbytes(DS_DT_C64, 3, &b), 0);
	ck_assert_uint_eq(b, 24);
	ck_assert_int_eq(ds_dtype_nbytes(DS_DT_F4, 0, &b), 0);
	ck_assert_uint_eq(b, 0);
	/* The bits must fit 64 bits, not only the bytes: 2^58 x 64 bits. */
	ck_assert_int_eq(ds_dtype_nbytes(DS_DT_U64, 1ull << 58, &b),
			 -EOVERFLOW);
	ck_assert_int_eq(ds_dtype_nbytes(DS_DT_U64, (1ull << 58) - 1, &b), 0);
	ck_assert_uint_eq(b, ((1ull << 58) - 1) * 8);
}
END_TEST

/* ---- writing ------------------------------------------------------------ */

START_TEST(build_round_trip)
{
	struct ds_tensor in[] = {
		{ .name = "model.embed_tokens.weight", .dtype = DS_DT_BF16,
		  .ndim = 2, .shape = { 3, 4 }, .numel = 12, .begin = 0,
		  .end = 24 },
		{ .name = "empty", .dtype = DS_DT_F32, .ndim = 1,
		  .shape = { 0 }, .numel = 0, .begin = 24, .end = 24 },
		{ .name = "q\"uote\\back/sl\tash \xc3\xbcnicode", .dtype =
		  DS_DT_I64, .ndim = 0, .numel = 1, .begin = 24, .end = 32 },
		{ .name = "lm_head.weight", .dtype = DS_DT_F16, .ndim = 3,
		  .shape = { 1, 2, 3 }, .numel = 6, .begin = 32, .end = 44 },
	};
	const char *meta[] = { "format", "pt", "dare-stream", "0.1.0", NULL };
	struct ds_tensor *out;
	size_t len, n;
	uint64_t hlen = 0;
	char *buf;

	ck_assert_int_eq(ds_st_build(in, 4, meta, &buf, &len), 0);
	ck_assert_uint_eq(len % 8, 0);
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | (unsigned char)buf[i];
	ck_assert_uint_eq(hlen, len - 8);
	ck_assert_int_eq(memcmp(buf + 8, "{\"__metadata__\":{\"format\":\"pt\"",
				30), 0);
	ck_assert_int_eq(ds_st_parse(ctx, "built", buf + 8, len - 8, 44, 0,
				     &out, &n), 0);
	ck_assert_uint_eq(n, 4);
	for (size_t i = 0; i < n; i++) {
		ck_assert_str_eq(out[i].name, in[i].name);
		ck_assert_int_eq(out[i].dtype, in[i].dtype);
		ck_assert_uint_eq(out[i].ndim, in[i].ndim);
		ck_assert_int_eq(memcmp(out[i].shape, in[i].shape,
					sizeof(in[i].shape)), 0);
		ck_assert_uint_eq(out[i].numel, in[i].numel);
		ck_assert_uint_eq(out[i].begin, in[i].begin);
		ck_assert_uint_eq(out[i].end, in[i].end);
	}
	ds_tensors_free(out, n);
	/* The built header as a whole file reads back too. */
	write_st(len - 8, buf + 8, len - 8, 44);
	free(buf);
	ck_assert_int_eq(read_rc(), 0);
	ck_assert_int_eq(ds_st_build(in, 4, NULL, &buf, &len), 0);
	ck_assert_int_eq(memcmp(buf + 8, "{\"model.embed", 13), 0);
	free(buf);
}
END_TEST

START_TEST(build_empty_and_refusals)
{
	struct ds_tensor dup[] = {
		{ .name = "a", .dtype = DS_DT_U8, .ndim = 1, .shape = { 1 },
		  .numel = 1, .begin = 0, .end = 1 },
		{ .name = "a", .dtype = DS_DT_U8, .ndim = 1, .shape = { 1 },
		  .numel = 1, .begin = 1, .end = 2 },
	};
	struct ds_tensor *out;
	size_t len, n;
	char *buf;

	ck_assert_int_eq(ds_st_build(NULL, 0, NULL, &buf, &len), 0);
	ck_assert_uint_eq(len, 16);     /* 8 + "{}" + 6 spaces */
	ck_assert_int_eq(memcmp(buf + 8, "{}      ", 8), 0);
	ck_assert_int_eq(ds_st_parse(ctx, "built", buf + 8, 8, 0, 0, &out,
				     &n), 0);
	ck_assert_uint_eq(n, 0);
	ds_tensors_free(out, n);
	free(buf);
	ck_assert_int_eq(ds_st_build(dup, 2, NULL, &buf, &len), -EINVAL);
	ck_assert_ptr_null(buf);
	dup[1].name = "__metadata__";
	ck_assert_int_eq(ds_st_build(dup, 2, NULL, &buf, &len), -EINVAL);
	dup[1].name = "b";
	dup[1].dtype = DS_DT_COUNT;
	ck_assert_int_eq(ds_st_build(dup, 2, NULL, &buf, &len), -EINVAL);
}
END_TEST

/* ---- the file: length and header ---------------------------------------- */

/* Write raw bytes as the test file and read it. */
static int try_raw(const void *b, size_t len)
{
	write_raw(path, b, len);
	return read_rc();
}

START_TEST(empty_file)
{
	expect_format(try_raw("", 0), "empty file");
}
END_TEST

START_TEST(shorter_than_8)
{
	expect_format(try_raw("\2\0\0\0\0", 5), "shorter than the 8-byte");
}
END_TEST

START_TEST(header_length_zero)
{
	write_st(0, "", 0, 16);
	expect_format(read_rc(), "header length is 0");
}
END_TEST

START_TEST(header_length_over_limit)
{
	/* Refused from the length alone: nothing of that size is allocated. */
	write_st(100000001, "{}", 2, 0);
	expect_format(read_rc(), "limit of 100000000");
	write_st(UINT64_MAX, "{}", 2, 0);
	expect_format(read_rc(), "18446744073709551615");
}
END_TEST

START_TEST(header_length_beyond_file)
{
	write_st(1000, "{}", 2, 4);
	expect_format(read_rc(), "beyond the end of the file (14");
}
END_TEST

START_TEST(header_not_brace)
{
	bad("[]", 0, "not a JSON object: it begins with byte 0x5b, "
	    "expected '{'");
	bad(" {}", 0, "not a JSON object: it begins with byte 0x20");
}
END_TEST

START_TEST(header_not_json)
{
	bad("{\"w\":" F32x2("[0,8]"), 8, "not valid JSON");
	bad("{\"w\":" F32x2("[0,8]") ",}", 8, "line 1, column");
	bad("{\"w\":" F32x2("[0,8]") "}x", 8, "not valid JSON");
}
END_TEST

START_TEST(name_not_utf8)
{
	bad("{\"w\xff\":" F32x2("[0,8]") "}", 8, "not valid UTF-8: byte 0xff "
	    "at offset 3");
	/* Overlong, surrogate and beyond U+10FFFF forms are not UTF-8. */
	bad("{\"\xc0\xaf\":" F32x2("[0,8]") "}", 8, "byte 0xc0 at offset 2");
	bad("{\"\xed\xa0\x80\":" F32x2("[0,8]") "}", 8, "byte 0xed");
	bad("{\"\xf4\x90\x80\x80\":" F32x2("[0,8]") "}", 8, "byte 0xf4");
	bad("{\"\xe2\x82\":" F32x2("[0,8]") "}", 8, "byte 0xe2");
}
END_TEST

START_TEST(duplicate_name)
{
	bad("{\"w\":" F32x2("[0,8]") ",\"w\":" F32x2("[8,16]") "}", 16,
	    "duplicate tensor name 'w': the header names it twice");
	/* Written differently, the same name. */
	bad("{\"w\":" F32x2("[0,8]") ",\"\\u0077\":" F32x2("[8,16]") "}",
	    16, "duplicate tensor name 'w'");
}
END_TEST

START_TEST(metadata_not_object)
{
	bad("{\"__metadata__\":\"pt\"}", 0, "__metadata__ must be an object");
	bad("{\"__metadata__\":[]}", 0, "found []");
}
END_TEST

START_TEST(metadata_value_not_string)
{
	bad("{\"__metadata__\":{\"format\":\"pt\",\"step\":100}}", 0,
	    "__metadata__ 'step' must be a string, found 100");
}
END_TEST

START_TEST(entry_not_object)
{
	bad("{\"w\":[0,8]}", 8, "tensor 'w': expected an object");
	bad("{\"w\":null}", 8, "found null");
}
END_TEST

START_TEST(entry_missing_key)
{
	bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8,
	    "tensor 'w': missing key 'data_offsets'");
	bad("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
	    "missing key 'dtype'");
}
END_TEST

START_TEST(entry_duplicate_key)
{
	bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"dtype\":\"F32\","
	    "\"data_offsets\":[0,8]}}", 8, "tensor 'w': key 'dtype' appears "
	    "twice in its entry");
	bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],"
	    "\"data_offsets\":[0,8]}}", 8, "key 'data_offsets' appears twice");
	bad("{\"w\":{\"shape\":[2],\"dtype\":\"F32\",\"shape\":[2],"
	    "\"data_offsets\":[0,8]}}", 8, "key 'shape' appears twice");
}
END_TEST

START_TEST(unknown_dtype)
{
	bad("{\"w\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]}}",
	    8, "tensor 'w': unknown dtype \"F128\"");
	bad("{\"w\":{\"dtype\":\"bf16\",\"shape\":[4],\"data_offsets\":[0,8]}}",
	    8, "unknown dtype \"bf16\"");
	bad("{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}",
	    8, "unknown dtype 4");
}
END_TEST

#define SHAPE(s) \
	"{\"w\":{\"dtype\":\"U8\",\"shape\":" s ",\"data_offsets\":[0,8]}}"

START_TEST(shape_not_array)
{
	bad(SHAPE("8"), 8, "tensor 'w': shape must be an array of "
	    "non-negative integers, found 8");
	bad(SHAPE("null"), 8, "found null");
}
END_TEST

START_TEST(shape_negative)
{
	bad(SHAPE("[2,-4]"), 8, "tensor 'w': shape[1] must be a non-negative "
	    "integer, found -4");
}
END_TEST

START_TEST(shape_fractional)
{
	bad(SHAPE("[8.0]"), 8, "shape[0] must be a non-negative integer");
	bad(SHAPE("[2.5,3]"), 8, "found 2.5");
	bad(SHAPE("[8e0]"), 8, "shape[0]");
}
END_TEST

START_TEST(shape_not_numeric)
{
	bad(SHAPE("[\"8\"]"), 8, "shape[0] must be a non-negative integer, "
	    "found \"8\"");
	bad(SHAPE("[true]"), 8, "found true");
	bad(SHAPE("[[8]]"), 8, "found [8]");
}
END_TEST

#define ONES8 "1,1,1,1,1,1,1,1,"
START_TEST(shape_too_many_dims)
{
	bad(SHAPE("[" ONES8 ONES8 ONES8 ONES8 "8]"), 8, "tensor 'w': shape "
	    "has more than 32 dimensions");
	/* 32 are fine. */
	ck_assert_int_eq(try_header(SHAPE("[" ONES8 ONES8 ONES8
					  "1,1,1,1,1,1,1,8]"), 8), 0);
}
END_TEST

#define OFFS(o) \
	"{\"w\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":" o "}}"

START_TEST(offsets_malformed)
{
	bad(OFFS("[0]"), 8, "tensor 'w': data_offsets must be [begin, end]");
	bad(OFFS("[0,8,8]"), 8, "found [0,8,8]");
	bad(OFFS("[-8,0]"), 8, "found [-8,0]");
	bad(OFFS("[0,8.0]"), 8, "found [0,8.0]");
	bad(OFFS("[\"0\",8]"), 8, "data_offsets must be");
	bad(OFFS("{\"begin\":0}"), 8, "data_offsets must be");
}
END_TEST

START_TEST(offsets_begin_after_end)
{
	bad(OFFS("[8,0]"), 8,
	    "tensor 'w': data_offsets [8, 0] begin after end");
}
END_TEST

START_TEST(size_overflow)
{
	/* 2^40 x 2^40 elements: numel itself overflows. */
	bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],"
	    "\"data_offsets\":[0,0]}}", 0, "tensor 'w': shape "
	    "[1099511627776, 1099511627776] has more than 2^64 elements");
	/* 2^58 elements fit; 2^58 x 64 bits do not (the reference counts
	 * bits), though the bytes would. */
	bad("{\"w\":{\"dtype\":\"U64\",\"shape\":[288230376151711744],"
	    "\"data_offsets\":[0,0]}}", 0, "tensor 'w': 288230376151711744 "
	    "elements of U64 take 2^64 bits or more");
	/* The product is checked in order: an overflow before a 0 counts. */
	bad("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,0],"
	    "\"data_offsets\":[0,0]}}", 0, "more than 2^64 elements");
	ck_assert_int_eq(try_header("{\"w\":{\"dtype\":\"U8\",\"shape\":"
				    "[0,4294967296,4294967296],"
				    "\"data_offsets\":[0,0]}}", 0), 0);
}
END_TEST

START_TEST(size_mismatch)
{
	bad("{\"w\":" F32x2("[0,4]") "}", 4, "tensor 'w': data_offsets [0, 4] "
	    "span 4 bytes, expected 8 (2 elements of F32)");
	bad("{\"w\":{\"dtype\":\"BF16\",\"shape\":[3,5],\"data_offsets\":"
	    "[0,15]}}", 15, "span 15 bytes, expected 30");
}
END_TEST

/* ---- the data section: tiling ------------------------------------------- */

START_TEST(first_not_at_zero)
{
	bad("{\"w\":" F32x2("[4,12]") "}", 12, "tensor 'w' begins at 4: "
	    "expected the data to begin at 0");
}
END_TEST

START_TEST(hole_between)
{
	bad("{\"b\":" F32x2("[12,20]") ",\"a\":" F32x2("[0,8]") "}", 20,
	    "tensor 'a' [0, 8) and tensor 'b' [12, 20) leave a hole");
}
END_TEST

START_TEST(overlap)
{
	bad("{\"a\":" F32x2("[0,8]") ",\"b\":" F32x2("[4,12]") "}", 12,
	    "tensor 'a' [0, 8) and tensor 'b' [4, 12) overlap");
	/* The same range twice is an overlap too. */
	bad("{\"a\":" F32x2("[0,8]") ",\"b\":" F32x2("[0,8]") "}", 8,
	    "tensor 'a' [0, 8) and tensor 'b' [0, 8) overlap");
}
END_TEST

START_TEST(empty_tensor_inside_another)
{
	bad("{\"a\":" F32x2("[0,8]") ",\"z\":{\"dtype\":\"U8\",\"shape\":[0],"
	    "\"data_offsets\":[4,4]}}", 8, "tensor 'z' [4, 4) overlap");
}
END_TEST

START_TEST(trailing_bytes)
{
	const char *h = "{\"a\":" F32x2("[0,8]") "}";
	char want[256];

	snprintf(want, sizeof(want), "trailing bytes after the last tensor: "
		 "file is %zu bytes, expected %zu", 8 + strlen(h) + 12,
		 8 + strlen(h) + 8);
	bad(h, 12, want);
	bad("{}", 1, "trailing bytes");
}
END_TEST

START_TEST(truncated_data)
{
	const char *h = "{\"a\":" F32x2("[0,8]") ",\"b\":" F32x2("[8,16]") "}";
	char want[256];

	snprintf(want, sizeof(want), "tensor 'b' data_offsets [8, 16] go past "
		 "the end of the data (10 bytes): truncated file or offsets "
		 "past the end; file is %zu bytes, expected %zu",
		 8 + strlen(h) + 10, 8 + strlen(h) + 16);
	bad(h, 10, want);
	bad(h, 0, "tensor 'a' data_offsets [0, 8] go past the end of the "
	    "data (0 bytes): truncated file");
}
END_TEST

/* ---- as the reference reads it ----------------------------------------- */

/* Notices and warnings sent through ctx while a test reads a file. */
static char logged[4096];

static void on_log(void *u, enum ds_log_level lv, const char *msg)
{
	(void)u;
	snprintf(logged + strlen(logged), sizeof(logged) - strlen(logged),
		 "%s%s\n", lv == DS_LOG_WARNING ? "warning: " : "", msg);
}

START_TEST(new_dtypes)
{
	/* Sub-byte dtypes: 6 F4 are 3 bytes, 4 F6 are 3 bytes. */
	static const char hdr[] = "{"
		E("p", "F4", "[2,3]", "[0,3]") ","
		E("q", "F6_E2M3", "[4]", "[3,6]") ","
		E("r", "F6_E3M2", "[1,4]", "[6,9]") ","
		E("s", "F8_E8M0", "[2]", "[9,11]") ","
		E("t", "F8_E4M3FNUZ", "[1]", "[11,12]") ","
		E("u", "F8_E5M2FNUZ", "[1]", "[12,13]") ","
		E("v", "C64", "[1]", "[13,21]") ","
		E("w", "F4", "[0]", "[21,21]") "}";
	static const enum ds_dtype want[] = {
		DS_DT_F4, DS_DT_F6_E2M3, DS_DT_F6_E3M2, DS_DT_F8_E8M0,
		DS_DT_F8_E4M3FNUZ, DS_DT_F8_E5M2FNUZ, DS_DT_C64, DS_DT_F4,
	};
	struct ds_shard sh = { 0 };
	struct ds_tensor *t;
	size_t n;

	write_st(sizeof(hdr) - 1, hdr, sizeof(hdr) - 1, 21);
	ck_assert_int_eq(read_st(&sh, &t, &n), 0);
	ck_assert_uint_eq(n, 8);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(t[i].dtype, want[i]);
	ck_assert_uint_eq(t[0].numel, 6);
	ck_assert_uint_eq(ds_tensor_nbytes(&t[0]), 3);
	ck_assert_uint_eq(ds_tensor_nbytes(&t[6]), 8);
	ds_tensors_free(t, n);
}
END_TEST

START_TEST(sub_byte_not_whole_bytes)
{
	bad("{" E("w", "F4", "[3]", "[0,2]") "}", 2, "tensor 'w': 3 elements "
	    "of F4 (4 bits each) are not a whole number of bytes");
	bad("{" E("w", "F6_E2M3", "[2,3]", "[0,5]") "}", 5, "6 elements of "
	    "F6_E2M3 (6 bits each) are not a whole number");
	/* Rounding up is not what the reference does either. */
	bad("{" E("w", "F4", "[4]", "[0,3]") "}", 3, "span 3 bytes, expected 2");
}
END_TEST

START_TEST(negative_zero)
{
	bad(SHAPE("[-0]"), 0, "tensor 'w': shape[0] must be a non-negative "
	    "integer, found -0 (-0 is a negative zero");
	bad(OFFS("[-0,8]"), 8, "data_offsets must be [begin, end], two "
	    "non-negative integers, found [-0,8] (-0 is a negative zero");
	bad(OFFS("[0,-0]"), 8, "found [0,-0]");
	bad(SHAPE("[-0.0]"), 8, "found -0.0");
}
END_TEST

/* Eight tensors of 2^61 - 1 bytes end at 2^64 - 8: past the end of the
 * data, and 8 + header + that is beyond 64 bits (not wrapped around). */
static void big_offsets(void)
{
	const uint64_t k = (1ull << 61) - 1;
	char h[2048];
	size_t o = 0;

	for (uint64_t i = 0; i < 8; i++)
		o += (size_t)snprintf(h + o, sizeof(h) - o, "%s\"t%" PRIu64
				      "\":{\"dtype\":\"U8\",\"shape\":[%" PRIu64
				      "],\"data_offsets\":[%" PRIu64 ",%" PRIu64
				      "]}", i ? "," : "{", i, k, i * k,
				      (i + 1) * k);
	snprintf(h + o, sizeof(h) - o, "}");
	bad(h, 8, "tensor 't0' data_offsets [0, 2305843009213693951] go past "
	    "the end of the data (8 bytes)");
	bad(h, 8, "expected more than 2^64 (8 + header");
}

START_TEST(integers_to_2_64)
{
	/* 2^64 - 1 is an integer of the format; 2^64 and beyond are not. */
	ck_assert_int_eq(try_header("{" E("w", "U8", "[18446744073709551615,0]",
					  "[0,0]") "}", 0), 0);
	ck_assert_int_eq(try_header("{" E("w", "U8", "[9223372036854775808,0]",
					  "[0,0]") "}", 0), 0);
	bad(SHAPE("[18446744073709551616]"), 8, "tensor 'w': shape[0] "
	    "18446744073709551616 holds an integer beyond 2^64 - 1");
	bad(OFFS("[0,99999999999999999999999]"), 8, "tensor 'w': data_offsets "
	    "[0,99999999999999999999999] holds an integer beyond 2^64 - 1");
	big_offsets();
}
END_TEST

START_TEST(extra_key_ignored)
{
	ds_ctx_set_log(ctx, on_log, NULL);
	logged[0] = '\0';
	ck_assert_int_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],"
				    "\"strides\":[1],\"data_offsets\":[0,8]},"
				    "\"v\":{\"x\":{\"y\":[null,1e5,\"s\"]},"
				    "\"x\":2,\"dtype\":\"U8\",\"shape\":[0],"
				    "\"data_offsets\":[8,8]}}", 8), 0);
	/* One notice for the file: the first key and tensor, the count. */
	ck_assert_msg(strstr(logged, "tensor 'w': key \"strides\" ignored"),
		      "%s", logged);
	ck_assert_msg(strstr(logged, "; 3 such key(s) in this file"), "%s",
		      logged);
	ck_assert_ptr_nonnull(strstr(logged, path));
	ck_assert_ptr_null(strchr(strchr(logged, '\n') + 1, '\n'));
	ck_assert_ptr_null(strstr(logged, "warning"));
	logged[0] = '\0';
	ck_assert_int_eq(try_header("{\"w\":" F32x2("[0,8]") "}", 8), 0);
	ck_assert_str_eq(logged, "");
}
END_TEST

START_TEST(metadata_rules)
{
	const char *t = "\"w\":" F32x2("[0,8]");
	char h[512];

	snprintf(h, sizeof(h), "{\"__metadata__\":null,%s}", t);
	ck_assert_int_eq(try_header(h, 8), 0);
	snprintf(h, sizeof(h), "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"},%s}",
		 t);
	bad(h, 8, "__metadata__ has key 'a' twice");
	snprintf(h, sizeof(h), "{\"__metadata__\":{},%s,\"__metadata__\":{}}",
		 t);
	bad(h, 8, "header has __metadata__ twice (line 1, column");
	snprintf(h, sizeof(h), "{\"__metadata__\":null,\"__metadata__\":null,"
		 "%s}", t);
	bad(h, 8, "has __metadata__ twice");
	snprintf(h, sizeof(h), "{\"__metadata__\":{\"a\":\"x\\u0000y\"},%s}", t);
	bad(h, 8, "__metadata__ 'a' holds U+0000, which dare-stream refuses");
	snprintf(h, sizeof(h), "{\"__metadata__\":{\"a\\u0000\":\"x\"},%s}", t);
	bad(h, 8, "__metadata__ key \"a\\u0000\" holds U+0000");
	snprintf(h, sizeof(h), "{\"__metadata__\":{\"a\":null},%s}", t);
	bad(h, 8, "__metadata__ 'a' must be a string, found null");
}
END_TEST

START_TEST(nul_in_names)
{
	bad("{\"w\\u0000x\":" F32x2("[0,8]") "}", 8, "tensor name "
	    "\"w\\u0000x\" holds U+0000, which dare-stream refuses");
	/* In a value that is ignored, U+0000 is harmless. */
	ck_assert_int_eq(try_header("{\"w\":{\"note\":\"a\\u0000b\","
				    "\"dtype\":\"F32\",\"shape\":[2],"
				    "\"data_offsets\":[0,8]}}", 8), 0);
	/* "F32\u0000" is not a dtype. */
	bad("{\"w\":{\"dtype\":\"F32\\u0000\",\"shape\":[2],\"data_offsets\":"
	    "[0,8]}}", 8, "unknown dtype \"F32\\u0000\"");
}
END_TEST

START_TEST(strings_decoded)
{
	static const char hdr[] = "{\"a\\/b\\n\\u00fc\\ud83d\\ude00\\\"\":"
		F32x2("[0,8]") "}";
	struct ds_shard sh = { 0 };
	struct ds_tensor *t;
	size_t n;

	write_st(sizeof(hdr) - 1, hdr, sizeof(hdr) - 1, 8);
	ck_assert_int_eq(read_st(&sh, &t, &n), 0);
	ck_assert_str_eq(t[0].name, "a/b\n\xc3\xbc\xf0\x9f\x98\x80\"");
	ds_tensors_free(t, n);
	bad("{\"\\ud83d\":" F32x2("[0,8]") "}", 8, "\\ud83d is half of a "
	    "surrogate pair, alone");
	bad("{\"\\ude00x\":" F32x2("[0,8]") "}", 8, "half of a surrogate");
	bad("{\"\\ud83d\\u0041\":" F32x2("[0,8]") "}", 8, "half of a surrogate");
	bad("{\"\\x41\":" F32x2("[0,8]") "}", 8, "unknown escape");
	bad("{\"\\u12\":" F32x2("[0,8]") "}", 8, "four hex digits");
	bad("{\"a\tb\":" F32x2("[0,8]") "}", 8, "control character 0x09");
}
END_TEST

START_TEST(whitespace)
{
	/* After the object: JSON whitespace only; before it: nothing. */
	ck_assert_int_eq(try_header("{\"w\":" F32x2("[0,8]") "} \n\t\r ", 8), 0);
	ck_assert_int_eq(try_header("{ \"w\" :\n" F32x2("[ 0 ,\t8 ]") " }", 8),
			 0);
	bad("{\"w\":" F32x2("[0,8]") "}\f", 8, "byte 0x0c after the object");
	write_st(55, "{\"w\":" F32x2("[0,8]") "}\0", 55, 8);
	expect_format(read_rc(), "byte 0x00 after the object");
	bad("\n{}", 0, "begins with byte 0x0a, expected '{'");
}
END_TEST

START_TEST(syntax_errors)
{
	bad("{\"w\":" F32x2("[0,8]") ",}", 8, "not valid JSON: expected a "
	    "tensor name in quotes, found '}' (line 1, column 55)");
	bad("{\"w\":\n" F32x2("[0,8,]") "}", 8, "(line 2, column");
	bad(SHAPE("[01]"), 8, "not valid JSON: expected ',' or ']' in shape, "
	    "found '1'");
	bad(SHAPE("[1.]"), 8, "expected a digit after '.'");
	bad(SHAPE("[1e]"), 8, "expected a digit in the exponent");
	bad(SHAPE("[+1]"), 8, "expected a value, found '+'");
	bad(SHAPE("[-]"), 8, "expected a digit after '-'");
	bad("{\"w\":{\"dtype\":'F32'}}", 8, "expected a value, found");
	bad("{\"w\":" F32x2("[0,8]"), 8, "expected ',' or '}', found the end of "
	    "the header");
	bad("{\"w\":{\"x\":tru,\"dtype\":\"F32\"}}", 8, "expected a value");
}
END_TEST

START_TEST(numbers_in_ignored_values)
{
	char h[512];

	/* serde_json takes any number a double holds, refuses the rest. */
	snprintf(h, sizeof(h), "{\"w\":{\"x\":[1e-400,-99999999999999999999999,"
		 "1.7976931348623157e308,0.5E+3],\"dtype\":\"F32\","
		 "\"shape\":[2],\"data_offsets\":[0,8]}}");
	ck_assert_int_eq(try_header(h, 8), 0);
	snprintf(h, sizeof(h), "{\"w\":{\"x\":1e309,\"dtype\":\"F32\","
		 "\"shape\":[2],\"data_offsets\":[0,8]}}");
	bad(h, 8, "holds a number beyond the range of a double: 1e309");
	snprintf(h, sizeof(h), "{\"w\":{\"x\":-2e308,\"dtype\":\"F32\","
		 "\"shape\":[2],\"data_offsets\":[0,8]}}");
	bad(h, 8, "beyond the range of a double");
	snprintf(h, sizeof(h), "{\"w\":{\"x\":1.8e308,\"dtype\":\"F32\","
		 "\"shape\":[2],\"data_offsets\":[0,8]}}");
	bad(h, 8, "beyond the range of a double");
	snprintf(h, sizeof(h), "{\"w\":{\"x\":0.0001e312,\"dtype\":\"F32\","
		 "\"shape\":[2],\"data_offsets\":[0,8]}}");
	ck_assert_int_eq(try_header(h, 8), 0);
}
END_TEST

/* {"w":{"x":[[...]], ...}} with depth arrays and objects in all. */
static int nested(unsigned depth)
{
	size_t k = depth - 2, o = 0;
	char *h = malloc(2 * k + 128);
	int rc;

	ck_assert_ptr_nonnull(h);
	o += (size_t)sprintf(h, "{\"w\":{\"x\":");
	for (size_t i = 0; i < k; i++)
		h[o++] = '[';
	for (size_t i = 0; i < k; i++)
		h[o++] = ']';
	sprintf(h + o, ",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":"
		"[0,8]}}");
	rc = try_header(h, 8);
	free(h);
	return rc;
}

START_TEST(nesting_limit)
{
	/* serde_json takes 127 levels, refuses 128. */
	ck_assert_int_eq(nested(127), 0);
	expect_format(nested(128), "nests arrays and objects more than 127 "
		      "deep");
	expect_format(nested(5000), "more than 127 deep");
}
END_TEST

START_TEST(entry_forms_refused)
{
	/* The reference takes these (serde's sequence and enum forms); the
	 * format describes neither. */
	bad("{\"w\":[\"F32\",[2],[0,8]]}", 8, "tensor 'w': expected an object "
	    "with dtype, shape and data_offsets, found [\"F32\",[2],[0,8]]");
	bad("{\"w\":{\"dtype\":{\"F32\":null},\"shape\":[2],\"data_offsets\":"
	    "[0,8]}}", 8, "unknown dtype {\"F32\":null}");
}
END_TEST

START_TEST(metadata_lookup)
{
	static const char hdr[] = "{\"__metadata__\":{\"format\":\"pt\","
		"\"note\":\"a\\nb\"},\"w\":" F32x2("[0,8]") "}";
	char *v = NULL;

	write_st(sizeof(hdr) - 1, hdr, sizeof(hdr) - 1, 8);
	ck_assert_int_eq(ds_st_metadata(ctx, path, "note", &v), 0);
	ck_assert_str_eq(v, "a\nb");
	free(v);
	ck_assert_int_eq(ds_st_metadata(ctx, path, "missing", &v), 0);
	ck_assert_ptr_null(v);
	try_header("{\"__metadata__\":{\"format\":\"pt\",\"format\":\"np\"}}", 0);
	expect_format(ds_st_metadata(ctx, path, "format", &v), "has key "
		      "'format' twice");
	ck_assert_ptr_null(v);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("safetensors");
	TCase *ok = tcase_create("valid"), *hd = tcase_create("header");
	TCase *en = tcase_create("entries"), *ti = tcase_create("tiling");
	TCase *rf = tcase_create("reference");
	TCase *all[] = { ok, hd, en, ti, rf };

	for (unsigned i = 0; i < 5; i++) {
		tcase_add_checked_fixture(all[i], setup, teardown);
		suite_add_tcase(s, all[i]);
	}
	tcase_add_test(ok, valid_several_dtypes);
	tcase_add_test(ok, valid_metadata_only);
	tcase_add_test(ok, dtype_table);
	tcase_add_test(ok, build_round_trip);
	tcase_add_test(ok, build_empty_and_refusals);
	tcase_add_test(hd, empty_file);
	tcase_add_test(hd, shorter_than_8);
	tcase_add_test(hd, header_length_zero);
	tcase_add_test(hd, header_length_over_limit);
	tcase_add_test(hd, header_length_beyond_file);
	tcase_add_test(hd, header_not_brace);
	tcase_add_test(hd, header_not_json);
	tcase_add_test(hd, name_not_utf8);
	tcase_add_test(hd, duplicate_name);
	tcase_add_test(hd, metadata_not_object);
	tcase_add_test(hd, metadata_value_not_string);
	tcase_add_test(en, entry_not_object);
	tcase_add_test(en, entry_missing_key);
	tcase_add_test(en, entry_duplicate_key);
	tcase_add_test(en, unknown_dtype);
	tcase_add_test(en, shape_not_array);
	tcase_add_test(en, shape_negative);
	tcase_add_test(en, shape_fractional);
	tcase_add_test(en, shape_not_numeric);
	tcase_add_test(en, shape_too_many_dims);
	tcase_add_test(en, offsets_malformed);
	tcase_add_test(en, offsets_begin_after_end);
	tcase_add_test(en, size_overflow);
	tcase_add_test(en, size_mismatch);
	tcase_add_test(ti, first_not_at_zero);
	tcase_add_test(ti, hole_between);
	tcase_add_test(ti, overlap);
	tcase_add_test(ti, empty_tensor_inside_another);
	tcase_add_test(ti, trailing_bytes);
	tcase_add_test(ti, truncated_data);
	tcase_add_test(ok, dtype_bytes);
	tcase_add_test(rf, new_dtypes);
	tcase_add_test(rf, sub_byte_not_whole_bytes);
	tcase_add_test(rf, negative_zero);
	tcase_add_test(rf, integers_to_2_64);
	tcase_add_test(rf, extra_key_ignored);
	tcase_add_test(rf, metadata_rules);
	tcase_add_test(rf, nul_in_names);
	tcase_add_test(rf, strings_decoded);
	tcase_add_test(rf, whitespace);
	tcase_add_test(rf, syntax_errors);
	tcase_add_test(rf, numbers_in_ignored_values);
	tcase_add_test(rf, nesting_limit);
	tcase_add_test(rf, entry_forms_refused);
	tcase_add_test(rf, metadata_lookup);
	return s;
}

int main(void)
{
	return run_suite(suite());
}

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
	static const unsigned size[DS_DT_COUNT] = {
		[DS_DT_BOOL] = 1, [DS_DT_U8] = 1, [DS_DT_I8] = 1,
		[DS_DT_U16] = 2, [DS_DT_I16] = 2, [DS_DT_U32] = 4,
		[DS_DT_I32] = 4, [DS_DT_U64] = 8, [DS_DT_I64] = 8,
		[DS_DT_F8_E4M3] = 1, [DS_DT_F8_E5M2] = 1, [DS_DT_F16] = 2,
		[DS_DT_BF16] = 2, [DS_DT_F32] = 4, [DS_DT_F64] = 8,
	};
	enum ds_dtype dt;

	for (int i = 0; i < DS_DT_COUNT; i++) {
		ck_assert_ptr_nonnull(ds_dtype_name((enum ds_dtype)i));
		ck_assert_int_eq(ds_dtype_parse(ds_dtype_name((enum ds_dtype)i),
						&dt), 0);
		ck_assert_int_eq(dt, i);
		ck_assert_uint_eq(ds_dtype_size((enum ds_dtype)i), size[i]);
	}
	ck_assert_str_eq(ds_dtype_name(DS_DT_BF16), "BF16");
	ck_assert_str_eq(ds_dtype_name(DS_DT_F8_E5M2), "F8_E5M2");
	ck_assert_ptr_null(ds_dtype_name(DS_DT_COUNT));
	ck_assert_uint_eq(ds_dtype_size(DS_DT_COUNT), 0);
	ck_assert_int_eq(ds_dtype_parse("bf16", &dt), -1);
	ck_assert_int_eq(ds_dtype_parse("", &dt), -1);
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
	bad("{\"w\xff\":" F32x2("[0,8]") "}", 8, "0xff");
	bad("{\"w\\u0000\":" F32x2("[0,8]") "}", 8, "not valid JSON");
}
END_TEST

START_TEST(duplicate_name)
{
	bad("{\"w\":" F32x2("[0,8]") ",\"w\":" F32x2("[8,16]") "}", 16,
	    "duplicate object key");
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

START_TEST(entry_unknown_key)
{
	bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],"
	    "\"strides\":[1]}}", 8, "tensor 'w': unknown key 'strides'");
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

START_TEST(shape_too_many_dims)
{
	bad(SHAPE("[1,1,1,1,1,1,1,1,8]"), 8, "shape has 9 dimensions, at "
	    "most 8");
	/* Eight is fine. */
	ck_assert_int_eq(try_header(SHAPE("[1,1,1,1,1,1,1,8]"), 8), 0);
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
	    "[1099511627776,1099511627776] has more than 2^64 elements");
	/* 2^62 elements fit; 2^62 x 8 bytes do not. */
	bad("{\"w\":{\"dtype\":\"U64\",\"shape\":[4611686018427387904],"
	    "\"data_offsets\":[0,0]}}", 0, "tensor 'w': 4611686018427387904 "
	    "elements of U64 take more than 2^64 bytes");
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

static Suite *suite(void)
{
	Suite *s = suite_create("safetensors");
	TCase *ok = tcase_create("valid"), *hd = tcase_create("header");
	TCase *en = tcase_create("entries"), *ti = tcase_create("tiling");
	TCase *all[] = { ok, hd, en, ti };

	for (unsigned i = 0; i < 4; i++) {
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
	tcase_add_test(en, entry_unknown_key);
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
	return s;
}

int main(void)
{
	return run_suite(suite());
}

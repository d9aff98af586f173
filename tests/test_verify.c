/* SPDX-License-Identifier: MIT */
/* test_verify.c - ds_verify on good and damaged output directories (Check) */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include "common/ctx.h"
#include "inputs/model.h"
#include "testutil.h"

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"
#define INDEX  "model.safetensors.index.json"
#define SUMS   "CHECKSUMS.xxh128"

static ds_ctx *ctx;
static char last[256];          /* the last notice of ds_verify */
static unsigned notices;

/* ---- helpers ------------------------------------------------------------ */

/* A file's bytes, malloc'd; *len its size. */
static char *slurp(const char *p, size_t *len)
{
	struct stat st;
	char *b;
	int fd = open(p, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	b = malloc(*len + 1);
	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(read(fd, b, *len), (ssize_t)*len);
	close(fd);
	return b;
}

/*
 * A shard of F32 [2] tensors named names[0..n), built by build_f32_shard
 * with __metadata__ {"format": fmt} (none when fmt is NULL); data bytes seed+i.
 */
static void write_shard(const char *p, const char *const *names, size_t n,
			const char *fmt, unsigned char seed)
{
	const char *meta[] = { "format", fmt, "dare_stream_version", "test",
			       NULL };
	char *file;
	size_t len;

	ck_assert_int_eq(build_f32_shard(names, n, fmt ? meta : NULL, &file,
					 &len), 0);
	for (size_t i = 0; i < 8 * n; i++)
		file[len - 8 * n + i] = (char)(seed + i);
	write_raw(p, file, len);
	free(file);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The canonical XXH3-128 of a file as 32 lowercase hex digits. */
static void hash_hex(const char *p, char out[33])
{
	XXH128_canonical_t c;
	size_t len;
	char *b = slurp(p, &len);

	XXH128_canonicalFromHash(&c, XXH3_128bits(b, len));
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", c.digest[i]);
	free(b);
}

/* CHECKSUMS.xxh128 of dir as xxh128sum writes it: every visible file. */
static void write_sums(const char *dir)
{
	char *names[32], text[8192] = "", hex[33], path[PATH_MAX];
	size_t n = 0;
	struct dirent *de;
	DIR *d = opendir(dir);

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' && strcmp(de->d_name, SUMS) &&
		    de->d_type == DT_REG && n < 32)
			names[n++] = strdup(de->d_name);
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_str);
	for (size_t i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		hash_hex(path, hex);
		snprintf(text + strlen(text), sizeof(text) - strlen(text),
			 "%s  %s\n", hex, names[i]);
		free(names[i]);
	}
	snprintf(path, sizeof(path), "%s/%s", dir, SUMS);
	write_text(path, text);
}

static const char *const one[] = { "a", "b" }, *const two[] = { "c" };

/* Shards, index (total 24 bytes), config.json; no CHECKSUMS yet. */
static void make_parts(const char *fmt)
{
	mkdir(P("g"), 0755);
	write_shard(P("g/" SHARD1), one, 2, fmt, 1);
	write_shard(P("g/" SHARD2), two, 1, fmt, 100);
	write_text(P("g/" INDEX), "{\"metadata\": {\"total_size\": 24}, "
		   "\"weight_map\": {\"a\": \"" SHARD1 "\", \"b\": \"" SHARD1
		   "\", \"c\": \"" SHARD2 "\"}}");
	write_text(P("g/config.json"), "{\"model_type\": \"llama\"}\n");
}

/* A good sharded output directory g/. */
static void make_good(void)
{
	make_parts("pt");
	write_sums(P("g"));
}

static void on_notice(void *user, enum ds_log_level lv, const char *msg)
{
	(void)user;
	ck_assert_int_eq(lv, DS_LOG_NOTICE);
	snprintf(last, sizeof(last), "%s", msg);
	notices++;
}

/* ds_verify(g) returns want and its message holds every fragment. */
static void expect(int want, ...)
{
	const char *frag;
	va_list ap;
	int rc = ds_verify(ctx, P("g"), on_notice, NULL);

	ck_assert_msg(rc == want, "ds_verify: %d, expected %d (%s)", rc, want,
		      ds_ctx_error(ctx));
	va_start(ap, want);
	while ((frag = va_arg(ap, const char *)))
		ck_assert_msg(strstr(ds_ctx_error(ctx), frag),
			      "'%s' lacks '%s'", ds_ctx_error(ctx), frag);
	va_end(ap);
}

static void setup(void)
{
	ck_assert_ptr_nonnull(scratch_make("ds-test-verify-"));
	ctx = ds_ctx_create();
	ck_assert_ptr_nonnull(ctx);
	last[0] = '\0';
	notices = 0;
}

static void teardown(void)
{
	ds_ctx_free(ctx);
	scratch_remove();
}

/* Flip one bit of the byte at off of file p. */
static void flip(const char *p, long off)
{
	size_t len;
	char *b = slurp(p, &len);

	ck_assert_uint_lt((size_t)off, len);
	b[off] ^= 0x10;
	write_raw(p, b, len);
	free(b);
}

/* ---- good directories --------------------------------------------------- */

START_TEST(good_sharded)
{
	make_good();
	expect(0, NULL);
	ck_assert_str_eq(last, "4 files, 3 tensors");
	ck_assert_uint_eq(notices, 5);  /* each file, then the totals */
}
END_TEST

START_TEST(good_single_file_model)
{
	mkdir(P("g"), 0755);
	write_shard(P("g/model.safetensors"), one, 2, "pt", 7);
	write_sums(P("g"));
	expect(0, NULL);
	ck_assert_str_eq(last, "1 files, 2 tensors");
}
END_TEST

/* The known answer of xxh128sum for an empty file: the same format. */
START_TEST(xxh128sum_known_answer)
{
	make_good();
	write_text(P("g/empty.txt"), "");
	append_text(P("g/" SUMS), "99aa06d3014798d86001c324468d497f"
		    "  empty.txt\n");
	expect(0, NULL);
	ck_assert_str_eq(last, "5 files, 3 tensors");
}
END_TEST

START_TEST(hidden_files_and_directories_ignored)
{
	make_good();
	write_text(P("g/.model-00001-of-00002.safetensors.partial"), "x");
	mkdir(P("g/sub"), 0755);
	write_text(P("g/sub/stray"), "x");
	expect(0, NULL);
}
END_TEST

/* ---- corrupt content: DS_E_FORMAT naming the file ----------------------- */

START_TEST(flipped_data_byte)
{
	size_t len;

	make_good();
	free(slurp(P("g/" SHARD2), &len));
	flip(P("g/" SHARD2), (long)len - 3);
	expect(DS_E_FORMAT, P("g/" SHARD2), "checksum mismatch", NULL);
}
END_TEST

START_TEST(flipped_byte_in_companion)
{
	make_good();
	flip(P("g/config.json"), 2);
	expect(DS_E_FORMAT, P("g/config.json"), "checksum mismatch", NULL);
}
END_TEST

/* Structure is checked even when the checksums agree with the damage. */
START_TEST(bad_structure_with_matching_checksums)
{
	make_parts("pt");
	append_text(P("g/" SHARD1), "tail");
	write_sums(P("g"));
	expect(DS_E_FORMAT, P("g/" SHARD1), "trailing bytes", NULL);
}
END_TEST

START_TEST(missing_file)
{
	make_good();
	unlink(P("g/config.json"));
	expect(DS_E_FORMAT, P("g/config.json"), "listed in " SUMS
	       " but missing", NULL);
}
END_TEST

START_TEST(missing_shard)
{
	make_good();
	unlink(P("g/" SHARD2));
	expect(DS_E_FORMAT, P("g/" SHARD2), "missing", NULL);
}
END_TEST

START_TEST(unlisted_file)
{
	make_good();
	write_text(P("g/notes.txt"), "hello\n");
	expect(DS_E_FORMAT, P("g/notes.txt"), "not listed in " SUMS, NULL);
}
END_TEST

START_TEST(no_checksums)
{
	make_parts("pt");
	expect(DS_E_FORMAT, P("g"), "no " SUMS, NULL);
}
END_TEST

static const char *const bad_lines[] = {
	"not a checksum line",
	"99aa06d3014798d86001c324468d497  config.json",     /* 31 digits */
	"99aa06d3014798d86001c324468d497fe  config.json",   /* 33 digits */
	"99aa06d3014798d86001c324468d497f config.json",     /* one space */
	"99aa06d3014798d86001c324468d497g  config.json",    /* not hex */
	"99aa06d3014798d86001c324468d497f  ",               /* no name */
	"99aa06d3014798d86001c324468d497f  ../g/config.json",
	"99aa06d3014798d86001c324468d497f  ..",
	"",                                                 /* empty line */
};

START_TEST(bad_checksum_line)
{
	make_good();
	/* The good lines, then the bad one: it is line 5. */
	append_text(P("g/" SUMS), bad_lines[_i]);
	append_text(P("g/" SUMS), "\n");
	expect(DS_E_FORMAT, P("g/" SUMS ":5: expected '<32 hex digits>  "
			      "<file name>'"), NULL);
}
END_TEST

START_TEST(duplicate_checksum_line)
{
	size_t len;
	char *sums;

	make_good();
	sums = slurp(P("g/" SUMS), &len);
	/* The first line (config.json) twice. */
	append_raw(P("g/" SUMS), sums,
		   (size_t)(strchr(sums, '\n') - sums + 1));
	free(sums);
	expect(DS_E_FORMAT, "'config.json' is listed twice", NULL);
}
END_TEST

START_TEST(nul_in_checksums)
{
	make_good();
	write_raw(P("g/" SUMS), "99aa\0", 5);
	expect(DS_E_FORMAT, P("g/" SUMS), "NUL", NULL);
}
END_TEST

START_TEST(index_total_size_wrong)
{
	make_parts("pt");
	write_text(P("g/" INDEX), "{\"metadata\": {\"total_size\": 25}, "
		   "\"weight_map\": {\"a\": \"" SHARD1 "\", \"b\": \"" SHARD1
		   "\", \"c\": \"" SHARD2 "\"}}");
	write_sums(P("g"));
	expect(DS_E_FORMAT, P("g/" INDEX), "total_size is 25, expected 24",
	       NULL);
}
END_TEST

START_TEST(index_without_total_size)
{
	make_parts("pt");
	write_text(P("g/" INDEX), "{\"weight_map\": {\"a\": \"" SHARD1
		   "\", \"b\": \"" SHARD1 "\", \"c\": \"" SHARD2 "\"}}");
	write_sums(P("g"));
	expect(DS_E_FORMAT, P("g/" INDEX), "total_size must be 24", "none",
	       NULL);
}
END_TEST

START_TEST(index_misses_a_tensor)
{
	make_parts("pt");
	write_text(P("g/" INDEX), "{\"metadata\": {\"total_size\": 24}, "
		   "\"weight_map\": {\"a\": \"" SHARD1 "\", \"c\": \"" SHARD2
		   "\"}}");
	write_sums(P("g"));
	expect(DS_E_FORMAT, P("g/" INDEX), "weight_map names 2 tensors, the "
	       "shards hold 3", NULL);
}
END_TEST

START_TEST(format_metadata_missing)
{
	make_parts(NULL);
	write_sums(P("g"));
	expect(DS_E_FORMAT, P("g/" SHARD1), "\"format\" is missing", NULL);
}
END_TEST

START_TEST(format_metadata_wrong)
{
	make_parts("tf");
	write_sums(P("g"));
	expect(DS_E_FORMAT, P("g/" SHARD1), "\"format\" is \"tf\", expected "
	       "\"pt\"", NULL);
}
END_TEST

START_TEST(stray_safetensors_file)
{
	make_parts("pt");
	write_shard(P("g/extra.safetensors"), two, 1, "pt", 3);
	write_sums(P("g"));
	expect(DS_E_FORMAT, P("g/extra.safetensors"), "not a shard", NULL);
}
END_TEST

/* ---- cannot read: a negative errno ------------------------------------- */

/* Root reads a chmod 000 file anyway, so a dangling link stands for it. */
START_TEST(dangling_symlink_listed)
{
	make_good();
	unlink(P("g/config.json"));
	ck_assert_int_eq(symlink(P("nowhere/config.json"),
				 P("g/config.json")), 0);
	expect(-ENOENT, P("g/config.json"), "No such file", NULL);
}
END_TEST

START_TEST(dangling_symlink_unlisted)
{
	make_good();
	ck_assert_int_eq(symlink(P("nowhere"), P("g/tokenizer.json")), 0);
	expect(-ENOENT, P("g/tokenizer.json"), NULL);
}
END_TEST

START_TEST(no_such_directory)
{
	expect(-ENOENT, P("g"), NULL);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("verify");
	TCase *ok = tcase_create("good"), *bad = tcase_create("corrupt");
	TCase *io = tcase_create("unreadable");
	TCase *all[] = { ok, bad, io };

	for (unsigned i = 0; i < 3; i++) {
		tcase_add_checked_fixture(all[i], setup, teardown);
		suite_add_tcase(s, all[i]);
	}
	tcase_add_test(ok, good_sharded);
	tcase_add_test(ok, good_single_file_model);
	tcase_add_test(ok, xxh128sum_known_answer);
	tcase_add_test(ok, hidden_files_and_directories_ignored);
	tcase_add_test(bad, flipped_data_byte);
	tcase_add_test(bad, flipped_byte_in_companion);
	tcase_add_test(bad, bad_structure_with_matching_checksums);
	tcase_add_test(bad, missing_file);
	tcase_add_test(bad, missing_shard);
	tcase_add_test(bad, unlisted_file);
	tcase_add_test(bad, no_checksums);
	tcase_add_loop_test(bad, bad_checksum_line, 0,
			    (int)(sizeof(bad_lines) / sizeof(bad_lines[0])));
	tcase_add_test(bad, duplicate_checksum_line);
	tcase_add_test(bad, nul_in_checksums);
	tcase_add_test(bad, index_total_size_wrong);
	tcase_add_test(bad, index_without_total_size);
	tcase_add_test(bad, index_misses_a_tensor);
	tcase_add_test(bad, format_metadata_missing);
	tcase_add_test(bad, format_metadata_wrong);
	tcase_add_test(bad, stray_safetensors_file);
	tcase_add_test(io, dangling_symlink_listed);
	tcase_add_test(io, dangling_symlink_unlisted);
	tcase_add_test(io, no_such_directory);
	return s;
}

int main(void)
{
	return run_suite(suite());
}

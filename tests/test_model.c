/* SPDX-License-Identifier: MIT */
/* test_model.c - resolving model arguments and opening models (Check suite) */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/ctx.h"
#include "inputs/model.h"
#include "testutil.h"

/* An id no directory of the build tree is likely to be named like. */
#define HF_ID   "ds-test-org/tiny-model.v1"
#define HF_REPO "models--ds-test-org--tiny-model.v1"
#define HF_REV  "0123456789abcdef0123456789abcdef01234567"

static ds_ctx *ctx;
static ds_model *m;
static char warned[4096];
static const char *const envs[] = { "HF_HUB_CACHE", "HF_HOME", "HOME" };
static char *saved[3];

/* ---- helpers: files ----------------------------------------------------- */

/* mkdir -p */
static void mkdirs(const char *p)
{
	char b[PATH_MAX];

	snprintf(b, sizeof(b), "%s", p);
	for (char *s = b + 1; *s; s++) {
		if (*s == '/') {
			*s = '\0';
			mkdir(b, 0755);
			*s = '/';
		}
	}
	mkdir(b, 0755);
}

/*
 * A safetensors file holding the comma-separated tensors of names, each F32
 * [2] (8 bytes), in that order; header padded to 8 like real files.
 */
static void write_shard(const char *p, const char *names)
{
	char hdr[4096] = "{", list[1024], *save, *name;
	unsigned char buf[8192] = { 0 };
	size_t len, off = 0;

	snprintf(list, sizeof(list), "%s", names);
	for (name = strtok_r(list, ",", &save); name;
	     name = strtok_r(NULL, ",", &save), off += 8)
		snprintf(hdr + strlen(hdr), sizeof(hdr) - strlen(hdr),
			 "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[2],"
			 "\"data_offsets\":[%zu,%zu]}", off ? "," : "", name,
			 off, off + 8);
	strcat(hdr, "}");
	while (strlen(hdr) % 8)
		strcat(hdr, " ");
	len = strlen(hdr);
	for (int i = 0; i < 8; i++)
		buf[i] = (unsigned char)((uint64_t)len >> (8 * i));
	memcpy(buf + 8, hdr, len);
	write_raw(p, buf, 8 + len + off);
}

static void log_fn(void *user, enum ds_log_level lv, const char *msg)
{
	size_t n = strlen(warned);

	(void)user;
	if (lv == DS_LOG_WARNING)
		snprintf(warned + n, sizeof(warned) - n, "%s\n", msg);
}

static void setup(void)
{
	ck_assert_ptr_nonnull(scratch_make("ds-test-model-"));
	ctx = ds_ctx_create();
	ck_assert_ptr_nonnull(ctx);
	ds_ctx_set_log(ctx, log_fn, NULL);
	warned[0] = '\0';
	m = NULL;
	/* Restored in teardown, so CK_FORK=no runs stay independent. */
	for (int i = 0; i < 3; i++) {
		const char *v = getenv(envs[i]);

		saved[i] = v ? strdup(v) : NULL;
	}
}

static void teardown(void)
{
	for (int i = 0; i < 3; i++) {
		if (saved[i])
			setenv(envs[i], saved[i], 1);
		else
			unsetenv(envs[i]);
		free(saved[i]);
	}
	ds_model_free(m);
	ds_ctx_free(ctx);
	scratch_remove();
}

/* rc is code and the error text holds each fragment (NULL-terminated). */
static void expect_err(int rc, int code, ...)
{
	const char *msg = ds_ctx_error(ctx), *frag;
	va_list ap;

	ck_assert_msg(rc == code, "rc %d, expected %d (%s)", rc, code, msg);
	ck_assert_ptr_null(m);
	va_start(ap, code);
	while ((frag = va_arg(ap, const char *)))
		ck_assert_msg(strstr(msg, frag), "'%s' lacks '%s'", msg, frag);
	va_end(ap);
}

static void open_ok(const char *arg)
{
	int rc = ds_model_open(ctx, arg, &m);

	ck_assert_msg(rc == 0, "%s: rc %d: %s", arg, rc, ds_ctx_error(ctx));
}

/* Tensor i of m is name, in shard s, at data offset off of that shard. */
static void expect_tensor(size_t i, const char *name, unsigned s,
			  uint64_t off)
{
	struct ds_tensor_info ti;

	ck_assert_int_eq(ds_model_tensor(m, i, &ti), 0);
	ck_assert_str_eq(ti.name, name);
	ck_assert_uint_eq(ti.shard, s);
	ck_assert_uint_eq(ti.offset, m->shards[s].data_off + off);
	ck_assert_uint_eq(ti.nbytes, 8);
	ck_assert_uint_eq(ti.numel, 2);
	ck_assert_int_eq(ti.dtype, DS_DT_F32);
	ck_assert_ptr_eq(ds_model_find(m, name), &m->tensors[i]);
}

/* scratch/dir: a model in two shards with its index (b, a | c). */
static void make_sharded(const char *dir)
{
	mkdirs(P("%s", dir));
	write_shard(P("%s/model-00001-of-00002.safetensors", dir), "b,a");
	write_shard(P("%s/model-00002-of-00002.safetensors", dir), "c");
	write_text(P("%s/model.safetensors.index.json", dir),
		   "{\"metadata\":{\"total_size\":24},\"weight_map\":{"
		   "\"a\":\"model-00001-of-00002.safetensors\","
		   "\"c\":\"model-00002-of-00002.safetensors\","
		   "\"b\":\"model-00001-of-00002.safetensors\"}}");
}

static void expect_sharded(const char *dir)
{
	ck_assert_uint_eq(ds_model_shard_count(m), 2);
	ck_assert_str_eq(ds_model_dir(m), P("%s", dir));
	ck_assert_str_eq(ds_model_shard_path(m, 0),
			 P("%s/model-00001-of-00002.safetensors", dir));
	ck_assert_str_eq(ds_model_shard_path(m, 1),
			 P("%s/model-00002-of-00002.safetensors", dir));
	ck_assert_ptr_null(ds_model_shard_path(m, 2));
	ck_assert_uint_eq(ds_model_tensor_count(m), 3);
	expect_tensor(0, "b", 0, 0);
	expect_tensor(1, "a", 0, 8);
	expect_tensor(2, "c", 1, 0);
	ck_assert_ptr_null(ds_model_find(m, "d"));
	ck_assert_str_eq(m->index, P("%s/model.safetensors.index.json", dir));
}

/* ---- directories and files ---------------------------------------------- */

START_TEST(dir_with_model_safetensors)
{
	struct ds_tensor_info ti;

	mkdirs(P("m"));
	write_shard(P("m/model.safetensors"), "w1,w0");
	/* Stray shards are ignored when model.safetensors is there. */
	write_shard(P("m/other.safetensors"), "x");
	open_ok(P("m/"));
	ck_assert_str_eq(ds_model_dir(m), P("m"));
	ck_assert_uint_eq(ds_model_shard_count(m), 1);
	ck_assert_str_eq(ds_model_shard_path(m, 0), P("m/model.safetensors"));
	ck_assert_uint_eq(ds_model_tensor_count(m), 2);
	expect_tensor(0, "w1", 0, 0);
	expect_tensor(1, "w0", 0, 8);
	ck_assert_ptr_null(m->index);
	ck_assert_uint_eq(m->shards[0].data_off % 8, 0);
	ck_assert_int_eq(ds_model_tensor(m, 2, &ti), -EINVAL);
}
END_TEST

START_TEST(dir_with_index)
{
	make_sharded("s");
	open_ok(P("s"));
	expect_sharded("s");
	ck_assert_str_eq(warned, "");
}
END_TEST

START_TEST(index_path)
{
	make_sharded("s");
	open_ok(P("s/model.safetensors.index.json"));
	expect_sharded("s");
}
END_TEST

START_TEST(single_file)
{
	mkdirs(P("f"));
	write_shard(P("f/just-one.safetensors"), "w");
	open_ok(P("f/just-one.safetensors"));
	ck_assert_str_eq(ds_model_dir(m), P("f"));
	ck_assert_uint_eq(ds_model_shard_count(m), 1);
	ck_assert_str_eq(m->shards[0].name, "just-one.safetensors");
	ck_assert_str_eq(ds_model_shard_path(m, 0),
			 P("f/just-one.safetensors"));
	expect_tensor(0, "w", 0, 0);
}
END_TEST

START_TEST(dir_of_shards_without_index)
{
	mkdirs(P("u"));
	write_shard(P("u/y.safetensors"), "c,b");
	write_shard(P("u/x.safetensors"), "a");
	/* Hidden (partial output) and other files are not shards. */
	write_text(P("u/.partial.safetensors"), "garbage");
	write_text(P("u/config.json"), "{}");
	mkdirs(P("u/dir.safetensors"));
	open_ok(P("u"));
	ck_assert_uint_eq(ds_model_shard_count(m), 2);
	ck_assert_str_eq(ds_model_shard_path(m, 0), P("u/x.safetensors"));
	ck_assert_str_eq(ds_model_shard_path(m, 1), P("u/y.safetensors"));
	ck_assert_uint_eq(ds_model_tensor_count(m), 3);
	expect_tensor(0, "a", 0, 0);
	expect_tensor(1, "c", 1, 0);
	expect_tensor(2, "b", 1, 8);
}
END_TEST

START_TEST(resolve_only)
{
	struct ds_model r;

	make_sharded("s");
	ck_assert_int_eq(ds_model_resolve(ctx, P("s"), &r), 0);
	ck_assert_str_eq(r.arg, P("s"));
	ck_assert_str_eq(r.dir, P("s"));
	ck_assert_uint_eq(r.nshards, 2);
	ck_assert_str_eq(r.shards[1].name, "model-00002-of-00002.safetensors");
	ck_assert_ptr_null(r.tensors);
	ds_model_clear(&r);
	ck_assert_ptr_null(r.shards);
	ck_assert_int_eq(ds_model_resolve(ctx, P("nope"), &r), DS_E_NOTFOUND);
	ck_assert_ptr_null(r.arg);
}
END_TEST

START_TEST(empty_dir)
{
	mkdirs(P("e"));
	write_text(P("e/config.json"), "{}");
	expect_err(ds_model_open(ctx, P("e"), &m), DS_E_NOTFOUND, P("e"),
		   ": no model.safetensors, no model.safetensors.index.json "
		   "and no *.safetensors file", NULL);
}
END_TEST

START_TEST(no_such_path)
{
	expect_err(ds_model_open(ctx, P("nope/model"), &m), DS_E_NOTFOUND,
		   P("nope/model: no such file or directory"), NULL);
	/* Not an HF id either: two slashes, a leading dot. */
	expect_err(ds_model_open(ctx, "ds-no/such/model", &m), DS_E_NOTFOUND,
		   "ds-no/such/model: no such file or directory", NULL);
	expect_err(ds_model_open(ctx, ".ds-no/model", &m), DS_E_NOTFOUND,
		   "no such file or directory", NULL);
}
END_TEST

START_TEST(unsupported_file)
{
	write_text(P("notes.txt"), "hello");
	expect_err(ds_model_open(ctx, P("notes.txt"), &m), DS_E_FORMAT,
		   P("notes.txt"), "expected a directory", NULL);
}
END_TEST

START_TEST(bad_shard_propagates)
{
	mkdirs(P("b"));
	write_shard(P("b/a.safetensors"), "a");
	write_raw(P("b/b.safetensors"), "\0\0\0\0", 4);
	expect_err(ds_model_open(ctx, P("b"), &m), DS_E_FORMAT,
		   P("b/b.safetensors"), "shorter than", NULL);
}
END_TEST

/* ---- the Hugging Face cache --------------------------------------------- */

/*
 * HUB/models--org--name as huggingface_hub lays it out: refs/main, blobs/,
 * and snapshots/REV/ of relative symlinks into blobs/.  Sharded: the two
 * shards and the index of make_sharded; else one model.safetensors ("c").
 */
static void make_hub(const char *hub, int sharded)
{
	static const char *const files[] = {
		"model-00002-of-00002.safetensors",
		"model-00001-of-00002.safetensors",
		"model.safetensors.index.json",
	};
	char repo[1024], p[PATH_MAX], q[64];

	snprintf(repo, sizeof(repo), "%s/" HF_REPO, hub);
	snprintf(p, sizeof(p), "%s/blobs", repo);
	mkdirs(p);
	snprintf(p, sizeof(p), "%s/refs", repo);
	mkdirs(p);
	snprintf(p, sizeof(p), "%s/snapshots/" HF_REV, repo);
	mkdirs(p);
	snprintf(p, sizeof(p), "%s/refs/main", repo);
	write_text(p, HF_REV "\n");
	make_sharded("src");
	for (int i = 0; i < (sharded ? 3 : 1); i++) {
		snprintf(p, sizeof(p), "%s/blobs/blob%d", repo, i);
		ck_assert_int_eq(rename(P("src/%s", files[i]), p), 0);
		snprintf(p, sizeof(p), "%s/snapshots/" HF_REV "/%s", repo,
			 sharded ? files[i] : "model.safetensors");
		snprintf(q, sizeof(q), "../../blobs/blob%d", i);
		ck_assert_int_eq(symlink(q, p), 0);
	}
}

static const char *snapshot(const char *hub)
{
	static char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s/" HF_REPO "/snapshots/" HF_REV, hub);
	return p;
}

START_TEST(hf_hub_cache)
{
	struct stat st;

	make_hub(P("hub"), 0);
	setenv("HF_HUB_CACHE", P("hub"), 1);
	setenv("HF_HOME", P("elsewhere"), 1);
	open_ok(HF_ID);
	ck_assert_str_eq(ds_model_dir(m), snapshot(P("hub")));
	ck_assert_uint_eq(ds_model_shard_count(m), 1);
	ck_assert_str_eq(ds_model_shard_path(m, 0),
			 P("hub/" HF_REPO "/snapshots/" HF_REV
			   "/model.safetensors"));
	ck_assert_int_eq(lstat(ds_model_shard_path(m, 0), &st), 0);
	ck_assert(S_ISLNK(st.st_mode));
	ck_assert_uint_eq(ds_model_tensor_count(m), 1);
	expect_tensor(0, "c", 0, 0);
	ck_assert_str_eq(m->arg, HF_ID);
}
END_TEST

START_TEST(hf_home)
{
	char snap[PATH_MAX];

	make_hub(P("hfhome/hub"), 1);
	unsetenv("HF_HUB_CACHE");
	setenv("HF_HOME", P("hfhome"), 1);
	open_ok(HF_ID);
	snprintf(snap, sizeof(snap), "%s", snapshot(P("hfhome/hub")));
	ck_assert_str_eq(ds_model_dir(m), snap);
	ck_assert_str_eq(m->index, P("hfhome/hub/" HF_REPO "/snapshots/"
				     HF_REV "/model.safetensors.index.json"));
	ck_assert_uint_eq(ds_model_shard_count(m), 2);
	ck_assert_uint_eq(ds_model_tensor_count(m), 3);
	expect_tensor(2, "c", 1, 0);
}
END_TEST

START_TEST(hf_home_dir)
{
	make_hub(P("home/.cache/huggingface/hub"), 0);
	unsetenv("HF_HUB_CACHE");
	unsetenv("HF_HOME");
	setenv("HOME", P("home"), 1);
	open_ok(HF_ID);
	ck_assert_str_eq(ds_model_dir(m),
			 snapshot(P("home/.cache/huggingface/hub")));
}
END_TEST

START_TEST(hf_missing)
{
	mkdirs(P("hub"));
	setenv("HF_HUB_CACHE", P("hub"), 1);
	expect_err(ds_model_open(ctx, "ds-test-org/absent", &m),
		   DS_E_NOTFOUND, "ds-test-org/absent: ",
		   P("hub/models--ds-test-org--absent"), "$HF_HUB_CACHE",
		   "huggingface-cli download ds-test-org/absent", NULL);
	unsetenv("HF_HUB_CACHE");
	setenv("HF_HOME", P("hfh"), 1);
	expect_err(ds_model_open(ctx, "ds-test-org/absent", &m),
		   DS_E_NOTFOUND, P("hfh/hub/models--ds-test-org--absent"),
		   "$HF_HOME/hub", "huggingface-cli download", NULL);
}
END_TEST

START_TEST(hf_missing_snapshot)
{
	make_hub(P("hub"), 0);
	setenv("HF_HUB_CACHE", P("hub"), 1);
	rm_rf(snapshot(P("hub")));
	expect_err(ds_model_open(ctx, HF_ID, &m), DS_E_NOTFOUND,
		   snapshot(P("hub")), "huggingface-cli download " HF_ID,
		   NULL);
	unlink(P("hub/" HF_REPO "/refs/main"));
	expect_err(ds_model_open(ctx, HF_ID, &m), DS_E_NOTFOUND,
		   P("hub/" HF_REPO "/refs/main"), "huggingface-cli", NULL);
}
END_TEST

START_TEST(hf_bad_revision)
{
	make_hub(P("hub"), 0);
	setenv("HF_HUB_CACHE", P("hub"), 1);
	write_text(P("hub/" HF_REPO "/refs/main"), "../../x\n");
	expect_err(ds_model_open(ctx, HF_ID, &m), DS_E_FORMAT,
		   "expected a revision, found '../../x'", NULL);
}
END_TEST

/* ---- index files -------------------------------------------------------- */

/* Shard names as written in the JSON text, and as the message shows them. */
static const struct {
	const char *json, *shown;
} unsafe[] = {
	{ "../x.safetensors", "'../x.safetensors'" },
	{ "/abs.safetensors", "'/abs.safetensors'" },
	{ "a/b.safetensors", "'a/b.safetensors'" },
	{ "..", "'..'" },
	{ ".", "'.'" },
	{ "", "''" },
	{ "a\\\\b.safetensors", "'a\\b.safetensors'" },
	{ "sub\\/../x.safetensors", "'sub/../x.safetensors'" },
};

START_TEST(index_unsafe_shard_name)
{
	char idx[512];

	mkdirs(P("s"));
	write_shard(P("s/ok.safetensors"), "a");
	snprintf(idx, sizeof(idx), "{\"weight_map\":{\"a\":\"ok.safetensors\","
		 "\"evil\":\"%s\"}}", unsafe[_i].json);
	write_text(P("s/model.safetensors.index.json"), idx);
	expect_err(ds_model_open(ctx, P("s"), &m), DS_E_FORMAT,
		   P("s/model.safetensors.index.json"), "tensor 'evil'",
		   "not a plain file name", unsafe[_i].shown, NULL);
}
END_TEST

START_TEST(index_missing_shard)
{
	make_sharded("s");
	unlink(P("s/model-00002-of-00002.safetensors"));
	expect_err(ds_model_open(ctx, P("s"), &m), DS_E_NOTFOUND,
		   P("s/model.safetensors.index.json"),
		   "shard 'model-00002-of-00002.safetensors'", "missing", NULL);
}
END_TEST

START_TEST(index_tensor_not_in_shard)
{
	make_sharded("s");
	write_shard(P("s/model-00002-of-00002.safetensors"), "d");
	expect_err(ds_model_open(ctx, P("s"), &m), DS_E_FORMAT,
		   P("s/model.safetensors.index.json"), "tensor 'c'",
		   "model-00002-of-00002.safetensors has no tensor 'c'", NULL);
}
END_TEST

START_TEST(index_tensor_in_other_shard)
{
	make_sharded("s");
	write_shard(P("s/model-00001-of-00002.safetensors"), "b");
	write_shard(P("s/model-00002-of-00002.safetensors"), "c,a");
	expect_err(ds_model_open(ctx, P("s"), &m), DS_E_FORMAT,
		   "tensor 'a' is mapped to shard "
		   "model-00001-of-00002.safetensors, but it is in "
		   "model-00002-of-00002.safetensors", NULL);
}
END_TEST

START_TEST(index_tensor_not_in_map)
{
	make_sharded("s");
	write_shard(P("s/model-00002-of-00002.safetensors"), "c,extra");
	open_ok(P("s"));
	ck_assert_uint_eq(ds_model_tensor_count(m), 4);
	ck_assert_ptr_nonnull(ds_model_find(m, "extra"));
	ck_assert_msg(strstr(warned, "tensor 'extra'") &&
		      strstr(warned, "model-00002-of-00002.safetensors"),
		      "warning: '%s'", warned);
}
END_TEST

START_TEST(duplicate_across_shards)
{
	mkdirs(P("u"));
	write_shard(P("u/x.safetensors"), "a,b");
	write_shard(P("u/y.safetensors"), "c,a");
	expect_err(ds_model_open(ctx, P("u"), &m), DS_E_FORMAT,
		   "tensor 'a' is in two shards", P("u/x.safetensors"),
		   P("u/y.safetensors"), NULL);
	/* With an index that claims it for one of them. */
	make_sharded("s");
	write_shard(P("s/model-00002-of-00002.safetensors"), "c,a");
	expect_err(ds_model_open(ctx, P("s"), &m), DS_E_FORMAT,
		   "tensor 'a' is in two shards", NULL);
}
END_TEST

START_TEST(index_malformed)
{
	make_sharded("s");
	write_text(P("s/model.safetensors.index.json"), "{\"weight_map\":");
	expect_err(ds_model_open(ctx, P("s"), &m), DS_E_FORMAT,
		   P("s/model.safetensors.index.json"), "line 1", NULL);
	write_text(P("s/model.safetensors.index.json"), "{\"metadata\":{}}");
	expect_err(ds_model_open(ctx, P("s"), &m), DS_E_FORMAT,
		   "\"weight_map\" object", NULL);
	write_text(P("s/model.safetensors.index.json"), "{\"weight_map\":{}}");
	expect_err(ds_model_open(ctx, P("s"), &m), DS_E_FORMAT,
		   "weight_map is empty", NULL);
	write_text(P("s/model.safetensors.index.json"),
		   "{\"weight_map\":{\"a\":1}}");
	expect_err(ds_model_open(ctx, P("s"), &m), DS_E_FORMAT,
		   "tensor 'a': expected a shard file name", NULL);
	write_text(P("s/model.safetensors.index.json"), "{\"weight_map\":{"
		   "\"a\":\"model-00001-of-00002.safetensors\","
		   "\"a\":\"model-00002-of-00002.safetensors\"}}");
	expect_err(ds_model_open(ctx, P("s"), &m), DS_E_FORMAT,
		   "duplicate object key", NULL);
}
END_TEST

/* The public tensor table: bytes of sub-byte dtypes, shapes of 32 dims. */
START_TEST(tensor_info_dtypes)
{
	static const char hdr[] = "{\"blocks\":{\"dtype\":\"F4\",\"shape\":[3,2],"
		"\"data_offsets\":[0,3]},\"deep\":{\"dtype\":\"F6_E3M2\",\"shape\":"
		"[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,2,"
		"2],\"data_offsets\":[3,6]}}";
	unsigned char buf[512] = { 0 };
	struct ds_tensor_info t;
	size_t len = sizeof(hdr) - 1;

	for (int i = 0; i < 8; i++)
		buf[i] = (unsigned char)((uint64_t)len >> (8 * i));
	memcpy(buf + 8, hdr, len);
	write_raw(P("q.safetensors"), buf, 8 + len + 6);
	ck_assert_int_eq(ds_model_open(ctx, P("q.safetensors"), &m), 0);
	ck_assert_uint_eq(ds_model_tensor_count(m), 2);
	ck_assert_int_eq(ds_model_tensor(m, 0, &t), 0);
	ck_assert_str_eq(t.name, "blocks");
	ck_assert_int_eq(t.dtype, DS_DT_F4);
	ck_assert_uint_eq(t.numel, 6);
	ck_assert_uint_eq(t.nbytes, 3);         /* 6 x 4 bits */
	ck_assert_uint_eq(t.offset, 8 + len);
	ck_assert_int_eq(ds_model_tensor(m, 1, &t), 0);
	ck_assert_int_eq(t.dtype, DS_DT_F6_E3M2);
	ck_assert_uint_eq(t.ndim, 32);
	ck_assert_uint_eq(t.shape[30], 2);
	ck_assert_uint_eq(t.shape[31], 2);
	ck_assert_uint_eq(t.numel, 4);
	ck_assert_uint_eq(t.nbytes, 3);         /* 4 x 6 bits */
	ck_assert_uint_eq(t.offset, 8 + len + 3);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("model");
	TCase *rs = tcase_create("resolve"), *hf = tcase_create("hf-cache");
	TCase *ix = tcase_create("index");
	TCase *all[] = { rs, hf, ix };

	for (unsigned i = 0; i < 3; i++) {
		tcase_add_checked_fixture(all[i], setup, teardown);
		suite_add_tcase(s, all[i]);
	}
	tcase_add_test(rs, dir_with_model_safetensors);
	tcase_add_test(rs, dir_with_index);
	tcase_add_test(rs, index_path);
	tcase_add_test(rs, single_file);
	tcase_add_test(rs, dir_of_shards_without_index);
	tcase_add_test(rs, resolve_only);
	tcase_add_test(rs, empty_dir);
	tcase_add_test(rs, no_such_path);
	tcase_add_test(rs, unsupported_file);
	tcase_add_test(rs, bad_shard_propagates);
	tcase_add_test(rs, tensor_info_dtypes);
	tcase_add_test(hf, hf_hub_cache);
	tcase_add_test(hf, hf_home);
	tcase_add_test(hf, hf_home_dir);
	tcase_add_test(hf, hf_missing);
	tcase_add_test(hf, hf_missing_snapshot);
	tcase_add_test(hf, hf_bad_revision);
	tcase_add_loop_test(ix, index_unsafe_shard_name, 0,
			    (int)(sizeof(unsafe) / sizeof(unsafe[0])));
	tcase_add_test(ix, index_missing_shard);
	tcase_add_test(ix, index_tensor_not_in_shard);
	tcase_add_test(ix, index_tensor_in_other_shard);
	tcase_add_test(ix, index_tensor_not_in_map);
	tcase_add_test(ix, duplicate_across_shards);
	tcase_add_test(ix, index_malformed);
	return s;
}

int main(void)
{
	return run_suite(suite());
}

/* SPDX-License-Identifier: MIT */
/* test_plan.c - the plan: checks, copy decisions, layout, window sizing, recipes */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/ctx.h"
#include "plan/plan.h"
#include "recipe/recipe.h"
#include "testutil.h"

/* A tensor to put in a test file: name, dtype, up to 2 dims. */
struct tdef {
	const char *name;
	enum ds_dtype dt;
	uint64_t d0, d1;
};

static char warnings[4096];

static void on_log(void *u, enum ds_log_level lv, const char *msg)
{
	(void)u;
	snprintf(warnings + strlen(warnings), sizeof(warnings) -
		 strlen(warnings), "%s%s\n", lv == DS_LOG_NOTICE ?
		 "notice: " : "", msg);
}

/* Write scratch/NAME/model.safetensors holding the tensors (zero data). */
static void write_model(const char *name, const struct tdef *t, size_t n)
{
	struct ds_tensor *v = calloc(n, sizeof(*v));
	uint64_t off = 0;
	char *hdr;
	size_t hlen;

	for (size_t i = 0; i < n; i++) {
		v[i].name = (char *)t[i].name;
		v[i].dtype = t[i].dt;
		v[i].ndim = t[i].d1 ? 2 : 1;
		v[i].shape[0] = t[i].d0;
		v[i].shape[1] = t[i].d1;
		v[i].numel = t[i].d0 * (t[i].d1 ? t[i].d1 : 1);
		v[i].begin = off;
		v[i].end = off += v[i].numel * ds_dtype_size(t[i].dt);
	}
	ck_assert_int_eq(ds_st_build(v, n, NULL, &hdr, &hlen), 0);
	ck_assert_int_eq(mkdir(P("%s", name), 0755), 0);
	write_raw(P("%s/model.safetensors", name), hdr, hlen);
	ck_assert_int_eq(truncate(P("%s/model.safetensors", name),
				  (off_t)(hlen + off)), 0);
	free(hdr);
	free(v);
}

static void setup(void)
{
	ck_assert_ptr_nonnull(scratch_make("ds-test-plan-"));
	warnings[0] = 0;
}

static void teardown(void)
{
	ck_assert_int_eq(scratch_remove(), 0);
}

/* Plan base + models m1..mn with method and options; returns the code. */
static int plan(struct ds_plan *p, ds_ctx *ctx, ds_recipe *r, int n,
		const struct ds_merge_opts *o)
{
	ds_recipe_set_base(r, P("base"));
	for (int j = 1; j <= n; j++)
		ds_recipe_add_model(r, P("m%d", j));
	ds_ctx_set_log(ctx, on_log, NULL);
	return ds_plan_build(ctx, r, o, p);
}

static const struct tdef llama[] = {
	{ "model.embed_tokens.weight", DS_DT_BF16, 100, 16 },
	{ "model.layers.0.mlp.up_proj.weight", DS_DT_BF16, 48, 16 },
	{ "model.norm.weight", DS_DT_BF16, 16, 0 },
	{ "model.position_ids", DS_DT_I64, 64, 0 },
};

START_TEST(layout_in_output_dtype)
{
	struct ds_merge_opts o = { .threads = 1 };
	struct ds_tensor *t;
	struct ds_plan p;
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *r = ds_recipe_create();
	size_t n;

	write_model("base", llama, 4);
	write_model("m1", llama, 4);
	write_model("m2", llama, 4);
	ds_recipe_set_drop_rate(r, -1, 0.5);
	ds_recipe_set_dtype(r, DS_DT_F32);
	ck_assert_int_eq(plan(&p, ctx, r, 2, &o), 0);
	ck_assert_uint_eq(p.not, 4);
	ck_assert_uint_eq(p.merged, 3);
	ck_assert_int_eq(p.ot[3].act, DS_ACT_COPY);
	/* F32 out: 1600*4, then 768*4, then 16*4; the I64 keeps 8 bytes. */
	ck_assert_uint_eq(p.ot[1].obegin, 6400);
	ck_assert_uint_eq(p.ot[2].obegin, 9472);
	ck_assert_uint_eq(p.ot[3].obegin, 9536);
	ck_assert_uint_eq(p.os[0].size, p.os[0].hlen + 10048);
	ck_assert_uint_eq(p.bytes_written, p.os[0].size);
	ck_assert_uint_eq(p.bytes_read, (1600 + 768 + 16) * 2 * 3 + 512);
	ck_assert_uint_eq(p.os[0].hlen % 8, 0);
	ck_assert_int_eq(ds_st_parse(ctx, "out", p.os[0].header + 8,
				     p.os[0].hlen - 8, 10048, 0, &t, &n), 0);
	ck_assert_uint_eq(n, 4);
	ck_assert_int_eq(t[0].dtype, DS_DT_F32);
	ck_assert_int_eq(t[3].dtype, DS_DT_I64);
	ck_assert_str_eq(t[3].name, "model.position_ids");
	ds_tensors_free(t, n);
	ds_plan_free(&p);
	ds_recipe_free(r);
	ds_ctx_free(ctx);
}
END_TEST

START_TEST(window_from_budget)
{
	static const struct tdef big[] = {
		{ "model.layers.0.mlp.up_proj.weight", DS_DT_BF16, 4096, 1024 },
	};
	struct ds_merge_opts o = { .threads = 2, .memory = 16 << 20 };
	struct ds_plan p;
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *r = ds_recipe_create();

	write_model("base", big, 1);
	write_model("m1", big, 1);
	write_model("m2", big, 1);
	ds_recipe_set_drop_rate(r, -1, 0.9);
	/* depth = threads + 2 = 4 slots of (3 inputs + 1 output) x 2 bytes:
	 * 16 MiB / (4 * 8) = 524288 elements. */
	ck_assert_int_eq(plan(&p, ctx, r, 2, &o), 0);
	ck_assert_uint_eq(p.depth, 4);
	ck_assert_uint_eq(p.window, 524288);
	ck_assert_uint_eq(p.memory, 16 << 20);
	ds_plan_free(&p);
	/* 1 MiB cannot hold 4 slots of one 65536-element block. */
	o.memory = 1 << 20;
	ck_assert_int_eq(ds_plan_build(ctx, r, &o, &p), DS_E_USAGE);
	ck_assert_ptr_nonnull(strstr(ds_ctx_error(ctx), "too small"));
	ck_assert_ptr_nonnull(strstr(ds_ctx_error(ctx), "2097152"));
	ds_plan_free(&p);
	ds_recipe_free(r);
	ds_ctx_free(ctx);
}
END_TEST

/* Plan base=llama, m1=llama, m2=variant; expect rc and a message part. */
static void expect_m2(const struct tdef *m2, size_t n, int rc,
		      const char *part)
{
	struct ds_merge_opts o = { .threads = 1 };
	struct ds_plan p;
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *r = ds_recipe_create();

	write_model("base", llama, 4);
	write_model("m1", llama, 4);
	write_model("m2", m2, n);
	ds_recipe_set_method(r, DS_M_TASK_ARITHMETIC);
	ck_assert_int_eq(plan(&p, ctx, r, 2, &o), rc);
	if (rc)
		ck_assert_msg(strstr(ds_ctx_error(ctx), part), "'%s' not in '%s'",
			      part, ds_ctx_error(ctx));
	else
		ck_assert_msg(strstr(warnings, part), "'%s' not in '%s'",
			      part, warnings);
	ds_plan_free(&p);
	ds_recipe_free(r);
	ds_ctx_free(ctx);
}

START_TEST(missing_tensor)
{
	static const struct tdef m2[] = {
		{ "model.embed_tokens.weight", DS_DT_BF16, 100, 16 },
		{ "model.norm.weight", DS_DT_BF16, 16, 0 },
		{ "model.position_ids", DS_DT_I64, 64, 0 },
	};
	expect_m2(m2, 3, DS_E_MISMATCH,
		  "/m2: tensor 'model.layers.0.mlp.up_proj.weight' of the "
		  "base");
}
END_TEST

START_TEST(shape_mismatch)
{
	static const struct tdef m2[] = {
		{ "model.embed_tokens.weight", DS_DT_BF16, 100, 16 },
		{ "model.layers.0.mlp.up_proj.weight", DS_DT_BF16, 48, 17 },
		{ "model.norm.weight", DS_DT_BF16, 16, 0 },
		{ "model.position_ids", DS_DT_I64, 64, 0 },
	};
	expect_m2(m2, 4, DS_E_MISMATCH, "has shape [48, 17], expected "
		  "[48, 16]");
}
END_TEST

START_TEST(extra_rows_only_for_vocab)
{
	static const struct tdef vocab[] = {
		{ "model.embed_tokens.weight", DS_DT_BF16, 104, 16 },
		{ "model.layers.0.mlp.up_proj.weight", DS_DT_BF16, 48, 16 },
		{ "model.norm.weight", DS_DT_BF16, 16, 0 },
		{ "model.position_ids", DS_DT_I64, 64, 0 },
	};
	static const struct tdef rows[] = {
		{ "model.embed_tokens.weight", DS_DT_BF16, 100, 16 },
		{ "model.layers.0.mlp.up_proj.weight", DS_DT_BF16, 50, 16 },
		{ "model.norm.weight", DS_DT_BF16, 16, 0 },
		{ "model.position_ids", DS_DT_I64, 64, 0 },
	};
	expect_m2(vocab, 4, 0, "merging the base's 100 rows");
	teardown();
	setup();
	expect_m2(rows, 4, DS_E_MISMATCH, "has shape [50, 16]");
}
END_TEST

START_TEST(model_dtype_not_float)
{
	static const struct tdef m2[] = {
		{ "model.embed_tokens.weight", DS_DT_BF16, 100, 16 },
		{ "model.layers.0.mlp.up_proj.weight", DS_DT_BF16, 48, 16 },
		{ "model.norm.weight", DS_DT_I32, 16, 0 },
		{ "model.position_ids", DS_DT_I64, 64, 0 },
	};
	expect_m2(m2, 4, DS_E_MISMATCH, "'model.norm.weight' is I32, "
		  "expected F16, BF16 or F32");
}
END_TEST

START_TEST(extra_tensor_warns)
{
	static const struct tdef m2[] = {
		{ "model.embed_tokens.weight", DS_DT_BF16, 100, 16 },
		{ "model.layers.0.mlp.up_proj.weight", DS_DT_BF16, 48, 16 },
		{ "model.norm.weight", DS_DT_F32, 16, 0 },
		{ "model.position_ids", DS_DT_I64, 64, 0 },
		{ "extra.weight", DS_DT_F16, 4, 0 },
	};
	expect_m2(m2, 5, 0, "1 tensor not in the base ignored (first: "
		  "'extra.weight')");
}
END_TEST

START_TEST(copy_f64_and_excluded)
{
	static const struct tdef m[] = {
		{ "lm_head.weight", DS_DT_F16, 8, 4 },
		{ "model.rope.freqs", DS_DT_F64, 8, 0 },
		{ "model.norm.weight", DS_DT_BF16, 16, 0 },
	};
	struct ds_merge_opts o = { .threads = 1 };
	struct ds_plan p;
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *r = ds_recipe_create();

	write_model("base", m, 3);
	write_model("m1", m, 3);
	ds_recipe_set_method(r, DS_M_TASK_ARITHMETIC);
	ds_recipe_add_exclude(r, "lm_head*");
	ck_assert_int_eq(plan(&p, ctx, r, 1, &o), 0);
	ck_assert_int_eq(p.ot[0].act, DS_ACT_COPY);   /* excluded */
	ck_assert_int_eq(p.ot[1].act, DS_ACT_COPY);   /* F64 */
	ck_assert_int_eq(p.ot[2].act, DS_ACT_MERGE);
	/* One notice for the dtypes not merged (the excluded one apart). */
	ck_assert_msg(strstr(warnings, "/base: 1 tensor copied from the base "
			     "unchanged, as only F16, BF16 and F32 are merged: "
			     "F64: 1 ('model.rope.freqs')\n"), "%s", warnings);
	ck_assert_ptr_nonnull(strstr(warnings, "notice: "));
	ck_assert_ptr_null(strstr(warnings, "is F64"));
	ds_plan_free(&p);
	ds_recipe_free(r);
	ds_ctx_free(ctx);
}
END_TEST

START_TEST(linear_without_base)
{
	struct ds_merge_opts o = { .threads = 1 };
	struct ds_plan p;
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *r = ds_recipe_create();

	write_model("m1", llama, 4);
	write_model("m2", llama, 4);
	ds_recipe_set_method(r, DS_M_LINEAR);
	for (int j = 1; j <= 2; j++)
		ds_recipe_add_model(r, P("m%d", j));
	ck_assert_int_eq(ds_plan_build(ctx, r, &o, &p), 0);
	ck_assert(p.base_is_model);
	ck_assert(!p.mp.uses_base);
	/* Only the two models are read for merged tensors. */
	ck_assert_uint_eq(p.bytes_read, (1600 + 768 + 16) * 2 * 2 + 512);
	ds_plan_free(&p);
	ds_recipe_free(r);
	ds_ctx_free(ctx);
}
END_TEST

/* The merge-wide part and model j's parameters of a tensor outside the
 * layers, as the plan resolves them. */
static void flat(ds_ctx *ctx, const ds_recipe *r, struct ds_tparams *tp)
{
	struct ds_tquery q = { .slice = -1, .oname = "x.weight", .n = r->n };

	ck_assert_int_eq(ds_recipe_tparams(ctx, r, &q, tp), 0);
}

START_TEST(recipe_yaml_round_trip)
{
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *r = ds_recipe_create(), *back = ds_recipe_create();
	struct ds_tparams tp;
	char *yml, *yml2;

	ds_recipe_set_method(r, DS_M_DARE_TIES);
	ds_recipe_set_base(r, "org/base-model");
	ds_recipe_add_model(r, "org/ft-a");
	ds_recipe_add_model(r, "org/ft \"b\"");
	ds_recipe_set_weight(r, 0, 0.1 + 0.2);
	ds_recipe_set_weight(r, 1, 0.7);
	ds_recipe_set_drop_rate(r, 0, 0.9);
	ds_recipe_set_drop_rate(r, 1, 1.0 / 3.0);
	ds_recipe_set_lambda(r, 1.5);
	ds_recipe_set_normalize(r, 1);
	ds_recipe_set_rescale(r, DS_RESCALE_NONE);
	ds_recipe_set_seed(r, 0x123456789abcdef0ull);
	ds_recipe_set_dtype(r, DS_DT_F16);
	ds_recipe_add_exclude(r, "lm_head*");
	ck_assert_int_eq(ds_recipe_to_yaml(r, &yml), 0);
	write_text(P("r.yml"), yml);
	ck_assert_int_eq(ds_recipe_load(ctx, back, P("r.yml")), 0);
	ck_assert_int_eq(back->method, DS_M_DARE_TIES);
	ck_assert_str_eq(back->base, "org/base-model");
	ck_assert_uint_eq(back->n, 2);
	ck_assert_str_eq(back->models[1], "org/ft \"b\"");
	flat(ctx, back, &tp);
	ck_assert(tp.weight[0] == 0.1 + 0.2);  /* bit-exact doubles */
	ck_assert(tp.p[1] == 1.0 / 3.0);
	ck_assert(tp.lambda == 1.5);
	ck_assert_int_eq(tp.normalize, 1);
	ck_assert_int_eq(tp.rescale, DS_RESCALE_NONE);
	ck_assert(tp.seed == 0x123456789abcdef0ull);
	ck_assert_int_eq(back->dtype, DS_DT_F16);
	ck_assert_uint_eq(back->nexclude, 1);
	ck_assert_str_eq(back->exclude[0], "lm_head*");
	/* Written again, the same text. */
	ck_assert_int_eq(ds_recipe_to_yaml(back, &yml2), 0);
	ck_assert_str_eq(yml, yml2);
	free(yml);
	free(yml2);
	ds_recipe_free(r);
	ds_recipe_free(back);
	ds_ctx_free(ctx);
}
END_TEST

START_TEST(recipe_mergekit_style)
{
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *r = ds_recipe_create();
	struct ds_tparams tp;

	write_text(P("mk.yml"), "models:\n"
		   "  - model: a\n"
		   "    parameters: {weight: 0.5, density: 0.25}\n"
		   "  - model: b\n"
		   "    parameters:\n      weight: 0.5\n      density: 0.5\n"
		   "merge_method: dare_ties\nbase_model: base\n"
		   "parameters:\n  normalize: true\n  lambda: 2\n"
		   "dtype: bfloat16\n");
	ck_assert_int_eq(ds_recipe_load(ctx, r, P("mk.yml")), 0);
	ck_assert_uint_eq(r->n, 2);
	flat(ctx, r, &tp);
	ck_assert(tp.p[0] == 0.75 && tp.p[1] == 0.5);
	ck_assert(tp.lambda == 2.0);
	ck_assert_int_eq(tp.rescale, DS_RESCALE_L1);   /* mergekit's */
	ck_assert_int_eq(r->dtype, DS_DT_BF16);
	ck_assert_int_eq(ds_recipe_check(ctx, r), 0);
	ds_recipe_free(r);
	/* An unknown key is an error naming the key, the file and line. */
	r = ds_recipe_create();
	write_text(P("mk.yml"),
		   "merge_method: dare_ties\nbase_model: b\nmodles: []\n");
	ck_assert_int_eq(ds_recipe_load(ctx, r, P("mk.yml")), DS_E_FORMAT);
	ck_assert_ptr_nonnull(strstr(ds_ctx_error(ctx),
				     "mk.yml:3: unknown key 'modles'"));
	ds_recipe_free(r);
	ds_ctx_free(ctx);
}
END_TEST

/* Gradients interpolate at x as mergekit's evaluate_setting; the first
 * matching filter wins; the nearest scope wins (source, slice, merge). */
START_TEST(recipe_gradients_filters_slices)
{
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *r = ds_recipe_create();
	struct ds_tparams tp;
	struct ds_tquery q = { .slice = 0, .n = 1 };
	char *yml, *yml2;

	write_text(P("g.yml"), "merge_method: task_arithmetic\n"
		   "base_model: b\n"
		   "slices:\n"
		   "  - sources:\n"
		   "      - {model: b, layer_range: [2, 7]}\n"
		   "      - model: a\n"
		   "        layer_range: [0, 5]\n"
		   "        parameters:\n"
		   "          weight:\n"
		   "            - {filter: mlp, value: [0, 0.5, 0.3, 0.7, 1]}\n"
		   "            - value: 2\n"
		   "    parameters: {weight: 9, lambda: [1, 3]}\n"
		   "  - sources:\n"
		   "      - {model: b, layer_range: [0, 1]}\n"
		   "      - {model: a, layer_range: [4, 5]}\n"
		   "parameters: {weight: 0.5, rescale: true, int8_mask: true}\n");
	ck_assert_int_eq(ds_recipe_load(ctx, r, P("g.yml")), 0);
	ck_assert_uint_eq(r->n, 1);                 /* the base is the base */
	ck_assert_uint_eq(r->nslices, 2);
	ck_assert_uint_eq(r->slices[0].src[0].m, DS_SRC_BASE);
	q.oname = q.iname[0] = "model.layers.3.mlp.up_proj.weight";
	q.x = ds_recipe_x(3, 5);                    /* 0.75: f = 3 */
	ck_assert_int_eq(ds_recipe_tparams(ctx, r, &q, &tp), 0);
	ck_assert_uint_eq(tp.n, 1);
	ck_assert_uint_eq(tp.j[0], 0);
	ck_assert(tp.weight[0] == 0.7);
	ck_assert(tp.lambda == 2.5);
	ck_assert_int_eq(tp.rescale, DS_RESCALE_L1);
	q.x = ds_recipe_x(1, 5);                    /* 0.25: f = 1 */
	q.oname = q.iname[0] = "model.layers.1.self_attn.q_proj.weight";
	ck_assert_int_eq(ds_recipe_tparams(ctx, r, &q, &tp), 0);
	ck_assert(tp.weight[0] == 2.0);             /* the filter list's */
	q.slice = 1;
	q.x = ds_recipe_x(0, 1);                    /* one layer: x = 1 */
	ck_assert(q.x == 1.0);
	ck_assert_int_eq(ds_recipe_tparams(ctx, r, &q, &tp), 0);
	ck_assert(tp.weight[0] == 0.5);             /* the merge's */
	/* Written and read back: the same recipe text. */
	ck_assert_int_eq(ds_recipe_to_yaml(r, &yml), 0);
	ds_recipe_free(r);
	r = ds_recipe_create();
	write_text(P("g2.yml"), yml);
	ck_assert_int_eq(ds_recipe_load(ctx, r, P("g2.yml")), 0);
	ck_assert_int_eq(ds_recipe_to_yaml(r, &yml2), 0);
	ck_assert_str_eq(yml, yml2);
	free(yml);
	free(yml2);
	ds_recipe_free(r);
	ds_ctx_free(ctx);
}
END_TEST

/* Largest first onto the lightest part, ties by the lower index: worked
 * out by hand for sizes 5 9 9 2 7 1. */
START_TEST(partition_share)
{
	struct ds_oshard os[6] = {
		{ .size = 5 }, { .size = 9 }, { .size = 9 }, { .size = 2 },
		{ .size = 7 }, { .size = 1 },
	};
	struct ds_plan p = { .os = os, .nos = 6 };
	/* 9(s1)->0, 9(s2)->1, 7(s4)->2, 5(s0)->2 (7 is lightest), 2(s3)->0
	 * (9 = 9: the lower part), 1(s5)->1; loads 11 10 12 */
	static const unsigned three[6] = { 2, 0, 1, 0, 2, 1 };
	/* more parts than shards: one each, largest first; 6 and 7 empty */
	static const unsigned eight[6] = { 3, 0, 1, 4, 2, 5 };
	unsigned part[6];

	ck_assert_int_eq(ds_plan_share(&p, 3, part), 0);
	for (int s = 0; s < 6; s++)
		ck_assert_uint_eq(part[s], three[s]);
	ck_assert_int_eq(ds_plan_share(&p, 8, part), 0);
	for (int s = 0; s < 6; s++)
		ck_assert_uint_eq(part[s], eight[s]);
	ck_assert_int_eq(ds_plan_share(&p, 1, part), 0);
	for (int s = 0; s < 6; s++)
		ck_assert_uint_eq(part[s], 0);
}
END_TEST

/* One shard per tensor (3200, 1536, 32 and 512 bytes of BF16 data): in
 * two parts, the first holds the embedding alone, the second the rest. */
START_TEST(partition_plan)
{
	struct ds_merge_opts o = { .threads = 1, .shard_size = 1,
				   .part = 1, .parts = 2 };
	struct ds_plan p, q;
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *r = ds_recipe_create();
	uint64_t run, bytes = 0;

	write_model("base", llama, 4);
	write_model("m1", llama, 4);
	ds_recipe_set_drop_rate(r, -1, 0.5);
	ck_assert_int_eq(plan(&p, ctx, r, 1, &o), 0);
	ck_assert_uint_eq(p.all_nos, 4);
	ck_assert_str_eq(p.all_names[0], "model-00001-of-00004.safetensors");
	ck_assert_uint_eq(p.nos, 3);
	ck_assert_uint_eq(p.not, 3);
	ck_assert_str_eq(p.os[0].name, "model-00002-of-00004.safetensors");
	ck_assert_str_eq(p.os[2].name, "model-00004-of-00004.safetensors");
	ck_assert_str_eq(p.ot[0].name, "model.layers.0.mlp.up_proj.weight");
	ck_assert_str_eq(p.ot[2].name, "model.position_ids");
	for (unsigned s = 0; s < 3; s++) {
		ck_assert_uint_eq(p.ot[s].oshard, s);
		ck_assert_uint_eq(p.os[s].first, s);
		bytes += p.os[s].size;
	}
	ck_assert_uint_eq(p.bytes_written, bytes);
	ck_assert_uint_eq(p.merged, 2);
	ck_assert(p.index);
	run = p.run;
	ds_plan_free(&p);

	o.part = 0;
	ds_recipe_free(r);
	r = ds_recipe_create();
	ds_recipe_set_drop_rate(r, -1, 0.5);
	ck_assert_int_eq(plan(&q, ctx, r, 1, &o), 0);
	ck_assert_uint_eq(q.nos, 1);
	ck_assert_str_eq(q.ot[0].name, "model.embed_tokens.weight");
	ck_assert_uint_eq(q.run, run);
	ds_plan_free(&q);

	o.parts = 3;            /* another N: another run */
	ds_recipe_free(r);
	r = ds_recipe_create();
	ds_recipe_set_drop_rate(r, -1, 0.5);
	ck_assert_int_eq(plan(&q, ctx, r, 1, &o), 0);
	ck_assert_uint_ne(q.run, run);
	ds_plan_free(&q);

	o.part = 3;
	ds_recipe_free(r);
	r = ds_recipe_create();
	ck_assert_int_eq(plan(&q, ctx, r, 1, &o), DS_E_USAGE);
	ds_plan_free(&q);
	ds_recipe_free(r);
	ds_ctx_free(ctx);
}
END_TEST

/* Whether scratch files a and b hold the same bytes. */
static bool same_file(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	int ca, cb;
	bool same = fa && fb;

	while (same && ((ca = getc(fa)) != EOF) | ((cb = getc(fb)) != EOF))
		same = ca == cb;
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return same;
}

static int merge_into(const char *out, unsigned part, unsigned parts)
{
	struct ds_merge_opts o = { .threads = 1, .shard_size = 1,
				   .part = part, .parts = parts };
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *r = ds_recipe_create();
	ds_merge *mg = NULL;
	int rc;

	ds_recipe_set_base(r, P("base"));
	ds_recipe_add_model(r, P("m1"));
	ds_recipe_set_drop_rate(r, -1, 0.5);
	rc = ds_merge_create(ctx, r, out, &o, &mg);
	if (!rc)
		rc = ds_merge_run(mg, NULL, NULL);
	ds_merge_free(mg);
	ds_recipe_free(r);
	ds_ctx_free(ctx);
	return rc;
}

/* The library path of --partition and finalize: two parts (the second
 * first), ds_finalize(), and every file as one process writes it. */
START_TEST(partition_finalize)
{
	static const char *const files[] = {
		"model-00001-of-00004.safetensors",
		"model-00004-of-00004.safetensors",
		"model.safetensors.index.json", "CHECKSUMS.xxh128",
		"dare-stream.yml",
	};
	struct ds_finalize_info info;
	ds_ctx *ctx = ds_ctx_create();

	write_model("base", llama, 4);
	write_model("m1", llama, 4);
	ck_assert_int_eq(merge_into(P("whole"), 0, 0), 0);
	ck_assert_int_eq(merge_into(P("parts"), 1, 2), 0);
	ck_assert_int_eq(ds_finalize(ctx, P("parts"), &info), DS_E_FORMAT);
	ck_assert_ptr_nonnull(strstr(ds_ctx_error(ctx), "part 0 of 2 missing"));
	ck_assert_int_ne(access(P("parts/CHECKSUMS.xxh128"), F_OK), 0);
	ck_assert_int_eq(merge_into(P("parts"), 0, 2), 0);
	ck_assert_int_eq(ds_finalize(ctx, P("parts"), &info), 0);
	ck_assert_uint_eq(info.parts, 2);
	ck_assert_uint_eq(info.files, 5);       /* 4 shards, the recipe */
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		ck_assert_msg(same_file(P("whole/%s", files[i]),
					P("parts/%s", files[i])),
			      "%s differs", files[i]);
	ck_assert_int_ne(access(P("parts/.dare-stream.part-0-of-2.json"),
				F_OK), 0);
	ck_assert_int_eq(ds_finalize(ctx, P("whole"), &info), 0);
	ck_assert_uint_eq(info.parts, 0);       /* nothing to finalize */
	ds_ctx_free(ctx);
}
END_TEST

static Suite *plan_suite(void)
{
	Suite *s = suite_create("plan");
	TCase *tc = tcase_create("plan");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, layout_in_output_dtype);
	tcase_add_test(tc, window_from_budget);
	tcase_add_test(tc, missing_tensor);
	tcase_add_test(tc, shape_mismatch);
	tcase_add_test(tc, extra_rows_only_for_vocab);
	tcase_add_test(tc, model_dtype_not_float);
	tcase_add_test(tc, extra_tensor_warns);
	tcase_add_test(tc, copy_f64_and_excluded);
	tcase_add_test(tc, linear_without_base);
	tcase_add_test(tc, recipe_yaml_round_trip);
	tcase_add_test(tc, recipe_mergekit_style);
	tcase_add_test(tc, recipe_gradients_filters_slices);
	tcase_add_test(tc, partition_share);
	tcase_add_test(tc, partition_plan);
	tcase_add_test(tc, partition_finalize);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(plan_suite());
}

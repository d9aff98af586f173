/* SPDX-License-Identifier: MIT */
/* inspect.c - dare-stream inspect: tensors, dtypes, shapes, bytes, shards */
#include "config.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

static void print_text(const char *arg, const ds_model *m)
{
	size_t n = ds_model_tensor_count(m);
	uint64_t bytes[DS_DT_COUNT] = { 0 }, params = 0, total = 0;
	size_t count[DS_DT_COUNT] = { 0 };
	char h[32];

	printf("%s: %zu tensors in %u shard%s (%s)\n", arg, n,
	       ds_model_shard_count(m), ds_model_shard_count(m) > 1 ? "s" : "",
	       ds_model_dir(m));
	for (size_t i = 0; i < n; i++) {
		struct ds_tensor_info t;
		char shape[256];

		ds_model_tensor(m, i, &t);
		printf("  %-50s %-5s %-20s %12llu  %s\n", t.name,
		       ds_dtype_name(t.dtype),
		       ds_shape_str(t.shape, t.ndim, shape, sizeof(shape)),
		       (unsigned long long)t.nbytes,
		       base_name(ds_model_shard_path(m, t.shard)));
		bytes[t.dtype] += t.nbytes;
		count[t.dtype]++;
		params += t.numel;
		total += t.nbytes;
	}
	for (int d = 0; d < DS_DT_COUNT; d++)
		if (count[d])
			printf("  total %s: %zu tensors, %llu bytes\n",
			       ds_dtype_name((enum ds_dtype)d), count[d],
			       (unsigned long long)bytes[d]);
	printf("  total: %llu parameters, %llu bytes (%s)\n",
	       (unsigned long long)params, (unsigned long long)total,
	       human_bytes(total, h, sizeof(h)));
}

static json_t *to_json(const char *arg, const ds_model *m)
{
	json_t *o = json_object(), *ts = json_array(), *sh = json_array();
	uint64_t params = 0, total = 0;

	for (unsigned s = 0; s < ds_model_shard_count(m); s++)
		json_array_append_new(sh, json_string(ds_model_shard_path(m, s)));
	for (size_t i = 0; i < ds_model_tensor_count(m); i++) {
		struct ds_tensor_info t;
		json_t *shape = json_array();

		ds_model_tensor(m, i, &t);
		for (unsigned d = 0; d < t.ndim; d++)
			json_array_append_new(shape,
					      json_integer((json_int_t)t.shape[d]));
		json_array_append_new(ts, json_pack("{s:s, s:s, s:o, s:I, s:I, "
			"s:s, s:I}", "name", t.name, "dtype",
			ds_dtype_name(t.dtype), "shape", shape,
			"numel", (json_int_t)t.numel, "bytes",
			(json_int_t)t.nbytes, "shard",
			base_name(ds_model_shard_path(m, t.shard)),
			"offset", (json_int_t)t.offset));
		params += t.numel;
		total += t.nbytes;
	}
	json_object_set_new(o, "path", json_string(arg));
	json_object_set_new(o, "dir", json_string(ds_model_dir(m)));
	json_object_set_new(o, "shards", sh);
	json_object_set_new(o, "tensors", ts);
	json_object_set_new(o, "parameters", json_integer((json_int_t)params));
	json_object_set_new(o, "bytes", json_integer((json_int_t)total));
	return o;
}

static const struct option inspect_opts[] = {
	{ "json", no_argument, NULL, 'j' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int cmd_inspect(int argc, char **argv)
{
	json_t *all = json_array();
	ds_ctx *ctx = ds_ctx_create();
	int c, json = 0, rc = EXIT_OK;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", inspect_opts, NULL)) != -1) {
		if (c == 'h') {
			printf("Usage: dare-stream inspect [--json] PATH...\n"
			       "List every tensor of each model: name, dtype, "
			       "shape, bytes and shard, then totals.\n"
			       "  --json   one JSON object per model (an array "
			       "when several PATHs are given)\n");
			goto out;
		}
		if (c != 'j') {
			rc = usage_error("unknown option %s (see dare-stream "
					 "inspect --help)", argv[optind - 1]);
			goto out;
		}
		json = 1;
	}
	if (optind == argc)
		rc = usage_error("inspect needs at least one PATH");
	for (int i = optind; i < argc && rc == EXIT_OK; i++) {
		ds_model *m;
		int err = ds_model_open(ctx, argv[i], &m);

		if (err) {
			rc = report(ctx, err);
			break;
		}
		if (json)
			json_array_append_new(all, to_json(argv[i], m));
		else
			print_text(argv[i], m);
		ds_model_free(m);
		if (ferror(stdout))
			break;          /* the reader left: main says nothing */
	}
	if (json && rc == EXIT_OK) {
		json_dumpf(json_array_size(all) == 1 ? json_array_get(all, 0) :
			   all, stdout, JSON_INDENT(2));
		putchar('\n');
	}
out:
	json_decref(all);
	ds_ctx_free(ctx);
	return rc;
}

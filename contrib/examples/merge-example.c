/* SPDX-License-Identifier: MIT */
/* merge-example.c - merge two fine-tunes with DARE through libdare-stream */
/*
 * Build against the installed library:
 *
 *     cc -o merge-example merge-example.c $(pkg-config --cflags --libs dare-stream)
 *
 * Run:
 *
 *     ./merge-example OUT BASE MODEL1 MODEL2 [DROP_RATE]
 *
 * It plans a dare_ties merge of MODEL1 and MODEL2 onto BASE (drop rate 0.5
 * unless given), prints the plan's figures, runs it with a progress
 * callback, and prints "merged into OUT".  Every failure is printed with the
 * library's message and ends the program with status 1.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <dare-stream.h>

/* Notices and warnings of the library, one line each. */
static void on_log(void *user, enum ds_log_level level, const char *msg)
{
	(void)user;
	fprintf(stderr, "merge-example: %s: %s\n",
		level == DS_LOG_WARNING ? "warning" : "notice", msg);
}

/* Called after each window written: print every tenth of the way. */
static void on_progress(void *user, const struct ds_progress *p)
{
	unsigned *last = user;
	unsigned tenth = p->total ? (unsigned)(p->done * 10 / p->total) : 10;

	if (tenth <= *last)
		return;
	*last = tenth;
	printf("progress: %3u%% (%" PRIu64 " of %" PRIu64 " bytes, %s)\n",
	       tenth * 10, p->done, p->total, p->tensor);
}

/* Report a failed call: its code and the context's message. */
static int fail(ds_ctx *ctx, const char *what, int rc)
{
	fprintf(stderr, "merge-example: %s failed (%d): %s\n", what, rc,
		ds_ctx_error(ctx));
	return 1;
}

/* The recipe: dare_ties, the base, two models, one drop rate for both. */
static int build_recipe(ds_ctx *ctx, ds_recipe *r, char **argv, double p)
{
	int rc;

	if ((rc = ds_recipe_set_method(r, DS_M_DARE_TIES)) < 0 ||
	    (rc = ds_recipe_set_base(r, argv[2])) < 0 ||
	    (rc = ds_recipe_add_model(r, argv[3])) < 0 ||
	    (rc = ds_recipe_add_model(r, argv[4])) < 0 ||
	    (rc = ds_recipe_set_drop_rate(r, -1, p)) < 0 ||
	    (rc = ds_recipe_set_seed(r, 42)) < 0)
		return fail(ctx, "building the recipe", rc);
	if ((rc = ds_recipe_check(ctx, r)) < 0)
		return fail(ctx, "ds_recipe_check", rc);
	return 0;
}

static void print_plan(const ds_merge *mg)
{
	struct ds_plan_info info;

	ds_merge_info(mg, &info);
	printf("plan: %zu tensors (%zu merged), %u shards\n", info.tensors,
	       info.merged, info.shards);
	printf("plan: %" PRIu64 " bytes read, %" PRIu64 " bytes written\n",
	       info.bytes_read, info.bytes_written);
	printf("plan: %" PRIu64 " bytes of buffers, %" PRIu64
	       " elements a window, %u threads, %s I/O, %s kernels\n",
	       info.memory, info.window, info.threads, info.io, info.kernel);
}

int main(int argc, char **argv)
{
	struct ds_merge_opts opts = { .memory = DS_DEFAULT_MEMORY };
	double p = argc > 5 ? strtod(argv[5], NULL) : 0.5;
	ds_recipe *r = NULL;
	ds_merge *mg = NULL;
	unsigned last = 0;
	ds_ctx *ctx;
	int rc, status = 1;

	if (argc < 5 || argc > 6) {
		fprintf(stderr, "usage: %s OUT BASE MODEL1 MODEL2 [DROP_RATE]\n",
			argv[0]);
		return 2;
	}
	if (!(ctx = ds_ctx_create())) {
		fprintf(stderr, "merge-example: out of memory\n");
		return 1;
	}
	ds_ctx_set_log(ctx, on_log, NULL);
	printf("libdare-stream %s\n", DS_VERSION_STRING);
	if (!(r = ds_recipe_create())) {
		fprintf(stderr, "merge-example: out of memory\n");
		goto out;
	}
	if (build_recipe(ctx, r, argv, p))
		goto out;
	/* Every input is read and checked here; nothing is written yet. */
	if ((rc = ds_merge_create(ctx, r, argv[1], &opts, &mg)) < 0) {
		fail(ctx, "ds_merge_create", rc);
		goto out;
	}
	print_plan(mg);
	if ((rc = ds_merge_run(mg, on_progress, &last)) < 0) {
		fail(ctx, "ds_merge_run", rc);
		goto out;
	}
	printf("merged into %s\n", argv[1]);
	status = 0;
out:
	ds_merge_free(mg);      /* before the recipe, which the merge uses */
	ds_recipe_free(r);
	ds_ctx_free(ctx);
	return status;
}

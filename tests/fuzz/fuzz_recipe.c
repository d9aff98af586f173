/* SPDX-License-Identifier: MIT */
/* fuzz_recipe.c - libFuzzer: the bytes as a YAML recipe (--config) */
#include "config.h"

#include <limits.h>
#include <string.h>
#include "common/ctx.h"
#include "recipe/recipe.h"
#include "fuzz.h"

static char path[PATH_MAX], path2[PATH_MAX];

static void cleanup(void)
{
	unlink(path);
	unlink(path2);
}

/* Once per process: two file names of our own (for -jobs / -fork). */
static void setup(void)
{
	const char *tmp = getenv("TMPDIR");
	int fd;

	snprintf(path, sizeof(path), "%s/ds-fuzz-recipe.XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if ((fd = mkstemp(path)) < 0)
		fuzz_fail("mkstemp", path);
	close(fd);
	snprintf(path2, sizeof(path2), "%s.yml", path);
	atexit(cleanup);
}

/* What ds_recipe_to_yaml wrote reads back as the same recipe: written
 * again, it is the same text (numbers, gradients, filters, paths). */
static void round_trip(const struct ds_recipe *r)
{
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *back = ds_recipe_create();
	char *text, *again;

	if (!ctx || !back || ds_recipe_to_yaml(r, &text))
		fuzz_fail("cannot write the recipe", NULL);
	fuzz_write(path2, text, strlen(text));
	if (ds_recipe_load(ctx, back, path2))
		fuzz_fail("written recipe does not load", ds_ctx_error(ctx));
	if (ds_recipe_to_yaml(back, &again))
		fuzz_fail("cannot write the recipe", NULL);
	if (strcmp(text, again))
		fuzz_fail("recipe changed through dare-stream.yml", NULL);
	free(text);
	free(again);
	ds_recipe_free(back);
	ds_ctx_free(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *r = ds_recipe_create();

	if (!*path)
		setup();
	if (!ctx || !r)
		fuzz_fail("out of memory", NULL);
	fuzz_write(path, data, size);
	/* Only a recipe that passes the check is ever written to OUT. */
	if (ds_recipe_load(ctx, r, path) == 0) {
		if (ds_recipe_check(ctx, r) == 0)
			round_trip(r);
		else if (!*ds_ctx_error(ctx))
			fuzz_fail("check refused without a message", NULL);
	} else if (!*ds_ctx_error(ctx)) {
		fuzz_fail("refused without a message", NULL);
	}
	ds_recipe_free(r);
	ds_ctx_free(ctx);
	return 0;
}

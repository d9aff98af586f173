/* SPDX-License-Identifier: MIT */
/* fuzz_recipe.c - libFuzzer: the bytes as a YAML recipe (--config) */
#include "config.h"

#include <limits.h>
#include <math.h>
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

/* Doubles equal as written and read back: the same bits, or both NaN. */
static int same_num(double a, double b)
{
	return (isnan(a) && isnan(b)) || !memcmp(&a, &b, sizeof(a));
}

static int same_str(const char *a, const char *b)
{
	char *ra;
	int same;

	if (!a || !b)
		return a == b;
	/* The writer makes paths that exist absolute: compare those so. */
	ra = realpath(a, NULL);
	same = !strcmp(ra ? ra : a, b);
	free(ra);
	return same;
}

/* What ds_recipe_to_yaml wrote reads back as the same recipe. */
static void check_round_trip(const struct ds_recipe *a,
			     const struct ds_recipe *b)
{
	int same = a->method == b->method && a->n == b->n &&
		   a->p_set == b->p_set && same_num(a->lambda, b->lambda) &&
		   a->normalize == b->normalize && a->rescale == b->rescale &&
		   a->seed == b->seed && a->dtype == b->dtype &&
		   a->nexclude == b->nexclude && same_str(a->base, b->base);

	for (unsigned j = 0; same && j < a->n; j++)
		same = same_str(a->models[j], b->models[j]) &&
		       same_num(a->weight[j], b->weight[j]) &&
		       (!a->p_set || same_num(a->p[j], b->p[j]));
	for (unsigned i = 0; same && i < a->nexclude; i++)
		same = !strcmp(a->exclude[i], b->exclude[i]);
	if (!same)
		fuzz_fail("recipe changed through dare-stream.yml", NULL);
}

/* Write r as YAML, read it back, compare. */
static void round_trip(const struct ds_recipe *r)
{
	ds_ctx *ctx = ds_ctx_create();
	ds_recipe *back = ds_recipe_create();
	char *text;

	if (!ctx || !back || ds_recipe_to_yaml(r, &text))
		fuzz_fail("cannot write the recipe", NULL);
	fuzz_write(path2, text, strlen(text));
	if (ds_recipe_load(ctx, back, path2))
		fuzz_fail("written recipe does not load", ds_ctx_error(ctx));
	check_round_trip(r, back);
	free(text);
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

/* SPDX-License-Identifier: MIT */
/* verify.c - dare-stream verify: structure and checksums of a merged dir */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"

struct vstate {
	bool verbose;
	char last[256];             /* the last notice: "N files, M tensors" */
};

/*
 * Per-file lines with -v.  Each notice is printed when the next arrives, so
 * the last one, the totals, goes to the summary line instead.
 */
static void on_notice(void *user, enum ds_log_level lv, const char *msg)
{
	struct vstate *st = user;

	if (lv == DS_LOG_WARNING) {
		fprintf(stderr, "dare-stream: warning: %s\n", msg);
		return;
	}
	if (st->verbose && st->last[0])
		printf("  %s\n", st->last);
	snprintf(st->last, sizeof(st->last), "%s", msg);
}

static void verify_usage(void)
{
	printf("Usage: dare-stream verify [-v] OUT...\n"
	       "Check a merged directory: each shard's structure, the index "
	       "against the shards,\nand every file against "
	       "CHECKSUMS.xxh128.\n"
	       "  -v, --verbose   one line per file checked\n"
	       "Exit status: 0 ok, 5 corrupt (the message names the file), "
	       "1 cannot read.\n");
}

static const struct option verify_opts[] = {
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* One directory: "OUT: ok (...)" or the error and its exit status. */
static int verify_one(ds_ctx *ctx, const char *dir, struct vstate *st)
{
	int rc, status;

	st->last[0] = '\0';
	ds_ctx_set_log(ctx, on_notice, st);
	rc = ds_verify(ctx, dir, on_notice, st);
	if (rc == 0) {
		printf("%s: ok (%s)\n", dir, st->last);
		return EXIT_OK;
	}
	if (st->verbose && st->last[0])
		printf("  %s\n", st->last);
	fflush(stdout);
	status = report(ctx, rc);
	/* Corrupt content has its own status; report() says 3 for input. */
	return rc == DS_E_FORMAT ? EXIT_CORRUPT : status;
}

int cmd_verify(int argc, char **argv)
{
	struct vstate st = { 0 };
	ds_ctx *ctx;
	int c, rc = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "vh", verify_opts, NULL)) != -1) {
		if (c == 'h') {
			verify_usage();
			return EXIT_OK;
		}
		if (c != 'v')
			return EXIT_USAGE;
		st.verbose = true;
	}
	if (optind == argc)
		return usage_error("verify needs an output directory (OUT)");
	if (!(ctx = ds_ctx_create())) {
		fputs("dare-stream: error: out of memory\n", stderr);
		return EXIT_RUNTIME;
	}
	/* Every directory is checked; the status is the first failure's. */
	for (int i = optind; i < argc; i++) {
		int one = verify_one(ctx, argv[i], &st);

		if (rc == EXIT_OK)
			rc = one;
	}
	ds_ctx_free(ctx);
	return rc;
}

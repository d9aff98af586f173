/* SPDX-License-Identifier: MIT */
/* finalize.c - dare-stream finalize: join the parts of a partitioned merge */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"

static void finalize_usage(void)
{
	printf("Usage: dare-stream finalize [-q] OUT\n"
	       "Join the parts of a merge run as N processes (merge's option "
	       "partition K/N,\nK = 0 .. N-1) into OUT: check that every part has ended "
	       "and left its manifest\n(OUT/.dare-stream.part-K-of-N.json), "
	       "that all are of the same merge, and read\nevery file back "
	       "against its recorded size and xxh128; then write\n"
	       "model.safetensors.index.json (when sharded) and "
	       "CHECKSUMS.xxh128, the same bytes\nas one process merging the "
	       "whole, and remove the parts' manifests and locks.\n"
	       "  -q, --quiet   no summary line\n"
	       "  -h, --help    this help\n"
	       "Exit status: 0 joined (or nothing to finalize: OUT is a "
	       "finished merge),\n5 a part missing, unfinished, foreign, "
	       "duplicated or a file that differs\n(the message names the "
	       "part and the file), 4 OUT refused (no merge in it,\nor locked "
	       "by another process), 1 cannot read or write, 2 bad usage.\n");
}

static const struct option finalize_opts[] = {
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int cmd_finalize(int argc, char **argv)
{
	struct ds_finalize_info info;
	bool quiet = false;
	ds_ctx *ctx;
	char b[32];
	int c, rc;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "qh", finalize_opts, NULL)) != -1) {
		if (c == 'h') {
			finalize_usage();
			return EXIT_OK;
		}
		if (c != 'q')
			return usage_error("unknown option %s (see dare-stream "
					   "finalize --help)", argv[optind - 1]);
		quiet = true;
	}
	if (optind == argc)
		return usage_error("finalize needs an output directory (OUT)");
	if (optind + 1 < argc)
		return usage_error("finalize takes one output directory; "
				   "unexpected '%s'", argv[optind + 1]);
	if (!(ctx = ds_ctx_create())) {
		fputs("dare-stream: error: out of memory\n", stderr);
		return EXIT_RUNTIME;
	}
	ds_ctx_set_log(ctx, log_stderr, &quiet);
	rc = ds_finalize(ctx, argv[optind], &info);
	if (rc) {
		int status = report(ctx, rc);

		/* an incomplete or damaged merge, as for verify */
		ds_ctx_free(ctx);
		return rc == DS_E_FORMAT ? EXIT_CORRUPT : status;
	}
	if (!info.parts)
		printf("%s: nothing to finalize (a finished merge, not "
		       "partitioned)\n", argv[optind]);
	else if (!quiet)
		printf("%s: joined %u part%s: %u files checked (%s)\n",
		       argv[optind], info.parts, info.parts > 1 ? "s" : "",
		       info.files, human_bytes(info.bytes, b, sizeof(b)));
	ds_ctx_free(ctx);
	return EXIT_OK;
}

/* SPDX-License-Identifier: MIT */
/* main.c - dare-stream: dispatch to the subcommands */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"

static void usage(FILE *f)
{
	fputs("Usage: dare-stream COMMAND [OPTION]...\n"
	      "Merge fine-tuned safetensors checkpoints out of core, in "
	      "constant memory.\n\n"
	      "Commands:\n"
	      "  merge    -o OUT --base B --model M... [options]   merge "
	      "models (see dare-stream merge --help)\n"
	      "  inspect  [--json] PATH...   tensors, dtypes, shapes, bytes "
	      "and shards of a model\n"
	      "  verify   [-v] OUT...        check a merged directory: "
	      "structure, index, CHECKSUMS.xxh128\n"
	      "  finalize OUT               join the parts of a merge run "
	      "with --partition K/N\n"
	      "  extract  --base B --model M -p P -o FILE.dsd   DARE delta "
	      "pack of a fine-tune\n"
	      "  apply    --base B FILE.dsd -o OUT   rebuild a checkpoint from "
	      "base and pack\n"
	      "  delta-stats BASE MODEL... [--json] [--svg FILE]   |delta| "
	      "ranges per tensor,\n"
	      "                              and whether DARE suits them\n\n"
	      "  -h, --help     this help\n"
	      "  -V, --version  version\n\n"
	      "See dare-stream(1) for the formulas and the DARE mask.\n", f);
}

static int dispatch(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "merge"))
		return cmd_merge(argc - 1, argv + 1);
	if (!strcmp(argv[1], "inspect"))
		return cmd_inspect(argc - 1, argv + 1);
	if (!strcmp(argv[1], "verify"))
		return cmd_verify(argc - 1, argv + 1);
	if (!strcmp(argv[1], "finalize"))
		return cmd_finalize(argc - 1, argv + 1);
	if (!strcmp(argv[1], "extract"))
		return cmd_extract(argc - 1, argv + 1);
	if (!strcmp(argv[1], "apply"))
		return cmd_apply(argc - 1, argv + 1);
	if (!strcmp(argv[1], "delta-stats"))
		return cmd_stats(argc - 1, argv + 1);
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf("dare-stream %s\n", DS_VERSION_STRING);
		return EXIT_OK;
	}
	return usage_error("unknown command '%s' (try dare-stream --help)",
			   argv[1]);
}

/*
 * Standard output flushed; a reader that has left (inspect | head) is not
 * an error, and its leaving is not reported: it has all it wanted.
 */
static int finish_stdout(int rc)
{
	int e;

	if (fflush(stdout) == 0 && !ferror(stdout))
		return rc;
	e = errno;
	if (e == EPIPE)
		return rc;
	fprintf(stderr, "dare-stream: error: standard output: %s\n",
		strerror(e));
	return rc ? rc : EXIT_RUNTIME;
}

int main(int argc, char **argv)
{
	/* A closed pipe makes writes fail with EPIPE rather than kill the
	 * process, whatever disposition the parent left: inspect stops
	 * quietly, and a merge whose stderr reader left runs to the end. */
	signal(SIGPIPE, SIG_IGN);
	return finish_stdout(dispatch(argc, argv));
}

/* SPDX-License-Identifier: MIT */
/* sthdr.c - open many safetensors files as inspect does; one verdict a line */

/*
 * For the differential test of headers (tests/header-diff.sh): thousands
 * of files in one process, where the CLI would start a process (and its
 * libtool wrapper) for each.  Reads paths from stdin, one a line, opens
 * each with ds_model_open, the call dare-stream inspect makes, and prints:
 *
 *   ok <TAB> NOTICES <TAB> TENSOR [<TAB> TENSOR]...
 *      TENSOR = hex(name) : DTYPE : dim,dim,... : OFFSET : NBYTES
 *   refused <TAB> CODE <TAB> MESSAGE
 *
 * NOTICES counts the notices the library sent.  Uses the public API only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dare-stream.h"

static void count_log(void *user, enum ds_log_level lv, const char *msg)
{
	(void)lv;
	(void)msg;
	(*(unsigned *)user)++;
}

static void print_tensor(const ds_model *m, size_t i)
{
	struct ds_tensor_info t;

	ds_model_tensor(m, i, &t);
	putchar('\t');
	for (const unsigned char *c = (const unsigned char *)t.name; *c; c++)
		printf("%02x", *c);
	printf(":%s:", ds_dtype_name(t.dtype));
	for (unsigned d = 0; d < t.ndim; d++)
		printf("%s%llu", d ? "," : "", (unsigned long long)t.shape[d]);
	printf(":%llu:%llu", (unsigned long long)t.offset,
	       (unsigned long long)t.nbytes);
}

int main(void)
{
	ds_ctx *ctx = ds_ctx_create();
	char line[4096];
	unsigned notices;

	if (!ctx)
		return 99;
	ds_ctx_set_log(ctx, count_log, &notices);
	while (fgets(line, sizeof(line), stdin)) {
		ds_model *m;
		int rc;

		line[strcspn(line, "\n")] = '\0';
		notices = 0;
		rc = ds_model_open(ctx, line, &m);
		if (rc) {
			printf("refused\t%d\t%s\n", rc, ds_ctx_error(ctx));
			continue;
		}
		printf("ok\t%u", notices);
		for (size_t i = 0; i < ds_model_tensor_count(m); i++)
			print_tensor(m, i);
		putchar('\n');
		ds_model_free(m);
	}
	ds_ctx_free(ctx);
	return fflush(stdout) ? 99 : 0;
}

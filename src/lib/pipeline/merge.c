/* SPDX-License-Identifier: MIT */
/* merge.c - the public merge handle: plan, check output, run, clean up */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/cancel.h"
#include "common/ctx.h"
#include "kernels/kernels.h"
#include "output/output.h"
#include "pipeline/guard.h"
#include "pipeline/pipeline.h"
#include "plan/plan.h"

struct ds_merge {
	ds_ctx *ctx;
	struct ds_plan plan;
	struct ds_merge_opts opts;
	char *out_dir;
	const char *io_name;
	struct ds_cancel cancel;    /* raised by ds_merge_cancel() */
	struct ds_guard guard;      /* the inputs as planned */
};

int ds_merge_create(ds_ctx *ctx, const ds_recipe *r, const char *out_dir,
		    const struct ds_merge_opts *opts, ds_merge **out)
{
	struct ds_merge_opts none = { 0 };
	ds_merge *mg = calloc(1, sizeof(*mg));
	int rc;

	*out = NULL;
	if (!mg || !(mg->out_dir = strdup(out_dir))) {
		free(mg);
		return ds_fail(ctx, -ENOMEM, "out of memory");
	}
	mg->ctx = ctx;
	ds_cancel_init(&mg->cancel);        /* without an eventfd: the flag */
	mg->opts = opts ? *opts : none;
	mg->io_name = mg->opts.io == DS_IO_PREAD ? "pread" : "io_uring";
	ds_recipe_notices(ctx, r);
	rc = ds_plan_build(ctx, r, &mg->opts, &mg->plan);
	if (!rc)
		rc = ds_guard_record(ctx, &mg->plan, &mg->guard);
	if (!rc)
		rc = ds_out_check(ctx, &mg->plan, out_dir, mg->opts.force,
				  mg->opts.resume);
	if (rc) {
		ds_merge_free(mg);
		return rc;
	}
	*out = mg;
	return 0;
}

void ds_merge_info(const ds_merge *mg, struct ds_plan_info *info)
{
	const struct ds_plan *p = &mg->plan;
	const struct ds_kernel_ops *k = ds_kernel_select();

	memset(info, 0, sizeof(*info));
	info->tensors = p->not;
	info->merged = p->merged;
	info->shards = p->nos;
	info->bytes_read = p->bytes_read;
	info->bytes_written = p->bytes_written;
	info->memory = p->memory;
	info->overhead = p->overhead;
	info->max_passes = p->max_passes ? p->max_passes : 1;
	info->layers = p->layers;
	info->index = p->index;
	info->window = p->window;
	info->threads = p->threads;
	info->io = mg->io_name;
	info->kernel = k ? k->name : "none";
}

int ds_merge_tensor(const ds_merge *mg, size_t i, struct ds_tensor_plan *tp)
{
	static const char *const names[] = {
		[DS_PASS_HIST_HI] = "hist_hi", [DS_PASS_HIST_LO] = "hist_lo",
		[DS_PASS_COUNT_EQ] = "count_eq", [DS_PASS_SUMS] = "sums",
		[DS_PASS_WRITE] = "write",
	};
	const struct ds_plan *p = &mg->plan;
	const struct ds_otensor *o;

	if (i >= p->not)
		return DS_E_USAGE;
	o = &p->ot[i];
	memset(tp, 0, sizeof(*tp));
	tp->name = o->name;
	tp->merged = o->act == DS_ACT_MERGE;
	tp->passes = o->npass;
	for (unsigned k = 0; k < o->npass; k++)
		tp->pass[k] = names[o->pass[k]];
	if (!tp->merged) {
		tp->pass_bytes = o->in[0]->end - o->in[0]->begin;
		return 0;
	}
	tp->pass_bytes = ds_plan_pass_bytes(p, o);
	return 0;
}

void ds_merge_cancel(ds_merge *mg)
{
	ds_cancel_raise(&mg->cancel);
}

static int canceled(ds_merge *mg, struct ds_out *o)
{
	size_t kept = ds_out_suspend(o);

	if (!kept)
		return ds_fail(mg->ctx, DS_E_CANCELED, "interrupted before a "
			       "tensor was complete; nothing kept in %s",
			       mg->out_dir);
	return ds_fail(mg->ctx, DS_E_CANCELED, "interrupted: %s keeps %zu of "
		       "%zu tensors for --resume", mg->out_dir, kept,
		       mg->plan.not);
}

/*
 * After a failure, what OUT keeps: an interrupted or failed run keeps its
 * journaled work for --resume; changed inputs make that work worthless
 * (and the journal would not match them), so everything goes; a run that
 * could not open OUT for --resume leaves the earlier run's files alone.
 */
static int failed(ds_merge *mg, struct ds_out *o, int opened, int rc)
{
	if (rc == DS_E_CANCELED)
		return canceled(mg, o);
	if (!opened && mg->opts.resume)
		return rc;
	if (rc == DS_E_CHANGED || !opened)
		ds_out_abort(o);
	else
		ds_out_suspend(o);
	return rc;
}


static void put_list(FILE *f, const char *key, const double *v, unsigned n)
{
	fprintf(f, " %s=", key);
	for (unsigned k = 0; k < n; k++) {
		if (k)
			fputc(',', f);
		ds_fput_double(f, v[k]);
	}
}

/* One line per output tensor: what feeds it and with which parameters
 * (gradients and filters resolved), for --dry-run. */
static void tensor_text(FILE *f, const struct ds_plan *p, size_t t)
{
	const struct ds_otensor *o = &p->ot[t];
	struct ds_tparams tp;
	static const char *const rs[] = { "inverse", "none", "l1" };

	static const char *const pass[] = {
		[DS_PASS_HIST_HI] = "hist_hi", [DS_PASS_HIST_LO] = "hist_lo",
		[DS_PASS_COUNT_EQ] = "count_eq", [DS_PASS_SUMS] = "sums",
		[DS_PASS_WRITE] = "write",
	};

	fprintf(f, "tensor %s", o->name);
	if (o->act != DS_ACT_MERGE || ds_plan_tparams(p, t, &tp)) {
		fprintf(f, " copy from=%s:%s bytes=%llu", p->in[o->src[0]]->arg,
		       o->in[0]->name, (unsigned long long)(o->in[0]->end -
							     o->in[0]->begin));
		return;
	}
	fprintf(f, " merge passes=");
	for (unsigned k = 0; k < o->npass; k++)
		fprintf(f, "%s%s", k ? "," : "", pass[o->pass[k]]);
	fprintf(f, " pass_bytes=%llu",
	       (unsigned long long)ds_plan_pass_bytes(p, o));
	fprintf(f, " j=");
	for (unsigned k = 0; k < tp.n; k++)
		fprintf(f, "%s%u", k ? "," : "", tp.j[k]);
	put_list(f, "weight", tp.weight, tp.n);
	put_list(f, "p", tp.p, tp.n);
	put_list(f, "gamma", tp.gamma, tp.n);
	put_list(f, "epsilon", tp.epsilon, tp.n);
	fprintf(f, " lambda=");
	ds_fput_double(f, tp.lambda);
	fprintf(f, " t=");
	ds_fput_double(f, tp.param[DS_P_T]);
	fprintf(f, " scale=");
	ds_fput_double(f, tp.param[DS_P_SCALE]);
	fprintf(f, " rescale=%s normalize=%s from=", rs[tp.rescale],
	       tp.normalize < 0 ? "default" : tp.normalize ? "true" : "false");
	for (unsigned k = 0; k <= o->nsrc; k++)
		fprintf(f, "%s%s:%s", k ? "," : "", p->in[o->src[k]]->arg,
		       o->in[k]->name);
}

int ds_merge_tensor_text(const ds_merge *mg, size_t i, char *buf, size_t len)
{
	FILE *f;

	if (i >= mg->plan.not || len == 0)
		return DS_E_USAGE;
	if (!(f = fmemopen(buf, len, "w")))
		return -errno;
	tensor_text(f, &mg->plan, i);
	return fclose(f) ? -ENOSPC : 0;
}

int ds_merge_run(ds_merge *mg, ds_progress_fn *progress, void *user)
{
	struct ds_out *o = NULL;
	size_t first = 0;
	int rc, opened, g;

	if (ds_canceled(&mg->cancel))
		return ds_fail(mg->ctx, DS_E_CANCELED, "interrupted before the "
			       "merge began; nothing written to %s",
			       mg->out_dir);
	rc = ds_out_open(mg->ctx, &mg->plan, mg->out_dir, mg->opts.resume, &o,
			 &first);
	opened = !rc;
	if (!rc && first)
		ds_notice(mg->ctx, "resuming %s: %zu of %zu tensors already "
			  "written and verified", mg->out_dir, first,
			  mg->plan.not);
	if (!rc)
		rc = ds_pipeline_run(mg->ctx, &mg->plan, o, first, mg->opts.io,
				     &mg->io_name, &mg->cancel, progress, user);
	/* Inputs read while they changed: a read error is its symptom, the
	 * change its cause, so the change is what gets reported. */
	if (opened && rc != DS_E_CANCELED &&
	    (g = ds_guard_check(mg->ctx, &mg->guard)))
		rc = g;
	if (!rc && ds_canceled(&mg->cancel))
		rc = ds_fail(mg->ctx, DS_E_CANCELED, "interrupted");
	if (!rc)
		rc = ds_out_finish(o, mg->opts.force);
	if (rc)
		rc = failed(mg, o, opened, rc);
	ds_out_free(o);
	return rc;
}

void ds_merge_free(ds_merge *mg)
{
	if (!mg)
		return;
	ds_plan_free(&mg->plan);
	ds_guard_free(&mg->guard);
	ds_cancel_destroy(&mg->cancel);
	free(mg->out_dir);
	free(mg);
}

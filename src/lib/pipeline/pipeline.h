/* SPDX-License-Identifier: MIT */
/* pipeline.h - stream every output tensor through the windows in lockstep */
#ifndef DS_PIPELINE_H
#define DS_PIPELINE_H

#include "common/cancel.h"
#include "output/output.h"
#include "plan/plan.h"

/*
 * Read every window of every input, merge it on the worker threads and
 * write it to the output shards in file order, from output tensor first on
 * (those before it are already written).  Each tensor is journaled once all
 * of its bytes are written.  All buffers are allocated here, once, before
 * the first read; nothing in the loop allocates.  Once cancel (may be NULL)
 * is raised no further window starts; the run ends with DS_E_CANCELED
 * when what was in flight has drained.
 */
int ds_pipeline_run(ds_ctx *ctx, const struct ds_plan *p, struct ds_out *o,
		    size_t first, enum ds_io_backend io, const char **io_name,
		    const struct ds_cancel *cancel, ds_progress_fn *progress,
		    void *user);

#endif

/* SPDX-License-Identifier: MIT */
/* plan.c - check every tensor of every input and lay out the output */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/ctx.h"
#include "plan/plan.h"

static bool is_float(enum ds_dtype dt)
{
	return dt == DS_DT_F16 || dt == DS_DT_BF16 || dt == DS_DT_F32;
}

/* Tensors that gain rows when tokens are added to a fine-tune. */
static bool is_vocab_tensor(const char *name)
{
	return strstr(name, "embed") || strstr(name, "lm_head") ||
	       strstr(name, "wte") || !strcmp(name, "output.weight");
}

/* 0 when model tensor mt can be merged into base tensor bt (equal shapes,
 * or a vocabulary tensor with extra rows: its first rows are the base's). */
static int check_shape(struct ds_plan *p, unsigned k,
		       const struct ds_tensor *bt, const struct ds_tensor *mt)
{
	char bs[256], ms[256];
	bool same = bt->ndim == mt->ndim;

	for (unsigned d = 0; same && d < bt->ndim; d++)
		same = bt->shape[d] == mt->shape[d];
	if (same)
		return 0;
	ds_shape_str(bt->shape, bt->ndim, bs, sizeof(bs));
	ds_shape_str(mt->shape, mt->ndim, ms, sizeof(ms));
	if (bt->ndim == mt->ndim && bt->ndim >= 1 && is_vocab_tensor(bt->name) &&
	    mt->shape[0] > bt->shape[0] &&
	    !memcmp(bt->shape + 1, mt->shape + 1,
		    (bt->ndim - 1) * sizeof(bt->shape[0]))) {
		ds_warn(p->ctx, "%s: tensor '%s' has shape %s, the base %s: "
			"merging the base's %llu rows (added tokens keep the "
			"base's values)", p->in[k]->arg, bt->name, ms, bs,
			(unsigned long long)bt->shape[0]);
		return 0;
	}
	return ds_fail(p->ctx, DS_E_MISMATCH, "%s: tensor '%s' has shape %s, "
		       "expected %s as in the base %s", p->in[k]->arg,
		       bt->name, ms, bs, p->in[0]->arg);
}

/* Find and check tensor bt in every fine-tune. */
static int plan_merge(struct ds_plan *p, struct ds_otensor *o,
		      const struct ds_tensor *bt)
{
	for (unsigned k = 1; k < p->ninputs; k++) {
		const struct ds_tensor *mt = ds_model_find(p->in[k], bt->name);
		int rc;

		if (!mt)
			return ds_fail(p->ctx, DS_E_MISMATCH, "%s: tensor '%s' "
				       "of the base %s is missing",
				       p->in[k]->arg, bt->name, p->in[0]->arg);
		if (!is_float(mt->dtype))
			return ds_fail(p->ctx, DS_E_MISMATCH, "%s: tensor '%s'"
				       " is %s, expected F16, BF16 or F32 like "
				       "the base's %s", p->in[k]->arg, bt->name,
				       ds_dtype_name(mt->dtype),
				       ds_dtype_name(bt->dtype));
		if ((rc = check_shape(p, k, bt, mt)))
			return rc;
		o->in[k] = mt;
		o->src[k] = k;
	}
	o->nsrc = p->ninputs - 1;
	o->act = DS_ACT_MERGE;
	o->odt = p->r->dtype >= 0 ? (enum ds_dtype)p->r->dtype : bt->dtype;
	p->merged++;
	return 0;
}

/*
 * One notice for the base's tensors whose dtype is not merged, by dtype: a
 * checkpoint may hold thousands of FP8 or MXFP4 blocks and their scales,
 * which deserve a line, not a warning each.
 */
static void note_copied(struct ds_plan *p)
{
	const struct ds_model *b = p->in[0];
	const char *first[DS_DT_COUNT] = { 0 };
	size_t count[DS_DT_COUNT] = { 0 }, total = 0, o = 0;
	char list[768] = "";

	for (size_t i = 0; i < b->ntensors; i++) {
		const struct ds_tensor *t = &b->tensors[i];

		if (is_float(t->dtype) || ds_recipe_excluded(p->r, t->name))
			continue;
		if (!count[t->dtype]++)
			first[t->dtype] = t->name;
		total++;
	}
	for (unsigned d = 0; d < DS_DT_COUNT && o < sizeof(list); d++)
		if (count[d])
			o += (size_t)snprintf(list + o, sizeof(list) - o,
					      "%s%s: %zu (%s'%s')", o ? ", " : "",
					      ds_dtype_name((enum ds_dtype)d),
					      count[d], count[d] > 1 ?
					      "first " : "", first[d]);
	if (total)
		ds_notice(p->ctx, "%s: %zu tensor%s copied from the base "
			  "unchanged, as only F16, BF16 and F32 are merged: "
			  "%s", b->arg, total, total > 1 ? "s" : "", list);
}

/* Decide what becomes of base tensor bt. */
static int plan_tensor(struct ds_plan *p, struct ds_otensor *o,
		       const struct ds_tensor *bt)
{
	if (bt == &p->in[0]->tensors[p->in[0]->ntensors - 1])
		note_copied(p);     /* once, with the base's last tensor */
	memset(o, 0, sizeof(*o));
	o->name = bt->name;
	o->in[0] = bt;
	o->numel = bt->numel;
	o->oshard = bt->shard;
	o->act = DS_ACT_COPY;
	o->odt = bt->dtype;
	/* Every dtype but F16, BF16 and F32 is copied (note_copied). */
	if (ds_recipe_excluded(p->r, bt->name) || !is_float(bt->dtype))
		return 0;
	return plan_merge(p, o, bt);
}

/* Warn once per model about tensors the base does not have. */
static void warn_extra(struct ds_plan *p)
{
	for (unsigned k = 1; k < p->ninputs; k++) {
		const struct ds_model *m = p->in[k];
		const char *first = NULL;
		size_t extra = 0;

		if (m == p->in[0])
			continue;
		for (size_t i = 0; i < m->ntensors; i++)
			if (!ds_model_find(p->in[0], m->tensors[i].name) &&
			    !extra++)
				first = m->tensors[i].name;
		if (extra)
			ds_warn(p->ctx, "%s: %zu tensor%s not in the base "
				"ignored (first: '%s')", m->arg, extra,
				extra > 1 ? "s" : "", first);
	}
}

static int open_inputs(ds_ctx *ctx, const struct ds_recipe *r,
		       struct ds_plan *p)
{
	int rc;

	p->ninputs = r->n + 1;
	for (unsigned j = 0; j < r->n; j++)
		if ((rc = ds_model_open(ctx, r->models[j], &p->in[1 + j])))
			return rc;
	if (r->base)
		return ds_model_open(ctx, r->base, &p->in[0]);
	p->in[0] = p->in[1];     /* linear without a base: model 0's layout */
	p->base_is_model = true;
	return 0;
}

/* Output shard s: its tensors' offsets in the output dtype, its header. */
static int layout_shard(struct ds_plan *p, struct ds_oshard *os)
{
	static const char *const meta[] = {
		"format", "pt", "dare_stream_version", DS_VERSION_STRING, NULL
	};
	struct ds_tensor *t = calloc(os->count ? os->count : 1, sizeof(*t));
	uint64_t off = 0, nb;
	int rc;

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < os->count; i++) {
		struct ds_otensor *o = &p->ot[os->first + i];

		t[i] = *o->in[0];
		t[i].name = (char *)o->name;
		t[i].dtype = o->odt;
		nb = ds_otensor_bytes(o);           /* <= input bytes * 2 */
		o->obegin = off;
		t[i].begin = off;
		t[i].end = off += nb;
	}
	rc = ds_st_build(t, os->count, meta, &os->header, &os->hlen);
	free(t);
	if (rc)
		return ds_fail(p->ctx, rc, "%s: cannot write the header of "
			       "output shard %s: %s", p->in[0]->arg, os->name,
			       rc == -ENOMEM ? "out of memory" :
			       "a tensor name or size cannot be represented");
	os->size = os->hlen + off;
	p->bytes_written += os->size;
	return 0;
}

static int layout(struct ds_plan *p)
{
	const struct ds_model *b = p->in[0];
	int rc;

	p->nos = b->nshards;
	p->os = calloc(p->nos, sizeof(*p->os));
	if (!p->os)
		return -ENOMEM;
	for (size_t i = 0, s = 0; s < p->nos; s++) {
		p->os[s].name = b->shards[s].name;
		p->os[s].first = i;
		while (i < p->not && p->ot[i].oshard == s)
			i++;
		p->os[s].count = i - p->os[s].first;
		if ((rc = layout_shard(p, &p->os[s])))
			return rc;
	}
	return 0;
}

/* Bytes read from the inputs. */
static void count_reads(struct ds_plan *p)
{
	for (size_t i = 0; i < p->not; i++) {
		const struct ds_otensor *o = &p->ot[i];

		if (o->act == DS_ACT_COPY) {
			p->bytes_read += o->in[0]->end - o->in[0]->begin;
			continue;
		}
		for (unsigned k = p->mp.uses_base ? 0 : 1; k < p->ninputs; k++)
			p->bytes_read += o->numel * ds_dtype_size(o->in[k]->dtype);
	}
}

/* Largest element size any window buffer holds. */
static unsigned max_elem(const struct ds_plan *p)
{
	unsigned es = 2;

	for (size_t i = 0; i < p->not; i++)
		for (unsigned k = 0; k < p->ninputs; k++) {
			const struct ds_otensor *o = &p->ot[i];

			if (o->act == DS_ACT_MERGE && o->in[k] &&
			    ds_dtype_size(o->in[k]->dtype) > es)
				es = ds_dtype_size(o->in[k]->dtype);
			if (o->act == DS_ACT_MERGE && ds_dtype_size(o->odt) > es)
				es = ds_dtype_size(o->odt);
		}
	return es;
}

uint64_t ds_plan_slot_bytes(const struct ds_plan *p, uint64_t window)
{
	return (uint64_t)(p->ninputs + 1) * window * max_elem(p);
}

#define DS_BLOCK 65536u   /* windows start on 65536-element blocks */

/* Elements per window from the memory budget; no larger than needed. */
static int size_windows(struct ds_plan *p, const struct ds_merge_opts *o)
{
	uint64_t budget = o->memory ? o->memory : DS_DEFAULT_MEMORY;
	uint64_t per_elem = ds_plan_slot_bytes(p, 1);
	uint64_t largest = DS_BLOCK, w;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	p->threads = o->threads ? o->threads : cpus > 0 ? (unsigned)cpus : 1;
	if (p->threads > 64)
		p->threads = 64;
	p->depth = p->threads + 2;
	for (size_t i = 0; i < p->not; i++)
		if (p->ot[i].numel > largest)
			largest = p->ot[i].numel;
	largest = (largest + DS_BLOCK - 1) / DS_BLOCK * DS_BLOCK;
	w = o->window ? o->window : budget / (p->depth * per_elem);
	w = w / DS_BLOCK * DS_BLOCK;
	if (o->window && o->window % DS_BLOCK)
		return ds_fail(p->ctx, DS_E_USAGE, "window of %llu elements: "
			       "must be a multiple of %u",
			       (unsigned long long)o->window, DS_BLOCK);
	if (w == 0)
		return ds_fail(p->ctx, DS_E_USAGE, "--memory %llu bytes is too "
			       "small: %u windows of %u elements for %u inputs "
			       "need at least %llu bytes (or use fewer "
			       "--threads)", (unsigned long long)budget,
			       p->depth, DS_BLOCK, p->ninputs,
			       (unsigned long long)(p->depth * per_elem *
						    DS_BLOCK));
	p->window = w < largest ? w : largest;
	p->memory = p->depth * per_elem * p->window;
	return 0;
}

int ds_plan_build(ds_ctx *ctx, const struct ds_recipe *r,
		  const struct ds_merge_opts *o, struct ds_plan *p)
{
	int rc;

	memset(p, 0, sizeof(*p));
	p->ctx = ctx;
	p->r = r;
	if ((rc = ds_recipe_check(ctx, r)) || (rc = open_inputs(ctx, r, p)))
		return rc;
	ds_mparams_init(ctx, &p->mp, r->method, r->n, r->weight, r->p,
			r->lambda, r->normalize, r->rescale, r->seed);
	p->not = p->in[0]->ntensors;
	p->ot = calloc(p->not ? p->not : 1, sizeof(*p->ot));
	if (!p->ot)
		return ds_fail(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < p->not; i++)
		if ((rc = plan_tensor(p, &p->ot[i], &p->in[0]->tensors[i])))
			return rc;
	warn_extra(p);
	if ((rc = layout(p)))
		return rc;
	count_reads(p);
	return size_windows(p, o);
}

int ds_plan_tparams(const struct ds_plan *p, size_t t, struct ds_tparams *tp)
{
	return ds_recipe_tparams(p->ctx, p->r, p->ot[t].name, tp);
}

void ds_plan_free(struct ds_plan *p)
{
	for (unsigned k = p->base_is_model ? 1 : 0; k < p->ninputs; k++)
		ds_model_free(p->in[k]);
	for (unsigned s = 0; s < p->nos; s++)
		free(p->os[s].header);
	free(p->os);
	free(p->ot);
	memset(p, 0, sizeof(*p));
}

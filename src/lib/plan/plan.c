/* SPDX-License-Identifier: MIT */
/* plan.c - check every tensor of every input and lay out the output */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/ctx.h"
#include "inputs/pack.h"
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

/* Same dtype and shape: a copy gives the same bytes as a merge would. */
static bool same_layout(const struct ds_tensor *a, const struct ds_tensor *b)
{
	if (a->dtype != b->dtype || a->ndim != b->ndim)
		return false;
	for (unsigned d = 0; d < a->ndim; d++)
		if (a->shape[d] != b->shape[d])
			return false;
	return true;
}

/*
 * passthrough with scale 1, and nuslerp, sce or karcher of one model,
 * output model 0's tensor: copied byte for byte when nothing converts it.
 */
static bool copies_model0(struct ds_plan *p, struct ds_otensor *o)
{
	const struct ds_mparams *mp = &p->mp;
	enum ds_combine cb = mp->def->cb;
	bool one = (cb == DS_CB_PASSTHROUGH && mp->scale == 1.0f) ||
		   (mp->n == 1 && (cb == DS_CB_NUSLERP || cb == DS_CB_SCE ||
				   cb == DS_CB_KARCHER));

	if (!one || o->odt != o->in[1]->dtype ||
	    !same_layout(o->in[0], o->in[1]))
		return false;
	o->act = DS_ACT_COPY;
	o->in[0] = o->in[1];
	o->src[0] = o->src[1];
	return true;
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
	if (copies_model0(p, o))
		return 0;
	p->merged++;
	return 0;
}

/* Decide what becomes of base tensor bt. */
static int plan_tensor(struct ds_plan *p, struct ds_otensor *o,
		       const struct ds_tensor *bt)
{
	memset(o, 0, sizeof(*o));
	o->name = bt->name;
	o->in[0] = bt;
	o->numel = bt->numel;
	o->oshard = bt->shard;
	o->act = DS_ACT_COPY;
	o->odt = bt->dtype;
	if (ds_recipe_excluded(p->r, bt->name))
		return 0;
	if (bt->dtype == DS_DT_F64 || bt->dtype == DS_DT_F8_E4M3 ||
	    bt->dtype == DS_DT_F8_E5M2) {
		ds_warn(p->ctx, "%s: tensor '%s' is %s: copied from the base "
			"unchanged", p->in[0]->arg, bt->name,
			ds_dtype_name(bt->dtype));
		return 0;
	}
	if (!is_float(bt->dtype) || p->ninputs == 1)
		return 0;                       /* no model: the base's tensor */
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
		nb = o->numel * ds_dtype_size(o->odt); /* <= input bytes * 2 */
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
		p->bytes_read += o->npass * ds_plan_pass_bytes(p, o);
	}
}

uint64_t ds_plan_pass_bytes(const struct ds_plan *p, const struct ds_otensor *o)
{
	bool packs = false;
	uint64_t b = 0;

	for (unsigned k = 1; k <= o->nsrc; k++) {
		const struct ds_model *m = p->in[o->src[k]];

		packs |= m->pack != NULL;
		b += m->pack ? m->pack->pt[o->in[k] - m->tensors].bytes :
		     o->numel * ds_dtype_size(o->in[k]->dtype);
	}
	if (p->mp.uses_base || packs)
		b += o->numel * ds_dtype_size(o->in[0]->dtype);
	return b;
}

/*
 * A pack is read with the mask it was made with; the merge is the same as
 * from the full model only when the merge draws that mask too.
 */
static void check_packs(struct ds_plan *p, const struct ds_tparams *tp)
{
	for (unsigned j = 0; j < p->r->n; j++) {
		const struct ds_pack *pk = p->in[1 + j]->pack;

		if (!pk)
			continue;
		if (!p->mp.dare || pk->seed != tp->seed ||
		    pk->stream != tp->j[j] || pk->p != tp->p[j])
			ds_notice(p->ctx, "%s: a delta pack of seed %llu, "
				  "stream %u, p %g; this merge draws %s: its "
				  "values are read with the pack's own mask, "
				  "so the result differs from merging the full "
				  "model", p->in[1 + j]->arg,
				  (unsigned long long)pk->seed, pk->stream, pk->p,
				  p->mp.dare ? "another mask" : "no DARE mask");
	}
	if (p->r->base)
		return;
	for (unsigned j = 0; j < p->r->n; j++)
		if (p->in[1 + j]->pack)
			ds_notice(p->ctx, "%s: a delta pack needs the base it "
				  "was made from (--base)", p->in[1 + j]->arg);
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
	/*
	 * The budget is the window buffers'; the method's tables (histograms,
	 * block sums) and the workers' scratch come on top, fixed in size
	 * whatever the model's (a row method's scratch follows its longest
	 * row).
	 */
	p->memory = p->depth * per_elem * p->window;
	ds_method_needs(&p->mp, p->window, p->maxrow, &p->needs);
	p->overhead = p->needs.acc_bytes + p->depth * p->needs.red_bytes +
		      p->threads * p->needs.scratch_floats * sizeof(float);
	return 0;
}

/* The parameters the merge as a whole is sized by. */
static int merge_params(struct ds_plan *p)
{
	struct ds_tparams tp;
	int rc = ds_recipe_tparams(p->ctx, p->r, "", &tp);

	if (rc)
		return rc;
	if (tp.n == 0) {                /* the base alone: every tensor copied */
		p->mp.method = p->r->method;
		p->mp.def = ds_method_def(p->r->method);
		return 0;
	}
	if ((rc = ds_mparams_from(p->ctx, &p->mp, p->r->method, &tp)))
		return rc;
	check_packs(p, &tp);
	return 0;
}

/* Free ts and put the tensor's name in front of the error text. */
static int name_tensor(struct ds_plan *p, struct ds_tstate *ts,
		       const struct ds_otensor *o, int rc)
{
	char msg[sizeof(p->ctx->err)];

	free(ts);
	memcpy(msg, p->ctx->err, sizeof(msg));
	return ds_fail(p->ctx, rc, "tensor '%s': %s", o->name, msg);
}

/*
 * Every merged tensor's own parameters, checked before anything is
 * written: on the first call (sizing) the longest row, on the second, with
 * the window known, the passes it takes and that a row fits.
 */
static int tensor_params(struct ds_plan *p, bool sizing)
{
	struct ds_tstate *ts = malloc(sizeof(*ts));
	int rc = ts ? 0 : ds_fail(p->ctx, -ENOMEM, "out of memory");

	for (size_t i = 0; !rc && i < p->not; i++) {
		struct ds_otensor *o = &p->ot[i];
		const struct ds_tensor *t = o->in[0];
		struct ds_tparams tp;
		struct ds_mparams mp;

		o->npass = 1;
		o->pass[0] = DS_PASS_WRITE;
		if (o->act != DS_ACT_MERGE)
			continue;
		rc = ds_plan_tparams(p, i, &tp);
		if (!rc)
			rc = ds_mparams_from(p->ctx, &mp, p->r->method, &tp);
		if (rc)
			return name_tensor(p, ts, o, rc);
		if (sizing) {
			uint64_t rows = t->ndim >= 2 && t->shape[0] ? t->shape[0] : 1;

			if (ds_method_rows(&mp) && o->numel / rows > p->maxrow)
				p->maxrow = o->numel / rows;
			continue;
		}
		ds_mparams_tensor(&mp, o->name);
		rc = ds_tensor_begin(p->ctx, ts, &mp, t->shape, t->ndim,
				     o->numel, p->window, p->maxrow);
		if (rc)
			return name_tensor(p, ts, o, rc);
		o->npass = ts->npass;
		for (unsigned k = 0; k < ts->npass; k++)
			o->pass[k] = (unsigned char)ts->pass[k];
		if (o->npass > p->max_passes)
			p->max_passes = o->npass;
	}
	free(ts);
	return rc;
}

int ds_plan_build(ds_ctx *ctx, const struct ds_recipe *r,
		  const struct ds_merge_opts *o, struct ds_plan *p)
{
	int rc;

	memset(p, 0, sizeof(*p));
	p->ctx = ctx;
	p->r = r;
	if ((rc = ds_recipe_check(ctx, r)) || (rc = open_inputs(ctx, r, p)) ||
	    (rc = merge_params(p)))
		return rc;
	p->not = p->in[0]->ntensors;
	p->ot = calloc(p->not ? p->not : 1, sizeof(*p->ot));
	if (!p->ot)
		return ds_fail(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < p->not; i++)
		if ((rc = plan_tensor(p, &p->ot[i], &p->in[0]->tensors[i])))
			return rc;
	warn_extra(p);
	if (p->ninputs == 1)
		ds_notice(ctx, "no model given: the output is the base %s",
			  p->in[0]->arg);
	if ((rc = layout(p)) || (rc = tensor_params(p, true)) ||
	    (rc = size_windows(p, o)) || (rc = tensor_params(p, false)))
		return rc;
	count_reads(p);
	return 0;
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

/* SPDX-License-Identifier: MIT */
/* plan.c - check every tensor of every input and lay out the output */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include "common/ctx.h"
#include "inputs/lora.h"
#include "inputs/pack.h"
#include "io/io.h"
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

/* Tensors outside the layers that come before them (DESIGN 5.3). */
static bool is_pre_tensor(const char *name)
{
	return strstr(name, "embed") || strstr(name, "wte") ||
	       strstr(name, "wpe");
}

long ds_plan_layer_of(const char *name, size_t *at, size_t *len)
{
	static const char *const words[] = { "layers", "layer", "h", "blocks" };
	const char *c = name;

	while (*c) {
		size_t n = strcspn(c, ".");
		const char *d = c + n + (c[n] == '.');
		size_t dn = strcspn(d, ".");
		bool digits = dn > 0 && dn < 10 && c[n] == '.';

		for (size_t i = 0; digits && i < dn; i++)
			digits = isdigit((unsigned char)d[i]);
		for (size_t w = 0; digits && w < 4; w++)
			if (strlen(words[w]) == n && !strncmp(c, words[w], n)) {
				if (at)
					*at = (size_t)(d - name);
				if (len)
					*len = dn;
				return strtol(d, NULL, 10);
			}
		c = d;
		if (!*d && n == 0)
			break;
	}
	return -1;
}

/* Layers of a model: 1 + the largest layer number of its tensor names. */
static unsigned model_layers(const struct ds_model *m)
{
	long L = 0, l;

	for (size_t i = 0; i < m->ntensors; i++)
		if ((l = ds_plan_layer_of(m->tensors[i].name, NULL, NULL)) >= L)
			L = l + 1;
	return (unsigned)L;
}

/* name with its layer number replaced by layer (malloc'd). */
static char *renumber(const char *name, unsigned layer)
{
	size_t at, len;
	char *s;

	if (ds_plan_layer_of(name, &at, &len) < 0)
		return strdup(name);
	if (!(s = malloc(strlen(name) + 12)))
		return NULL;
	sprintf(s, "%.*s%u%s", (int)at, name, layer, name + at + len);
	return s;
}

/* 0 when model tensor mt can be merged into base tensor bt (equal shapes,
 * or a vocabulary tensor with extra rows: its first rows are the base's). */
static int check_shape(struct ds_plan *p, const struct ds_model *m,
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
		if (p->r->tokenizer < 0 ||
		    p->in[1 + p->r->tokenizer] != m)
			ds_warn(p->ctx, "%s: tensor '%s' has shape %s, the "
				"base %s: merging the base's %llu rows (added "
				"tokens keep the base's values)", m->arg,
				mt->name, ms, bs,
				(unsigned long long)bt->shape[0]);
		return 0;
	}
	return ds_fail(p->ctx, DS_E_MISMATCH, "%s: tensor '%s' has shape %s, "
		       "expected %s as in the base %s", m->arg,
		       mt->name, ms, bs, p->in[0]->arg);
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

/* Find and check tensor name in input k; it fills slot s of o. */
static int plan_slot(struct ds_plan *p, struct ds_otensor *o, unsigned s,
		     unsigned k, const char *name)
{
	const struct ds_model *m = p->in[k];
	const struct ds_tensor *bt = o->in[0];
	const struct ds_tensor *mt = ds_model_find(m, name);

	if (!mt && !strcmp(name, bt->name))
		return ds_fail(p->ctx, DS_E_MISMATCH, "%s: tensor '%s' of the "
			       "base %s is missing", m->arg, name,
			       p->in[o->src[0]]->arg);
	if (!mt)
		return ds_fail(p->ctx, DS_E_MISMATCH, "%s: tensor '%s' (for "
			       "'%s' of %s) is missing", m->arg, name,
			       bt->name, p->in[o->src[0]]->arg);
	if (!is_float(mt->dtype))
		return ds_fail(p->ctx, DS_E_MISMATCH, "%s: tensor '%s' is %s, "
			       "expected F16, BF16 or F32 like the base's %s",
			       m->arg, name, ds_dtype_name(mt->dtype),
			       ds_dtype_name(bt->dtype));
	o->in[s] = mt;
	o->src[s] = k;
	return check_shape(p, m, bt, mt);
}

/* Which inputs feed output tensor o: slot 0 is bt; *names give each
 * further slot's input tensor name (renumbered for its layer). */
struct feed {
	unsigned n;
	unsigned src[DS_MAX_INPUTS];
	const char *name[DS_MAX_INPUTS];
};

/* Decide what becomes of tensor bt (slot 0) fed by f. */
static int plan_tensor(struct ds_plan *p, struct ds_otensor *o,
		       const struct ds_tensor *bt, const struct feed *f)
{
	int rc;

	o->in[0] = bt;
	o->src[0] = f->src[0];
	o->numel = bt->numel;
	o->act = DS_ACT_COPY;
	o->odt = bt->dtype;
	/* Every dtype but F16, BF16 and F32 is copied (note_copied). */
	if (ds_recipe_excluded(p->r, o->name))
		return 0;
	if (!is_float(bt->dtype) || f->n == 0)
		return 0;                       /* no model: the base's tensor */
	for (unsigned s = 1; s <= f->n; s++)
		if ((rc = plan_slot(p, o, s, f->src[s], f->name[s])))
			return rc;
	o->nsrc = f->n;
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

/* Warn once per model about tensors the base does not have. */
static void warn_extra(struct ds_plan *p)
{
	for (unsigned k = 1; k < p->ninputs && !p->r->nslices; k++) {
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

/* Input index of source s of a slice. */
static unsigned src_input(const struct ds_source *s)
{
	return s->m == DS_SRC_BASE ? 0 : 1 + s->m;
}

/* p->lbase: the BASE+ADAPTER inputs whose BASE files are the base's,
 * shard by shard (the same inodes; a file that cannot be looked at is
 * not the same). */
static void same_base(struct ds_plan *p)
{
	for (unsigned k = 1; k < p->ninputs; k++) {
		const struct ds_model *m = p->in[k];
		bool same = m->lora && m->lora->shard == p->in[0]->nshards;

		for (unsigned s = 0; same && s < m->lora->shard; s++) {
			struct stat a, b;

			same = !stat(p->in[0]->shards[s].path, &a) &&
			       !stat(m->shards[s].path, &b) &&
			       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
		}
		if (same)
			p->lbase |= 1ull << (k - 1);
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
		rc = ds_model_open(ctx, r->base, &p->in[0]);
	else {
		/* No base: the layout is the first model's (of the first
		 * slice). */
		p->in[0] = p->in[r->nslices ? src_input(&r->slices[0].src[0]) :
				 1];
		p->base_is_model = true;
	}
	if (!rc && p->in[0]->lora)
		return ds_fail(ctx, DS_E_USAGE, "%s: a LoRA model (BASE+ADAPTER) "
			       "cannot be the base%s; merge it as a model", 
			       p->in[0]->arg, r->base ? "" : " (without --base, "
			       "the first model is)");
	if (!rc)
		same_base(p);
	return rc;
}

/* ---- which tensors the output has ---------------------------------------- */

/* The feed of a tensor named name in a tensor of slice sl at layer offset i
 * of its sources (or, for tensors outside the layers, as named). */
static int slice_feed(struct ds_plan *p, unsigned s, const char *name,
		      long i, struct feed *f, char **names)
{
	const struct ds_recipe *r = p->r;
	const struct ds_slice *sl = &r->slices[s];
	unsigned j[DS_MAX_MODELS], si[DS_MAX_MODELS];
	unsigned base_src = 0;

	f->n = ds_recipe_slice_models(r, s, j, si);
	for (unsigned k = 0; k < sl->nsrc; k++)
		if (sl->src[k].m == DS_SRC_BASE) {
			base_src = k;
			break;
		}
	f->src[0] = ds_recipe_method_uses_base(r->method) ? 0 :
		    src_input(&sl->src[0]);
	names[0] = i < 0 ? strdup(name) :
		   renumber(name, sl->src[ds_recipe_method_uses_base(r->method)
					   ? base_src : 0].a + (unsigned)i);
	for (unsigned k = 1; k <= f->n; k++) {
		f->src[k] = 1 + j[k - 1];
		names[k] = i < 0 ? strdup(name) :
			   renumber(name, sl->src[si[k - 1]].a + (unsigned)i);
	}
	for (unsigned k = 0; k <= f->n; k++) {
		if (!names[k])
			return -ENOMEM;
		f->name[k] = names[k];
	}
	return 0;
}

static void free_names(char **names, unsigned n)
{
	for (unsigned k = 0; k <= n; k++) {
		free(names[k]);
		names[k] = NULL;
	}
}

/* Output tensor o from slice s: its layer offset i (-1 outside the
 * layers), output layer ol, the name of its first source's tensor. */
static int add_sliced(struct ds_plan *p, struct ds_otensor *o, unsigned s,
		      long i, unsigned ol, const char *name)
{
	char *names[DS_MAX_INPUTS] = { NULL };
	const struct ds_slice *sl = &p->r->slices[s];
	const struct ds_tensor *bt;
	struct feed f;
	int rc = slice_feed(p, s, name, i, &f, names);

	memset(o, 0, sizeof(*o));
	o->slice = (int)s;
	o->x = i < 0 ? 0.0 : ds_recipe_x((unsigned)i, sl->src[0].b -
					 sl->src[0].a);
	if (!rc && !(o->own = i < 0 ? strdup(name) : renumber(name, ol)))
		rc = -ENOMEM;
	o->name = o->own;
	if (!rc && !(bt = ds_model_find(p->in[f.src[0]], f.name[0])))
		rc = ds_fail(p->ctx, DS_E_MISMATCH, "%s: tensor '%s' is "
			     "missing", p->in[f.src[0]]->arg, f.name[0]);
	if (!rc)
		rc = plan_tensor(p, o, bt, &f);
	free_names(names, f.n);
	return rc == -ENOMEM ? ds_fail(p->ctx, rc, "out of memory") : rc;
}

/* Every layer_range lies within its model. */
static int check_ranges(struct ds_plan *p)
{
	const struct ds_recipe *r = p->r;

	for (unsigned s = 0; s < r->nslices; s++)
		for (unsigned i = 0; i < r->slices[s].nsrc; i++) {
			const struct ds_source *src = &r->slices[s].src[i];
			const struct ds_model *m = p->in[src_input(src)];
			unsigned L = model_layers(m);

			if (src->b > L)
				return ds_fail(p->ctx, DS_E_USAGE, "%s:%u: "
					       "layer_range [%u, %u] of %s: "
					       "the model has %u layers (0 to "
					       "%u)", r->file ? r->file :
					       "recipe", src->line, src->a,
					       src->b, m->arg, L, L ? L - 1 : 0);
		}
	return 0;
}

/* Tensors outside the layers, before (pre) or after them. */
static int add_outside(struct ds_plan *p, bool pre, size_t *n)
{
	const struct ds_model *lay = p->in[0];
	unsigned s = pre ? 0 : p->r->nslices - 1;
	int rc;

	for (size_t t = 0; t < lay->ntensors; t++) {
		const char *name = lay->tensors[t].name;

		if (ds_plan_layer_of(name, NULL, NULL) >= 0 ||
		    is_pre_tensor(name) != pre)
			continue;
		if (p->ot && (rc = add_sliced(p, &p->ot[*n], s, -1, 0, name)))
			return rc;
		(*n)++;
	}
	return 0;
}

/* The output's layers, slice by slice, in the first source's order. */
static int add_layers(struct ds_plan *p, size_t *n)
{
	const struct ds_recipe *r = p->r;
	unsigned ol = 0;
	int rc;

	for (unsigned s = 0; s < r->nslices; s++) {
		const struct ds_source *fs = &r->slices[s].src[0];
		const struct ds_model *m = p->in[src_input(fs)];

		for (unsigned i = 0; i < fs->b - fs->a; i++, ol++) {
			if (p->lsrc) {
				p->lsrc[ol] = src_input(fs);
				p->lin[ol] = fs->a + i;
			}
			for (size_t t = 0; t < m->ntensors; t++) {
				const char *name = m->tensors[t].name;

				if (ds_plan_layer_of(name, NULL, NULL) !=
				    (long)(fs->a + i))
					continue;
				if (p->ot && (rc = add_sliced(p, &p->ot[*n], s,
							      i, ol, name)))
					return rc;
				(*n)++;
			}
		}
	}
	p->layers = ol;
	return 0;
}

/* Two passes over the slices: count, then fill. */
static int plan_slices(struct ds_plan *p)
{
	int rc;

	for (int pass = 0; pass < 2; pass++) {
		size_t n = 0;

		if ((rc = add_outside(p, true, &n)) ||
		    (rc = add_layers(p, &n)) || (rc = add_outside(p, false, &n)))
			return rc;
		if (pass)
			break;
		p->not = n;
		p->ot = calloc(n ? n : 1, sizeof(*p->ot));
		p->lsrc = calloc(p->layers ? p->layers : 1, sizeof(*p->lsrc));
		p->lin = calloc(p->layers ? p->layers : 1, sizeof(*p->lin));
		if (!p->ot || !p->lsrc || !p->lin)
			return ds_fail(p->ctx, -ENOMEM, "out of memory");
	}
	return 0;
}

/* Without slices: the base's tensors, each fed by every model. */
static int plan_models(struct ds_plan *p)
{
	unsigned L = model_layers(p->in[0]);
	int rc;

	p->not = p->in[0]->ntensors;
	p->ot = calloc(p->not ? p->not : 1, sizeof(*p->ot));
	if (!p->ot)
		return ds_fail(p->ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < p->not; i++) {
		const struct ds_tensor *bt = &p->in[0]->tensors[i];
		long l = ds_plan_layer_of(bt->name, NULL, NULL);
		struct feed f = { .n = p->r->n };

		for (unsigned k = 0; k <= f.n; k++) {
			f.src[k] = k;
			f.name[k] = bt->name;
		}
		p->ot[i].name = bt->name;
		p->ot[i].slice = -1;
		p->ot[i].x = l < 0 ? 0.0 : ds_recipe_x((unsigned)l, L);
		p->ot[i].oshard = bt->shard;
		if ((rc = plan_tensor(p, &p->ot[i], bt, &f)))
			return rc;
	}
	return 0;
}

/* ---- tokenizer_source: a model whose vocabulary extends the base's -------- */

/* token -> id of a tokenizer.json (model.vocab and added_tokens). */
static json_t *vocab_of(const char *dir)
{
	char path[4096];
	json_t *t, *v, *ids = json_object(), *e;
	const char *k;
	size_t i;

	snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
	if (!ids || !(t = json_load_file(path, 0, NULL))) {
		json_decref(ids);
		return NULL;
	}
	v = json_object_get(json_object_get(t, "model"), "vocab");
	json_object_foreach(v, k, e)
		json_object_set(ids, k, e);
	json_array_foreach(json_object_get(t, "added_tokens"), i, e)
		if (json_is_string(json_object_get(e, "content")))
			json_object_set(ids, json_string_value(
					json_object_get(e, "content")),
					json_object_get(e, "id"));
	json_decref(t);
	return ids;
}

/* Every token of the base keeps its id in the tokenizer model. */
static int check_vocab(struct ds_plan *p, const struct ds_model *m)
{
	json_t *b = vocab_of(p->in[0]->dir), *t = vocab_of(m->dir), *e;
	const char *k;
	int rc = 0;

	if (b && !t)
		rc = ds_fail(p->ctx, DS_E_USAGE, "tokenizer_source %s has no "
			     "tokenizer.json to compare with the base's",
			     m->arg);
	json_object_foreach(b, k, e) {
		json_t *te = t ? json_object_get(t, k) : NULL;

		if (rc || (te && json_equal(te, e)))
			continue;
		rc = ds_fail(p->ctx, DS_E_USAGE, "tokenizer_source %s: its "
			     "vocabulary does not extend the base's (token "
			     "'%s' is %s there): use tokenizer_source: base",
			     m->arg, k, te ? "another id" : "missing");
	}
	json_decref(b);
	json_decref(t);
	return rc;
}

/* Merged vocabulary tensor i gets the tokenizer model's extra rows: a tail
 * entry after it copies them (its dtype must be the output's). */
static int plan_tail(struct ds_plan *p, size_t i, const struct ds_model *m,
		     struct ds_otensor *tail)
{
	struct ds_otensor *o = &p->ot[i];
	const struct ds_tensor *bt = o->in[0];
	const struct ds_tensor *mt = ds_model_find(m, bt->name);
	struct ds_tensor *t = &p->tails[p->ntails];
	uint64_t row;

	if (!mt || mt->shape[0] <= bt->shape[0] || o->act != DS_ACT_MERGE)
		return 0;
	if (p->ntails == 4 || mt->dtype != o->odt)
		return ds_fail(p->ctx, DS_E_USAGE, "tokenizer_source %s: "
			       "tensor '%s' is %s, the output %s: give "
			       "out_dtype: %s so its added rows copy as they "
			       "are", m->arg, mt->name,
			       ds_dtype_name(mt->dtype),
			       ds_dtype_name(o->odt), ds_dtype_name(mt->dtype));
	row = mt->numel / mt->shape[0];
	*t = *mt;
	t->numel = (mt->shape[0] - bt->shape[0]) * row;
	t->begin = mt->begin + bt->numel * ds_dtype_size(mt->dtype);
	t->shape[0] = mt->shape[0] - bt->shape[0];
	memset(tail, 0, sizeof(*tail));
	tail->name = o->name;
	tail->in[0] = t;
	tail->src[0] = 1 + (unsigned)p->r->tokenizer;
	tail->numel = t->numel;
	tail->act = DS_ACT_COPY;
	tail->odt = t->dtype;
	tail->slice = o->slice;
	tail->oshard = o->oshard;
	tail->tail = true;
	o->rows = mt->shape[0];
	p->ntails++;
	return 1;
}

static int plan_tails(struct ds_plan *p)
{
	const struct ds_model *m;
	struct ds_otensor *ot;
	int rc;

	if (p->r->tokenizer < 0)
		return 0;
	m = p->in[1 + p->r->tokenizer];
	if ((rc = check_vocab(p, m)))
		return rc;
	if (!(ot = realloc(p->ot, (p->not + 4) * sizeof(*ot))))
		return ds_fail(p->ctx, -ENOMEM, "out of memory");
	p->ot = ot;
	for (size_t i = 0; i < p->not; i++) {
		struct ds_otensor tail;

		if (!is_vocab_tensor(p->ot[i].name) ||
		    (rc = plan_tail(p, i, m, &tail)) <= 0) {
			if (rc < 0)
				return rc;
			continue;
		}
		memmove(&p->ot[i + 2], &p->ot[i + 1],
			(p->not - i - 1) * sizeof(*ot));
		p->ot[i + 1] = tail;
		p->not++;
		i++;
	}
	return 0;
}

/* ---- output layout ---------------------------------------------------------- */

/* Output shard s: its tensors' offsets in the output dtype, its header. */
static int layout_shard(struct ds_plan *p, struct ds_oshard *os)
{
	static const char *const meta[] = {
		"format", "pt", "dare_stream_version", DS_VERSION_STRING, NULL
	};
	struct ds_tensor *t = calloc(os->count ? os->count : 1, sizeof(*t));
	uint64_t off = 0, nb;
	size_t n = 0;
	int rc;

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < os->count; i++) {
		struct ds_otensor *o = &p->ot[os->first + i];

		nb = ds_otensor_bytes(o);           /* <= input bytes * 2 */
		o->obegin = off;
		if (o->tail) {          /* more rows of the tensor before */
			t[n - 1].end = off += nb;
			continue;
		}
		t[n] = *o->in[0];
		t[n].name = (char *)o->name;
		t[n].dtype = o->odt;
		if (o->rows)
			t[n].shape[0] = o->rows;
		t[n].begin = off;
		t[n++].end = off += nb;
	}
	rc = ds_st_build(t, n, meta, &os->header, &os->hlen);
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

static uint64_t out_bytes(const struct ds_otensor *o)
{
	return o->numel * ds_dtype_size(o->odt);
}

/* Shards of at most max tensor bytes, filled greedily in output order and
 * named as Hugging Face names them (one shard: model.safetensors). */
static int hf_shards(struct ds_plan *p, uint64_t max)
{
	uint64_t used = 0;
	unsigned s = 0;

	for (size_t i = 0; i < p->not; i++) {
		uint64_t nb = out_bytes(&p->ot[i]);

		if (used && used + nb > max && !p->ot[i].tail) {
			s++;
			used = 0;
		}
		p->ot[i].oshard = s;
		used += nb;
	}
	p->nos = p->not ? s + 1 : 1;
	p->index = p->nos > 1;
	p->snames = calloc(p->nos, sizeof(*p->snames));
	if (!p->snames)
		return -ENOMEM;
	for (unsigned k = 0; k < p->nos; k++)
		if (p->nos == 1)
			strcpy(p->snames[k], "model.safetensors");
		else
			snprintf(p->snames[k], sizeof(p->snames[k]),
				 "model-%05u-of-%05u.safetensors", k + 1,
				 p->nos);
	return 0;
}

static int layout(struct ds_plan *p, uint64_t shard_size)
{
	const struct ds_model *b = p->in[0];
	int rc;

	if (shard_size || p->r->nslices) {
		if ((rc = hf_shards(p, shard_size ? shard_size :
				    DS_DEFAULT_SHARD_SIZE)))
			return ds_fail(p->ctx, rc, "out of memory");
	} else {
		p->nos = b->nshards;
		p->index = b->index != NULL;
	}
	p->os = calloc(p->nos, sizeof(*p->os));
	if (!p->os)
		return -ENOMEM;
	for (size_t i = 0, s = 0; s < p->nos; s++) {
		p->os[s].name = p->snames ? p->snames[s] : b->shards[s].name;
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

bool ds_plan_lora_on_base(const struct ds_plan *p, const struct ds_otensor *o,
			  unsigned k)
{
	const struct ds_tensor *w = o->in[k], *b = o->in[0];
	const struct ds_model *m = p->in[o->src[k]];

	return o->src[k] && (p->lbase >> (o->src[k] - 1) & 1) && w && b &&
	       o->src[0] == 0 &&
	       !o->tail && ds_lora_pair_of(m, (size_t)(w - m->tensors)) &&
	       w->shard == b->shard && w->begin == b->begin &&
	       w->end == b->end && w->dtype == b->dtype;
}

uint64_t ds_plan_pass_bytes(const struct ds_plan *p, const struct ds_otensor *o)
{
	bool packs = false, base;
	uint64_t b = 0;

	for (unsigned k = 1; k <= o->nsrc; k++)
		packs |= p->in[o->src[k]]->pack != NULL;
	base = p->mp.uses_base || packs;
	for (unsigned k = 1; k <= o->nsrc; k++) {
		const struct ds_model *m = p->in[o->src[k]];

		if (base && ds_plan_lora_on_base(p, o, k))
			continue;
		b += m->pack ? m->pack->pt[o->in[k] - m->tensors].bytes :
		     o->numel * ds_dtype_size(o->in[k]->dtype);
	}
	if (base)
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

	for (size_t i = 0; i < p->not; i++) {
		const struct ds_otensor *o = &p->ot[i];

		if (o->act != DS_ACT_MERGE)
			continue;
		for (unsigned k = 0; k <= o->nsrc; k++) {
			const struct ds_model *m = p->in[o->src[k]];

			if (o->in[k] && ds_dtype_size(o->in[k]->dtype) > es)
				es = ds_dtype_size(o->in[k]->dtype);
			/* a LoRA model's window is expanded to binary32 */
			if (o->in[k] && ds_lora_pair_of(m, (size_t)(o->in[k] -
							 m->tensors)))
				es = 4;
		}
		if (ds_dtype_size(o->odt) > es)
			es = ds_dtype_size(o->odt);
	}
	return es;
}

uint64_t ds_plan_slot_bytes(const struct ds_plan *p, uint64_t window)
{
	return (uint64_t)(p->ninputs + 1) * window * max_elem(p);
}

/*
 * Each worker holds, for each adapted model, one LoRA factor of its widest
 * adapted tensor and the coefficients of a window's rows (inputs/lora.h);
 * that must leave most of the budget to the windows.
 */
static int lora_budget(struct ds_plan *p, uint64_t budget)
{
	uint64_t most = 0, total;
	unsigned at = 0, nl = 0;

	for (size_t i = 0; i < p->not; i++) {
		const struct ds_otensor *o = &p->ot[i];
		const struct ds_model *m = p->in[o->src[0]];

		if (o->in[0] && ds_lora_pair_of(m, (size_t)(o->in[0] -
						 m->tensors)))
			return ds_fail(p->ctx, DS_E_USAGE, "tensor '%s': the "
				       "LoRA model %s cannot be its base or "
				       "layout source; merge it as a model",
				       o->name, m->arg);
	}
	/* Each worker holds the factors of every adapted model. */
	total = ds_lora_bytes(p->in, p->ninputs, p->window);
	for (unsigned k = 1; k < p->ninputs; k++) {
		uint64_t b = ds_lora_bytes(&p->in[k], 1, p->window);

		nl += b > 0;
		if (b > most) {
			most = b;
			at = k;
		}
	}
	if (total && p->threads * total > budget / 2)
		return ds_fail(p->ctx, DS_E_USAGE, "--memory %llu bytes is too "
			       "small for the LoRA adapter%s of %s%s: %s factors "
			       "need %llu bytes per thread (%u threads); give "
			       "at least %llu bytes or fewer --threads",
			       (unsigned long long)budget, nl > 1 ? "s" : "",
			       p->in[at]->arg, nl > 1 ? " and the others" : "",
			       nl > 1 ? "their" : "its",
			       (unsigned long long)total, p->threads,
			       (unsigned long long)(2 * p->threads * total));
	/* and each window of an adapted model a bit per element for its
	 * mask, when the merge takes only its kept values (pipeline.c) */
	p->overhead += p->threads * total + (uint64_t)p->depth * nl *
		       ((p->window / 64 + 1) * 8 + 2 * DS_DIO_ALIGN);
	return 0;
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
		      p->threads * p->needs.scratch_floats * sizeof(float) +
		      /* the window buffers' alignment and slack for
		       * direct I/O (pipeline.c) */
		      (uint64_t)p->depth * (5 * p->ninputs + 3) * DS_DIO_ALIGN;
	return lora_budget(p, budget);
}

/* ---- parameters of each tensor -------------------------------------------- */

int ds_plan_tparams(const struct ds_plan *p, size_t t, struct ds_tparams *tp)
{
	const struct ds_otensor *o = &p->ot[t];
	struct ds_tquery q = {
		.slice = o->slice, .x = o->x, .oname = o->name, .n = o->nsrc,
	};

	for (unsigned k = 0; k < o->nsrc && k < DS_MAX_MODELS; k++)
		q.iname[k] = o->in[1 + k] ? o->in[1 + k]->name : o->name;
	return ds_recipe_tparams(p->ctx, p->r, &q, tp);
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

/*
 * Resolve every merged tensor's parameters once, so a filter list with no
 * match for a required parameter is reported before anything is written;
 * the first merged tensor's are the merge's (what the buffers are sized
 * by).  Tensors whose merge is model 0 itself become copies.
 */
static int check_params(struct ds_plan *p)
{
	struct ds_tparams tp;
	bool have = false;
	int rc;

	for (size_t t = 0; t < p->not && !have; t++) {
		if (p->ot[t].act != DS_ACT_MERGE)
			continue;
		if ((rc = ds_plan_tparams(p, t, &tp)))
			return rc;
		have = true;
		if ((rc = ds_mparams_from(p->ctx, &p->mp, p->r->method, &tp)))
			return name_tensor(p, NULL, &p->ot[t], rc);
		check_packs(p, &tp);
	}
	if (!have) {            /* nothing merged: only the method matters */
		p->mp.method = p->r->method;
		p->mp.def = ds_method_def(p->r->method);
		return 0;
	}
	for (size_t t = 0; t < p->not; t++)
		if (p->ot[t].act == DS_ACT_MERGE && copies_model0(p, &p->ot[t]))
			p->merged--;
	return 0;
}

/* The chat template a tokenizer_config.json carries (a string, or the
 * "default" one of a list of named templates), stripped; NULL if none. */
static char *model_chat(const char *dir)
{
	char path[4096];
	json_t *c, *t;
	const char *s = NULL, *e;
	char *out = NULL;
	size_t i;

	snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
	if (!(c = json_load_file(path, 0, NULL)))
		return NULL;
	t = json_object_get(c, "chat_template");
	if (json_is_string(t))
		s = json_string_value(t);
	for (i = 0; json_is_array(t) && i < json_array_size(t); i++) {
		json_t *x = json_array_get(t, i);
		const char *nm = json_string_value(json_object_get(x, "name"));

		if (nm && !strcmp(nm, "default"))
			s = json_string_value(json_object_get(x, "template"));
	}
	while (s && (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r'))
		s++;
	if (s && *s) {
		e = s + strlen(s);
		while (e > s && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\t' ||
				 e[-1] == '\r'))
			e--;
		out = strndup(s, (size_t)(e - s));
	}
	json_decref(c);
	return out;
}

/*
 * The recipe's chat template: its text, or for "auto" (mergekit's) the one
 * most of the merge's models carry, the first of them on a tie; none when
 * no model has one.
 */
static int plan_chat(struct ds_plan *p)
{
	char *t[DS_MAX_INPUTS] = { 0 };
	unsigned best = 0, bestn = 0, n = 0;

	if (!p->r->chat_template)
		return 0;
	if (strcmp(p->r->chat_template, "auto")) {
		p->chat = strdup(p->r->chat_template);
		return p->chat ? 0 : -ENOMEM;
	}
	for (unsigned k = 0; k < p->ninputs; k++)
		if ((k == 0 || p->in[k] != p->in[0]) && p->in[k]->dir &&
		    (t[n] = model_chat(p->in[k]->dir)))
			n++;
	for (unsigned i = 0; i < n; i++) {
		unsigned c = 0;

		for (unsigned j = 0; j < n; j++)
			c += !strcmp(t[i], t[j]);
		if (c > bestn) {
			bestn = c;
			best = i;
		}
	}
	if (n)
		ds_notice(p->ctx, "chat_template auto: the template %u of the "
			  "%u models that carry one share", bestn, n);
	else
		ds_notice(p->ctx, "chat_template auto: no model carries a "
			  "template; the tokenizer's is kept");
	p->chat = n ? t[best] : NULL;
	for (unsigned i = 0; i < n; i++)
		if (i != best)
			free(t[i]);
	return 0;
}

/* ---- --partition K/N ----------------------------------------------------- */

int ds_plan_share(const struct ds_plan *p, unsigned n, unsigned *part)
{
	uint64_t *load = calloc(n ? n : 1, sizeof(*load));
	bool *given = calloc(p->nos ? p->nos : 1, sizeof(*given));

	if (!load || !given) {
		free(load);
		free(given);
		return -ENOMEM;
	}
	/* nos is at most a few thousand: a quadratic pick is fine. */
	for (unsigned i = 0; i < p->nos; i++) {
		unsigned big = 0, light = 0;

		while (given[big])
			big++;
		for (unsigned s = big + 1; s < p->nos; s++)
			if (!given[s] && p->os[s].size > p->os[big].size)
				big = s;
		for (unsigned k = 1; k < n; k++)
			if (load[k] < load[light])
				light = k;
		given[big] = true;
		part[big] = light;
		load[light] += p->os[big].size;
	}
	free(load);
	free(given);
	return 0;
}

/* The name of a partitioned merge: its recipe (as dare-stream.yml has it),
 * the whole output's layout and headers, and the number of parts. */
static uint64_t run_id(const struct ds_plan *p, unsigned n)
{
	XXH3_state_t *h = XXH3_createState();
	uint64_t v[2] = { p->shard_size, n }, id;
	char *yml = NULL;

	if (!h)
		return 0;
	XXH3_64bits_reset(h);
	if (ds_recipe_to_yaml(p->r, &yml) == 0)
		XXH3_64bits_update(h, yml, strlen(yml));
	free(yml);
	XXH3_64bits_update(h, v, sizeof(v));
	for (unsigned s = 0; s < p->nos; s++) {
		XXH3_64bits_update(h, p->os[s].name, strlen(p->os[s].name) + 1);
		XXH3_64bits_update(h, p->os[s].header, p->os[s].hlen);
	}
	id = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	return id;
}

/* Keep part k's shards and their tensors only (in the same order). */
static int keep_share(struct ds_plan *p, const unsigned *part, unsigned k)
{
	struct ds_oshard *os = calloc(p->nos ? p->nos : 1, sizeof(*os));
	struct ds_otensor *ot = calloc(p->not ? p->not : 1, sizeof(*ot));
	unsigned nos = 0;
	size_t not = 0;

	if (!os || !ot) {
		free(os);
		free(ot);
		return -ENOMEM;
	}
	for (unsigned s = 0; s < p->nos; s++) {
		if (part[s] != k) {
			free(p->os[s].header);
			for (size_t i = 0; i < p->os[s].count; i++)
				free(p->ot[p->os[s].first + i].own);
			continue;
		}
		os[nos] = p->os[s];
		os[nos].first = not;
		for (size_t i = 0; i < p->os[s].count; i++) {
			ot[not] = p->ot[p->os[s].first + i];
			ot[not++].oshard = nos;
		}
		nos++;
	}
	free(p->os);
	free(p->ot);
	p->os = os;
	p->nos = nos;
	p->ot = ot;
	p->not = not;
	return 0;
}

/* Plan part k of n: the figures of the share, the names of the whole. */
static int plan_part(struct ds_plan *p, unsigned k, unsigned n)
{
	unsigned *part = calloc(p->nos ? p->nos : 1, sizeof(*part));
	int rc;

	if (k >= n)
		return ds_fail(p->ctx, DS_E_USAGE, "partition %u/%u: the part "
			       "must be 0 to %u", k, n, n - 1);
	p->all_names = calloc(p->nos ? p->nos : 1, sizeof(*p->all_names));
	if (!part || !p->all_names) {
		free(part);
		return ds_fail(p->ctx, -ENOMEM, "out of memory");
	}
	p->part = k;
	p->parts = n;
	p->all_nos = p->nos;
	p->run = run_id(p, n);
	for (unsigned s = 0; s < p->nos; s++)
		p->all_names[s] = p->os[s].name;
	rc = ds_plan_share(p, n, part);
	if (!rc)
		rc = keep_share(p, part, k);
	free(part);
	if (rc)
		return ds_fail(p->ctx, rc, "out of memory");
	p->bytes_written = 0;
	p->bytes_read = 0;
	p->merged = 0;
	for (unsigned s = 0; s < p->nos; s++)
		p->bytes_written += p->os[s].size;
	for (size_t i = 0; i < p->not; i++)
		p->merged += p->ot[i].act == DS_ACT_MERGE;
	count_reads(p);
	return 0;
}

int ds_plan_build(ds_ctx *ctx, const struct ds_recipe *r,
		  const struct ds_merge_opts *o, struct ds_plan *p)
{
	return ds_plan_build_flags(ctx, r, o, p, 0);
}

int ds_plan_build_flags(ds_ctx *ctx, const struct ds_recipe *r,
			const struct ds_merge_opts *o, struct ds_plan *p,
			unsigned flags)
{
	int rc;

	memset(p, 0, sizeof(*p));
	p->ctx = ctx;
	p->r = r;
	(void)flags;
	if ((rc = ds_recipe_check(ctx, r)) || (rc = open_inputs(ctx, r, p)) ||
	    (rc = plan_chat(p)))
		return rc;
	if (r->nslices && ((rc = check_ranges(p)) || (rc = plan_slices(p))))
		return rc;
	if (!r->nslices && (rc = plan_models(p)))
		return rc;
	if ((rc = check_params(p)) || (rc = plan_tails(p)))
		return rc;
	note_copied(p);
	warn_extra(p);
	if (p->ninputs == 1)
		ds_notice(ctx, "no model given: the output is the base %s",
			  p->in[0]->arg);
	/* --shard-size wins over the recipe's (dare-stream.yml records it). */
	p->shard_size = o->shard_size ? o->shard_size : r->shard_size;
	if ((rc = layout(p, p->shard_size)) ||
	    (rc = tensor_params(p, true)) ||
	    (rc = size_windows(p, o)) || (rc = tensor_params(p, false)))
		return rc;
	count_reads(p);
	if (o->parts)
		return plan_part(p, o->part, o->parts);
	return 0;
}

void ds_plan_free(struct ds_plan *p)
{
	for (unsigned k = p->base_is_model ? 1 : 0; k < p->ninputs; k++)
		ds_model_free(p->in[k]);
	for (unsigned s = 0; s < p->nos; s++)
		free(p->os[s].header);
	for (size_t i = 0; p->ot && i < p->not; i++)
		free(p->ot[i].own);
	free(p->os);
	free(p->ot);
	free(p->chat);
	free(p->snames);
	free(p->all_names);
	free(p->lsrc);
	free(p->lin);
	memset(p, 0, sizeof(*p));
}

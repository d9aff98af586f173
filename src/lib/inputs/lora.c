/* SPDX-License-Identifier: MIT */
/* lora.c - PEFT LoRA adapters as models: checks, and the window update */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include "common/ctx.h"
#include "inputs/lora.h"
#include "kernels/bits.h"
#include "kernels/convert.h"

#define CONFIG_NAME  "adapter_config.json"
#define WEIGHTS_NAME "adapter_model.safetensors"
#define PREFIX       "base_model.model."
#define CHUNK        1024u       /* W values converted at a time */
#define TILE_FLOATS  4096u       /* of v per column tile: 16 KiB */
/*
 * Of v per column tile of ds_lora_kept: 64 KiB, which the L2 cache of
 * every CPU with AVX2 or NEON holds (256 KiB or more).  Its kept columns
 * are prefetched before they are summed, so L2 serves them as well as L1
 * would, and a wider tile spreads each segment's fixed costs (its mask
 * words, the picks' last partial group) over more kept elements: at rank
 * 16, tiles of 1024 columns instead of 256 took a LoRA merge's user time
 * down 9%.
 */
#define KEPT_TILE_FLOATS 16384u

void ds_lora_free(struct ds_lora *l)
{
	if (!l)
		return;
	ds_tensors_free(l->at, l->nat);
	free(l->pairs);
	free(l->pair_of);
	free(l->dir);
	free(l);
}

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* ---- adapter_config.json ------------------------------------------------ */

struct lcfg {
	unsigned r;
	double alpha;
	bool rslora, fifo;
};

static bool set_nonempty(json_t *v)
{
	return v && !json_is_null(v) && !(json_is_false(v)) &&
	       !(json_is_object(v) && json_object_size(v) == 0) &&
	       !(json_is_array(v) && json_array_size(v) == 0) &&
	       !(json_is_string(v) && !*json_string_value(v));
}

static int read_config(ds_ctx *ctx, const char *path, struct lcfg *c)
{
	static const char *const refused[][2] = {
		{ "use_dora", "DoRA (use_dora) adapters are not supported" },
		{ "rank_pattern", "per-module ranks (rank_pattern) are not "
		  "supported" },
		{ "alpha_pattern", "per-module alphas (alpha_pattern) are not "
		  "supported" },
		{ "layer_replication", "layer_replication is not supported" },
		{ "lora_bias", "trained lora_B biases (lora_bias) are not "
		  "supported" },
		{ "trainable_token_indices", "trainable_token_indices is not "
		  "supported" },
		{ "target_parameters", "LoRA of parameters (target_parameters) "
		  "is not supported" },
		{ "megatron_config", "Megatron adapters are not supported" },
	};
	json_error_t je;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je), *v;
	int rc = 0;

	if (!root)
		return ds_fail(ctx, DS_E_FORMAT, "%s: %s (line %d)", path,
			       je.text, je.line);
	if (!json_is_object(root)) {
		rc = ds_fail(ctx, DS_E_FORMAT, "%s: not a JSON object", path);
		goto out;
	}
	v = json_object_get(root, "peft_type");
	if (!json_is_string(v) || strcmp(json_string_value(v), "LORA") != 0) {
		rc = ds_fail(ctx, DS_E_FORMAT, "%s: peft_type is %s, expected "
			     "\"LORA\": only LoRA adapters can be applied", path,
			     json_is_string(v) ? json_string_value(v) :
			     "missing");
		goto out;
	}
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (set_nonempty(json_object_get(root, refused[i][0]))) {
			rc = ds_fail(ctx, DS_E_FORMAT, "%s: %s", path,
				     refused[i][1]);
			goto out;
		}
	v = json_object_get(root, "r");
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > 65536) {
		rc = ds_fail(ctx, DS_E_FORMAT, "%s: r must be an integer from 1 "
			     "to 65536", path);
		goto out;
	}
	c->r = (unsigned)json_integer_value(v);
	v = json_object_get(root, "lora_alpha");
	if (!json_is_number(v) || !isfinite(json_number_value(v))) {
		rc = ds_fail(ctx, DS_E_FORMAT, "%s: lora_alpha must be a number",
			     path);
		goto out;
	}
	c->alpha = json_number_value(v);
	c->rslora = json_is_true(json_object_get(root, "use_rslora"));
	c->fifo = json_is_true(json_object_get(root, "fan_in_fan_out"));
out:
	json_decref(root);
	return rc;
}

/* ---- the adapter's tensors ---------------------------------------------- */

enum role { R_A, R_B, R_EA, R_EB, R_FULL };

/* The role of an adapter tensor and its base module's name in mod. */
static int classify(ds_ctx *ctx, const char *path, const char *name,
		    enum role *role, char *mod, size_t size)
{
	static const struct { const char *suf; enum role r; } sfx[] = {
		{ ".lora_A.weight", R_A }, { ".lora_B.weight", R_B },
		{ ".lora_embedding_A", R_EA }, { ".lora_embedding_B", R_EB },
	};
	size_t len = strlen(name), pl = strlen(PREFIX);

	if (strncmp(name, PREFIX, pl) != 0 || len == pl || len - pl >= size)
		return ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s': expected a "
			       "name starting with '%s'", path, name, PREFIX);
	if (strstr(name, "lora_magnitude_vector"))
		return ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s': DoRA "
			       "adapters are not supported", path, name);
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		size_t sl = strlen(sfx[i].suf);

		if (len > pl + sl && strcmp(name + len - sl, sfx[i].suf) == 0) {
			memcpy(mod, name + pl, len - pl - sl);
			mod[len - pl - sl] = '\0';
			*role = sfx[i].r;
			return 0;
		}
	}
	if (strstr(name, "lora_") || strstr(name, "modules_to_save") ||
	    strstr(name, "token_adapter"))
		return ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s': not a "
			       "LoRA factor this tool can apply", path, name);
	memcpy(mod, name + pl, len - pl + 1);
	*role = R_FULL;
	return 0;
}

static bool float_dt(enum ds_dtype dt)
{
	return dt == DS_DT_F32 || dt == DS_DT_F16 || dt == DS_DT_BF16;
}

static void shape_str(const struct ds_tensor *t, char *buf, size_t size)
{
	int n = snprintf(buf, size, "[");

	for (unsigned d = 0; d < t->ndim && n > 0 && (size_t)n < size; d++)
		n += snprintf(buf + n, size - (size_t)n, "%s%llu", d ? ", " : "",
			      (unsigned long long)t->shape[d]);
	if (n > 0 && (size_t)n < size)
		snprintf(buf + n, size - (size_t)n, "]");
}

/* Check pair p (a and b set) against W and the config; fill r, s, trans. */
static int check_pair(ds_ctx *ctx, const char *path, const struct lcfg *c,
		      const struct ds_tensor *w, struct ds_lora_pair *p,
		      bool emb)
{
	const struct ds_tensor *a = p->a, *b = p->b;
	uint64_t rows, cols, ea[2], eb[2];
	char got[64], want[64];

	if (w->ndim != 2)
		return ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s' of the "
			       "base has %u dimensions: LoRA applies to 2-D "
			       "tensors only", path, w->name, w->ndim);
	if (!float_dt(w->dtype))
		return ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s' of the "
			       "base is not F32, F16 or BF16", path, w->name);
	p->trans = emb || c->fifo;
	rows = w->shape[0];
	cols = w->shape[1];
	/* plain: A [r, cols], B [rows, r]; transposed: A [r, rows], B [cols, r] */
	ea[0] = c->r;
	ea[1] = p->trans ? rows : cols;
	eb[0] = p->trans ? cols : rows;
	eb[1] = c->r;
	for (int f = 0; f < 2; f++) {
		const struct ds_tensor *t = f ? b : a;
		const uint64_t *e = f ? eb : ea;

		if (!float_dt(t->dtype))
			return ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s' is "
				       "not F32, F16 or BF16", path, t->name);
		if (t->ndim == 2 && t->shape[0] == e[0] && t->shape[1] == e[1])
			continue;
		shape_str(t, got, sizeof(got));
		snprintf(want, sizeof(want), "[%llu, %llu]",
			 (unsigned long long)e[0], (unsigned long long)e[1]);
		return ds_fail(ctx, DS_E_MISMATCH, "%s: tensor '%s' has shape "
			       "%s, expected %s for r = %u and base tensor '%s' "
			       "[%llu, %llu]%s", path, t->name, got, want, c->r,
			       w->name, (unsigned long long)rows,
			       (unsigned long long)cols,
			       c->fifo && !emb ? " (fan_in_fan_out)" : "");
	}
	p->r = c->r;
	p->s = (float)(c->rslora ? c->alpha / sqrt((double)c->r) :
				   c->alpha / (double)c->r);
	return 0;
}

/* The tensor of the adapter named like a for role r, or NULL. */
static const struct ds_tensor *partner(const struct ds_lora *l,
				       const char *mod, const char *suffix)
{
	size_t n = strlen(PREFIX) + strlen(mod) + strlen(suffix) + 1;
	char *name = malloc(n);
	const struct ds_tensor *t = NULL;

	if (!name)
		return NULL;
	snprintf(name, n, "%s%s%s", PREFIX, mod, suffix);
	for (size_t i = 0; i < l->nat && !t; i++)
		if (strcmp(l->at[i].name, name) == 0)
			t = &l->at[i];
	free(name);
	return t;
}

/* Point base tensor w at the adapter's full replacement t. */
static int replace(ds_ctx *ctx, const char *path, struct ds_lora *l,
		   struct ds_tensor *w, const struct ds_tensor *t)
{
	char got[64], want[64];

	if (t->ndim != w->ndim ||
	    memcmp(t->shape, w->shape, t->ndim * sizeof(t->shape[0]))) {
		shape_str(t, got, sizeof(got));
		shape_str(w, want, sizeof(want));
		return ds_fail(ctx, DS_E_MISMATCH, "%s: tensor '%s' has shape "
			       "%s; the base's '%s' is %s", path, t->name, got,
			       w->name, want);
	}
	w->dtype = t->dtype;
	w->numel = t->numel;
	w->begin = t->begin;
	w->end = t->end;
	w->shard = l->shard;
	l->nreplaced++;
	return 0;
}

static int add_pairs(ds_ctx *ctx, const char *path, const struct lcfg *c,
		     struct ds_model *m, struct ds_lora *l)
{
	char mod[4096], wname[4200];
	int rc = 0;

	for (size_t i = 0; i < l->nat && !rc; i++) {
		const struct ds_tensor *t = &l->at[i], *w, *o;
		struct ds_lora_pair *p;
		enum role role;
		bool emb;

		if ((rc = classify(ctx, path, t->name, &role, mod, sizeof(mod))))
			break;
		emb = role == R_EA || role == R_EB;
		snprintf(wname, sizeof(wname), "%s%s", mod,
			 role == R_FULL ? "" : emb ? ".weight" : ".weight");
		w = ds_model_find(m, wname);
		if (!w) {
			rc = ds_fail(ctx, DS_E_MISMATCH, "%s: tensor '%s' "
				     "adapts '%s', which the base %s does not "
				     "have", path, t->name, wname, m->arg);
			break;
		}
		if (role == R_B || role == R_EB)
			continue;       /* taken with its A */
		if (l->pair_of[w - m->tensors] != -1) {
			rc = ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s': base "
				     "tensor '%s' is adapted twice", path,
				     t->name, wname);
			break;
		}
		if (role == R_FULL) {
			l->pair_of[w - m->tensors] = -2;
			rc = replace(ctx, path, l, (struct ds_tensor *)w, t);
			continue;
		}
		o = partner(l, mod, emb ? ".lora_embedding_B" :
				    ".lora_B.weight");
		if (!o) {
			rc = ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s' has no "
				     "%s%s%s", path, t->name, PREFIX, mod,
				     emb ? ".lora_embedding_B" :
				     ".lora_B.weight");
			break;
		}
		p = &l->pairs[l->npairs];
		*p = (struct ds_lora_pair){
			.tensor = (size_t)(w - m->tensors), .a = t, .b = o,
		};
		if ((rc = check_pair(ctx, path, c, w, p, emb)))
			break;
		l->pair_of[p->tensor] = (ptrdiff_t)l->npairs++;
	}
	/* every B must have had its A */
	for (size_t i = 0; i < l->nat && !rc; i++) {
		const struct ds_tensor *t = &l->at[i];
		enum role role;
		bool found = false;

		if (classify(ctx, path, t->name, &role, mod, sizeof(mod)) ||
		    (role != R_B && role != R_EB))
			continue;
		for (size_t j = 0; j < l->npairs && !found; j++)
			found = l->pairs[j].b == t;
		if (!found)
			rc = ds_fail(ctx, DS_E_FORMAT, "%s: tensor '%s' has no "
				     "%s%s%s", path, t->name, PREFIX, mod,
				     role == R_EB ? ".lora_embedding_A" :
				     ".lora_A.weight");
	}
	for (size_t i = 0; i < m->ntensors; i++)
		if (l->pair_of[i] == -2)
			l->pair_of[i] = -1;
	return rc;
}

int ds_lora_attach(ds_ctx *ctx, struct ds_model *m, const char *dir)
{
	struct ds_lora *l = calloc(1, sizeof(*l));
	char *cpath = join(dir, CONFIG_NAME), *wpath = join(dir, WEIGHTS_NAME);
	struct ds_shard sh = { 0 }, *shards;
	struct lcfg c = { 0 };
	int fd = -1, rc;

	if (!l || !cpath || !wpath) {
		rc = -ENOMEM;
		goto out;
	}
	m->lora = l;
	if (!(l->dir = strdup(dir)) ||
	    !(l->pair_of = malloc((m->ntensors + 1) * sizeof(*l->pair_of)))) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < m->ntensors; i++)
		l->pair_of[i] = -1;
	if (access(cpath, F_OK) != 0) {
		rc = ds_fail(ctx, DS_E_NOTFOUND, "%s: no %s: the part after "
			     "'+' must be a PEFT adapter directory", dir,
			     CONFIG_NAME);
		goto out;
	}
	if ((rc = read_config(ctx, cpath, &c)))
		goto out;
	fd = open(wpath, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		rc = ds_fail(ctx, errno == ENOENT ? DS_E_NOTFOUND : -errno,
			     "%s: %s%s", wpath, strerror(errno),
			     errno == ENOENT ? " (only safetensors adapters "
			     "are read)" : "");
		goto out;
	}
	l->shard = m->nshards;
	if ((rc = ds_st_read(ctx, fd, wpath, l->shard, &sh, &l->at, &l->nat)))
		goto out;
	if (!(l->pairs = calloc(l->nat + 1, sizeof(*l->pairs))) ||
	    !(shards = realloc(m->shards, (m->nshards + 1) * sizeof(*shards)))) {
		rc = -ENOMEM;
		goto out;
	}
	m->shards = shards;
	sh.path = wpath;
	sh.name = strdup(WEIGHTS_NAME);
	wpath = NULL;
	m->shards[m->nshards++] = sh;
	if (!sh.name) {
		rc = -ENOMEM;
		goto out;
	}
	rc = add_pairs(ctx, m->shards[l->shard].path, &c, m, l);
	if (!rc && l->npairs == 0 && l->nreplaced == 0)
		rc = ds_fail(ctx, DS_E_FORMAT, "%s: the adapter holds no "
			     "tensor", dir);
out:
	if (rc == -ENOMEM)
		ds_fail(ctx, rc, "%s: out of memory", dir);
	if (fd >= 0)
		close(fd);
	free(cpath);
	free(wpath);
	return rc;
}

/* ---- the window update -------------------------------------------------- */

struct need {
	uint64_t v, u, tmp;
};

/* The largest factor, row coefficients and staging of models m[0..n). */
static struct need need_of(struct ds_model *const *m, unsigned nm,
			   uint64_t window)
{
	struct need n = { 0 };

	for (unsigned j = 0; j < nm; j++)
		for (size_t i = 0; m[j]->lora && i < m[j]->lora->npairs; i++) {
			const struct ds_lora_pair *p = &m[j]->lora->pairs[i];
			const struct ds_tensor *w = &m[j]->tensors[p->tensor];
			uint64_t rows = w->shape[0], cols = w->shape[1];
			uint64_t nr = window / cols + 2 < rows ?
				      window / cols + 2 : rows;
			/* v by rows of tiles, or by columns of r rounded
			 * up to 8 (ds_lora_kept) */
			uint64_t v = (uint64_t)(p->r + 7) / 8 * 8 * cols;
			uint64_t u = (uint64_t)p->r * nr;

			n.v = v > n.v ? v : n.v;
			n.u = u > n.u ? u : n.u;
			n.tmp = v > n.tmp ? v : n.tmp;
			n.tmp = u > n.tmp ? u : n.tmp;
		}
	return n;
}

/* Columns of a tile of floats floats of v, per floats a column: 16
 * columns or more, a multiple of 16. */
static uint64_t tile_cols(uint64_t floats, unsigned per)
{
	return per >= floats / 16 ? 16 : floats / per / 16 * 16;
}

/* The row update's tiles: r floats a column (v in rows of tiles). */
static uint64_t tile_of(unsigned r)
{
	return tile_cols(TILE_FLOATS, r);
}

/* ds_lora_kept's tiles: rp >= 8 floats a column (v by columns), so at
 * most KEPT_COLS columns. */
#define KEPT_COLS (KEPT_TILE_FLOATS / 8)
static uint64_t kept_tile_of(unsigned rp)
{
	return tile_cols(KEPT_TILE_FLOATS, rp);
}

static uint64_t up64(uint64_t x)
{
	return (x + 63) & ~(uint64_t)63;
}

/* Bytes of one model's buffer. */
static uint64_t buf_bytes(struct need n)
{
	if (!n.v)
		return 0;
	return up64(n.v * 4) + up64(n.u * 4) + 2 * up64(n.tmp * 4) +
	       up64(CHUNK * 4);
}

uint64_t ds_lora_bytes(struct ds_model *const *m, unsigned nm,
		       uint64_t window)
{
	uint64_t total = 0;

	for (unsigned j = 0; j < nm; j++)
		total += buf_bytes(need_of(&m[j], 1, window));
	return total;
}

void ds_lora_buf_init(struct ds_lora_buf *b, struct ds_model *const *m,
		      unsigned nm, uint64_t window, void *mem)
{
	char *p = mem;

	for (unsigned j = 0; j < nm; j++) {
		struct need n = need_of(&m[j], 1, window);

		memset(&b[j], 0, sizeof(b[j]));
		if (!n.v)
			continue;
		b[j].v = (float *)p;
		p += up64(n.v * 4);
		b[j].u = (float *)p;
		p += up64(n.u * 4);
		b[j].tmp = (float *)p;
		p += up64(n.tmp * 4);
		b[j].raw = p;
		p += up64(n.tmp * 4);
		b[j].w = (float *)p;
		p += up64(CHUNK * 4);
	}
}

/* Elements n of t from element e0 on, as floats into dst (via raw). */
static int read_f32(int fd, uint64_t data_off, const struct ds_tensor *t,
		    uint64_t e0, uint64_t n, const struct ds_kernel_ops *k,
		    void *raw, float *dst)
{
	size_t es = ds_dtype_size(t->dtype);
	int rc = ds_pread_all(fd, raw, n * es, data_off + t->begin + e0 * es);

	if (!rc)
		k->load(t->dtype, raw, dst, n);
	return rc;
}

/* v (kept from the window before when it is p's) and u, the rows
 * first..last of the window i0..i0+n of W, into b. */
static int load_factors(const struct ds_lora_pair *p,
			const struct ds_tensor *w,
			const struct ds_kernel_ops *k, int fd,
			uint64_t data_off, uint64_t first, uint64_t last,
			bool by_cols, struct ds_lora_buf *b)
{
	const uint64_t rows = w->shape[0], cols = w->shape[1];
	const uint64_t nr = last - first + 1, tile = tile_of(p->r);
	const unsigned r = p->r, rp = (r + 7) / 8 * 8;
	int rc;

	if (b->vfor != p || b->vcols != by_cols) {
		b->vfor = NULL;
		/* v = A [r, cols], or B^T of B [cols, r]: element (j, c) */
		if ((rc = read_f32(fd, data_off, p->trans ? p->b : p->a, 0,
				   r * cols, k, b->raw, b->tmp)))
			return rc;
#define V_AT(j, c) (p->trans ? b->tmp[(c) * r + (j)] : b->tmp[(j) * cols + (c)])
		/* in column tiles, each [r, tile] */
		for (uint64_t c0 = 0; !by_cols && c0 < cols; c0 += tile) {
			uint64_t wd = cols - c0 < tile ? cols - c0 : tile;
			float *vt = b->v + c0 * r;

			for (unsigned j = 0; j < r; j++)
				for (uint64_t c = 0; c < wd; c++)
					vt[j * wd + c] = V_AT(j, c0 + c);
		}
		/* or by columns: [cols, rp], rows r..rp-1 zero */
		for (uint64_t c = 0; by_cols && c < cols; c++)
			for (unsigned j = 0; j < rp; j++)
				b->v[c * rp + j] = j < r ? V_AT(j, c) : 0.0f;
#undef V_AT
		b->vfor = p;
		b->vcols = by_cols;
	}
	if (!p->trans) {
		/* u = rows first..last of B [rows, r] */
		return read_f32(fd, data_off, p->b, first * r, nr * r, k,
				b->raw, b->u);
	}
	/* u = columns first..last of A [r, rows] */
	for (unsigned j = 0; j < r; j++)
		if ((rc = read_f32(fd, data_off, p->a, j * rows + first, nr, k,
				   b->raw, b->tmp + j * nr)))
			return rc;
	for (uint64_t i = 0; i < nr; i++)
		for (unsigned j = 0; j < r; j++)
			b->u[i * r + j] = b->tmp[j * nr + i];
	return 0;
}

int ds_lora_expand(const struct ds_lora_pair *p, const struct ds_tensor *w,
		   const struct ds_kernel_ops *k, ds_lora_row_fn *row, int fd,
		   uint64_t data_off, const void *wraw, uint64_t i0, size_t n,
		   float *x, struct ds_lora_buf *b)
{
	const uint64_t cols = w->shape[1];
	const size_t es = ds_dtype_size(w->dtype);
	const unsigned r = p->r;
	const uint64_t tile = tile_of(r);
	uint64_t first, last, pos;
	int rc;

	if (n == 0)
		return 0;
	first = i0 / cols;
	last = (i0 + n - 1) / cols;
	if ((rc = load_factors(p, w, k, fd, data_off, first, last, false, b)))
		return rc;
	/*
	 * x = W in binary32: at once when W lies outside x; else forward a
	 * chunk at a time, each chunk converted before its floats are stored,
	 * so x never overtakes the W values still to be read (wraw lies at or
	 * after x).
	 */
	if ((const char *)wraw >= (const char *)(x + n) ||
	    (const char *)wraw + n * es <= (const char *)x) {
		k->load(w->dtype, wraw, x, n);
	} else {
		for (pos = 0; pos < n; pos += CHUNK) {
			size_t len = n - pos < CHUNK ? (size_t)(n - pos) : CHUNK;

			k->load(w->dtype, (const char *)wraw + pos * es, b->w,
				len);
			memcpy(x + pos, b->w, len * sizeof(float));
		}
	}
	/*
	 * Then x += s * (u_i . v) a tile of columns at a time, every row of
	 * the window in turn, so the tile's r rows of v stay in the L1 cache:
	 * they lie next to each other (v is stored a tile at a time), where
	 * rows of v a whole row of W apart would fall into the same few sets
	 * of the cache and evict each other.  Each element's sum is the same
	 * whatever the order of the tiles.
	 */
	for (uint64_t c0 = 0; c0 < cols; c0 += tile) {
		uint64_t c1 = cols - c0 < tile ? cols : c0 + tile;
		const float *vt = b->v + c0 * r;

		for (uint64_t i = first; i <= last; i++) {
			uint64_t lo = i == first ? i0 % cols : 0;
			uint64_t hi = i == last ? (i0 + n - 1) % cols + 1 : cols;
			uint64_t a = lo > c0 ? lo : c0, e = hi < c1 ? hi : c1;
			float *xs = x + (i * cols + a - i0);

			if (a < e)
				row(xs, vt + (a - c0), (size_t)(c1 - c0),
				    b->u + (i - first) * r, r, p->s, xs,
				    (size_t)(e - a));
		}
	}
	return 0;
}

/* The set bits of bits[] from bit a to bit b - 1 (a < b). */
static size_t count_range(const uint64_t *bits, uint64_t a, uint64_t b)
{
	size_t c = 0;

	for (uint64_t q = a / 64; q * 64 < b; q++) {
		uint64_t w = bits[q];

		if (q * 64 < a)
			w &= ~0ull << (a % 64);
		if (b - q * 64 < 64)
			w &= (1ull << (b - q * 64)) - 1;
		c += ds_popcount64(w);
	}
	return c;
}

/* What every segment of a ds_lora_kept window shares. */
struct kept_win {
	const struct ds_lora_pair *p;
	enum ds_dtype wdt;
	ds_lora_pick_fn *pick;
	const void *wraw;
	const uint64_t *bits;
	const struct ds_lora_buf *b;
	uint64_t i0, n, cols, first, last, tile;
	float *x;
};

/* W's values of row i of the window in the column tile from c0 on, into
 * the cache: the kept ones are too sparse a read for the hardware
 * prefetcher, and when the tiles go row by row, rows apart. */
static void prefetch_w(const struct kept_win *kw, uint64_t i, uint64_t c0)
{
	const uint64_t es = ds_dtype_size(kw->wdt), cols = kw->cols;
	uint64_t a = i * cols + c0, e = a + kw->tile;

	if (e <= kw->i0)
		return;         /* a tile before the window's start */
	a = a > kw->i0 ? a - kw->i0 : 0;
	e = e - kw->i0 < kw->n ? e - kw->i0 : kw->n;
	for (uint64_t f = a * es / 64; a < e && f <= (e * es - 1) / 64; f++)
		__builtin_prefetch((const char *)kw->wraw + f * 64);
}

/*
 * The kept elements of row i of the window in the column tile from c0 on,
 * into x[at], x[at + 1], ...: their columns listed, their sums (pick: the
 * row update's, term by term), then x = w + s * acc in element order.
 * Returns how many there are.
 */
static size_t kept_segment(const struct kept_win *kw, uint64_t i,
			   uint64_t c0, size_t at)
{
	const unsigned r = kw->p->r, rp = (r + 7) / 8 * 8;
	const uint64_t cols = kw->cols;
	const uint64_t c1 = cols - c0 < kw->tile ? cols : c0 + kw->tile;
	const uint64_t lo = i == kw->first ? kw->i0 % cols : 0;
	const uint64_t hi = i == kw->last ? (kw->i0 + kw->n - 1) % cols + 1 :
			    cols;
	/* window elements ea..eb-1 are columns a..e-1; base is column c0 */
	const uint64_t a = lo > c0 ? lo : c0, e = hi < c1 ? hi : c1;
	const uint64_t ea = i * cols + a - kw->i0, eb = i * cols + e - kw->i0;
	const uint64_t base = i * cols + c0 - kw->i0;
	const float *vt = kw->b->v + c0 * rp;
	uint32_t idx[KEPT_COLS + 1];
	float acc[KEPT_COLS];
	size_t m = 0;

	if (a >= e)
		return 0;
	for (uint64_t q = ea / 64; q * 64 < eb; q++) {
		uint64_t bw = kw->bits[q];

		if (q * 64 < ea)
			bw &= ~0ull << (ea % 64);
		if (eb - q * 64 < 64)
			bw &= (1ull << (eb - q * 64)) - 1;
		m += ds_bits_list(bw, (uint32_t)(q * 64 - base), idx + m);
	}
	/* the columns' values: a cache line of v each at rank 16 */
	for (size_t l = 0; l < m; l++)
		__builtin_prefetch(vt + idx[l] * rp);
	kw->pick(vt, idx, m, kw->b->u + (i - kw->first) * r, r, acc);
	for (size_t l = 0; l < m; l++)
		kw->x[at + l] = ds_cvt_at(kw->wraw, kw->wdt, base + idx[l]) +
				kw->p->s * acc[l];
	return m;
}

int ds_lora_kept(const struct ds_lora_pair *p, const struct ds_tensor *w,
		 const struct ds_kernel_ops *k, ds_lora_pick_fn *pick, int fd,
		 uint64_t data_off, const void *wraw, uint64_t i0, size_t n,
		 const struct ds_lora_mask *mk, float *x, uint64_t *bits,
		 struct ds_lora_buf *b)
{
	const uint64_t cols = w->shape[1];
	const size_t es = ds_dtype_size(w->dtype);
	struct kept_win kw;
	uint32_t *rank;
	size_t kept = 0;
	int rc;

	if (n == 0)
		return 0;
	kw = (struct kept_win){ p, w->dtype, pick, wraw, bits, b, i0, n, cols,
				i0 / cols, (i0 + n - 1) / cols,
				kept_tile_of((p->r + 7) / 8 * 8), x };
	if ((rc = load_factors(p, w, k, fd, data_off, kw.first, kw.last, true,
			       b)))
		return rc;
	k->keep_bits(mk->seed, mk->j, mk->name_hash, i0, n, mk->thr, bits);
	/*
	 * Row by row when W's values lie in x: x[kept] is written after
	 * element e >= kept of W is read, and W's values lie at or after x's
	 * (ds_lora_expand), so none is overwritten before it is read.
	 */
	if ((const char *)wraw < (const char *)(x + n) &&
	    (const char *)wraw + n * es > (const char *)x) {
		for (uint64_t i = kw.first; i <= kw.last; i++)
			for (uint64_t c0 = 0; c0 < cols; c0 += kw.tile) {
				prefetch_w(&kw, i, c0);
				kept += kept_segment(&kw, i, c0, kept);
			}
		return 0;
	}
	/*
	 * Else tile by tile, every row of the window in turn, so the tile of
	 * v stays in the L1 cache; each row's values go where its kept
	 * elements are counted to start (rank, in tmp: room for a float a
	 * row and more).
	 */
	rank = (uint32_t *)b->tmp;
	for (uint64_t i = kw.first; i <= kw.last; i++) {
		uint64_t ea = i == kw.first ? 0 : i * cols - i0;
		uint64_t eb = i == kw.last ? n : (i + 1) * cols - i0;

		rank[i - kw.first] = (uint32_t)kept;
		kept += count_range(bits, ea, eb);
	}
	for (uint64_t c0 = 0; c0 < cols; c0 += kw.tile) {
		prefetch_w(&kw, kw.first, c0);
		for (uint64_t i = kw.first; i <= kw.last; i++) {
			if (i < kw.last)
				prefetch_w(&kw, i + 1, c0);
			rank[i - kw.first] += (uint32_t)kept_segment(
				&kw, i, c0, rank[i - kw.first]);
		}
	}
	return 0;
}

/* SPDX-License-Identifier: MIT */
/* mkfixture.c - write a synthetic Hugging Face base + fine-tunes checkpoint set */

/*
 * Standalone on purpose: libc and libm only, no project header, so the
 * tests compare the engine against data it had no part in making.
 *
 *   mkfixture [options] OUTDIR  ->  OUTDIR/base, OUTDIR/ft1 .. OUTDIR/ftN
 *
 * Every value is a pure function of (seed, model, tensor, element), so the
 * output does not depend on sharding or buffer sizes.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#define MAX_MODELS 64
#define CHUNK_ELEMS (1u << 16)	/* buffers stay in L2 */

enum dtype { DT_BF16, DT_F16, DT_F32, DT_I64 };
enum kind { K_WEIGHT, K_NORM, K_POS };

struct opts {
	int models, layers, hidden, inter, vocab, shards, extra, int_tensor;
	int layer_types;
	int dtypes_given;
	uint64_t seed, size;
	double delta;
	int dtype[MAX_MODELS + 1];	/* 0: base, j: ftj */
	const char *out;
};

struct tensor {
	char name[96];
	enum dtype dt;
	enum kind kind;
	unsigned ndim, id, shard;
	uint64_t dims[2], numel, nbase, offset;
};

struct model {
	struct tensor *t;
	size_t n;
	unsigned shards, index;	/* index 0 is the base */
	unsigned cur;		/* shard being written */
	FILE *f;
	char dir[4096];
};

/* ---- small utilities ----------------------------------------------------- */

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("mkfixture: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);

	if (!p)
		die("out of memory");
	return p;
}

static FILE *xfopen(const char *dir, const char *name)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		die("%s: %s", path, strerror(errno));
	return f;
}

static void xclose(FILE *f, const char *what)
{
	if (ferror(f) || fclose(f) != 0)
		die("%s: write error: %s", what, strerror(errno));
}

static void xmkdir(const char *path)
{
	if (mkdir(path, 0777) != 0 && errno != EEXIST)
		die("%s: %s", path, strerror(errno));
}

static unsigned dt_size(enum dtype dt)
{
	static const unsigned sz[] = { 2, 2, 4, 8 };

	return sz[dt];
}

static const char *dt_name(enum dtype dt)
{
	static const char *const nm[] = { "BF16", "F16", "F32", "I64" };

	return nm[dt];
}

static const char *dt_torch(enum dtype dt)
{
	static const char *const nm[] = { "bfloat16", "float16", "float32",
					  "int64" };

	return nm[dt];
}

static int dt_parse(const char *s)
{
	if (!strcmp(s, "bf16") || !strcmp(s, "BF16"))
		return DT_BF16;
	if (!strcmp(s, "f16") || !strcmp(s, "F16"))
		return DT_F16;
	if (!strcmp(s, "f32") || !strcmp(s, "F32"))
		return DT_F32;
	die("unknown dtype '%s' (bf16, f16, f32)", s);
	return -1;
}

/* ---- PRNG and conversions ------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct rng { uint64_t s[4]; };

static void rng_init(struct rng *r, uint64_t seed, unsigned model, unsigned id)
{
	uint64_t sm = seed ^ ((uint64_t)model << 48) ^ ((uint64_t)id << 8);

	sm = splitmix64(&sm) ^ seed;
	for (int k = 0; k < 4; k++)
		r->s[k] = splitmix64(&sm);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman and Vigna). */
static inline uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

static inline uint32_t f2u(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

static inline float u2f(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

static inline uint16_t f32_to_bf16(float f)
{
	uint32_t x = f2u(f);

	if ((x & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((x >> 16) | 0x40);
	return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* Round to nearest even, overflow to inf, subnormals, quiet NaN. */
static uint16_t f32_to_f16(float f)
{
	uint32_t x = f2u(f), sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
	uint32_t m, q, rem, half;
	unsigned shift;

	if (ax > 0x7f800000)
		return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
	if (ax >= 0x477ff000)		/* >= 65520 rounds to inf */
		return (uint16_t)(sign | 0x7c00);
	if (ax >= 0x38800000) {		/* normal half */
		uint32_t r = ax - 0x38000000;

		return (uint16_t)(sign | ((r + 0xfff + ((r >> 13) & 1)) >> 13));
	}
	if (ax <= 0x33000000)		/* <= 2^-25 rounds to zero */
		return (uint16_t)sign;
	m = (ax & 0x7fffff) | 0x800000;
	shift = 126 - (ax >> 23);	/* 14 .. 24 */
	q = m >> shift;
	rem = m & ((1u << shift) - 1);
	half = 1u << (shift - 1);
	if (rem > half || (rem == half && (q & 1)))
		q++;
	return (uint16_t)(sign | q);
}

static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f;
	uint32_t m = h & 0x3ff;

	if (e == 0x1f)
		return u2f(sign | 0x7f800000 | (m << 13));
	if (e == 0)
		return (sign ? -1.0f : 1.0f) * ldexpf((float)m, -24);
	return u2f(sign | ((e + 112) << 23) | (m << 13));
}

/* ---- tensor list --------------------------------------------------------- */

static void add_tensor(struct model *m, enum kind k, enum dtype dt,
		       uint64_t d0, uint64_t d1, uint64_t nbase,
		       const char *fmt, ...)
{
	struct tensor *t = &m->t[m->n];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->name, sizeof(t->name), fmt, ap);
	va_end(ap);
	t->kind = k;
	t->dt = dt;
	t->ndim = d1 ? 2 : 1;
	t->dims[0] = d0;
	t->dims[1] = d1;
	t->numel = d1 ? d0 * d1 : d0;
	t->nbase = nbase ? nbase : t->numel;
	t->id = (unsigned)m->n++;
}

static void add_layer(struct model *m, const struct opts *o, enum dtype dt,
		      int i)
{
	static const char *const attn[] = { "q", "k", "v", "o" };
	uint64_t h = (uint64_t)o->hidden, in = (uint64_t)o->inter;

	for (int k = 0; k < 4; k++)
		add_tensor(m, K_WEIGHT, dt, h, h, 0,
			   "model.layers.%d.self_attn.%s_proj.weight", i,
			   attn[k]);
	add_tensor(m, K_WEIGHT, dt, in, h, 0,
		   "model.layers.%d.mlp.gate_proj.weight", i);
	add_tensor(m, K_WEIGHT, dt, in, h, 0,
		   "model.layers.%d.mlp.up_proj.weight", i);
	add_tensor(m, K_WEIGHT, dt, h, in, 0,
		   "model.layers.%d.mlp.down_proj.weight", i);
	add_tensor(m, K_NORM, dt, h, 0, 0,
		   "model.layers.%d.input_layernorm.weight", i);
	add_tensor(m, K_NORM, dt, h, 0, 0,
		   "model.layers.%d.post_attention_layernorm.weight", i);
}

/* Tensors of model index mi in data order; ids are equal across models. */
static void build_model(struct model *m, const struct opts *o, unsigned mi)
{
	enum dtype dt = (enum dtype)o->dtype[mi];
	uint64_t v = (uint64_t)o->vocab, h = (uint64_t)o->hidden;
	uint64_t rows = v + (mi ? (uint64_t)o->extra : 0);

	m->t = xcalloc((size_t)o->layers * 9 + 4, sizeof(*m->t));
	m->n = 0;
	m->index = mi;
	add_tensor(m, K_WEIGHT, dt, rows, h, v * h, "model.embed_tokens.weight");
	if (o->int_tensor)
		add_tensor(m, K_POS, DT_I64, 1, 64, 0, "model.position_ids");
	for (int i = 0; i < o->layers; i++)
		add_layer(m, o, dt, i);
	add_tensor(m, K_NORM, dt, h, 0, 0, "model.norm.weight");
	add_tensor(m, K_WEIGHT, dt, rows, h, v * h, "lm_head.weight");
}

static uint64_t tensor_bytes(const struct tensor *t)
{
	return t->numel * dt_size(t->dt);
}

static uint64_t model_bytes(const struct model *m)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < m->n; i++)
		sum += tensor_bytes(&m->t[i]);
	return sum;
}

/*
 * Split the tensor list into S contiguous groups of about equal bytes, at
 * least one tensor each; offsets restart at 0 in every shard.
 */
static void assign_shards(struct model *m, unsigned S)
{
	uint64_t total = model_bytes(m), cum = 0, off = 0;
	unsigned k = 0;

	if (m->n < S)
		die("%u shards for only %zu tensors", S, m->n);
	m->shards = S;
	for (size_t i = 0; i < m->n; i++) {
		struct tensor *t = &m->t[i];
		size_t left = m->n - i - 1;

		t->shard = k;
		t->offset = off;
		off += tensor_bytes(t);
		cum += tensor_bytes(t);
		if (k + 1 < S && left > 0 &&
		    ((double)cum >= (double)total * (k + 1) / S ||
		     left == S - 1 - k)) {
			k++;
			off = 0;
		}
	}
}

/* ---- values --------------------------------------------------------------- */

/* Chunk buffers, allocated once. */
struct gen {
	float *v;		/* base values before rounding */
	float *fb;		/* base values as stored; fine-tunes add to them */
	float *z;		/* fine-tune values */
	unsigned char *out;
};

/*
 * N(0, 1) quantiles at (k + 0.5) / 65536: one 64-bit random word gives four
 * normal values by table lookup, exact in distribution up to 16-bit
 * resolution and much cheaper than Box-Muller (--size must be fast).
 */
static float normal_tab[65536];

static float f16_tab[65536];	/* f16_to_f32 of every half */

static void init_tables(void)
{
	for (int k = 0; k < 32768; k++) {
		double p = (k + 0.5) / 65536.0, lo = -10.0, hi = 0.0;

		for (int it = 0; it < 60; it++) {
			double mid = 0.5 * (lo + hi);

			if (0.5 * erfc(-mid / sqrt(2.0)) < p)
				lo = mid;
			else
				hi = mid;
		}
		normal_tab[k] = (float)(0.5 * (lo + hi));
		normal_tab[65535 - k] = -normal_tab[k];
	}
	for (unsigned h = 0; h < 65536; h++)
		f16_tab[h] = f16_to_f32((uint16_t)h);
}

#define NT(x, q) normal_tab[((x) >> (16 * (q))) & 0xffff]

/*
 * z[k] = add[k] + scale * N(0, 1) from stream r, or mean + scale * N(0, 1)
 * when add is NULL.  Unrolled by hand: -O2 does not, and --size needs the
 * speed.
 */
static void fill_normals(struct rng *r, float *z, const float *add, size_t n,
			 float mean, float scale)
{
	struct rng st = *r;	/* keep the state in registers */
	size_t k = 0;

	for (; k + 4 <= n; k += 4) {
		uint64_t x = rng_next(&st);
		float a0 = add ? add[k] : mean, a1 = add ? add[k + 1] : mean;
		float a2 = add ? add[k + 2] : mean, a3 = add ? add[k + 3] : mean;

		z[k] = a0 + scale * NT(x, 0);
		z[k + 1] = a1 + scale * NT(x, 1);
		z[k + 2] = a2 + scale * NT(x, 2);
		z[k + 3] = a3 + scale * NT(x, 3);
	}
	if (k < n) {
		uint64_t x = rng_next(&st);

		for (; k < n; k++, x >>= 16)
			z[k] = (add ? add[k] : mean) + scale * NT(x, 0);
	}
	*r = st;
}

static void store_bf16(const float *src, unsigned char *dst, float *back,
		       size_t n)
{
	uint16_t *h = (uint16_t *)(void *)dst;	/* dst is malloc-aligned */

	for (size_t k = 0; k < n; k++)
		h[k] = f32_to_bf16(src[k]);
	if (back)
		for (size_t k = 0; k < n; k++)
			back[k] = u2f((uint32_t)h[k] << 16);
}

static void store_f16(const float *src, unsigned char *dst, float *back,
		      size_t n)
{
	uint16_t *h = (uint16_t *)(void *)dst;

	for (size_t k = 0; k < n; k++)
		h[k] = f32_to_f16(src[k]);
	if (back)
		for (size_t k = 0; k < n; k++)
			back[k] = f16_tab[h[k]];
}

/* Round src to dt into dst; back (may be NULL) gets the stored values. */
static void store_chunk(enum dtype dt, const float *src, unsigned char *dst,
			float *back, size_t n)
{
	if (dt == DT_BF16) {
		store_bf16(src, dst, back, n);
	} else if (dt == DT_F16) {
		store_f16(src, dst, back, n);
	} else {
		memcpy(dst, src, n * 4);
		if (back)
			memcpy(back, src, n * 4);
	}
}

static void xwrite(FILE *f, const void *p, size_t sz, size_t n,
		   const struct model *m)
{
	if (n && fwrite(p, sz, n, f) != n)
		die("%s: write error: %s", m->dir, strerror(errno));
}

/* Elements of a tensor of numel elements that fall in [i0, i0 + n). */
static size_t in_chunk(uint64_t numel, uint64_t i0, size_t n)
{
	if (numel <= i0)
		return 0;
	return numel - i0 < n ? (size_t)(numel - i0) : n;
}

static void write_positions(struct model *ms, int nm)
{
	int64_t pos[64];

	for (int k = 0; k < 64; k++)
		pos[k] = k;
	for (int mi = 0; mi < nm; mi++)
		xwrite(ms[mi].f, pos, 8, 64, &ms[mi]);
}

/*
 * Tensor id of every model, chunk by chunk: base values from the base's
 * stream (also for the rows only fine-tunes have), fine-tune j = the
 * stored base value + noise from stream j.
 */
static void write_tensor(const struct opts *o, struct model *ms, int nm,
			 size_t id, struct gen *g)
{
	const struct tensor *t0 = &ms[0].t[id];
	float mean = t0->kind == K_NORM ? 1.0f : 0.0f;
	struct rng rb, rn[MAX_MODELS + 1];
	uint64_t numel = 0;

	if (t0->kind == K_POS)
		return write_positions(ms, nm);
	for (int mi = 0; mi < nm; mi++) {
		rng_init(&rn[mi], o->seed, (unsigned)mi, t0->id);
		if (ms[mi].t[id].numel > numel)
			numel = ms[mi].t[id].numel;
	}
	rb = rn[0];
	for (uint64_t i0 = 0; i0 < numel; i0 += CHUNK_ELEMS) {
		size_t n = in_chunk(numel, i0, CHUNK_ELEMS), nb;

		fill_normals(&rb, g->v, NULL, n, mean, 0.02f);
		nb = in_chunk(t0->numel, i0, n);
		store_chunk(t0->dt, g->v, g->out, g->fb, nb);
		xwrite(ms[0].f, g->out, dt_size(t0->dt), nb, &ms[0]);
		memcpy(g->fb + nb, g->v + nb, (n - nb) * sizeof(float));
		for (int mi = 1; mi < nm; mi++) {
			const struct tensor *t = &ms[mi].t[id];
			size_t nt = in_chunk(t->numel, i0, n);

			fill_normals(&rn[mi], g->z, g->fb, nt, 0.0f,
				     (float)o->delta);
			store_chunk(t->dt, g->z, g->out, NULL, nt);
			xwrite(ms[mi].f, g->out, dt_size(t->dt), nt, &ms[mi]);
		}
	}
}

/* ---- file writing -------------------------------------------------------- */

static void shard_name(const struct model *m, unsigned k, char *buf,
		       size_t len)
{
	if (m->shards == 1)
		snprintf(buf, len, "model.safetensors");
	else
		snprintf(buf, len, "model-%05u-of-%05u.safetensors", k + 1,
			 m->shards);
}

struct sbuf { char *p; size_t len, cap; };

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!b->p) {		/* never offset a null pointer (UBSan) */
		b->cap = 4096;
		b->p = xcalloc(b->cap, 1);
	}
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			die("formatting failed");
		if ((size_t)n < b->cap - b->len)
			break;
		b->cap = (b->cap + (size_t)n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			die("out of memory");
	}
	b->len += (size_t)n;
}

/* The JSON header of shard k, padded with spaces so 8 + len is aligned. */
static void build_header(const struct model *m, unsigned k, struct sbuf *b)
{
	sb_printf(b, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (size_t i = 0; i < m->n; i++) {
		const struct tensor *t = &m->t[i];

		if (t->shard != k)
			continue;
		sb_printf(b, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%" PRIu64,
			  t->name, dt_name(t->dt), t->dims[0]);
		if (t->ndim == 2)
			sb_printf(b, ",%" PRIu64, t->dims[1]);
		sb_printf(b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}",
			  t->offset, t->offset + tensor_bytes(t));
	}
	sb_printf(b, "}");
	while (b->len % 8)
		sb_printf(b, " ");
}

/* Close the current shard of m and open shard k, header written. */
static void open_shard(struct model *m, unsigned k)
{
	struct sbuf hdr = { 0 };
	char name[64];
	uint64_t len;

	if (m->f)
		xclose(m->f, m->dir);
	shard_name(m, k, name, sizeof(name));
	m->f = xfopen(m->dir, name);
	setvbuf(m->f, NULL, _IOFBF, 1 << 20);
	m->cur = k;
	build_header(m, k, &hdr);
	len = hdr.len;
	/* Little-endian u64 (every target of this project is little-endian). */
	xwrite(m->f, &len, 8, 1, m);
	xwrite(m->f, hdr.p, 1, hdr.len, m);
	free(hdr.p);
}

static int cmp_tensor_name(const void *a, const void *b)
{
	const struct tensor *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

static void write_index(const struct model *m)
{
	const struct tensor **sorted = xcalloc(m->n, sizeof(*sorted));
	FILE *f = xfopen(m->dir, "model.safetensors.index.json");
	char name[64];

	for (size_t i = 0; i < m->n; i++)
		sorted[i] = &m->t[i];
	qsort(sorted, m->n, sizeof(*sorted), cmp_tensor_name);
	fprintf(f, "{\n  \"metadata\": {\n    \"total_size\": %" PRIu64
		"\n  },\n  \"weight_map\": {\n", model_bytes(m));
	for (size_t i = 0; i < m->n; i++) {
		shard_name(m, sorted[i]->shard, name, sizeof(name));
		fprintf(f, "    \"%s\": \"%s\"%s\n", sorted[i]->name, name,
			i + 1 < m->n ? "," : "");
	}
	fprintf(f, "  }\n}\n");
	xclose(f, "model.safetensors.index.json");
	free(sorted);
}

/* ---- non-weight files ---------------------------------------------------- */

static void write_config(const struct opts *o, unsigned mi, const char *dir)
{
	FILE *f = xfopen(dir, "config.json");
	int heads = o->hidden >= 16 ? o->hidden / 16 : 1;

	fprintf(f, "{\n  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],\n"
		"  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
		"  \"hidden_act\": \"silu\",\n  \"hidden_size\": %d,\n"
		"  \"intermediate_size\": %d,\n"
		"  \"max_position_embeddings\": 2048,\n"
		"  \"model_type\": \"llama\",\n"
		"  \"num_attention_heads\": %d,\n  \"num_hidden_layers\": %d,\n"
		"  \"num_key_value_heads\": %d,\n  \"rms_norm_eps\": 1e-05,\n"
		"  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"%s\",\n"
		"  \"vocab_size\": %d",
		o->hidden, o->inter, heads, o->layers, heads,
		dt_torch((enum dtype)o->dtype[mi]),
		o->vocab + (mi ? o->extra : 0));
	/* A per-layer list whose entries name their model and layer. */
	for (int i = 0; o->layer_types && i < o->layers; i++)
		fprintf(f, "%s\"m%u-l%d\"", i ? ", " : ",\n  \"layer_types\": [",
			mi, i);
	fprintf(f, "%s\n}\n", o->layer_types ? "]" : "");
	xclose(f, "config.json");
}

static void write_tokenizer(const struct opts *o, unsigned mi,
			    const char *dir)
{
	FILE *f = xfopen(dir, "tokenizer.json");
	int added = mi ? o->extra : 0;

	fprintf(f, "{\"version\":\"1.0\",\"added_tokens\":[");
	for (int k = 0; k < added; k++)
		fprintf(f, "%s{\"id\":%d,\"content\":\"<extra_%d>\","
			"\"special\":true}", k ? "," : "", o->vocab + k, k);
	fprintf(f, "],\"model\":{\"type\":\"BPE\",\"vocab\":{\"<unk>\":0,"
		"\"<s>\":1,\"</s>\":2},\"merges\":[]}}\n");
	xclose(f, "tokenizer.json");
	f = xfopen(dir, "tokenizer_config.json");
	fprintf(f, "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n"
		"  \"model_max_length\": 2048,\n"
		"  \"tokenizer_class\": \"LlamaTokenizerFast\"\n}\n");
	xclose(f, "tokenizer_config.json");
}

static void write_misc(const struct opts *o, unsigned mi, const char *dir)
{
	FILE *f = xfopen(dir, "generation_config.json");

	fprintf(f, "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
		"  \"transformers_version\": \"4.44.0\"\n}\n");
	xclose(f, "generation_config.json");
	write_config(o, mi, dir);
	write_tokenizer(o, mi, dir);
}

static void setup_model(struct model *m, const struct opts *o, unsigned mi)
{
	memset(m, 0, sizeof(*m));
	if (mi)
		snprintf(m->dir, sizeof(m->dir), "%s/ft%u", o->out, mi);
	else
		snprintf(m->dir, sizeof(m->dir), "%s/base", o->out);
	xmkdir(m->dir);
	build_model(m, o, mi);
	assign_shards(m, (unsigned)o->shards);
	m->cur = UINT32_MAX;
}

static void finish_model(struct model *m, const struct opts *o)
{
	xclose(m->f, m->dir);
	if (m->shards > 1)
		write_index(m);
	write_misc(o, m->index, m->dir);
	free(m->t);
}

/*
 * All models are written in one pass over the tensor list (the same for
 * every model), so base values are generated once and shared.
 */
static void write_all(const struct opts *o)
{
	int nm = o->models + 1;
	struct model *ms = xcalloc((size_t)nm, sizeof(*ms));
	struct gen g = {
		.v = xcalloc(CHUNK_ELEMS, 4), .fb = xcalloc(CHUNK_ELEMS, 4),
		.z = xcalloc(CHUNK_ELEMS, 4), .out = xcalloc(CHUNK_ELEMS, 4),
	};

	xmkdir(o->out);
	for (int mi = 0; mi < nm; mi++)
		setup_model(&ms[mi], o, (unsigned)mi);
	for (size_t id = 0; id < ms[0].n; id++) {
		for (int mi = 0; mi < nm; mi++)
			if (ms[mi].t[id].shard != ms[mi].cur)
				open_shard(&ms[mi], ms[mi].t[id].shard);
		write_tensor(o, ms, nm, id, &g);
	}
	for (int mi = 0; mi < nm; mi++)
		finish_model(&ms[mi], o);
	free(g.v);
	free(g.fb);
	free(g.z);
	free(g.out);
	free(ms);
}

/* ---- options ------------------------------------------------------------- */

static void usage(FILE *f)
{
	fputs("usage: mkfixture [options] OUTDIR\n"
	      "  --models N        fine-tunes ft1..ftN (2)\n"
	      "  --layers L        decoder layers (2)\n"
	      "  --hidden H        hidden size (64)\n"
	      "  --intermediate I  MLP size (3*H)\n"
	      "  --vocab V         vocabulary rows (256)\n"
	      "  --dtype D         bf16|f16|f32 for every model (bf16)\n"
	      "  --dtypes D0,D1..  dtype of base, ft1, ... each\n"
	      "  --shards S        shards per model (2; 1 = model.safetensors)\n"
	      "  --seed N          PRNG seed (0)\n"
	      "  --delta-scale X   stddev of fine-tune deltas (0.002)\n"
	      "  --extra-vocab K   fine-tunes get K extra embedding rows\n"
	      "  --int-tensor      add I64 model.position_ids [1,64]\n"
	      "  --layer-types     config.json lists layer_types (\"mJ-lI\")\n"
	      "  --size BYTES      pick layers (and hidden) for ~BYTES/model\n", f);
}

static uint64_t parse_u64(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || *s == '-')
		die("bad %s '%s'", what, s);
	return v;
}

static double parse_double(const char *s, const char *what)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < 0)
		die("bad %s '%s'", what, s);
	return v;
}

static int parse_int(const char *s, const char *what, int min)
{
	uint64_t v = parse_u64(s, what);

	if (v > 1000000000 || (int)v < min)
		die("%s out of range: '%s'", what, s);
	return (int)v;
}

static uint64_t parse_size(const char *s)
{
	char *end;
	double v;
	unsigned shift = 0;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0)
		die("bad size '%s'", s);
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if (!strcmp(end, "iB") || !strcmp(end, "B"))
		end += strlen(end);
	if (*end)
		die("bad size '%s'", s);
	return (uint64_t)ldexp(v, (int)shift);
}

static void parse_dtypes(struct opts *o, const char *list)
{
	char *copy = strdup(list), *save = NULL, *tok;
	int n = 0;

	if (!copy)
		die("out of memory");
	for (tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (n > MAX_MODELS)
			die("too many dtypes in '%s'", list);
		o->dtype[n++] = dt_parse(tok);
	}
	free(copy);
	o->dtypes_given = n;
}

/* Bytes of one model (base dtype) with L layers. */
static uint64_t plan_bytes(const struct opts *o, uint64_t L)
{
	uint64_t h = (uint64_t)o->hidden, in = (uint64_t)o->inter;
	uint64_t v = (uint64_t)o->vocab;
	uint64_t layer = 4 * h * h + 3 * in * h + 2 * h;

	return dt_size((enum dtype)o->dtype[0]) * (2 * v * h + h + L * layer);
}

/*
 * --size: without --hidden, take the largest power-of-two hidden size
 * (64 .. 8192) that still gives 8 layers, then the layer count nearest the
 * size, so multi-GB models have a realistic number of large tensors.
 */
static void plan_size(struct opts *o, int hidden_given, int inter_given)
{
	uint64_t fixed, layer;

	if (!hidden_given) {
		for (int h = 64; h <= 8192; h *= 2) {
			int save_h = o->hidden, save_i = o->inter;

			o->hidden = h;
			o->inter = inter_given ? o->inter : 3 * h;
			if (h > 64 && plan_bytes(o, 8) > o->size) {
				o->hidden = save_h;
				o->inter = save_i;
				break;
			}
		}
	}
	fixed = plan_bytes(o, 0);
	layer = plan_bytes(o, 1) - fixed;
	o->layers = o->size > fixed ?
		    (int)((o->size - fixed + layer / 2) / layer) : 1;
	if (o->layers < 1)
		o->layers = 1;
}

static void parse_opt(struct opts *o, int c, const char *arg, int *flags)
{
	switch (c) {
	case 'm': o->models = parse_int(arg, "--models", 1); break;
	case 'l': o->layers = parse_int(arg, "--layers", 1); break;
	case 'H': o->hidden = parse_int(arg, "--hidden", 1); *flags |= 1; break;
	case 'I': o->inter = parse_int(arg, "--intermediate", 1); *flags |= 2;
		break;
	case 'V': o->vocab = parse_int(arg, "--vocab", 1); break;
	case 'd': o->dtype[0] = dt_parse(arg); break;
	case 'D': parse_dtypes(o, arg); break;
	case 's': o->shards = parse_int(arg, "--shards", 1); break;
	case 'S': o->seed = parse_u64(arg, "--seed"); break;
	case 'x': o->delta = parse_double(arg, "--delta-scale"); break;
	case 'e': o->extra = parse_int(arg, "--extra-vocab", 0); break;
	case 'i': o->int_tensor = 1; break;
	case 'T': o->layer_types = 1; break;
	case 'z': o->size = parse_size(arg); break;
	case 'h': usage(stdout); exit(0);
	default: usage(stderr); exit(2);
	}
}

static void parse_args(struct opts *o, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "models", 1, NULL, 'm' }, { "layers", 1, NULL, 'l' },
		{ "hidden", 1, NULL, 'H' }, { "intermediate", 1, NULL, 'I' },
		{ "vocab", 1, NULL, 'V' }, { "dtype", 1, NULL, 'd' },
		{ "dtypes", 1, NULL, 'D' }, { "shards", 1, NULL, 's' },
		{ "seed", 1, NULL, 'S' }, { "delta-scale", 1, NULL, 'x' },
		{ "extra-vocab", 1, NULL, 'e' }, { "int-tensor", 0, NULL, 'i' },
		{ "layer-types", 0, NULL, 'T' },
		{ "size", 1, NULL, 'z' }, { "help", 0, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int c, flags = 0;

	*o = (struct opts){ .models = 2, .layers = 2, .hidden = 64,
			    .vocab = 256, .shards = 2, .delta = 0.002 };
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1)
		parse_opt(o, c, optarg, &flags);
	if (optind + 1 != argc) {
		usage(stderr);
		exit(2);
	}
	o->out = argv[optind];
	if (o->models > MAX_MODELS)
		die("at most %d models", MAX_MODELS);
	if (o->dtypes_given && o->dtypes_given != o->models + 1)
		die("--dtypes needs %d entries (base and each fine-tune)",
		    o->models + 1);
	if (!o->dtypes_given)
		for (int j = 1; j <= o->models; j++)
			o->dtype[j] = o->dtype[0];
	if (!(flags & 2))
		o->inter = 3 * o->hidden;
	if (o->size)
		plan_size(o, flags & 1, flags & 2);
}

int main(int argc, char **argv)
{
	struct opts o;

	parse_args(&o, argc, argv);
	init_tables();
	write_all(&o);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/* stats.c - dare-stream delta-stats: |delta| ranges, a verdict, a heat map */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"

/* One tensor's line, kept for --json and --svg (metadata, not data). */
struct trow {
	char *name;
	enum ds_delta_skip skip;
	int bdt, dt;
	unsigned ndim;
	uint64_t shape[DS_MAX_DIMS];
	struct ds_delta_stats s;
};

struct mres {
	const char *path;
	struct trow *t;
	size_t n, cap;
	struct ds_delta_stats all;
};

struct st {
	bool json, quiet;
	const char *svg;
	struct ds_delta_opts o;
	struct mres *m;
	int nm;
	bool text;              /* print the table as tensors complete */
	bool oom;
	FILE *svgf;             /* the map's temporary file, and its name */
	char *svgtmp;
};

/* ---- text ----------------------------------------------------------------- */

#define COLS "%-52s %10s %10s %10s %10s %10s %10s\n"

static const char *num(char *buf, size_t len, double v)
{
	snprintf(buf, len, "%.4g", v);
	return buf;
}

static void print_line(const char *label, const struct ds_delta_stats *s)
{
	char a[6][32];

	if (s->n == s->nan) {
		printf("%-52s %10s\n", label, s->n ? "all NaN" : "empty");
		return;
	}
	printf(COLS, label, num(a[0], 32, s->max), num(a[1], 32, s->mean),
	       num(a[2], 32, s->p50), num(a[3], 32, s->p99),
	       num(a[4], 32, s->p999),
	       num(a[5], 32, (double)s->zeros / (double)(s->n - s->nan)));
}

/* The verdict in words, for the text and for --json. */
static void verdict_text(const struct ds_delta_stats *s, char *buf, size_t len)
{
	char p[32];

	num(p, sizeof(p), s->p99);
	switch (ds_delta_verdict(s)) {
	case DS_DELTA_NONE:
		snprintf(buf, len, "no verdict: no delta that is a number");
		break;
	case DS_DELTA_SFT:
		if (s->zeros == s->n - s->nan)
			snprintf(buf, len, "identical to the base: every delta "
				 "is zero; there is nothing to merge");
		else
			snprintf(buf, len, "SFT-like: p99 of |delta| is %s, "
				 "at most %g: DARE at drop rates p >= 0.9 is "
				 "usually safe", p, DS_DELTA_SFT_P99);
		break;
	case DS_DELTA_BETWEEN:
		snprintf(buf, len, "between SFT-like and continued-pre-"
			 "training-like: p99 of |delta| is %s (SFT-like at most "
			 "%g, CPT-like from %g): DARE at p >= 0.9 may hurt; "
			 "compare a merge against the model, or use a lower p",
			 p, DS_DELTA_SFT_P99, DS_DELTA_CPT_P99);
		break;
	case DS_DELTA_CPT:
		snprintf(buf, len, "continued-pre-training-like: p99 of |delta| "
			 "is %s, at least %g: DARE is likely to hurt this "
			 "model, at high drop rates most", p, DS_DELTA_CPT_P99);
		break;
	}
}

/* Tensors whose own p99 is CPT-like, and the largest of them. */
static size_t cpt_tensors(const struct mres *r, const struct trow **worst)
{
	size_t n = 0;

	*worst = NULL;
	for (size_t i = 0; i < r->n; i++) {
		const struct trow *t = &r->t[i];

		if (t->skip != DS_DELTA_COMPARED ||
		    ds_delta_verdict(&t->s) != DS_DELTA_CPT)
			continue;
		n++;
		if (!*worst || t->s.p99 > (*worst)->s.p99)
			*worst = t;
	}
	return n;
}

static void print_summary(const struct mres *r)
{
	const struct trow *w;
	size_t compared = 0, skipped = 0, ncpt = cpt_tensors(r, &w);
	char label[96], v[512], p[32];

	for (size_t i = 0; i < r->n; i++)
		r->t[i].skip == DS_DELTA_COMPARED ? compared++ : skipped++;
	snprintf(label, sizeof(label), "overall (%zu tensors, %llu elements)",
		 compared, (unsigned long long)r->all.n);
	print_line(label, &r->all);
	if (r->all.nan)
		printf("  note: %llu NaN deltas, left out of every figure\n",
		       (unsigned long long)r->all.nan);
	if (skipped)
		printf("  note: %zu tensors not compared\n", skipped);
	if (ncpt && ds_delta_verdict(&r->all) != DS_DELTA_CPT)
		printf("  note: %zu tensors have CPT-like ranges (p99 >= %g), "
		       "the largest %s (p99 %s); --exclude would keep them "
		       "from the base\n", ncpt, DS_DELTA_CPT_P99, w->name,
		       num(p, sizeof(p), w->s.p99));
	verdict_text(&r->all, v, sizeof(v));
	printf("verdict: %s\n", v);
}

/* ---- collecting ----------------------------------------------------------- */

static void on_tensor(void *user, const struct ds_delta_tensor *t)
{
	struct st *st = user;
	struct mres *r = &st->m[st->nm - 1];
	struct trow *row;

	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 64;
		struct trow *nt = realloc(r->t, cap * sizeof(*nt));

		if (!nt) {
			st->oom = true;
			return;
		}
		r->t = nt;
		r->cap = cap;
	}
	row = &r->t[r->n];
	memset(row, 0, sizeof(*row));
	if (!(row->name = strdup(t->name))) {
		st->oom = true;
		return;
	}
	r->n++;
	row->skip = t->skip;
	row->bdt = t->base_dtype;
	row->dt = t->dtype;
	row->ndim = t->ndim;
	memcpy(row->shape, t->shape, t->ndim * sizeof(row->shape[0]));
	row->s = t->s;
	if (!st->text)
		return;
	if (t->skip == DS_DELTA_COMPARED)
		print_line(t->name, &t->s);
	else
		printf("%-52s not compared (%s)\n", t->name,
		       ds_delta_skip_name(t->skip));
}

/* ---- JSON ----------------------------------------------------------------- */

/* JSON has no infinity: an infinite figure is the string "inf". */
static json_t *jnum(bool none, double v)
{
	if (none)
		return json_null();
	return isfinite(v) ? json_real(v) : json_string(v > 0 ? "inf" : "-inf");
}

static void set_stats(json_t *o, const struct ds_delta_stats *s)
{
	bool none = s->n == s->nan;
	uint64_t N = s->n - s->nan;

	json_object_set_new(o, "n", json_integer((json_int_t)s->n));
	json_object_set_new(o, "nan", json_integer((json_int_t)s->nan));
	json_object_set_new(o, "zeros", json_integer((json_int_t)s->zeros));
	json_object_set_new(o, "zero_fraction",
			    jnum(none, none ? 0 : (double)s->zeros / (double)N));
	json_object_set_new(o, "max", jnum(none, s->max));
	json_object_set_new(o, "sum", jnum(false, s->sum));
	json_object_set_new(o, "mean", jnum(none, s->mean));
	json_object_set_new(o, "p50", jnum(none, s->p50));
	json_object_set_new(o, "p99", jnum(none, s->p99));
	json_object_set_new(o, "p999", jnum(none, s->p999));
	json_object_set_new(o, "verdict",
			    json_string(ds_delta_verdict_name(ds_delta_verdict(s))));
}

static json_t *jdtype(int dt)
{
	return dt < 0 ? json_null() : json_string(ds_dtype_name((enum ds_dtype)dt));
}

static json_t *tensor_json(const struct trow *t)
{
	json_t *o = json_object(), *shape = json_array();

	for (unsigned d = 0; d < t->ndim; d++)
		json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
	json_object_set_new(o, "name", json_string(t->name));
	json_object_set_new(o, "compared",
			    json_boolean(t->skip == DS_DELTA_COMPARED));
	if (t->skip != DS_DELTA_COMPARED)
		json_object_set_new(o, "reason",
				    json_string(ds_delta_skip_name(t->skip)));
	json_object_set_new(o, "base_dtype", jdtype(t->bdt));
	json_object_set_new(o, "dtype", jdtype(t->dt));
	json_object_set_new(o, "shape", shape);
	if (t->skip == DS_DELTA_COMPARED)
		set_stats(o, &t->s);
	return o;
}

static json_t *model_json(const struct mres *r)
{
	json_t *o = json_object(), *ts = json_array(), *all = json_object();
	const struct trow *w;
	size_t compared = 0, ncpt = cpt_tensors(r, &w);
	char v[512];

	for (size_t i = 0; i < r->n; i++) {
		json_array_append_new(ts, tensor_json(&r->t[i]));
		compared += r->t[i].skip == DS_DELTA_COMPARED;
	}
	json_object_set_new(all, "tensors", json_integer((json_int_t)compared));
	json_object_set_new(all, "skipped",
			    json_integer((json_int_t)(r->n - compared)));
	json_object_set_new(all, "cpt_tensors", json_integer((json_int_t)ncpt));
	set_stats(all, &r->all);
	verdict_text(&r->all, v, sizeof(v));
	json_object_set_new(all, "text", json_string(v));
	json_object_set_new(o, "path", json_string(r->path));
	json_object_set_new(o, "overall", all);
	json_object_set_new(o, "tensors", ts);
	return o;
}

static int print_json(const struct st *st, const char *base)
{
	json_t *o = json_object(), *ms = json_array();
	int rc;

	json_object_set_new(o, "base", json_string(base));
	json_object_set_new(o, "statistic", json_string("abs_delta"));
	json_object_set_new(o, "resolution", json_real(DS_DELTA_RESOLUTION));
	json_object_set_new(o, "rule", json_pack("{s:s, s:f, s:f}",
		"on", "p99", "sft_max", DS_DELTA_SFT_P99,
		"cpt_min", DS_DELTA_CPT_P99));
	for (int j = 0; j < st->nm; j++)
		json_array_append_new(ms, model_json(&st->m[j]));
	json_object_set_new(o, "models", ms);
	rc = json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
	putchar('\n');
	json_decref(o);
	return rc ? -EIO : 0;
}

/* ---- SVG heat map --------------------------------------------------------- */

/* A column of the map: a module of the layers, or a tensor outside them. */
struct col {
	const char *key;        /* the name after the layer index, or all */
	size_t keylen;
	char label[64];
	bool layer;
	int rank;               /* the usual order of a decoder layer */
};

struct map {
	struct col *c;
	size_t nc, cap;
	long maxlayer;          /* -1: no layer */
	bool other;             /* tensors outside layers: their own row */
	double lo, hi;          /* colour scale, decades */
	FILE *f;
};

static const char *const module_order[] = {
	"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
	"down_proj", "input_layernorm", "post_attention_layernorm",
};

/*
 * The layer of a tensor name: its first component that is all digits
 * ("model.layers.12.mlp.up_proj.weight" -> 12, key "mlp.up_proj.weight"),
 * or -1 with key the whole name.
 */
static long layer_of(const char *name, const char **key)
{
	const char *p = name;

	while (*p) {
		const char *e = strchr(p, '.');
		size_t len = e ? (size_t)(e - p) : strlen(p);

		if (len && len <= 6 && e && strspn(p, "0123456789") == len) {
			*key = e + 1;
			return strtol(p, NULL, 10);
		}
		if (!e)
			break;
		p = e + 1;
	}
	*key = name;
	return -1;
}

/* Copy src into buf (len bytes), cut to fit. */
static void copy_cut(char *buf, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len)
		n = len - 1;
	memcpy(buf, src, n);
	buf[n] = '\0';
}

/* Short label: the last component but "weight" ("up_proj"), ".bias" kept;
 * outside layers, the name without "model." and ".weight". */
static void col_label(const char *key, bool layer, char *buf, size_t len)
{
	char tmp[256];
	char *last, *dot;

	snprintf(tmp, sizeof(tmp), "%s", key);
	if (!layer && !strncmp(tmp, "model.", 6))
		memmove(tmp, tmp + 6, strlen(tmp + 6) + 1);
	dot = strrchr(tmp, '.');
	if (dot && !strcmp(dot, ".weight"))
		*dot = '\0';
	if (!layer) {
		copy_cut(buf, len, tmp);
		return;
	}
	last = strrchr(tmp, '.');
	if (last && !strcmp(last, ".bias")) {
		*last = '\0';
		dot = strrchr(tmp, '.');
		copy_cut(buf, len > 5 ? len - 5 : 1, dot ? dot + 1 : tmp);
		strcat(buf, ".bias");
	} else {
		copy_cut(buf, len, last ? last + 1 : tmp);
	}
}

static int col_rank(const char *label)
{
	for (size_t i = 0; i < sizeof(module_order) / sizeof(module_order[0]); i++)
		if (!strcmp(label, module_order[i]))
			return (int)i;
	return 100;
}

static long col_find(const struct map *mp, const char *key, bool layer)
{
	for (size_t i = 0; i < mp->nc; i++)
		if (mp->c[i].layer == layer && !strcmp(mp->c[i].key, key))
			return (long)i;
	return -1;
}

static int col_add(struct map *mp, const char *key, bool layer)
{
	struct col *c;

	if (col_find(mp, key, layer) >= 0)
		return 0;
	if (mp->nc == mp->cap) {
		size_t cap = mp->cap ? 2 * mp->cap : 16;
		struct col *nc = realloc(mp->c, cap * sizeof(*nc));

		if (!nc)
			return -ENOMEM;
		mp->c = nc;
		mp->cap = cap;
	}
	c = &mp->c[mp->nc++];
	c->key = key;
	c->layer = layer;
	col_label(key, layer, c->label, sizeof(c->label));
	c->rank = layer ? col_rank(c->label) : 1000;
	return 0;
}

/* Layer modules in the usual order, then the rest as first seen; the
 * sort is stable by hand (insertion), the lists are short. */
static void col_sort(struct map *mp)
{
	for (size_t i = 1; i < mp->nc; i++) {
		struct col c = mp->c[i];
		size_t j = i;

		for (; j > 0 && mp->c[j - 1].rank > c.rank; j--)
			mp->c[j] = mp->c[j - 1];
		mp->c[j] = c;
	}
}

static bool has_value(const struct trow *t)
{
	return t->skip == DS_DELTA_COMPARED && t->s.n > t->s.nan;
}

static int map_build(struct map *mp, const struct st *st)
{
	double vmin = INFINITY, vmax = 0;

	mp->maxlayer = -1;
	for (int j = 0; j < st->nm; j++)
		for (size_t i = 0; i < st->m[j].n; i++) {
			const struct trow *t = &st->m[j].t[i];
			const char *key;
			long l;

			if (t->skip != DS_DELTA_COMPARED)
				continue;
			l = layer_of(t->name, &key);
			if (col_add(mp, key, l >= 0))
				return -ENOMEM;
			if (l > mp->maxlayer)
				mp->maxlayer = l;
			mp->other |= l < 0;
			if (has_value(t) && t->s.p99 > 0 && isfinite(t->s.p99)) {
				vmin = fmin(vmin, t->s.p99);
				vmax = fmax(vmax, t->s.p99);
			}
		}
	col_sort(mp);
	if (vmax == 0) {
		vmin = 1e-4;
		vmax = 1e-1;
	}
	mp->lo = pow(10, floor(log10(vmin)));
	mp->hi = pow(10, ceil(log10(vmax)));
	if (mp->hi <= mp->lo)
		mp->hi = mp->lo * 10;
	return 0;
}

/* Viridis, sampled at nine points and interpolated. */
static void colour(double t, char *buf, size_t len)
{
	static const unsigned char v[9][3] = {
		{ 0x44, 0x01, 0x54 }, { 0x47, 0x2d, 0x7b }, { 0x3b, 0x52, 0x8b },
		{ 0x2c, 0x72, 0x8e }, { 0x21, 0x91, 0x8c }, { 0x28, 0xae, 0x80 },
		{ 0x5e, 0xc9, 0x62 }, { 0xad, 0xdc, 0x30 }, { 0xfd, 0xe7, 0x25 },
	};
	double x = fmin(fmax(t, 0), 1) * 8;
	int i = x >= 8 ? 7 : (int)x, c[3];

	x -= i;
	for (int k = 0; k < 3; k++)
		c[k] = (int)lround(v[i][k] + (v[i + 1][k] - v[i][k]) * x);
	snprintf(buf, len, "#%02x%02x%02x", c[0], c[1], c[2]);
}

static double scale_pos(const struct map *mp, double v)
{
	return (log10(v) - log10(mp->lo)) / (log10(mp->hi) - log10(mp->lo));
}

static void xml_text(FILE *f, const char *s)
{
	for (; *s; s++)
		switch (*s) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		default:
			if ((unsigned char)*s >= 0x20 || *s == '\n')
				fputc(*s, f);
		}
}

struct geo {
	double cw, ch, gap;     /* cell, gap before the layer rows */
	double left, top;       /* the grids' top left corner */
	double pw, gh;          /* one panel's width, every grid's height */
	double barx, bh, w, h;
};

static void geometry(const struct map *mp, int nm, size_t titlelen,
		     struct geo *g)
{
	size_t rows = (size_t)(mp->maxlayer + 1) + mp->other, maxlab = 0;

	for (size_t i = 0; i < mp->nc; i++)
		if (strlen(mp->c[i].label) > maxlab)
			maxlab = strlen(mp->c[i].label);
	g->cw = 46;
	g->ch = rows <= 32 ? 18 : fmax(5, floor(576.0 / (double)rows));
	g->gap = mp->other && mp->maxlayer >= 0 ? 8 : 0;
	g->left = 78;
	g->top = 96 + ceil(6.5 * (double)maxlab * 0.7071);
	g->pw = g->cw * (double)mp->nc;
	g->gh = g->ch * (double)rows + g->gap;
	g->barx = g->left + nm * (g->pw + 36) + 44;
	g->bh = fmax(g->gh, 240);
	g->w = fmax(g->barx + 110, 7.0 * (double)titlelen + 40);
	g->h = g->top + fmax(g->gh + 50, g->bh + 110) + 10;
}

static double row_y(const struct map *mp, const struct geo *g, long layer)
{
	if (layer < 0)
		return g->top;
	return g->top + (mp->other ? g->ch + g->gap : 0) + g->ch * (double)layer;
}

static void svg_cell(FILE *f, const struct map *mp, const struct geo *g,
		     double x0, const struct trow *t)
{
	const char *key;
	long l = layer_of(t->name, &key), c = col_find(mp, key, l >= 0);
	char fill[16] = "#bdbdbd", a[3][32];

	if (has_value(t) && t->s.p99 == 0)
		snprintf(fill, sizeof(fill), "#ffffff");
	else if (has_value(t))
		colour(scale_pos(mp, t->s.p99), fill, sizeof(fill));
	fprintf(f, "<rect class=\"cell\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
		"height=\"%.1f\" fill=\"%s\" stroke=\"#ffffff\" "
		"stroke-width=\"0.5\"><title>", x0 + g->cw * (double)c,
		row_y(mp, g, l), g->cw, g->ch, fill);
	xml_text(f, t->name);
	if (has_value(t))
		fprintf(f, ": p99 %s, mean %s, max %s", num(a[0], 32, t->s.p99),
			num(a[1], 32, t->s.mean), num(a[2], 32, t->s.max));
	else
		fputs(": no delta that is a number", f);
	fputs("</title></rect>\n", f);
}

/* Grid background, column labels, row labels, cells of model j. */
static void svg_panel(FILE *f, const struct map *mp, const struct geo *g,
		      const struct mres *r, int j)
{
	double x0 = g->left + j * (g->pw + 36);
	long every = g->ch >= 11 ? 1 : (long)ceil(11 / g->ch);

	fprintf(f, "<text x=\"%.1f\" y=\"74\" font-weight=\"bold\">model %d: ",
		x0, j + 1);
	xml_text(f, r->path);
	fputs("</text>\n", f);
	if (mp->other)
		fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
			"height=\"%.1f\" fill=\"#eeeeee\"/>\n", x0, g->top,
			g->pw, g->ch);
	if (mp->maxlayer >= 0)
		fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
			"height=\"%.1f\" fill=\"#eeeeee\"/>\n", x0,
			row_y(mp, g, 0), g->pw, g->ch * (double)(mp->maxlayer + 1));
	for (size_t c = 0; c < mp->nc; c++) {
		double cx = x0 + g->cw * ((double)c + 0.5);

		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" transform=\"rotate(-45 "
			"%.1f %.1f)\" font-size=\"11\">", cx, g->top - 6, cx,
			g->top - 6);
		xml_text(f, mp->c[c].label);
		fputs("</text>\n", f);
	}
	if (j == 0) {
		if (mp->other)
			fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
				"font-size=\"11\">other</text>\n", x0 - 6,
				g->top + g->ch / 2 + 4);
		for (long l = 0; l <= mp->maxlayer; l += every)
			fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
				"font-size=\"11\">%ld</text>\n", x0 - 6,
				row_y(mp, g, l) + g->ch / 2 + 4, l);
		if (mp->maxlayer >= 0)
			fprintf(f, "<text transform=\"translate(18 %.1f) "
				"rotate(-90)\" text-anchor=\"middle\">layer</text>\n",
				row_y(mp, g, 0) + g->ch * (double)(mp->maxlayer + 1) / 2);
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">module"
		"</text>\n", x0 + g->pw / 2, g->top + g->gh + 28);
	for (size_t i = 0; i < r->n; i++)
		if (r->t[i].skip == DS_DELTA_COMPARED)
			svg_cell(f, mp, g, x0, &r->t[i]);
}

static void svg_tick(FILE *f, const struct geo *g, double y, double v)
{
	fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
		"stroke=\"#000000\"/>\n<text x=\"%.1f\" y=\"%.1f\" "
		"font-size=\"11\">%g</text>\n", g->barx + 16, y, g->barx + 21, y,
		g->barx + 24, y + 4, v);
}

/* The colour scale: decades (and 2, 5 within them when there are few),
 * the verdict's two limits marked on its left. */
static void svg_scale(FILE *f, const struct map *mp, const struct geo *g)
{
	static const char *const lim[] = { "SFT \xe2\x89\xa4", "CPT \xe2\x89\xa5" };
	double lims[2] = { DS_DELTA_SFT_P99, DS_DELTA_CPT_P99 };
	double decades = round(log10(mp->hi / mp->lo)), y0 = g->top + g->bh;
	char c[16];

	fputs("<defs><linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" "
	      "y2=\"0\">\n", f);
	for (int k = 0; k <= 8; k++) {
		colour(k / 8.0, c, sizeof(c));
		fprintf(f, "<stop offset=\"%.3f\" stop-color=\"%s\"/>\n",
			k / 8.0, c);
	}
	fputs("</linearGradient></defs>\n", f);
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-weight=\"bold\">p99 of "
		"|\xce\xb4|</text>\n", g->barx - 10, g->top - 12);
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"16\" height=\"%.1f\" "
		"fill=\"url(#scale)\" stroke=\"#000000\" stroke-width=\"0.5\"/>\n",
		g->barx, g->top, g->bh);
	for (double d = mp->lo; d <= mp->hi * 1.0001; d *= 10)
		for (int m = 1; m <= 5; m += m == 1 ? 1 : 3) {
			double v = d * m;

			if (v > mp->hi * 1.0001 || (m > 1 && decades > 2))
				continue;
			svg_tick(f, g, y0 - g->bh * scale_pos(mp, v), v);
		}
	for (int i = 0; i < 2; i++) {
		double y;

		if (lims[i] < mp->lo || lims[i] > mp->hi)
			continue;
		y = y0 - g->bh * scale_pos(mp, lims[i]);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
			"stroke=\"#d62728\" stroke-width=\"2\"/>\n<text x=\"%.1f\" "
			"y=\"%.1f\" text-anchor=\"end\" font-size=\"11\" "
			"fill=\"#d62728\">%s %g</text>\n", g->barx - 4, y,
			g->barx + 16, y, g->barx - 6, y + 4, lim[i], lims[i]);
	}
}

static void svg_legend(FILE *f, const struct geo *g)
{
	static const char *const fill[] = { "#ffffff", "#bdbdbd", "#eeeeee" };
	static const char *const text[] = { "0: unchanged", "no figure (NaN)",
					    "no such tensor" };
	double y = g->top + g->bh + 24;

	for (int i = 0; i < 3; i++, y += 20)
		fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" "
			"height=\"14\" fill=\"%s\" stroke=\"#888888\"/>\n"
			"<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%s</text>\n",
			g->barx - 30, y, fill[i], g->barx - 10, y + 11, text[i]);
}

static size_t title_len(const struct st *st, const char *base)
{
	size_t n = strlen(base) + 16;

	for (int j = 0; j < st->nm; j++)
		n += strlen(st->m[j].path) + 2;
	return n;
}

static void svg_write(FILE *f, const struct map *mp, const struct st *st,
		      const char *base)
{
	struct geo g;

	geometry(mp, st->nm, title_len(st, base), &g);
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
		"height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
		"font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" "
		"font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
		"fill=\"#ffffff\"/>\n", g.w, g.h, g.w, g.h);
	fputs("<text x=\"16\" y=\"24\" font-size=\"15\" font-weight=\"bold\">"
	      "p99 of |\xce\xb4| per tensor, \xce\xb4 = model \xe2\x88\x92 base "
	      "(log colour scale)</text>\n<text x=\"16\" y=\"44\">base: ", f);
	xml_text(f, base);
	fputs("; models: ", f);
	for (int j = 0; j < st->nm; j++) {
		fprintf(f, "%s%d: ", j ? ", " : "", j + 1);
		xml_text(f, st->m[j].path);
	}
	fputs("</text>\n", f);
	for (int j = 0; j < st->nm; j++)
		svg_panel(f, mp, &g, &st->m[j], j);
	svg_scale(f, mp, &g);
	svg_legend(f, &g);
	fputs("</svg>\n", f);
}

/*
 * The map goes to a temporary file beside FILE, made before the scan (a
 * path that cannot be written fails at once, not after hours) and renamed
 * into place when complete.
 */
static int open_svg(struct st *st)
{
	size_t len = strlen(st->svg) + 8;
	int fd;

	if (!(st->svgtmp = malloc(len)))
		return report(NULL, -ENOMEM);
	snprintf(st->svgtmp, len, "%s.XXXXXX", st->svg);
	if ((fd = mkstemp(st->svgtmp)) < 0 || !(st->svgf = fdopen(fd, "w"))) {
		int e = errno;

		if (fd >= 0) {
			close(fd);
			unlink(st->svgtmp);
		}
		free(st->svgtmp);
		st->svgtmp = NULL;
		fprintf(stderr, "dare-stream: error: --svg %s: cannot create "
			"it: %s\n", st->svg, strerror(e));
		return EXIT_OUTPUT;
	}
	return EXIT_OK;
}

/* Remove the temporary file unless it became FILE. */
static void drop_svg(struct st *st)
{
	if (st->svgf)
		fclose(st->svgf);
	if (st->svgtmp)
		unlink(st->svgtmp);
	free(st->svgtmp);
	st->svgf = NULL;
	st->svgtmp = NULL;
}

static int write_svg(struct st *st, const char *base)
{
	struct map mp = { 0 };
	FILE *f = st->svgf;
	mode_t mask;
	int rc = 0;

	if (map_build(&mp, st)) {
		free(mp.c);
		return report(NULL, -ENOMEM);
	}
	svg_write(f, &mp, st, base);
	free(mp.c);
	/* mkstemp makes 0600; the map is a plain file, as umask says. */
	mask = umask(0);
	umask(mask);
	if (fflush(f) || ferror(f) || fchmod(fileno(f), 0666 & ~mask))
		rc = -errno;
	st->svgf = NULL;
	if (fclose(f) && !rc)
		rc = -errno;
	if (!rc && rename(st->svgtmp, st->svg))
		rc = -errno;
	if (rc) {
		fprintf(stderr, "dare-stream: error: --svg %s: %s\n", st->svg,
			strerror(-rc ? -rc : EIO));
		return EXIT_RUNTIME;
	}
	free(st->svgtmp);
	st->svgtmp = NULL;
	return EXIT_OK;
}

/* ---- the command ---------------------------------------------------------- */

enum { O_MEMORY = 256, O_IO, O_SVG };

static const struct option stats_opts[] = {
	{ "json", no_argument, NULL, 'j' },
	{ "svg", required_argument, NULL, O_SVG },
	{ "memory", required_argument, NULL, O_MEMORY },
	{ "io", required_argument, NULL, O_IO },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static void stats_help(void)
{
	printf("Usage: dare-stream delta-stats BASE MODEL... [--json] "
	       "[--svg FILE] [--memory SIZE]\n"
	       "How far each MODEL moved from BASE: per tensor and overall, "
	       "max, mean and\npercentiles (p50, p99, p99.9) of |delta|, the "
	       "fraction of exact zeros, and a\nverdict on the overall p99: "
	       "SFT-like (<= %g: DARE at p >= 0.9 is usually safe),\n"
	       "continued-pre-training-like (>= %g: DARE is likely to hurt), "
	       "or in between.\n\n"
	       "  --json          one JSON document (see dare-stream(1))\n"
	       "  --svg FILE      heat map of p99 |delta|: layers by modules, "
	       "one panel per model\n"
	       "  --memory SIZE   window buffers (default 64M)\n"
	       "  --io uring|pread  I/O backend (default: io_uring when "
	       "available)\n"
	       "  -q, --quiet     no notices (warnings stay)\n"
	       "Percentiles are exact to 1/256 (relative); see dare-stream(1) "
	       "for every rule.\n", DS_DELTA_SFT_P99, DS_DELTA_CPT_P99);
}

static int stats_opt(struct st *st, int c, const char *arg)
{
	switch (c) {
	case 'j': st->json = true; return 0;
	case 'q': st->quiet = true; return 0;
	case O_SVG: st->svg = arg; return 0;
	case O_MEMORY:
		if (parse_size(arg, &st->o.memory) || st->o.memory == 0)
			return usage_error("--memory %s: expected a size such "
					   "as 64M or 1G", arg);
		return 0;
	case O_IO:
		if (!strcmp(arg, "pread"))
			st->o.io = DS_IO_PREAD;
		else if (!strcmp(arg, "uring"))
			st->o.io = DS_IO_URING;
		else
			return usage_error("--io %s: expected uring or pread",
					   arg);
		return 0;
	default:
		return usage_error("unknown option %s (see dare-stream "
				   "delta-stats --help)", arg);
	}
}

static int parse_args(struct st *st, int argc, char **argv)
{
	int c, rc;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":jqh", stats_opts, NULL)) != -1) {
		if (c == 'h') {
			stats_help();
			return -1;
		}
		if (c == ':')
			return usage_error("%s needs a value (see dare-stream "
					   "delta-stats --help)",
					   argv[optind - 1]);
		if ((rc = stats_opt(st, c, c == '?' ? argv[optind - 1] :
				    optarg)))
			return rc;
	}
	if (argc - optind < 2)
		return usage_error("delta-stats needs BASE and at least one "
				   "MODEL");
	if (argc - optind - 1 > DS_MAX_MODELS)
		return usage_error("at most %d models", DS_MAX_MODELS);
	return 0;
}

static void free_results(struct st *st)
{
	for (int j = 0; j < st->nm; j++) {
		for (size_t i = 0; i < st->m[j].n; i++)
			free(st->m[j].t[i].name);
		free(st->m[j].t);
	}
	free(st->m);
}

/* Every model against the base, the table printed as it goes. */
static int scan_all(struct st *st, ds_ctx *ctx, ds_delta_scan *sc,
		    char **models, int n, const char *base)
{
	if (st->text)
		printf("base: %s\n", base);
	for (int j = 0; j < n; j++) {
		struct mres *r = &st->m[st->nm++];
		int err;

		r->path = models[j];
		if (st->text)
			printf("\nmodel %d: %s\n" COLS, j + 1, models[j],
			       "tensor", "max|d|", "mean|d|", "p50", "p99",
			       "p99.9", "zeros");
		err = ds_delta_scan_run(sc, models[j], on_tensor, st, &r->all);
		if (!err && st->oom)
			return report(NULL, -ENOMEM);
		if (err)
			return report(ctx, err);
		if (st->text)
			print_summary(r);
		fflush(stdout);
	}
	return EXIT_OK;
}

int cmd_stats(int argc, char **argv)
{
	struct st st = { 0 };
	ds_ctx *ctx = ds_ctx_create();
	ds_delta_scan *sc = NULL;
	int rc, err;

	if (!ctx)
		return report(NULL, -ENOMEM);
	if ((rc = parse_args(&st, argc, argv))) {
		ds_ctx_free(ctx);
		return rc < 0 ? EXIT_OK : rc;
	}
	st.text = !st.json;
	ds_ctx_set_log(ctx, log_stderr, &st.quiet);
	if (!(st.m = calloc((size_t)(argc - optind - 1), sizeof(*st.m))))
		rc = report(NULL, -ENOMEM);
	else if (st.svg)
		rc = open_svg(&st);
	if (rc == EXIT_OK &&
	    (err = ds_delta_scan_create(ctx, argv[optind], &st.o, &sc)))
		rc = report(ctx, err);
	if (rc == EXIT_OK)
		rc = scan_all(&st, ctx, sc, argv + optind + 1,
			      argc - optind - 1, argv[optind]);
	if (rc == EXIT_OK && st.json && print_json(&st, argv[optind]))
		rc = report(NULL, -EIO);
	if (rc == EXIT_OK && st.svg)
		rc = write_svg(&st, argv[optind]);
	drop_svg(&st);
	ds_delta_scan_free(sc);
	free_results(&st);
	ds_ctx_free(ctx);
	return rc;
}

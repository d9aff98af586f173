#!/bin/sh
# SPDX-License-Identifier: MIT
# delta-stats.sh - dare-stream delta-stats against figures recomputed in Python
#
# Fixtures with known delta distributions (mkfixture --delta-scale: N(0, s)
# deltas) get the verdict their range calls for, and every printed and JSON
# figure equals what tests/ref/statsref.py computes from the files alone:
# exactly for counts, max, mean, sums and zero fractions, the percentiles
# exactly as the documented bin edge and within 1/256 of the true value.
# Functions run through check look unreachable to shellcheck.
# shellcheck disable=SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup delta-stats
need_python

SREF=${DS_STATSREF:-$ds_top/tests/ref/statsref.py}
sref() { "$PYTHON3" "$SREF" "$@"; }

# stats_ok BASE MODEL...: text and --json of delta-stats against statsref.
stats_ok() {
	run "$DS_BIN" delta-stats "$@"
	if [ "$ds_rc" -ne 0 ]; then
		fail "delta-stats exited $ds_rc"
		show_output
		return 1
	fi
	cp "$T/stdout" "$T/text.out"
	if sref text "$T/text.out" "$@" >"$T/sref.out" 2>&1; then
		ok "text: $(tail -n 1 "$T/sref.out")"
	else
		fail "text against statsref.py"
		sed -n '1,12s/^/  > /p' "$T/sref.out"
	fi
	run "$DS_BIN" delta-stats --json "$@"
	cp "$T/stdout" "$T/json.out"
	if [ "$ds_rc" -eq 0 ] &&
		sref check "$T/json.out" "$@" >"$T/sref.out" 2>&1; then
		ok "json: $(tail -n 1 "$T/sref.out")"
	else
		fail "json against statsref.py (exit $ds_rc)"
		sed -n '1,12s/^/  > /p' "$T/sref.out"
	fi
}

# verdict_is WORD TEXT: the JSON overall verdict of every model is WORD and
# the printed verdict line starts with TEXT.
verdict_is() {
	py 'doc = json.load(open(sys.argv[1]))
v = [m["overall"]["verdict"] for m in doc["models"]]
sys.exit(0 if v and all(x == sys.argv[2] for x in v) else 1)' \
		"$T/json.out" "$1" &&
		grep -q "^verdict: $2" "$T/text.out"
}

say "== SFT-like, CPT-like, in between, identical"
mkfix "$T/sft" --models 2 --seed 61 --delta-scale 0.002
mkfix "$T/cpt" --models 1 --seed 61 --delta-scale 0.03
mkfix "$T/mid" --models 1 --seed 61 --delta-scale 0.006
cp -R "$T/sft/base" "$T/same"
inputs_record "$T/sft" "$T/cpt" "$T/mid" "$T/same"

stats_ok "$T/sft/base" "$T/sft/ft1"
check "delta-scale 0.002: SFT-like, DARE at p >= 0.9 usually safe" \
	verdict_is sft "SFT-like.*usually safe"
stats_ok "$T/sft/base" "$T/cpt/ft1"
check "delta-scale 0.03: continued-pre-training-like, DARE likely hurts" \
	verdict_is cpt "continued-pre-training-like.*likely to hurt"
stats_ok "$T/sft/base" "$T/mid/ft1"
check "delta-scale 0.006: in between" verdict_is between "between"
stats_ok "$T/sft/base" "$T/same"
check "a fine-tune equal to the base: identical, every delta zero" \
	verdict_is sft "identical to the base"
check "  ... zero fraction 1, max 0 in every tensor" py '
doc = json.load(open(sys.argv[1]))
ts = [t for t in doc["models"][0]["tensors"] if t["compared"]]
sys.exit(0 if ts and all(t["zero_fraction"] == 1 and t["max"] == 0 and
                         t["p99"] == 0 for t in ts) else 1)' "$T/json.out"

say "== several models at once, and the heat map"
run_expect 0 "" "$DS_BIN" delta-stats "$T/sft/base" "$T/sft/ft1" \
	"$T/sft/ft2" "$T/cpt/ft1" --svg "$T/map.svg"
if sref svg "$T/map.svg" "$T/sft/base" "$T/sft/ft1" "$T/sft/ft2" \
	"$T/cpt/ft1" >"$T/sref.out" 2>&1; then
	ok "svg: well-formed, $(tail -n 1 "$T/sref.out")"
else
	fail "svg"
	sed -n '1,8s/^/  > /p' "$T/sref.out"
fi
check "no temporary file left beside the map" \
	test "$(find "$T" -maxdepth 1 -name 'map.svg.*' | wc -l)" -eq 0
check "the map has a colour scale with the verdict's limits" \
	grep -q 'SFT .* 0.01<' "$T/map.svg"
stats_ok "$T/sft/base" "$T/sft/ft1" "$T/sft/ft2" "$T/cpt/ft1"

say "== dtypes: F16 and F32, and a model in another dtype than the base"
mkfix "$T/f16" --models 1 --seed 62 --dtype f16
mkfix "$T/mix" --models 1 --seed 62 --dtypes f32,bf16 --shards 1
stats_ok "$T/f16/base" "$T/f16/ft1"
stats_ok "$T/mix/base" "$T/mix/ft1"
stats_ok "$T/mix/base/model.safetensors" "$T/f16/ft1/model.safetensors.index.json"

say "== windows and I/O backends do not change a figure"
run "$DS_BIN" delta-stats --json "$T/sft/base" "$T/sft/ft1"
cp "$T/stdout" "$T/a.json"
run "$DS_BIN" delta-stats --json --memory 64K --io pread "$T/sft/base" \
	"$T/sft/ft1"
check "--memory 64K --io pread: the same JSON" cmp -s "$T/a.json" "$T/stdout"
run "$DS_BIN" delta-stats --json --memory 1G "$T/sft/base" "$T/sft/ft1"
check "--memory 1G: the same JSON" cmp -s "$T/a.json" "$T/stdout"

say "== NaN and infinity"
mkfix "$T/f32" --models 1 --seed 63 --dtype f32 --shards 1
sref poke "$T/f32/ft1" model.layers.0.mlp.up_proj.weight 3 nan
sref poke "$T/f32/ft1" model.layers.0.mlp.up_proj.weight 5 inf
sref poke "$T/f32/base" model.layers.1.mlp.up_proj.weight 7 nan
stats_ok "$T/f32/base" "$T/f32/ft1"
check "NaN deltas counted apart, an infinite delta is the max" py '
doc = json.load(open(sys.argv[1]))
m = doc["models"][0]
t = {x["name"]: x for x in m["tensors"]}
u0 = t["model.layers.0.mlp.up_proj.weight"]
u1 = t["model.layers.1.mlp.up_proj.weight"]
sys.exit(0 if u0["nan"] == 1 and u0["max"] == "inf" and u1["nan"] == 1 and
         m["overall"]["nan"] == 2 and m["overall"]["max"] == "inf" else 1)' \
	"$T/json.out"
check "the text says NaN deltas were left out" \
	grep -q 'note: 2 NaN deltas' "$T/text.out"

say "== tensors that cannot be compared: warnings, not errors"
mkfix "$T/vocab" --models 1 --seed 64 --extra-vocab 4
run_expect 0 "warning: .*ft1: tensor 'model.embed_tokens.weight' has shape \[260, 64\], the base's \[256, 64\]" \
	"$DS_BIN" delta-stats "$T/vocab/base" "$T/vocab/ft1"
stats_ok "$T/vocab/base" "$T/vocab/ft1"
mkfix "$T/one" --models 1 --seed 65 --shards 1
sref drop "$T/one/ft1/model.safetensors" "$T/dropped.safetensors" \
	model.layers.1.mlp.down_proj.weight
run_expect 0 "warning: .*dropped.safetensors: tensor 'model.layers.1.mlp.down_proj.weight' of the base is missing" \
	"$DS_BIN" delta-stats "$T/one/base" "$T/dropped.safetensors"
stats_ok "$T/one/base" "$T/dropped.safetensors"
check "  ... listed as not compared (missing)" \
	grep -q 'down_proj.weight *not compared (missing)' "$T/text.out"

say "== errors"
run_expect 2 "BASE and at least one MODEL" "$DS_BIN" delta-stats "$T/sft/base"
run_expect 2 "unknown option" "$DS_BIN" delta-stats --bogus "$T/sft/base" \
	"$T/sft/ft1"
run_expect 2 "needs a value" "$DS_BIN" delta-stats "$T/sft/base" \
	"$T/sft/ft1" --svg
run_expect 2 "memory" "$DS_BIN" delta-stats --memory lots "$T/sft/base" \
	"$T/sft/ft1"
run_expect 2 "too small" "$DS_BIN" delta-stats --memory 1K "$T/sft/base" \
	"$T/sft/ft1"
run_expect 3 "error: .*nope" "$DS_BIN" delta-stats "$T/sft/base" "$T/nope"
run_expect 3 "error: .*nope" "$DS_BIN" delta-stats "$T/nope" "$T/sft/ft1"
cp -R "$T/sft/ft1" "$T/short"
py 'f = open(sys.argv[1], "r+b"); f.truncate(os.path.getsize(sys.argv[1]) - 2)' \
	"$T/short/model-00002-of-00002.safetensors"
run_expect 3 "error: .*short/model-00002-of-00002.safetensors" \
	"$DS_BIN" delta-stats "$T/sft/base" "$T/short" --svg "$T/bad.svg"
check "no map after a failed run" test ! -e "$T/bad.svg"
check "  ... and no temporary file" \
	test "$(find "$T" -maxdepth 1 -name 'bad.svg.*' | wc -l)" -eq 0
run_expect 4 "error: --svg .*nodir/x.svg" "$DS_BIN" delta-stats \
	"$T/sft/base" "$T/sft/ft1" --svg "$T/nodir/x.svg"
py 'import struct
h = json.dumps({"x": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}})
h = h.encode() + b" " * (-(8 + len(h)) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + bytes(8))' \
	"$T/ints.safetensors"
run_expect 3 "error: .*ints.safetensors: no tensor of the base could be compared" \
	"$DS_BIN" delta-stats "$T/sft/base" "$T/ints.safetensors"

ds_finish

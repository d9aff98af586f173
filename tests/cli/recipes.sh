#!/bin/sh
# SPDX-License-Identifier: MIT
# recipes.sh - mergekit recipes run unchanged through --config
#
# Recipes written the way model cards write them (our own, covering the
# features of mergekit's examples/): each runs through the CLI and every
# output tensor is checked against an independent expectation: dsref.py
# with the equivalent command line, or slicecheck.py for slices.  Refused
# keys give messages naming the key and the line.  Cases that need the
# engine to take per-tensor parameters and sources (gradients, filters,
# frankenmerges of several models, slerp, passthrough) are in
# recipes-engine.sh.
# Word-list variables are split on purpose; functions run through check
# look unreachable to shellcheck.
# shellcheck disable=SC2086,SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup recipes
need_python

SLICECHECK=${DS_SLICECHECK:-$(dirname "$DS_REF")/slicecheck.py}
FX=$T/fx           # 3 layers, 2 fine-tunes, BF16
FXE=$T/fx-extra    # fine-tunes with 8 added tokens
FXL=$T/fx-40       # 40 layers, per-layer config list
say "== fixtures"
mkfix "$FX" --models 2 --seed 21 --layers 3 --hidden 16 --layer-types
mkfix "$FXE" --models 2 --seed 22 --layers 1 --hidden 16 --extra-vocab 8
mkfix "$FXL" --models 2 --seed 23 --layers 40 --hidden 8 --intermediate 8 \
	--vocab 32 --layer-types
inputs_record "$FX" "$FXE" "$FXL"

n=0
# recipe NAME: the recipe text on stdin becomes $T/NAME.yml.
recipe() { cat >"$T/$1.yml"; }

# merge_ref RECIPE ARGS...: merge the recipe, then dsref.py recomputes
# every tensor from ARGS, the same merge on the command line.
merge_ref() {
	n=$((n + 1))
	out=$T/out$n
	say "== recipe $n: $1"
	ds_merge "$out" --config "$T/$1.yml" || return 1
	shift
	ref_check "$out" "$@"
	ref_validate "$out"
}

# slice_check OUT SPEC: slicecheck.py with the JSON SPEC.
slice_check() {
	printf '%s\n' "$2" >"$T/spec.json"
	if "$PYTHON3" "$SLICECHECK" "$1" "$T/spec.json" >"$T/sc.out" 2>&1; then
		ok "$(tail -n 1 "$T/sc.out")"
	else
		fail "slicecheck of $(basename "$1")"
		sed -n '1,20s/^/  > /p' "$T/sc.out"
	fi
}

# refused NAME CODE PATTERN: the recipe NAME is refused with exit CODE and
# a message matching PATTERN; nothing is written.
refused() {
	say "== refused: $1"
	run_expect "$2" "$3" "$DS_BIN" merge --config "$T/$1.yml" -o "$T/no"
	no_output "$T/no"
}

say "==== methods of today, mergekit's defaults"

recipe linear <<EOF
models:
  - model: $FX/ft1
    parameters:
      weight: 1.0
  - model: $FX/ft2
    parameters:
      weight: 0.5
merge_method: linear
dtype: float16
EOF
merge_ref linear --method linear --base "$FX/ft1" --model "$FX/ft1" \
	--model "$FX/ft2" \
	--weights 1,0.5 --dtype f16

# The base listed among models is the base (it gets no weight of its own);
# int8_mask is accepted and ignored with a notice, not "expected a number".
recipe ta <<EOF
merge_method: task_arithmetic
base_model: $FX/base
models:
  - model: $FX/base
  - model: $FX/ft1
    parameters:
      weight: 0.7
  - model: $FX/ft2
    parameters:
      weight: 0.3
parameters:
  int8_mask: true
  normalize: true
  lambda: 1.5
name: my-task-arithmetic-merge
EOF
merge_ref ta --method task_arithmetic --base "$FX/base" --model "$FX/ft1" \
	--model "$FX/ft2" --weights 0.7,0.3 --normalize --lambda 1.5
stderr_has "int8_mask: a notice naming it" 'int8_mask ignored'
check "int8_mask: no number expected" not grep -q 'expected a number' \
	"$T/stderr"

# A typical DARE-TIES card: densities per model, a global weight,
# rescale: false (mergekit's name for no rescale).
recipe dareties <<EOF
models:
  - model: $FX/ft1
    parameters:
      density: 0.53
  - model: $FX/ft2
    parameters:
      density: 0.7
merge_method: dare_ties
base_model: $FX/base
parameters:
  weight: 0.5
  rescale: false
  int8_mask: True
dtype: bfloat16
EOF
merge_ref dareties --method dare_ties --base "$FX/base" --model "$FX/ft1" \
	--model "$FX/ft2" --weights 0.5,0.5 --densities 0.53,0.7 \
	--rescale none

# A per-model weight wins over the merge-wide one (mergekit's lookup).
recipe nearest <<EOF
merge_method: dare_linear
base_model: $FX/base
models:
  - model: $FX/ft1
    parameters: {weight: 0.25, density: 0.4}
  - model: $FX/ft2
parameters: {weight: 0.8, density: 0.9, rescale: false}
EOF
merge_ref nearest --method dare_linear --base "$FX/base" --model "$FX/ft1" \
	--model "$FX/ft2" --weights 0.25,0.8 --densities 0.4,0.9 \
	--rescale none

# DARE with no density: mergekit's default 1 (nothing dropped), said so.
recipe nodensity <<EOF
merge_method: dare_linear
base_model: $FX/base
models:
  - model: $FX/ft1
    parameters: {weight: 1}
parameters: {rescale: false}
EOF
merge_ref nodensity --method dare_linear --base "$FX/base" \
	--model "$FX/ft1" -p 0 --rescale none
stderr_has "no density: the notice" 'no density: density 1'

say "==== paths: relative to the recipe's directory, HF ids with revisions"
mkdir -p "$T/recipes/sub" "$T/elsewhere"
ln -s "$FX" "$T/recipes/fx"
recipe relpath <<EOF
merge_method: task_arithmetic
base_model: ../fx/base
models:
  - model: ../fx/ft1
    parameters: {weight: 0.5}
  - model: ../fx/ft2
    parameters: {weight: 0.5}
EOF
mv "$T/relpath.yml" "$T/recipes/sub/relpath.yml"
n=$((n + 1))
say "== recipe $n: paths relative to the recipe, run from elsewhere"
if (cd "$T/elsewhere" && "$DS_BIN" merge -q --config ../recipes/sub/relpath.yml \
	-o "$T/out$n") 2>"$T/stderr"; then
	ok "relative paths resolved"
	ref_check "$T/out$n" --method task_arithmetic --base "$FX/base" \
		--model "$FX/ft1" --model "$FX/ft2" --weights 0.5,0.5
else
	fail "relative paths"
	sed -n '1,3s/^/  ! /p' "$T/stderr"
fi

# A fake Hugging Face cache: org/ft1 at refs/main is ft1, an older
# snapshot REV holds ft2's files; @REV picks that snapshot.
hub=$T/hub
REV=2222222222222222222222222222222222222222
hf_cache_add "$hub" org/ft1 "$FX/ft2" "$REV"
hf_cache_add "$hub" org/ft1 "$FX/ft1" 1111111111111111111111111111111111111111
hf_cache_add "$hub" org/base "$FX/base" 3333333333333333333333333333333333333333
recipe hfrev <<EOF
merge_method: task_arithmetic
base_model: org/base
models:
  - model: org/ft1@$REV
    parameters: {weight: 1}
EOF
n=$((n + 1))
say "== recipe $n: org/ft1@REV from the local cache"
if HF_HUB_CACHE=$hub "$DS_BIN" merge -q --config "$T/hfrev.yml" \
	-o "$T/out$n" 2>"$T/stderr"; then
	ok "revision resolved in the cache"
	ref_check "$T/out$n" --method task_arithmetic --base "$FX/base" \
		--model "$FX/ft2"
else
	fail "org/ft1@REV"
	sed -n '1,3s/^/  ! /p' "$T/stderr"
fi
recipe hfmissing <<EOF
merge_method: task_arithmetic
base_model: org/base
models:
  - model: org/ft1@4444444444444444444444444444444444444444
    parameters: {weight: 1}
EOF
say "== refused: a revision not in the cache"
HF_HUB_CACHE=$hub run_expect 3 \
	'hfmissing.yml:4: revision 4+ of org/ft1 is not in the local Hugging Face cache.*huggingface-cli download org/ft1 --revision' \
	"$DS_BIN" merge --config "$T/hfmissing.yml" -o "$T/no"

say "==== tokenizer and chat template"
recipe tokbase <<EOF
merge_method: linear
base_model: $FXE/base
models:
  - model: $FXE/ft1
    parameters: {weight: 1}
  - model: $FXE/ft2
    parameters: {weight: 1}
tokenizer_source: base
EOF
merge_ref tokbase --method linear --base "$FXE/base" --model "$FXE/ft1" \
	--model "$FXE/ft2"
check "tokenizer_source base: the base's tokenizer" cmp -s \
	"$FXE/base/tokenizer.json" "$out/tokenizer.json"

# The fine-tune's tokenizer and its 8 added rows: the base's rows merge as
# usual, the added ones are ft1's.
recipe tokft <<EOF
merge_method: task_arithmetic
base_model: $FXE/base
models:
  - model: $FXE/ft1
    parameters: {weight: 0.5}
  - model: $FXE/ft2
    parameters: {weight: 0.5}
tokenizer:
  source: $FXE/ft1
chat_template: chatml
EOF
n=$((n + 1))
say "== recipe $n: tokenizer source ft1 (8 added tokens), chatml"
if ds_merge "$T/out$n" --quiet --config "$T/tokft.yml"; then
	check "tokenizer.json is ft1's" cmp -s "$FXE/ft1/tokenizer.json" \
		"$T/out$n/tokenizer.json"
	check "embeddings: base rows merged, added rows ft1's; vocab_size" \
		py '
import struct
sys.path.insert(0, os.path.dirname(sys.argv[4]))
import slicecheck as sc
out, b, f1, f2 = (sc.Model(d) for d in sys.argv[1:4] + [sys.argv[5]])
cfg = out.config()
assert cfg["vocab_size"] == 264, cfg["vocab_size"]
assert "im_start" in json.load(open(sys.argv[1] + "/tokenizer_config.json"))["chat_template"]
assert sorted(out.t) == sorted(b.t)
for name in b.order:
    vocab = name in ("model.embed_tokens.weight", "lm_head.weight")
    assert out.t[name][1]["shape"][0] == (264 if vocab else b.t[name][1]["shape"][0])
    bv, x1, x2 = b.values(name), f1.values(name), f2.values(name)
    nb = len(bv)
    ds = [sc.r32([x - y for x, y in zip(x[:nb], bv)]) for x in (x1, x2)]
    acc = sc.linear(ds, [0.5, 0.5], False)
    want = sc.encode("BF16", sc.r32([p + q for p, q in zip(bv, acc)]))
    got = out.raw(name)
    assert got[:2 * nb] == want, name
    assert got[2 * nb:] == f1.raw(name)[2 * nb:], name + " tail"
' "$T/out$n" "$FXE/base" "$FXE/ft1" "$SLICECHECK" "$FXE/ft2"
	ref_validate "$T/out$n"
fi

say "==== slices: layer stacking"
# Each slice merges both fine-tunes; layers 0-2 then 1-2 again: 5 output
# layers, renumbered; config.json's count and layer_types follow.
recipe stack <<EOF
slices:
  - sources:
      - model: $FX/ft1
        layer_range: [0, 3]
      - model: $FX/ft2
        layer_range: [0, 3]
  - sources:
      - model: $FX/ft1
        layer_range: [1, 3]
      - model: $FX/ft2
        layer_range: [1, 3]
merge_method: linear
parameters:
  weight: 0.5
dtype: float32
EOF
n=$((n + 1))
say "== recipe $n: two slices of two models, linear, 3 shards"
if ds_merge "$T/out$n" --quiet --config "$T/stack.yml" --shard-size 20K; then
	slice_check "$T/out$n" '{"method": "linear", "dtype": "F32",
  "shard_size": 20480, "per_layer": ["layer_types"],
  "slices": [{"sources": [{"model": "'"$FX/ft1"'", "range": [0, 3], "weight": 0.5},
                          {"model": "'"$FX/ft2"'", "range": [0, 3], "weight": 0.5}]},
             {"sources": [{"model": "'"$FX/ft1"'", "range": [1, 3], "weight": 0.5},
                          {"model": "'"$FX/ft2"'", "range": [1, 3], "weight": 0.5}]}]}'
	ref_validate "$T/out$n"
	xxh_check "$T/out$n"
	stack=$T/out$n
	n=$((n + 1))
	say "== recipe $n: its dare-stream.yml reruns to identical bytes"
	if ds_merge "$T/out$n" --quiet --config "$stack/dare-stream.yml" \
		--shard-size 20K; then
		check "same shards, index, config and recipe" sh -c '
			for f in "$1"/*; do cmp -s "$f" "$2/$(basename "$f")" || exit 1; done' \
			sh "$stack" "$T/out$n"
	fi
fi

# The base listed alone among models: no fine-tune, the base is the output;
# its dare-stream.yml (an empty models list) reruns to the same bytes.
recipe baseonly <<EOF
merge_method: ties
base_model: $FX/base
models:
  - model: $FX/base
EOF
n=$((n + 1))
say "== recipe $n: only the base among models"
if ds_merge "$T/out$n" --quiet --config "$T/baseonly.yml"; then
	ref list "$T/out$n" | cut -f 1,2,3,6 | sort >"$T/got.list"
	ref list "$FX/base" | cut -f 1,2,3,6 | sort >"$T/want.list"
	check "the output's tensors are the base's bytes" \
		cmp -s "$T/got.list" "$T/want.list"
	check "dare-stream.yml lists no model" \
		grep -qx 'models: \[\]' "$T/out$n/dare-stream.yml"
	one=$T/out$n
	n=$((n + 1))
	if ds_merge "$T/out$n" --quiet --config "$one/dare-stream.yml"; then
		check "its dare-stream.yml reruns to identical bytes" sh -c '
			for f in "$1"/*; do cmp -s "$f" "$2/$(basename "$f")" || exit 1; done' \
			sh "$one" "$T/out$n"
	fi
fi

# A seed with a leading zero is decimal (never octal), 0x is hexadecimal:
# each merges to the bytes of its value given on the command line.
for sd in 010:10 0x1f:31; do
	recipe seed <<EOF
merge_method: dare_linear
base_model: $FX/base
models:
  - model: $FX/ft1
    parameters:
      weight: 1
      density: 0.5
parameters:
  seed: ${sd%%:*}
  rescale: inverse
EOF
	merge_ref seed --method dare_linear -p 0.5 --seed "${sd#*:}" \
		--base "$FX/base" --model "$FX/ft1"
done

# 44 layers out of a 40-layer model: [0, 22) then [18, 40) (the shape of
# mergekit's 44-layer example); one source per slice, linear of one model
# is that model's values; 5 GB shards: one file, no index.
recipe fr44 <<EOF
merge_method: linear
slices:
  - sources:
    - model: $FXL/ft1
      layer_range: [0, 22]
  - sources:
    - model: $FXL/ft1
      layer_range: [18, 40]
parameters:
  weight: 1.0
EOF
n=$((n + 1))
say "== recipe $n: 44 layers from 40"
if ds_merge "$T/out$n" --quiet --config "$T/fr44.yml"; then
	slice_check "$T/out$n" '{"method": "linear", "per_layer": ["layer_types"],
  "slices": [{"sources": [{"model": "'"$FXL/ft1"'", "range": [0, 22], "weight": 1}]},
             {"sources": [{"model": "'"$FXL/ft1"'", "range": [18, 40], "weight": 1}]}]}'
	check "44 layers in config.json" grep -q '"num_hidden_layers": 44' \
		"$T/out$n/config.json"
	ref_validate "$T/out$n"
fi
n=$((n + 1))
say "== recipe $n: the same, 10 shards of 30K with the index"
if ds_merge "$T/out$n" --quiet --config "$T/fr44.yml" --shard-size 30K; then
	slice_check "$T/out$n" '{"method": "linear", "shard_size": 30720,
  "slices": [{"sources": [{"model": "'"$FXL/ft1"'", "range": [0, 22], "weight": 1}]},
             {"sources": [{"model": "'"$FXL/ft1"'", "range": [18, 40], "weight": 1}]}]}'
	ref_validate "$T/out$n"
fi

say "==== --dry-run: each tensor's parameters, gradients and filters resolved"
# Gradients over the 3 layers (x = 0, 0.5, 1), filters on self_attn/mlp,
# a one-element gradient (a constant, as in mergekit), a filter list
# whose fallback is the merge-wide value.
recipe grad <<EOF
merge_method: dare_ties
base_model: $FX/base
models:
  - model: $FX/ft1
    parameters:
      weight:
        - filter: self_attn
          value: [0, 0.5, 0.3, 0.7, 1]
        - filter: mlp
          value: [1, 0.5, 0.7, 0.3, 0]
        - value: 0.5
      density: [0.2, 0.8]
  - model: $FX/ft2
    parameters:
      weight: [0.25]
      density:
        - filter: mlp
          value: 0.3
parameters:
  density: 0.6
  lambda: [1, 2]
EOF
run "$DS_BIN" merge --config "$T/grad.yml" -o "$T/no" --dry-run
check "dry-run prints every tensor" test "$(grep -c '^tensor ' "$T/stdout")" -eq 30
check "gradients and filters resolved as mergekit does" py '
import re
def grad(g, x):
    f = x * (len(g) - 1); i0 = int(f); i1 = min(len(g) - 1, i0 + 1)
    fr = f - i0
    return (1 - fr) * g[i0] + fr * g[i1]
n = 0
for line in open(sys.argv[1]):
    if not line.startswith("tensor "):
        continue
    name = line.split()[1]
    kv = dict(w.split("=", 1) for w in line.split()[3:])
    m = re.search(r"layers\.(\d+)\.", name)
    x = int(m.group(1)) / 2 if m else 0.0
    w0 = (grad([0, 0.5, 0.3, 0.7, 1], x) if "self_attn" in name else
          grad([1, 0.5, 0.7, 0.3, 0], x) if "mlp" in name else 0.5)
    p0 = 1 - grad([0.2, 0.8], x)
    p1 = 1 - (0.3 if "mlp" in name else 0.6)
    want = {"weight": "%r,%r" % (w0, 0.25), "p": "%r,%r" % (p0, p1),
            "lambda": repr(grad([1, 2], x)), "rescale": "l1"}
    assert kv.pop("rescale") == want.pop("rescale")
    for k, v in want.items():
        got = kv[k]
        assert [float(a) for a in got.split(",")] == [float(a) for a in v.split(",")], (name, k, got, v)
    n += 1
assert n == 30
' "$T/stdout"

say "==== refused, each with the key and its line"
recipe typo <<EOF
merge_method: linear
models:
  - model: $FX/ft1
slics:
  - sources: []
EOF
refused typo 3 'typo.yml:4: unknown key .slics. \(mergekit.s keys: merge_method'
recipe modules <<EOF
merge_method: linear
modules:
  text: {}
EOF
refused modules 3 'modules.yml:2: modules .*not supported; use models: or slices:'
recipe method <<EOF
merge_method: frankenmerge
models:
  - model: $FX/ft1
EOF
refused method 2 'method.yml:1: unknown merge_method .frankenmerge. \(methods: linear, task_arithmetic, dare_linear, dare_ties, ties,.*passthrough\)'
recipe union <<EOF
merge_method: linear
models:
  - model: $FX/ft1
    parameters: {weight: 1}
tokenizer_source: union
EOF
refused union 2 'union.yml:5: tokenizer source .union. .*not: use base, or a model'
# A tokenizer whose ids differ from the base's does not extend it.
cp -R "$FXE/ft1" "$T/ft1-badtok"
py 'p = sys.argv[1]; t = json.load(open(p)); t["model"]["vocab"]["<s>"] = 7
json.dump(t, open(p, "w"))' "$T/ft1-badtok/tokenizer.json"
recipe notext <<EOF
merge_method: task_arithmetic
base_model: $FXE/base
models:
  - model: $T/ft1-badtok
    parameters: {weight: 1}
tokenizer_source: $T/ft1-badtok
EOF
refused notext 2 "tokenizer_source .*ft1-badtok: its vocabulary does not extend the base.s \(token '<s>' is another id there\): use tokenizer_source: base"
recipe lora <<EOF
merge_method: linear
models:
  - model: org/model+org/adapter
    parameters: {weight: 1}
EOF
refused lora 3 'org/model: no such file or directory, and not in the Hugging Face cache'
recipe unequal <<EOF
merge_method: linear
slices:
  - sources:
      - model: $FX/ft1
        layer_range: [0, 2]
      - model: $FX/ft2
        layer_range: [0, 3]
parameters: {weight: 1}
EOF
refused unequal 2 'unequal.yml:6: this source spans 3 layers, the slice.s first 2'
recipe past <<EOF
merge_method: linear
slices:
  - sources:
      - model: $FX/ft1
        layer_range: [1, 4]
parameters: {weight: 1}
EOF
refused past 2 'past.yml:4: layer_range \[1, 4\] of .*ft1: the model has 3 layers'
recipe nofallback <<EOF
merge_method: linear
models:
  - model: $FX/ft1
    parameters:
      weight:
        - filter: self_attn
          value: 1
EOF
refused nofallback 2 "no weight for model .*ft1 \(tensor 'model.embed_tokens.weight'\); mergekit's linear needs one"
recipe empty <<EOF
merge_method: linear
models:
  - model: $FX/ft1
    parameters:
      weight: []
EOF
refused empty 3 'empty.yml:5: weight: an empty list'
recipe bare <<EOF
merge_method: linear
models:
  - model: $FX/ft1
    parameters:
      weight: {filter: mlp, value: 1}
EOF
refused bare 3 'bare.yml:5: weight: a filtered value goes in a list'
recipe residual <<EOF
merge_method: linear
slices:
  - sources:
      - model: $FX/ft1
        layer_range: [0, 3]
    residual_weight: 0.5
EOF
refused residual 3 'residual.yml:6: residual_weight is not supported'
recipe tokens <<EOF
merge_method: linear
models:
  - model: $FX/ft1
    parameters: {weight: 1}
tokenizer:
  source: base
  tokens:
    "<x>": {source: $FX/ft1}
EOF
refused tokens 2 'tokens.yml:7: tokenizer: tokens is not supported'
recipe chat <<EOF
merge_method: linear
models:
  - model: $FX/ft1
    parameters: {weight: 1}
chat_template: vicuna
EOF
refused chat 2 "chat.yml:5: chat_template 'vicuna': expected auto, a name"
recipe density <<EOF
merge_method: dare_ties
base_model: $FX/base
models:
  - model: $FX/ft1
    parameters: {weight: 1, density: [0.5, 1.5]}
EOF
refused density 2 'density.yml:5: density 1.5 is outside \[0, 1\]'
recipe both <<EOF
merge_method: linear
models:
  - model: $FX/ft1
slices:
  - sources:
      - model: $FX/ft1
        layer_range: [0, 3]
EOF
refused both 2 'both.yml:1: give the models to merge in exactly one of models: and slices:'
recipe nobase <<EOF
merge_method: task_arithmetic
base_model: $FX/base
slices:
  - sources:
      - model: $FX/ft1
        layer_range: [0, 3]
parameters: {weight: 1}
EOF
refused nobase 2 "nobase.yml:4: task_arithmetic merges against the base: list base_model"
recipe methodparam <<EOF
merge_method: slerp
base_model: $FX/base
models:
  - model: $FX/ft1
    parameters: {t: 0.5}
EOF
refused methodparam 3 'methodparam.yml:5: parameter t belongs to the merge, not to one model'
recipe slicenorm <<EOF
merge_method: linear
slices:
  - sources:
      - model: $FX/ft1
        layer_range: [0, 3]
    parameters: {normalize: false}
EOF
refused slicenorm 3 'slicenorm.yml:6: normalize applies to the whole merge'
recipe rescale <<EOF
merge_method: dare_linear
base_model: $FX/base
models:
  - model: $FX/ft1
    parameters: {weight: 1}
parameters: {rescale: maybe}
EOF
refused rescale 3 'rescale.yml:6: rescale: expected true \(l1, as mergekit\), false \(none\)'

ds_finish

#!/bin/sh
# SPDX-License-Identifier: MIT
# mergekit-examples.sh - recipes shaped like mergekit's examples/, by model id
#
# mergekit's examples/ directory has six recipes: a linear merge of three
# models, two ties merges (density and weight gradients, a weight filter
# list, normalize on and off, int8_mask), a slerp over two 40-layer models
# with t gradients per filter, a 44-layer passthrough frankenmerge of two
# 40-layer models, and an arcee_fusion merge.  Each is written here in our
# own words with the same keys, values and structure, naming its models
# by Hugging Face id; the ids are generated fixtures in a fake local cache,
# so the recipe text runs as a user would run it.  Every output verifies,
# says its dtype in config.json, and every tensor is recomputed by the
# reference (dsref.py at each tensor's resolved parameters, params.py;
# slicecheck.py for the frankenmerge); arcee_fusion is refused by name.
# shellcheck disable=SC2086,SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup mergekit-examples
need_python

SLICECHECK=$(dirname "$DS_REF")/slicecheck.py
FX=$T/fx        # a base and 3 fine-tunes, 5 layers, F16 like the 13B models
FXL=$T/fx-40    # two 40-layer models
say "== fixtures in a fake Hugging Face cache"
mkfix "$FX" --models 3 --seed 71 --layers 5 --hidden 16 --dtype f16
mkfix "$FXL" --models 1 --seed 72 --layers 40 --hidden 8 --intermediate 8 \
	--vocab 32 --dtype f16 --layer-types
HF_HUB_CACHE=$T/hub
export HF_HUB_CACHE
hf_cache_add "$HF_HUB_CACHE" acme/llama2-13b "$FX/base"
hf_cache_add "$HF_HUB_CACHE" acme/orca-mini-13b "$FX/ft1"
hf_cache_add "$HF_HUB_CACHE" acme/platypus2-13b "$FX/ft2"
hf_cache_add "$HF_HUB_CACHE" acme/wizardmath-13b "$FX/ft3"
hf_cache_add "$HF_HUB_CACHE" acme/orca-mini-40l "$FXL/base"
hf_cache_add "$HF_HUB_CACHE" acme/platypus2-40l "$FXL/ft1"
inputs_record "$FX" "$FXL" "$HF_HUB_CACHE"

recipe() { cat >"$T/$1.yml"; }

# example NAME: merge recipe NAME by id (its messages kept in
# $T/NAME.stderr); the output verifies and its config.json says float16.
example() {
	say "== $1"
	ds_merge "$T/$1" --config "$T/$1.yml" || return 1
	cp "$T/stderr" "$T/$1.stderr"
	run_expect 0 "" "$DS_BIN" verify "$T/$1"
	ref_validate "$T/$1"
	check "$1: config.json says torch_dtype float16" py '
c = json.load(open(sys.argv[1] + "/config.json"))
assert c["torch_dtype"] == "float16", c["torch_dtype"]
' "$T/$1"
}

# linear.yml: three models, weights 1, 0.3 and 0.5, no base; mergekit
# normalizes linear merges unless told not to.
recipe linear <<EOF
models:
  - model: acme/orca-mini-13b
    parameters:
      weight: 1.0
  - model: acme/wizardmath-13b
    parameters:
      weight: 0.3
  - model: acme/platypus2-13b
    parameters:
      weight: 0.5
merge_method: linear
dtype: float16
EOF
example linear &&
	ref_check "$T/linear" --method linear --base "$FX/ft1" \
		--model "$FX/ft1" --model "$FX/ft3" --model "$FX/ft2" \
		--weights 1,0.3,0.5 --normalize --dtype f16

# ties.yml: a density gradient, a weight gradient and a weight filter list
# with a fallback, normalize and int8_mask, over a base.
recipe ties <<EOF
models:
  - model: acme/orca-mini-13b
    parameters:
      density: [1, 0.7, 0.1]
      weight: 1.0
  - model: acme/platypus2-13b
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1]
  - model: acme/wizardmath-13b
    parameters:
      density: 0.33
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: acme/llama2-13b
parameters:
  normalize: true
  int8_mask: true
dtype: float16
EOF
if example ties; then
	check "ties: int8_mask is named as ignored" \
		grep -q 'int8_mask ignored' "$T/ties.stderr"
	ref_groups "$T/ties" '{"args": {
  "--densities": [[1, 0.7, 0.1], 0.5, 0.33],
  "--weights": [1.0, [0, 0.3, 0.7, 1], [{"filter": "mlp", "value": 0.5}, {"value": 0}]]}}' \
		--method ties --base "$FX/base" --model "$FX/ft1" \
		--model "$FX/ft2" --model "$FX/ft3" --normalize --dtype f16
	check "ties: the gradients and the filter give a group per layer and more ($ds_groups)" \
		test "$ds_groups" -gt 5
fi

# bio-merge.yml: ties of an instruct model and a domain model, density and
# weight 0.5 each, normalize off, int8_mask.
recipe bio <<EOF
models:
  - model: acme/orca-mini-13b
    parameters:
      density: 0.5
      weight: 0.5
  - model: acme/platypus2-13b
    parameters:
      density: 0.5
      weight: 0.5
merge_method: ties
base_model: acme/llama2-13b
parameters:
  normalize: false
  int8_mask: true
dtype: float16
EOF
example bio &&
	ref_check "$T/bio" --method ties --base "$FX/base" --model "$FX/ft1" \
		--model "$FX/ft2" --densities 0.5,0.5 --weights 0.5,0.5 \
		--no-normalize --dtype f16

# gradient-slerp.yml: one slice of layers 0-40 of two models, the first the
# base, t gradients for self_attn and mlp and 0.5 for the rest.
recipe gslerp <<EOF
slices:
  - sources:
      - model: acme/orca-mini-40l
        layer_range: [0, 40]
      - model: acme/platypus2-40l
        layer_range: [0, 40]
merge_method: slerp
base_model: acme/orca-mini-40l
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5 # the other tensors
dtype: float16
EOF
if example gslerp; then
	ref_groups "$T/gslerp" '{"layers": 40, "args": {"--t": [
  {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
  {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]}}' \
		--method slerp --base "$FXL/base" --model "$FXL/ft1" --dtype f16
	check "gslerp: t takes a value per layer and filter ($ds_groups)" \
		test "$ds_groups" -gt 40
fi

# orcamini-platy-44layer.yml: layers 0-24 of one model, then 20-40 of the
# other, passthrough: 44 layers.
recipe frank44 <<EOF
slices:
  - sources:
    - model: acme/orca-mini-40l
      layer_range: [0, 24]
  - sources:
    - model: acme/platypus2-40l
      layer_range: [20, 40]
merge_method: passthrough
dtype: float16
EOF
example frank44 &&
	printf '%s\n' '{"method": "passthrough", "per_layer": ["layer_types"],
  "slices": [{"sources": [{"model": "'"$FXL/base"'", "range": [0, 24], "weight": 1}]},
             {"sources": [{"model": "'"$FXL/ft1"'", "range": [20, 40], "weight": 1}]}]}' \
		>"$T/frank44.json" &&
	check "frank44: slicecheck (44 layers, names, bytes, config, index)" \
		"$PYTHON3" "$SLICECHECK" "$T/frank44" "$T/frank44.json"

# arcee_fusion.yml: a method dare-stream does not have, refused by name
# with the list of those it has, and nothing written.
recipe fusion <<EOF
models:
  - model: acme/orca-mini-13b
  - model: acme/platypus2-13b
merge_method: arcee_fusion
base_model: acme/orca-mini-13b
dtype: bfloat16
EOF
say "== arcee_fusion"
run_expect 2 "fusion.yml:4: merge_method 'arcee_fusion': mergekit's arcee_fusion is not implemented in dare-stream \(methods: .*slerp" \
	"$DS_BIN" merge --config "$T/fusion.yml" -o "$T/no"
no_output "$T/no"

ds_finish

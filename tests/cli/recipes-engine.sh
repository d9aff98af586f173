#!/bin/sh
# SPDX-License-Identifier: MIT
# recipes-engine.sh - recipes whose tensors differ in parameters or sources
#
# Frankenmerges that take each slice from another model, gradients and
# filters resolved per tensor, slerp with a t gradient per filter over 3
# and 40 layers, and mergekit's default l1 rescale: the pipeline builds
# each tensor's parameters from ds_plan_tparams and reads only its slice's
# models.  Each output is checked against slicecheck.py, the reference
# (dsref.py) or a binary32 recomputation of its own.
# shellcheck disable=SC2086,SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup recipes-engine
need_python

SLICECHECK=${DS_SLICECHECK:-$(dirname "$DS_REF")/slicecheck.py}
FX=$T/fx
FXL=$T/fx-40
say "== fixtures"
mkfix "$FX" --models 2 --seed 31 --layers 3 --hidden 16
mkfix "$FXL" --models 2 --seed 32 --layers 40 --hidden 8 --intermediate 8 \
	--vocab 32 --layer-types
inputs_record "$FX" "$FXL"

recipe() { cat >"$T/$1.yml"; }

slice_check() {
	printf '%s\n' "$2" >"$T/spec.json"
	if "$PYTHON3" "$SLICECHECK" "$1" "$T/spec.json" >"$T/sc.out" 2>&1; then
		ok "$(tail -n 1 "$T/sc.out")"
	else
		fail "slicecheck of $(basename "$1")"
		sed -n '1,20s/^/  > /p' "$T/sc.out"
	fi
}

say "== a 44-layer frankenmerge of two 40-layer models (passthrough)"
recipe frank <<EOF
slices:
  - sources:
    - model: $FXL/ft1
      layer_range: [0, 22]
  - sources:
    - model: $FXL/ft2
      layer_range: [18, 40]
merge_method: passthrough
dtype: bfloat16
EOF
if ds_merge "$T/frank" --quiet --config "$T/frank.yml"; then
	slice_check "$T/frank" '{"method": "passthrough", "per_layer": ["layer_types"],
  "slices": [{"sources": [{"model": "'"$FXL/ft1"'", "range": [0, 22], "weight": 1}]},
             {"sources": [{"model": "'"$FXL/ft2"'", "range": [18, 40], "weight": 1}]}]}'
	ref_validate "$T/frank"
fi

say "== the same with linear (one model per slice, different models)"
recipe franklin <<EOF
slices:
  - sources:
    - model: $FXL/ft1
      layer_range: [0, 22]
  - sources:
    - model: $FXL/ft2
      layer_range: [18, 40]
merge_method: linear
parameters: {weight: 1}
EOF
if ds_merge "$T/franklin" --quiet --config "$T/franklin.yml" --shard-size 40K; then
	slice_check "$T/franklin" '{"method": "linear", "shard_size": 40960,
  "per_layer": ["layer_types"],
  "slices": [{"sources": [{"model": "'"$FXL/ft1"'", "range": [0, 22], "weight": 1}]},
             {"sources": [{"model": "'"$FXL/ft2"'", "range": [18, 40], "weight": 1}]}]}'
fi

# gslerp NAME FIXTURE LAYERS: a slerp of FIXTURE's base and ft1 over all
# LAYERS with t gradients per filter; each tensor's t worked out by
# params.py (layer i of L: x = i/(L-1)), then the reference's slerp of the
# tensors that share a t, to the bit, and the output's config.json.
gslerp() {
	g=$1 fx=$2 L=$3
	recipe "$g" <<EOF
slices:
  - sources:
      - model: $fx/base
        layer_range: [0, $L]
      - model: $fx/ft1
        layer_range: [0, $L]
merge_method: slerp
base_model: $fx/base
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
EOF
	ds_merge "$T/$g" --quiet --config "$T/$g.yml" || return 0
	ref_validate "$T/$g"
	check "$g: config.json keeps $L layers" py '
c = json.load(open(sys.argv[1] + "/config.json"))
assert c["num_hidden_layers"] == int(sys.argv[2]), c["num_hidden_layers"]
' "$T/$g" "$L"
	ref_groups "$T/$g" '{"layers": '"$L"', "args": {"--t": [
  {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
  {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]}}' \
		--base "$fx/base" --model "$fx/ft1" --method slerp
	check "$g: the t gradients give more than 2 values ($ds_groups)" \
		test "$ds_groups" -gt 2
	run_expect 0 "" "$DS_BIN" merge --config "$T/$g.yml" -o "$T/no" \
		--dry-run
}

say "== gradient slerp between the base and ft1, self_attn / mlp filters"
gslerp gslerp "$FX" 3
say "== the same over 40 layers"
gslerp gslerp40 "$FXL" 40

say "== task_arithmetic with a weight gradient, recomputed per layer"
recipe tagrad <<EOF
merge_method: task_arithmetic
base_model: $FX/base
models:
  - model: $FX/ft1
    parameters:
      weight: [0, 1]
  - model: $FX/ft2
    parameters:
      weight:
        - filter: mlp
          value: 0.25
        - value: 0.5
EOF
if ds_merge "$T/tagrad" --quiet --config "$T/tagrad.yml"; then
	check "every tensor: b + w0(x)*d0 + w1(name)*d1 in binary32" py '
import re
sys.path.insert(0, os.path.dirname(sys.argv[1]))
import slicecheck as sc
out, b, f1, f2 = (sc.Model(d) for d in sys.argv[2:6])
for name in b.order:
    m = re.search(r"layers\.(\d+)\.", name)
    x = int(m.group(1)) / 2 if m else 0.0
    ws = [x, 0.25 if "mlp" in name else 0.5]
    bv = b.values(name)
    ds = [sc.r32([v - w for v, w in zip(f.values(name), bv)]) for f in (f1, f2)]
    acc = sc.linear(ds, ws, False)
    want = sc.encode("BF16", sc.r32([p + q for p, q in zip(bv, acc)]))
    assert out.raw(name) == want, name
' "$SLICECHECK" "$T/tagrad" "$FX/base" "$FX/ft1" "$FX/ft2"
	# Its dare-stream.yml keeps the gradient and the filters.
	if ds_merge "$T/tagrad2" --quiet --config "$T/tagrad/dare-stream.yml"; then
		check "rerun: identical shards" sh -c '
			for f in "$1"/*.safetensors; do cmp -s "$f" "$2/$(basename "$f")" || exit 1; done' \
			sh "$T/tagrad" "$T/tagrad2"
	fi
fi

say "== dare_ties with mergekit's default rescale (l1)"
recipe darel1 <<EOF
merge_method: dare_ties
base_model: $FX/base
models:
  - model: $FX/ft1
    parameters: {weight: 0.5, density: 0.5}
  - model: $FX/ft2
    parameters: {weight: 0.5, density: 0.7}
EOF
if ds_merge "$T/darel1" --quiet --config "$T/darel1.yml"; then
	ref_check "$T/darel1" --method dare_ties --base "$FX/base" \
		--model "$FX/ft1" --model "$FX/ft2" --weights 0.5,0.5 \
		--densities 0.5,0.7 --rescale l1
fi

say "== chat_template: auto takes the template most models carry; names"
FXC=$T/fx-chat
mkfix "$FXC" --models 2 --seed 35 --layers 1 --hidden 16
for d in base ft1 ft2; do
	case $d in
	ft2) t='{{ other }} template for one model' ;;
	*) t='  {{ shared }} template of two models  ' ;;
	esac
	py 'c = {"chat_template": sys.argv[2], "model_max_length": 64}
json.dump(c, open(sys.argv[1] + "/tokenizer_config.json", "w"))' \
		"$FXC/$d" "$t"
done
recipe chatauto <<EOF
merge_method: task_arithmetic
base_model: $FXC/base
models:
  - model: $FXC/ft1
    parameters: {weight: 0.5}
  - model: $FXC/ft2
    parameters: {weight: 0.5}
chat_template: auto
EOF
if ds_merge "$T/chatauto" --quiet --config "$T/chatauto.yml"; then
	check "auto: the template two of three models carry, stripped" py '
c = json.load(open(sys.argv[1] + "/tokenizer_config.json"))
assert c["chat_template"] == "{{ shared }} template of two models", c
assert c["model_max_length"] == 64, c
' "$T/chatauto"
fi
sed 's/chat_template: auto/chat_template: llama3/' "$T/chatauto.yml" \
	>"$T/chatl3.yml"
if ds_merge "$T/chatl3" --quiet --config "$T/chatl3.yml"; then
	check "llama3: a Llama 3 template" py '
c = json.load(open(sys.argv[1] + "/tokenizer_config.json"))
t = c["chat_template"]
assert "<|start_header_id|>" in t and "<|eot_id|>" in t, t
assert "add_generation_prompt" in t, t
' "$T/chatl3"
fi
sed 's/chat_template: auto/chat_template: vicuna/' "$T/chatauto.yml" \
	>"$T/chatbad.yml"
run_expect 2 "chat_template 'vicuna': expected auto, a name" \
	"$DS_BIN" merge --config "$T/chatbad.yml" -o "$T/chatbad"
no_output "$T/chatbad"

say "== --shard-size is recorded: rerunning dare-stream.yml gives the shards"
if ds_merge "$T/shards" --quiet --base "$FXC/base" --model "$FXC/ft1" \
	--model "$FXC/ft2" --method ties -p 0.5 --shard-size 20K; then
	check "dare-stream.yml records shard_size 20480" grep -qx \
		'shard_size: 20480' "$T/shards/dare-stream.yml"
	if ds_merge "$T/shards2" --quiet --config "$T/shards/dare-stream.yml"; then
		check "the rerun writes the same files, byte for byte" sh -c '
			cd "$1" && for f in *.safetensors *.json; do
				cmp -s "$f" "$2/$f" || exit 1; done' sh \
			"$T/shards" "$T/shards2"
	fi
fi

ds_finish

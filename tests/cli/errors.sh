#!/bin/sh
# SPDX-License-Identifier: MIT
# errors.sh - bad inputs and options: exit code, message, nothing finished left
#
# Exit codes: 2 usage, 3 invalid or inconsistent input, 4 output refused.
# Every problem is found while planning, so OUT must stay absent or empty
# (no CHECKSUMS.xxh128, no *.safetensors), and inputs never change.
# Word-list variables (ARGS, MERGE, M) are split on purpose; functions
# run through check look unreachable to shellcheck.
# shellcheck disable=SC2086,SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup errors
need_python

E='dare-stream: error:'
FX=$T/fx
say "== fixtures"
mkfix "$FX" --models 2 --seed 31
mkfix "$T/fx-l1" --models 1 --seed 31 --layers 1
mkfix "$T/fx-i128" --models 1 --seed 31 --intermediate 128
mkfix "$T/fx-int" --models 1 --seed 32 --int-tensor
B=$FX/base
F1=$FX/ft1
F2=$FX/ft2

# broken COPY: a copy of the fixture set to break.
broken() {
	cp -R "$FX" "$T/$1"
}
broken fx-dtype
broken fx-offsets
broken fx-trunc
broken fx-hdrlen
broken fx-json
broken fx-unsafe
broken fx-abs
for s in "$T"/fx-dtype/ft1/*.safetensors; do
	st_edit "$s" 'if "model.norm.weight" in h:
    h["model.norm.weight"]["dtype"] = "I16"'
done
st_edit "$T/fx-offsets/ft1/model-00001-of-00002.safetensors" '
t = h["model.layers.0.self_attn.k_proj.weight"]
t["data_offsets"] = [t["data_offsets"][0] + 2, t["data_offsets"][1] + 2]'
py 'p = sys.argv[1]; os.truncate(p, os.path.getsize(p) - 2)' \
	"$T/fx-trunc/ft2/model-00002-of-00002.safetensors"
py 'f = open(sys.argv[1], "r+b"); f.write(b"\xff" * 8)' \
	"$T/fx-hdrlen/base/model-00001-of-00002.safetensors"
py 'f = open(sys.argv[1], "r+b"); f.seek(8); f.write(b"[")' \
	"$T/fx-json/ft1/model-00002-of-00002.safetensors"
unsafe_index() {
	py '
p, bad = sys.argv[1], sys.argv[2]
i = json.load(open(p))
i["weight_map"]["model.layers.0.mlp.up_proj.weight"] = bad
json.dump(i, open(p, "w"), indent=2)' "$1/ft1/model.safetensors.index.json" "$2"
}
unsafe_index "$T/fx-unsafe" ../base/model-00001-of-00002.safetensors
unsafe_index "$T/fx-abs" "$B/model-00001-of-00002.safetensors"
inputs_record "$T"/fx*

n=0
# expect CODE PATTERN MERGE-ARGS...: merge into a fresh OUT fails with CODE,
# stderr matches PATTERN, and OUT holds nothing.
expect() {
	ds_c=$1
	ds_p=$2
	shift 2
	n=$((n + 1))
	out=$T/out$n
	run_expect "$ds_c" "$ds_p" "$DS_BIN" merge -o "$out" "$@"
	no_output "$out"
}

say "== inconsistent inputs (exit 3)"
expect 3 "$E.*model\\.layers\\.1\\." --base "$B" --model "$F1" \
	--model "$T/fx-l1/ft1" --method dare_ties -p 0.5
stderr_has "the message names the model lacking the tensor" 'fx-l1'
expect 3 "$E.*mlp\\.(gate|up|down)_proj" --base "$B" \
	--model "$T/fx-i128/ft1" --method task_arithmetic
stderr_has "the message names the model with the other shape" 'fx-i128'
expect 3 "$E.*model\\.norm\\.weight" --base "$B" \
	--model "$T/fx-dtype/ft1" --model "$F2" --method dare_linear -p 0.5
expect 3 "$E" --base "$B" --model "$F1" --model "$T/nope" --method linear
stderr_has "the message names the missing model" 'nope'

say "== malformed files (exit 3)"
expect 3 "$E.*(model-00001-of-00002|k_proj|offset)" --base "$B" \
	--model "$T/fx-offsets/ft1" --method dare_linear -p 0.5
stderr_has "the message names the broken file" 'fx-offsets'
expect 3 "$E.*(model-00002-of-00002|fx-trunc)" --base "$B" \
	--model "$F1" --model "$T/fx-trunc/ft2" --method dare_ties -p 0.5
expect 3 "$E.*(model-00001-of-00002|fx-hdrlen)" \
	--base "$T/fx-hdrlen/base" --model "$F1" --method linear
expect 3 "$E.*(model-00002-of-00002|fx-json)" --base "$B" \
	--model "$T/fx-json/ft1" --method linear
expect 3 "$E.*(\\.\\./base|unsafe|index)" --base "$B" \
	--model "$T/fx-unsafe/ft1" --method dare_linear -p 0.5
expect 3 "$E.*(model-00001-of-00002|unsafe|index)" --base "$B" \
	--model "$T/fx-abs/ft1" --method dare_linear -p 0.5

say "== base I64 tensor, F64 in the fine-tune: copied from the base, or refused"
cp -R "$T/fx-int" "$T/fx-int64"
for s in "$T"/fx-int64/ft1/*.safetensors; do
	st_edit "$s" 'if "model.position_ids" in h:
    h["model.position_ids"]["dtype"] = "F64"'
done
run "$DS_BIN" merge -o "$T/out-int64" --base "$T/fx-int64/base" \
	--model "$T/fx-int64/ft1" --method dare_linear -p 0.5
case $ds_rc in
0)	a=$(tensor_sum "$T/out-int64" model.position_ids)
	b=$(tensor_sum "$T/fx-int64/base" model.position_ids)
	check "accepted; model.position_ids copied from the base" \
		test "${a:-missing}" = "$b" ;;
3)	ok "refused with exit 3: $(head -n 1 "$T/stderr")"
	no_output "$T/out-int64" ;;
*)	fail "exit $ds_rc (expected 0 with the base's bytes, or 3)"
	show_output ;;
esac

say "== output refused (exit 4)"
run_expect 4 "$E" "$DS_BIN" merge -o "$B/merged" --base "$B" \
	--model "$F1" --method linear
check "nothing created inside the base" test ! -e "$B/merged"
run_expect 4 "$E" "$DS_BIN" merge -o "$F1/sub/dir" --base "$B" \
	--model "$F1" --model "$F2" --method task_arithmetic
check "nothing created inside a fine-tune" test ! -e "$F1/sub"
run_expect 4 "$E" "$DS_BIN" merge -o "$F2" --force --base "$B" \
	--model "$F1" --model "$F2" --method task_arithmetic
say "(the inputs are checked unchanged at the end)"

say "== non-empty OUT: refused without --force, replaced with it"
OUT=$T/nonempty
mkdir "$OUT"
echo keep >"$OUT/notes.txt"
run_expect 4 "$E" "$DS_BIN" merge -o "$OUT" --base "$B" --model "$F1" \
	--model "$F2" --method dare_ties -p 0.9
no_output "$OUT" keep
check "the file already in OUT is untouched" grep -qx keep "$OUT/notes.txt"
if ds_merge "$OUT" --force --base "$B" --model "$F1" --model "$F2" \
	--method dare_ties -p 0.9; then
	ref_check "$OUT" --base "$B" --model "$F1" --model "$F2" \
		--method dare_ties -p 0.9
	xxh_check "$OUT"
	if [ -e "$OUT/notes.txt" ]; then
		say "note: --force kept notes.txt next to the merge"
	else
		say "note: --force replaced the directory (notes.txt gone)"
	fi
fi

say "== usage errors (exit 2)"
M="--base $B --model $F1 --model $F2"
expect 2 "$E" $M --method dare_linear -p 1.5
expect 2 "$E" $M --method dare_linear -p -0.1
expect 2 "$E" $M --method dare_linear -p abc
expect 2 "$E" $M --method linear --weight nan
expect 2 "$E" $M --method linear --weights 1,nan
expect 2 "$E" $M --method task_arithmetic --weight inf
expect 2 "$E" $M --method frobnicate
stderr_has "the message names the unknown method" 'frobnicate'
expect 2 "$E" $M --method linear --weights 1,2,3
expect 2 "$E" $M --method dare_ties --drop-rates 0.5
expect 2 "$E" $M --method dare_ties
expect 2 "$E" $M --method dare_linear
expect 2 "$E" $M -p
expect 2 "$E" $M
expect 2 "$E" $M --method linear --dtype f8
expect 2 "$E" $M --method linear --memory 12Q
expect 2 "$E" $M --method linear --threads many
expect 2 "$E" $M --method linear --rescale l2
expect 2 "$E" $M --method linear --bogus-option
run_expect 2 "$E" "$DS_BIN" merge --base "$B" --model "$F1" --method linear
run_expect 2 "" "$DS_BIN" frobnicate
run_expect 2 "" "$DS_BIN"
expect 2 "$E.*no fine-tuned model" --method linear

say "== a base and no model: the output is the base (DESIGN 5.2)"
run_expect 0 "no model given" "$DS_BIN" merge -o "$T/base-only" \
	--base "$B" --method ties --density 0.5
if have_python; then
	ref list "$T/base-only" >"$T/list.out" && ref list "$B" >"$T/list.base"
	check "every tensor is the base's, byte for byte" \
		cmp -s "$T/list.out" "$T/list.base"
fi

ds_finish

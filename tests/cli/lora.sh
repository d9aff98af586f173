#!/bin/sh
# SPDX-License-Identifier: MIT
# lora.sh - PEFT LoRA adapters as models: BASE+ADAPTER (DESIGN 7.1)
#
# A generated base and PEFT adapters of rank 16 (plain, use_rslora,
# fan_in_fan_out, embeddings and modules_to_save) merged with every kind
# of method, from the command line and from a recipe, each checked to the
# bit against dsref.py, which applies the adapter itself from the files;
# delta-stats against statsref.py; rows split across windows give the
# same bytes; every refused adapter is refused before any output.
# Word-list variables are split on purpose.
# shellcheck disable=SC2086
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup lora
need_python

MKLORA=${DS_MKLORA:-$ds_top/tests/ref/mklora.py}
mklora() {
	"$PYTHON3" "$MKLORA" "$@" || hard_error "mklora.py $* failed"
}

FX=$T/fx
say "== fixture: base, ft1; adapters of rank 16"
mkfix "$FX" --models 1 --seed 9 --hidden 48 --vocab 80 --layers 2
B=$FX/base
mklora "$B" "$T/a1" --seed 1 --alpha 32
mklora "$B" "$T/a2" --seed 2 --alpha 16 --rslora --dtype f32 \
	--targets q_proj,o_proj,up_proj
mklora "$B" "$T/a3" --seed 3 --fan-in-fan-out --dtype f16 \
	--targets k_proj,gate_proj
mklora "$B" "$T/a4" --seed 4 --embed --save lm_head --targets v_proj
inputs_record "$FX"

for m in dare_ties ties linear task_arithmetic; do
	say "== $m: base+a1, base+a2 on the command line"
	ARGS="--base $B --model $B+$T/a1 --model $B+$T/a2 --method $m -p 0.4"
	[ $m = dare_ties ] || ARGS="--base $B --model $B+$T/a1 --model $B+$T/a2 --method $m"
	ds_merge "$T/o-$m" --quiet $ARGS && ref_check "$T/o-$m" $ARGS
done

# The adapted models' W is taken from the base's window when their BASE is
# the base's files (here also through a symlink), and read from a copy of
# the base otherwise: the same bytes either way.
say "== BASE+ADAPTER over a copy of the base and through a symlink"
cp -r "$B" "$T/bcopy"
ln -s "$B" "$T/blink"
for b2 in bcopy blink; do
	ds_merge "$T/o-$b2" --quiet --base "$B" --model "$T/$b2+$T/a1" \
		--model "$T/$b2+$T/a2" --method dare_ties -p 0.4 &&
		check "$b2: the bytes of base+a1, base+a2" sh -c '
			for f in "$1"/*.safetensors; do
				cmp -s "$f" "$2/$(basename "$f")" || exit 1
			done' sh "$T/o-$b2" "$T/o-dare_ties"
done

# The 64th model, the most a merge takes, adapted by a LoRA.
say "== base+a1 as the 64th model"
M63=
for j in $(seq 63); do M63="$M63 --model $FX/ft1"; done
ARGS="--base $B $M63 --model $B+$T/a1 --method dare_ties -p 0.5"
ds_merge "$T/o-64" --quiet --memory 128M $ARGS && ref_check "$T/o-64" $ARGS

say "== fan_in_fan_out, embeddings and modules_to_save, with a full model"
ARGS="--base $B --model $B+$T/a3 --model $B+$T/a4 --model $FX/ft1 --method dare_ties --densities 0.7,0.5,0.9 --seed 77"
ds_merge "$T/o-mix" --quiet $ARGS && ref_check "$T/o-mix" $ARGS

say "== the adapter is really applied: base+a1 differs from the base"
if ref check "$T/o-dare_ties" --base "$B" --model "$B" --model "$B+$T/a2" \
	--method dare_ties -p 0.4 >/dev/null 2>&1; then
	fail "the merge of base+a1 matches a merge of the base itself"
else
	ok "base+a1 is not the base"
fi

say "== a recipe: model: BASE+ADAPTER, relative to the recipe"
cat >"$T/r.yml" <<EOR
merge_method: task_arithmetic
base_model: fx/base
models:
  - model: fx/base+a1
    parameters: {weight: 0.7}
  - model: fx/base+a3
    parameters: {weight: 0.4}
EOR
(cd / && "$DS_BIN" merge --config "$T/r.yml" -o "$T/o-recipe" --quiet) \
	>"$T/stdout" 2>"$T/stderr"
check "recipe merge exits 0" test $? -eq 0
ref_check "$T/o-recipe" --base "$B" --model "$B+$T/a1" --model "$B+$T/a3" \
	--method task_arithmetic --weights 0.7,0.4
check "dare-stream.yml records BASE+ADAPTER" \
	grep -q "model: \"$B+$T/a1\"" "$T/o-recipe/dare-stream.yml"
run "$DS_BIN" merge --config "$T/o-recipe/dare-stream.yml" -o "$T/o-rerun" --quiet
check "rerun from dare-stream.yml exits 0" test "$ds_rc" -eq 0
for f in "$T"/o-recipe/*.safetensors; do
	check "rerun: $(basename "$f") identical" cmp -s "$f" "$T/o-rerun/$(basename "$f")"
done

for m in dare_ties ties linear; do
	say "== $m from a recipe"
	cat >"$T/r-$m.yml" <<EOR
merge_method: $m
base_model: $B
parameters: {density: 0.6}
models:
  - model: $B+$T/a2
    parameters: {weight: 0.5}
  - model: $B+$T/a4
    parameters: {weight: 1.5}
EOR
	run "$DS_BIN" merge --config "$T/r-$m.yml" -o "$T/o-r-$m" --quiet
	check "$m recipe merge exits 0" test "$ds_rc" -eq 0
	# a recipe's DARE rescales by l1, as mergekit's rescale: true
	case $m in
	linear) X= ;;
	ties) X="--density 0.6" ;;
	*) X="--density 0.6 --rescale l1" ;;
	esac
	ref_check "$T/o-r-$m" --base "$B" --model "$B+$T/a2" \
		--model "$B+$T/a4" --method $m --weights 0.5,1.5 $X
done

say "== rows split across windows: same bytes at every --memory and path"
mkfix "$T/big" --models 1 --seed 5 --hidden 176 --intermediate 400 \
	--vocab 64 --layers 1 --shards 1
BB=$T/big/base
mklora "$BB" "$T/ab1" --seed 6 --targets down_proj,up_proj
mklora "$BB" "$T/ab2" --seed 7 --fan-in-fan-out --targets down_proj,o_proj
BIG="--base $BB --model $BB+$T/ab1 --model $BB+$T/ab2 --method dare_ties -p 0.3"
ds_merge "$T/w-big" --quiet $BIG --threads 1
for mt in 4M/2 3M/1 4M/2/scalar; do
	mem=${mt%%/*}
	rest=${mt#*/}
	thr=${rest%%/*}
	kern=
	case $mt in */scalar) kern=scalar ;; esac
	DARE_STREAM_KERNEL=$kern ds_merge "$T/w-$mem-$thr$kern" --quiet $BIG \
		--memory "$mem" --threads "$thr"
	check "--memory $mem --threads $thr${kern:+ $kern}: identical bytes" \
		cmp -s "$T/w-big/model.safetensors" \
		"$T/w-$mem-$thr$kern/model.safetensors"
done
ref_check "$T/w-4M-2" $BIG

# At p >= 0.5 a DARE merge takes an adapted model's kept elements only:
# the mask first, then the row update of just those (pipeline.c,
# ds_lora_kept), tile by tile when W is the base's window and row by row
# when W is read into the model's own (a copy of the base).  Ranks that
# are not a multiple of 8 leave part of the last 8 of each column unused.
# Rank 100 makes column tiles of 144 (the 16384 floats of a tile of v
# over 104 a column, in 16s), so rows of 176 and 400 span 2 and 3 tiles,
# the last of each partial.
say "== p >= 0.5: only the kept elements, every rank, W in place or not"
mklora "$BB" "$T/ab5" --seed 8 --r 5 --targets down_proj,up_proj
mklora "$BB" "$T/ab12" --seed 9 --r 12 --fan-in-fan-out --dtype f16 \
	--targets down_proj,q_proj
mklora "$BB" "$T/ab100" --seed 10 --r 100 --targets down_proj,up_proj
cp -r "$BB" "$T/bbcopy"
for kv in "dare_ties -p 0.9" "dare_linear -p 0.5 --seed 3" \
	"dare_ties --densities 0.1,0.3,0.45,0.2 --lambda 0.5"; do
	K="--base $BB --model $BB+$T/ab1 --model $T/bbcopy+$T/ab5 --model $BB+$T/ab12 --model $T/bbcopy+$T/ab100 --method $kv"
	tag=$(echo "$kv" | tr -c 'a-z0-9\n' _)
	ds_merge "$T/k-$tag" --quiet $K --threads 1 && ref_check "$T/k-$tag" $K
	for mt in 6M/2 5M/1/scalar; do
		mem=${mt%%/*}
		rest=${mt#*/}
		thr=${rest%%/*}
		kern=
		case $mt in */scalar) kern=scalar ;; esac
		DARE_STREAM_KERNEL=$kern ds_merge "$T/k-$tag-$mem$kern" --quiet \
			$K --memory "$mem" --threads "$thr"
		check "$kv, --memory $mem${kern:+ $kern}: identical bytes" \
			cmp -s "$T/k-$tag/model.safetensors" \
			"$T/k-$tag-$mem$kern/model.safetensors"
	done
done

say "== delta-stats BASE BASE+ADAPTER against statsref.py"
SREF=${DS_STATSREF:-$ds_top/tests/ref/statsref.py}
run "$DS_BIN" delta-stats --json "$B" "$B+$T/a1" "$B+$T/a4"
cp "$T/stdout" "$T/stats.json"
if [ "$ds_rc" -eq 0 ] && "$PYTHON3" "$SREF" check "$T/stats.json" "$B" \
	"$B+$T/a1" "$B+$T/a4" >"$T/sref.out" 2>&1; then
	ok "delta-stats: $(tail -n 1 "$T/sref.out")"
else
	fail "delta-stats against statsref.py (exit $ds_rc)"
	sed -n '1,12s/^/  > /p' "$T/sref.out"
fi

# refused NAME PATTERN MKLORA-ARGS...: the adapter is refused, no output.
refused() {
	name=$1
	pat=$2
	shift 2
	rm -rf "$T/bad"
	mklora "$B" "$T/bad" "$@"
	run_expect 3 "$pat" "$DS_BIN" merge -o "$T/o-bad" --base "$B" \
		--model "$B+$T/bad" --model "$FX/ft1" --method dare_ties -p 0.5 &&
		ok "refused: $name"
	no_output "$T/o-bad"
}

say "== refusals, before any output"
refused "DoRA (use_dora)" "DoRA" --config use_dora=true
refused "DoRA magnitude" "lora_magnitude_vector'.*DoRA" \
	--extra base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector:48
refused "not a LoRA" 'peft_type is IA3, expected "LORA"' --config peft_type='"IA3"'
refused "rank_pattern" "rank_pattern" --config 'rank_pattern={"q_proj": 8}'
refused "alpha_pattern" "alpha_pattern" --config 'alpha_pattern={"q_proj": 8}'
refused "r differs from the config" \
	"lora_A.weight' has shape \[16, [0-9]+\], expected \[8, " --config r=8
refused "rank mismatch of A" \
	"q_proj.lora_A.weight' has shape \[17, 48\], expected \[16, 48\]" \
	--bad-rank q_proj
refused "missing B" "q_proj.lora_A.weight' has no .*q_proj.lora_B.weight" \
	--drop base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight
refused "missing A" "v_proj.lora_B.weight' has no .*v_proj.lora_A.weight" \
	--drop base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight
refused "a tensor the base lacks" \
	"'model.layers.7.mlp.up_proj.weight', which the base" \
	--extra base_model.model.model.layers.7.mlp.up_proj.lora_A.weight:16x48 \
	--extra base_model.model.model.layers.7.mlp.up_proj.lora_B.weight:144x16
refused "a non-2-D target" "norm.weight' of the base has 1 dimensions" \
	--extra base_model.model.model.norm.lora_A.weight:16x48 \
	--extra base_model.model.model.norm.lora_B.weight:48x16
refused "lora_B bias" "lora_B.bias': not a LoRA factor" \
	--extra base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias:48
refused "lora_bias in the config" "lora_bias" --config lora_bias=true
refused "a replacement of the wrong shape" "lm_head.weight' has shape \[3, 3\]" \
	--extra base_model.model.lm_head.weight:3x3

say "== an adapter whose factors do not fit --memory"
rm -rf "$T/bad"
mklora "$B" "$T/bad" --r 4096 --targets down_proj
run_expect 2 "too small for the LoRA adapter of .*bad: its factors need [0-9]+ bytes per thread" \
	"$DS_BIN" merge -o "$T/o-bad" --base "$B" --model "$B+$T/bad" \
	--method task_arithmetic --memory 4M --threads 1 && ok "refused: factors beyond --memory"
no_output "$T/o-bad"

rm -rf "$T/bad"
mkdir "$T/bad"
run_expect 3 "no adapter_config.json" "$DS_BIN" merge -o "$T/o-bad" \
	--base "$B" --model "$B+$T/bad" --method linear && ok "refused: not an adapter directory"
no_output "$T/o-bad"
run_expect 2 "cannot be the base" "$DS_BIN" merge -o "$T/o-bad" \
	--base "$B+$T/a1" --model "$FX/ft1" --method ties && ok "refused: LoRA as --base"
no_output "$T/o-bad"

inputs_verify "$FX"
ds_finish

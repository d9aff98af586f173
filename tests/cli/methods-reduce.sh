#!/bin/sh
# SPDX-License-Identifier: MIT
# methods-reduce.sh - the methods of DESIGN 5.1 and 5.2, bit-exact against dsref.py
#
# ties, breadcrumbs, breadcrumbs_ties, della, della_linear, slerp, nuslerp,
# model_stock, sce, karcher, passthrough and --rescale l1: each case merges
# generated fixtures with the CLI, then the independent reference recomputes
# every output tensor (0 ULP allowed), checks the directory's format rules
# and xxh128sum -c verifies it.  Then the methods with a per-tensor
# reduction must give the same bytes for every --threads and --memory.
# Word-list variables (IN, ARGS) are split on purpose; functions run
# through check look unreachable to shellcheck.
# shellcheck disable=SC2086,SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup methods-reduce
need_python

FXM=$T/fx-mixed    # base BF16, ft1 F16, ft2 F32
FX3=$T/fx-three    # base BF16, ft1 F16, ft2 F32, ft3 BF16
FXW=$T/fx-wide     # like fx-three, tensors of 65536-262144 elements
say "== fixtures"
# One layer keeps the reference (plain Python) fast.
mkfix "$FXM" --models 2 --seed 41 --layers 1 --dtypes bf16,f16,f32
mkfix "$FX3" --models 3 --seed 42 --layers 1 --dtypes bf16,f16,f32,bf16
# Several 65536-element blocks per tensor: the binary64 block rule and
# window edges inside reductions.
mkfix "$FXW" --models 3 --seed 43 --layers 1 --hidden 256 --vocab 1024 \
	--dtypes bf16,f16,f32,bf16
inputs_record "$FXM" "$FX3" "$FXW"

# Inputs, split on purpose.
B2="--base $FXM/base --model $FXM/ft1 --model $FXM/ft2"
B1="--base $FXM/base --model $FXM/ft1"
M2="--model $FXM/ft1 --model $FXM/ft2"
M1="--model $FXM/ft1"
B3="--base $FX3/base --model $FX3/ft1 --model $FX3/ft2 --model $FX3/ft3"
M3="--model $FX3/ft1 --model $FX3/ft2 --model $FX3/ft3"
W3="--base $FXW/base --model $FXW/ft1 --model $FXW/ft2 --model $FXW/ft3"
W1="--base $FXW/base --model $FXW/ft1"
# The tensors of FXW that span several blocks and windows.
WIDE="--only model.embed_tokens.weight --only lm_head.weight
--only model.layers.0.mlp.down_proj.weight"

n=0
# case_ INPUTS ARGS...: merge INPUTS with ARGS, then the reference with the
# same inputs and ARGS (dsref.py check takes the options of dare-stream
# merge).
case_() {
	in=$1
	shift
	n=$((n + 1))
	out=$T/out$n
	say "== case $n: $*"
	ds_merge "$out" --quiet $in "$@" || return 1
	ref_check "$out" $in "$@"
	ref_validate "$out"
	xxh_check "$out"
}

# same_tensors A B: the same tensors (name, dtype, shape, sha256 of the
# bytes), whatever the shard names.
same_tensors() {
	ref list "$1" | cut -f 1-3,6 >"$T/list.a" &&
		ref list "$2" | cut -f 1-3,6 >"$T/list.b" &&
		cmp -s "$T/list.a" "$T/list.b"
}

same_shards() {
	for ds_f in "$1"/*.safetensors; do
		cmp -s "$ds_f" "$2/$(basename "$ds_f")" || return 1
	done
}

say "== ties (magnitude top-k + sign consensus, normalize on)"
case_ "$B2" --method ties -p 0.9
case_ "$B2" --method ties --density 0.3
case_ "$B2" --method ties --densities 0.2,0.6 --weights 0.7,0.3
case_ "$B2" --method ties --density 0.5 --rescale l1
case_ "$B2" --method ties -p 0.7 --rescale l1 --no-normalize --lambda 1.5
case_ "$B3" --method ties --density 0.4 --dtype f32

# passes_of INPUTS ARGS...: the pass lists --dry-run states for the
# merged tensors, each once.
passes_of() {
	po_in=$1
	shift
	"$DS_BIN" merge --dry-run -o "$T/plan" $po_in "$@" |
		awk '$1 == "tensor" && $3 == "merge" { print $4 }' | sort -u |
		tr '\n' ' '
}
# The writing pass decides where a cut falls among equal keys; a sums
# pass that needs the kept elements has the count_eq pass before it.
check "ties: --dry-run states hist_hi, hist_lo, write" \
	test "$(passes_of "$B2" --method ties -p 0.9)" = \
	"passes=hist_hi,hist_lo,write "
check "ties --rescale l1: count_eq and sums before write" \
	test "$(passes_of "$B2" --method ties -p 0.9 --rescale l1)" = \
	"passes=hist_hi,hist_lo,count_eq,sums,write "

say "== breadcrumbs, breadcrumbs_ties (outliers)"
case_ "$B2" --method breadcrumbs --density 0.3
case_ "$B2" --method breadcrumbs --density 0.4 --gamma 0.05 --dtype f16
case_ "$B2" --method breadcrumbs -p 0.6 --gammas 0.01,0.2 --rescale l1
case_ "$B2" --method breadcrumbs_ties --density 0.5 --gamma 0.1
case_ "$B2" --method breadcrumbs_ties --densities 0.3,0.5 --gamma 0.02 \
	--normalize --rescale l1
case_ "$B2" --method breadcrumbs --density 1 --gamma 0.3
bc=$out
case_ "$B2" --method task_arithmetic
check "breadcrumbs --density 1 keeps every delta: task_arithmetic's bytes" \
	same_shards "$bc" "$out"

say "== della, della_linear (rank-dependent keep probability)"
case_ "$B2" --method della --density 0.4 --epsilon 0.1
case_ "$B2" --method della --density 0.5 --epsilons 0.2,0.3 --rescale l1
case_ "$B2" --method della --density 0.6 --rescale none --seed 7
case_ "$B2" --method della_linear --density 0.4 --epsilon 0.15
case_ "$B2" --method della_linear -p 0.6 --epsilon 0.25 --rescale l1 \
	--weights 0.6,0.4 --normalize
case_ "$B3" --method della_linear --densities 0.3,0.5,0.7 --epsilon 0.1 \
	--seed 0x123456789abcdef0 --dtype f32
case_ "$B2" --method della_linear --density 0.5 --epsilon 0 --seed 9
de=$out
case_ "$B2" --method dare_linear --density 0.5 --seed 9
check "della_linear epsilon 0 is dare_linear with p = 1 - density" \
	same_shards "$de" "$out"

say "== --rescale l1 with DARE"
case_ "$B2" --method dare_ties -p 0.9 --rescale l1
case_ "$B2" --method dare_linear --drop-rates 0.3,0.8 --rescale l1

say "== slerp (base and one model)"
case_ "$B1" --method slerp --t 0.3
case_ "$B1" --method slerp
case_ "$B1" --method slerp --t 0
case_ "$B1" --method slerp --t 1 --dtype f32

say "== nuslerp (two models, t = w1 / (w0 + w1))"
case_ "$B2" --method nuslerp --weights 0.3,0.7
case_ "$M2" --method nuslerp --weights 0.3,0.7
case_ "$M2" --method nuslerp --weights 1,1 --dtype bf16
case_ "$B2" --method nuslerp --weights 0.6,0.4 --no-nuslerp-flatten
case_ "$M2" --method nuslerp --weights 0.6,0.4 --no-nuslerp-flatten \
	--nuslerp-row-wise
case_ "$B2" --method nuslerp --weights 2,1 --no-nuslerp-flatten \
	--nuslerp-row-wise

say "== model_stock (base and two or more models)"
case_ "$B2" --method model_stock
case_ "$B3" --method model_stock
case_ "$B3" --method model_stock --filter-wise --dtype f16

say "== sce"
case_ "$B3" --method sce
case_ "$B3" --method sce --select-topk 0.5
case_ "$B2" --method sce --select-topk 0.5 --dtype f32

say "== karcher (models only; a base gives only the layout)"
case_ "$M3" --method karcher
case_ "$M2" --method karcher --max-iter 3 --tol 1e-3
case_ "$B3" --method karcher

say "== passthrough (one model)"
case_ "$M1" --method passthrough
check "passthrough --scale 1: every tensor is ft1's, byte for byte" \
	same_tensors "$out" "$FXM/ft1"
case_ "$M1" --method passthrough --scale 2
case_ "$B1" --method passthrough --scale 0.5

say "== reductions over several blocks (tensors of up to 262144 elements)"
for args in "--method ties --density 0.3 --rescale l1" \
	"--method ties --density 0.3" \
	"--method breadcrumbs_ties --density 0.4 --gamma 0.05" \
	"--method della --density 0.5 --epsilon 0.2 --rescale l1" \
	"--method model_stock --filter-wise" "--method model_stock" \
	"--method sce --select-topk 0.5" "--method karcher"; do
	n=$((n + 1))
	out=$T/out$n
	say "== case $n: wide $args"
	ds_merge "$out" --quiet $W3 $args || continue
	ref_check "$out" $W3 $args $WIDE
done
n=$((n + 1))
out=$T/out$n
say "== case $n: wide slerp"
if ds_merge "$out" --quiet $W1 --method slerp --t 0.3; then
	ref_check "$out" $W1 --method slerp --t 0.3 $WIDE
fi

# small_memory THREADS INPUTS ARGS...: the smallest of a few budgets the
# plan accepts (a 2M budget holds too few windows for four inputs).
small_memory() {
	sm_thr=$1
	sm_in=$2
	shift 2
	for sm in 2M 3M 4M 5M 6M 8M 12M 16M; do
		if "$DS_BIN" merge --dry-run -o "$T/plan" $sm_in --memory "$sm" \
			--threads "$sm_thr" "$@" >/dev/null 2>&1; then
			echo "$sm"
			return 0
		fi
	done
	echo 64M
}

# invariant TAG INPUTS ARGS...: the same bytes for --threads 1 and 2 and
# for a small --memory (several windows per tensor) and 256M.
invariant() {
	tag=$1
	in=$2
	shift 2
	first=
	for thr in 1 2; do
		small=$(small_memory "$thr" "$in" "$@")
		for mem in "$small" 256M; do
			out=$T/inv-$tag-$thr-$mem
			say "== $tag: --threads $thr --memory $mem"
			ds_merge "$out" --quiet $in --threads "$thr" \
				--memory "$mem" "$@" || continue
			if [ -z "$first" ]; then
				first=$out
			else
				check "$tag: $(basename "$out") has the shards of $(basename "$first")" \
					same_shards "$first" "$out"
			fi
		done
	done
}

say "== same bytes for every --threads and --memory"
invariant ties "$W3" --method ties --density 0.3 --rescale l1
invariant ties-write "$W3" --method ties --density 0.3
invariant breadcrumbs "$W3" --method breadcrumbs --density 0.4 --gamma 0.05
invariant della "$W3" --method della --density 0.5 --epsilon 0.2 --rescale l1
invariant della-inverse "$W3" --method della_linear --density 0.4
invariant slerp "$W1" --method slerp --t 0.3
invariant model_stock "$W3" --method model_stock
invariant model_stock-rows "$W3" --method model_stock --filter-wise

ds_finish

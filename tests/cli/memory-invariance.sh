#!/bin/sh
# SPDX-License-Identifier: MIT
# memory-invariance.sh - output bytes do not depend on --memory, --threads, kernel
#
# DESIGN 3: identical bytes for every --threads, --memory (so window size),
# I/O backend and kernel path.  Tensors of up to 262144 elements (several
# 65536-element blocks; several windows at 2M and 4M, one at 16M and up)
# make window edges fall inside tensors.
# Word-list variables (ARGS, MERGE, M) are split on purpose; functions
# run through check look unreachable to shellcheck.
# shellcheck disable=SC2086,SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup memory-invariance

FX=$T/fx
say "== fixture: hidden 256, vocab 1024 (embed_tokens 262144 elements)"
mkfix "$FX" --models 2 --seed 21 --hidden 256 --vocab 1024 --layers 2
inputs_record "$FX"

MERGE="--base $FX/base --model $FX/ft1 --model $FX/ft2"

# runs SETTINGS METHOD-ARGS: merge with each MEMORY/THREADS[/scalar][/pread]
# of SETTINGS and compare everything with the first run.
runs() {
	first=
	settings=$1
	shift
	for mt in $settings; do
		mem=${mt%%/*}
		rest=${mt#*/}
		thr=${rest%%/*}
		kern=
		io=
		case $mt in */scalar*) kern=scalar ;; esac
		case $mt in */pread) io=pread ;; esac
		out=$T/out-$tag-$mem-$thr${kern:+-$kern}${io:+-$io}
		say "== $tag: --memory $mem --threads $thr${io:+ --io $io}${kern:+ DARE_STREAM_KERNEL=$kern}"
		if [ -n "$kern" ]; then
			DARE_STREAM_KERNEL=$kern
			export DARE_STREAM_KERNEL
		fi
		ds_merge "$out" --quiet $MERGE --memory "$mem" --threads "$thr" \
			${io:+--io $io} "$@"
		st=$?
		# The plan line shows the window size (information only).
		"$DS_BIN" merge --dry-run -o "$T/plan" $MERGE --memory "$mem" \
			--threads "$thr" ${io:+--io $io} "$@" 2>&1 | tail -n 1 |
			sed 's/^/  /'
		unset DARE_STREAM_KERNEL
		[ "$st" -eq 0 ] || continue
		xxh_check "$out"
		if [ -z "$first" ]; then
			first=$out
			continue
		fi
		compare_dirs "$first" "$out"
	done
}

# Shards, index and checksums must be identical.  dare-stream.yml is left
# out of the comparison: it may record the output path and settings.
compare_dirs() {
	same=yes
	for f in "$1"/*.safetensors "$1"/model.safetensors.index.json; do
		[ -e "$f" ] || continue
		if ! cmp "$f" "$2/$(basename "$f")"; then
			same=no
		fi
	done
	grep -v ' dare-stream.yml$' "$1/CHECKSUMS.xxh128" >"$T/ck.a"
	grep -v ' dare-stream.yml$' "$2/CHECKSUMS.xxh128" >"$T/ck.b"
	if ! cmp -s "$T/ck.a" "$T/ck.b"; then
		diff "$T/ck.a" "$T/ck.b" | sed -n '1,6s/^/  /p'
		same=no
	fi
	if [ "$same" = yes ]; then
		ok "$(basename "$2") identical to $(basename "$1")"
	else
		fail "$(basename "$2") differs from $(basename "$1")"
	fi
}

ALL="2M/1 2M/2 4M/1 4M/2 16M/1 16M/2 256M/1 256M/2 16M/2/scalar 4M/2/pread
16M/1/scalar/pread"
tag=dare_ties
runs "$ALL" --method dare_ties -p 0.9 --seed 5
ties=$first
# F32 output needs larger windows buffers: 2M is refused, start at 3M.
tag=linear-f32
runs "3M/1 4M/2 16M/1 16M/2 256M/2 16M/2/scalar 4M/2/pread" \
	--method dare_linear -p 0.5 --dtype f32 --weights 0.6,0.4

if have_python; then
	say "== reference on the tensors spanning several windows"
	ref_check "$ties" $MERGE --method dare_ties -p 0.9 --seed 5 \
		--only model.embed_tokens.weight \
		--only model.layers.1.mlp.down_proj.weight
	ref_validate "$ties"
else
	say "skip reference check (no python3)"
fi

ds_finish

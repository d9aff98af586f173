#!/bin/sh
# SPDX-License-Identifier: MIT
# lora.sh - a LoRA merge (base + 2 rank-16 adapters via +) against its I/O floor
#
# Not a test.  For each size of SIZES, generates a synthetic Llama-shaped
# BF16 base (tests/mkfixture, SIZE bytes) and two PEFT adapters of rank R
# on every linear layer (tests/ref/mklora.py) outside the repository, then
# measures, in one run of this script:
#   - peak RSS (/usr/bin/time -v) of
#       dare-stream merge --method dare_ties -p 0.9 --base B
#           --model B+A1 --model B+A2
#     at each size, so that flatness can be read off;
#   - at each size, its wall time with caches dropped before each run
#     (median of RUNS), and the ratio to the I/O floors (contrib/bench/
#     iofloor) of its bytes: the base and both adapter files read once
#     (the three models share the base's pages), the output written and
#     fsynced; sequential and pipelined (one reader per input file).
# Cold runs need root (/proc/sys/vm/drop_caches); without it the runs are
# warm and the table says so.  Results go to stdout as a Markdown table;
# the files are removed at the end (KEEP=1 keeps them).
#
# Usage: contrib/bench/lora.sh [BUILD_DIR]   (default: build)
# Environment: SIZES ("2G 6G": 1G and 3G BF16 elements), RUNS (3), R (16),
# MEMORY (default budget unless set), BENCH_DIR (/var/tmp/dare-stream-lora),
# PYTHON3 (python3).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
SIZES=${SIZES:-2G 6G}
RUNS=${RUNS:-3}
R=${R:-16}
BENCH_DIR=${BENCH_DIR:-/var/tmp/dare-stream-lora}
PYTHON3=${PYTHON3:-python3}
DS=$build/dare-stream
IOFLOOR=$build/contrib/bench/iofloor
TARGETS=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj

make -s -C "$build" dare-stream tests/mkfixture contrib/bench/iofloor \
	>/dev/null
mkdir -p "$BENCH_DIR"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$BENCH_DIR"' EXIT

say() { echo "lora-bench: $*" >&2; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", a / b }'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'; }
size() { stat -c %s "$@" | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
if [ -w /proc/sys/vm/drop_caches ]; then
	cache=cold
	drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
else
	cache=warm
	drop() { :; }
fi

# merge DIR [OPTION...]: the measured merge into $BENCH_DIR/out; under
# /usr/bin/time -v into the file TIMEV when set
TIMEV=
merge() {
	d=$1
	shift
	${TIMEV:+/usr/bin/time -v -o "$TIMEV"} "$DS" merge --method dare_ties -p 0.9 ${MEMORY:+--memory "$MEMORY"} \
		--base "$d/base" --model "$d/base+$d/a1" \
		--model "$d/base+$d/a2" -o "$BENCH_DIR/out" "$@"
}

rows=
for s in $SIZES; do
	d=$BENCH_DIR/m$s
	say "generating a base of $s and two rank-$R adapters in $d"
	[ -d "$d/base" ] || { "$build/tests/mkfixture" --size "$s" --shards 4 \
		--models 1 --dtype bf16 --seed 1 "$d" >/dev/null &&
		rm -rf "$d/ft1"; }
	for a in 1 2; do
		[ -d "$d/a$a" ] || "$PYTHON3" "$top/tests/ref/mklora.py" \
			"$d/base" "$d/a$a" --seed "$a" --r "$R" --fast \
			--targets "$TARGETS"
	done
	in=$(size "$d"/base/*.safetensors "$d"/a1/adapter_model.safetensors \
		"$d"/a2/adapter_model.safetensors)
	out_bytes=$(size "$d"/base/*.safetensors)
	merge "$d" --dry-run 2>&1 | grep '^plan:' | sed 's/^/  /' >&2 || true
	rm -rf "$BENCH_DIR/out"
	TIMEV=$BENCH_DIR/timev
	merge "$d" -q
	TIMEV=
	rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' \
		"$BENCH_DIR/timev")
	say "models of $s: peak RSS $((rss / 1024)) MiB"
	: >"$BENCH_DIR/t"
	: >"$BENCH_DIR/fs"
	: >"$BENCH_DIR/fp"
	for i in $(seq "$RUNS"); do
		rm -rf "$BENCH_DIR/out"
		drop
		t0=$(now)
		merge "$d" -q
		t=$(elapsed "$t0")
		echo "$t" >>"$BENCH_DIR/t"
		rm -rf "$BENCH_DIR/out"
		set -- "$d"/base/*.safetensors "$d"/a1/adapter_model.safetensors \
			"$d"/a2/adapter_model.safetensors
		drop
		fs=$("$IOFLOOR" "$BENCH_DIR/floor.out" "$out_bytes" "$@")
		rm -f "$BENCH_DIR/floor.out"
		drop
		fp=$("$IOFLOOR" -p -j "$#" "$BENCH_DIR/floor.out" "$out_bytes" "$@")
		rm -f "$BENCH_DIR/floor.out"
		echo "$fs" >>"$BENCH_DIR/fs"
		echo "$fp" >>"$BENCH_DIR/fp"
		say "$cache $i/$RUNS, $s: merge $t s, floors $fs s (seq), $fp s (pipe)"
	done
	t=$(median <"$BENCH_DIR/t")
	fs=$(median <"$BENCH_DIR/fs")
	fp=$(median <"$BENCH_DIR/fp")
	rows="$rows| $s | $((in / 1000000)) MB | $((out_bytes / 1000000)) MB | $t s | $fs s | $(ratio "$t" "$fs")x | $fp s | $(ratio "$t" "$fp")x | $((rss / 1024)) MiB |
"
done

echo "LoRA merge: dare_ties -p 0.9, base + 2 rank-$R adapters (+), $cache, median of $RUNS"
echo
echo "| base | read | written | merge | seq floor | merge/seq | pipe floor | merge/pipe | peak RSS |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s' "$rows"

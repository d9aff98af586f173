#!/bin/sh
# SPDX-License-Identifier: MIT
# bench.sh - dare-stream against the I/O floor, kernel speed, peak memory
#
# Not a test.  Generates synthetic Llama-shaped BF16 checkpoints (a base and
# two fine-tunes of SIZE each) outside the repository, then prints, from one
# run of this script:
#   - wall time of `dare-stream merge` for dare_linear and dare_ties, median
#     of RUNS runs, and its ratio to the I/O floor (iofloor: read every input
#     byte, write and fsync the output bytes), warm page cache and cold
#     (caches dropped before each run, where permitted);
#   - kernel throughput per core for each path (kbench);
#   - peak RSS (/usr/bin/time -v) of a merge at each of RSS_SIZES.
# The models are removed at the end (KEEP=1 keeps them).
#
# Usage: contrib/bench/bench.sh [BUILD_DIR]   (default: build)
# Environment: SIZE (3G), RUNS (3), RSS_SIZES ("1G 4G"), MEMORY (default
# budget unless set), BENCH_DIR (/var/tmp/dare-stream-bench).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
SIZE=${SIZE:-3G}
RUNS=${RUNS:-3}
RSS_SIZES=${RSS_SIZES:-1G 4G}
BENCH_DIR=${BENCH_DIR:-/var/tmp/dare-stream-bench}
DS=$build/dare-stream

make -s -C "$build" dare-stream tests/mkfixture contrib/bench/iofloor \
	contrib/bench/kbench >/dev/null
mkdir -p "$BENCH_DIR"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$BENCH_DIR"' EXIT

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
can_drop() { [ -w /proc/sys/vm/drop_caches ]; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# gen DIR SIZE: base + 2 BF16 fine-tunes, 4 shards each (reused if present)
gen() {
	[ -d "$1/ft2" ] || "$build/tests/mkfixture" --size "$2" --shards 4 \
		--models 2 --dtype bf16 --seed 1 "$1" >/dev/null
}

# merge_time DIR METHOD: seconds of one merge (output removed after)
merge_time() {
	rm -rf "$BENCH_DIR/out"
	t0=$(date +%s.%N)
	"$DS" merge -q --method "$2" -p 0.9 -o "$BENCH_DIR/out" \
		${MEMORY:+--memory $MEMORY} \
		--base "$1/base" --model "$1/ft1" --model "$1/ft2"
	t1=$(date +%s.%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

# floor_time DIR: seconds of the I/O floor for the same bytes
floor_time() {
	rm -f "$BENCH_DIR/floor.out"
	out_bytes=$(cat "$1"/base/*.safetensors | wc -c)
	"$build/contrib/bench/iofloor" "$BENCH_DIR/floor.out" "$out_bytes" \
		"$1"/base/*.safetensors "$1"/ft1/*.safetensors \
		"$1"/ft2/*.safetensors
	rm -f "$BENCH_DIR/floor.out"
}

# series KIND DIR: median floor and merge times, cold or warm
series() {
	kind=$1
	dir=$2
	[ "$kind" = warm ] && floor_time "$dir" >/dev/null   # warm the cache
	f=$(for i in $(seq "$RUNS"); do
		[ "$kind" = cold ] && drop
		floor_time "$dir"
	done | median)
	line="$kind  floor $f s"
	for m in dare_linear dare_ties; do
		t=$(for i in $(seq "$RUNS"); do
			[ "$kind" = cold ] && drop
			merge_time "$dir" "$m"
		done | median)
		line="$line   $m $t s ($(awk -v t="$t" -v f="$f" 'BEGIN { printf "%.2f", t / f }')x floor)"
	done
	echo "$line"
}

echo "== dare-stream $("$DS" --version | cut -d' ' -f2), $(nproc) cores," \
	"$(uname -m), base + 2 BF16 fine-tunes of $SIZE, medians of $RUNS runs"
gen "$BENCH_DIR/m" "$SIZE"
echo "inputs $(du -sh "$BENCH_DIR/m" | cut -f1)," \
	"output $(cat "$BENCH_DIR"/m/base/*.safetensors | wc -c) bytes"
series warm "$BENCH_DIR/m"
if can_drop; then
	series cold "$BENCH_DIR/m"
else
	echo "cold  skipped: /proc/sys/vm/drop_caches is not writable here"
fi
rm -rf "$BENCH_DIR/m" "$BENCH_DIR/out"

echo "== kernels, one thread (output elements per second per core)"
"$build/contrib/bench/kbench"

echo "== peak RSS, default --memory"
for s in $RSS_SIZES; do
	gen "$BENCH_DIR/r$s" "$s"
	rm -rf "$BENCH_DIR/out"
	/usr/bin/time -v "$DS" merge -q --method dare_ties -p 0.9 \
		-o "$BENCH_DIR/out" --base "$BENCH_DIR/r$s/base" \
		--model "$BENCH_DIR/r$s/ft1" --model "$BENCH_DIR/r$s/ft2" \
		2>"$BENCH_DIR/time.txt"
	rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' \
		"$BENCH_DIR/time.txt")
	echo "models of $s: peak RSS $((rss / 1024)) MiB"
	rm -rf "$BENCH_DIR/r$s" "$BENCH_DIR/out"
done

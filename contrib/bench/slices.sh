#!/bin/sh
# SPDX-License-Identifier: MIT
# slices.sh - recipes with slices (frankenmerge, gradient slerp) against their I/O floors
#
# Not a test.  Generates a synthetic Llama-shaped BF16 base and fine-tune
# of SIZE each (L layers) outside the repository, then measures, in one
# run of this script, each RUNS times with the page cache dropped before
# every run (cold; warm when caches cannot be dropped):
#   - frank: a passthrough frankenmerge, layers 0 .. 0.6L of the base then
#     0.4L .. L of the fine-tune (1.2L layers), against the pipelined I/O
#     floor of the same bytes: the floor reads the shards of an earlier
#     output of this merge (as many bytes as the merge reads) with one
#     reader per input model, and writes as many;
#   - gslerp: slerp of the two over a slice of all L layers with t
#     gradients per filter (self_attn, mlp, the rest at 0.5), and slerp
#     --t 0.5 of the same models on the command line, both against the
#     floor of base + fine-tune read, one model written;
#   - peak RSS (/usr/bin/time -v) of frank and gslerp at each of
#     RSS_SIZES, so that flatness can be read off.
# Results go to stdout as Markdown tables, progress to stderr.  The models
# are removed at the end (KEEP=1 keeps them).
#
# Usage: contrib/bench/slices.sh [BUILD_DIR]   (default: build)
# Environment: SIZE (2G), RUNS (3), RSS_SIZES ("1G 3G"), MEMORY (default
# budget unless set), BENCH_DIR (/var/tmp/dare-stream-slices).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
SIZE=${SIZE:-2G}
RUNS=${RUNS:-3}
RSS_SIZES=${RSS_SIZES:-1G 3G}
BENCH_DIR=${BENCH_DIR:-/var/tmp/dare-stream-slices}
DS=$build/dare-stream
IOFLOOR=$build/contrib/bench/iofloor
BENCH=slices
R=$BENCH_DIR/results
# shellcheck source=contrib/bench/lib.sh disable=SC2034 # BENCH is for lib.sh
. "$top/contrib/bench/lib.sh"

bench_start

# gen DIR SIZE: base + 1 BF16 fine-tune, 4 shards each, and the recipes
gen() {
	[ -d "$1/ft1" ] || "$build/tests/mkfixture" --size "$2" --shards 4 \
		--models 1 --dtype bf16 --seed 1 "$1" >/dev/null
	L=$(layers_of "$1/base")
	cat >"$1/frank.yml" <<EOR
slices:
  - sources:
    - model: $1/base
      layer_range: [0, $((L * 6 / 10))]
  - sources:
    - model: $1/ft1
      layer_range: [$((L * 4 / 10)), $L]
merge_method: passthrough
EOR
	cat >"$1/gslerp.yml" <<EOR
slices:
  - sources:
      - model: $1/base
        layer_range: [0, $L]
      - model: $1/ft1
        layer_range: [0, $L]
merge_method: slerp
base_model: $1/base
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
EOR
}

# job NAME DIR [TIMEV] (after clean): one measured job into $BENCH_DIR/out,
# under /usr/bin/time -v into TIMEV when given
job() {
	name=$1
	d=$2
	set -- ${3:+/usr/bin/time -v -o "$3"}
	case $name in
	frank|gslerp)
		"$@" "$DS" merge -q ${MEMORY:+--memory "$MEMORY"} \
			--config "$d/$name.yml" -o "$BENCH_DIR/out" ;;
	slerp)
		"$@" "$DS" merge -q ${MEMORY:+--memory "$MEMORY"} --method slerp \
			--t 0.5 --base "$d/base" --model "$d/ft1" \
			-o "$BENCH_DIR/out" ;;
	esac
}

M=$BENCH_DIR/m
say "generating a base and a fine-tune of $SIZE in $M"
gen "$M" "$SIZE"
layers=$L
model_bytes=$(size "$M"/base/*.safetensors)
# The frankenmerge's floor reads the bytes it reads: an earlier output's.
job frank "$M"
mv "$BENCH_DIR/out" "$BENCH_DIR/frank.ref"
frank_bytes=$(size "$BENCH_DIR"/frank.ref/*.safetensors)
frank_layers=$(layers_of "$BENCH_DIR/frank.ref")

# clean: no output of an earlier job (its removal is not timed)
clean() { rm -rf "$BENCH_DIR/out"; }

# floor NAME: the pipelined floor's time for job NAME's bytes
floor() {
	rm -f "$BENCH_DIR/floor.out"
	if [ "$1" = frank ]; then
		set -- "$frank_bytes" "$BENCH_DIR"/frank.ref/*.safetensors
	else
		set -- "$model_bytes" "$M"/base/*.safetensors "$M"/ft1/*.safetensors
	fi
	prepare "$@"
	"$IOFLOOR" -p -j 2 "$BENCH_DIR/floor.out" "$@"
	rm -f "$BENCH_DIR/floor.out"
}

JOBS="frank gslerp slerp"
for i in $(seq "$RUNS"); do
	for name in $JOBS; do
		put "floor.$name" "$(floor "$name")"
		time_job "$name" "$i" "$M"/base/*.safetensors \
			"$M"/ft1/*.safetensors
	done
done
rm -rf "$M" "$BENCH_DIR/out" "$BENCH_DIR/frank.ref"

for s in $RSS_SIZES; do
	say "peak RSS, models of $s"
	gen "$BENCH_DIR/r$s" "$s"
	for name in frank gslerp; do
		clean
		job "$name" "$BENCH_DIR/r$s" "$BENCH_DIR/time.txt"
		put "rss.$name.$s" "$(rss "$BENCH_DIR/time.txt")"
		say "$name, models of $s: peak RSS $(get "rss.$name.$s") MiB"
	done
	rm -rf "$BENCH_DIR/r$s" "$BENCH_DIR/out"
done

label() {
	case $1 in
	frank) echo "frank: passthrough, $frank_layers layers from two of $layers" ;;
	gslerp) echo "gslerp: slerp of a $layers-layer slice, t gradients per filter" ;;
	slerp) echo "slerp --t 0.5 (command line, no slices)" ;;
	esac
}

echo "## dare-stream $("$DS" --version | cut -d' ' -f2) slices"
echo
echo "$(nproc) cores, $(uname -m); a BF16 base and fine-tune of $SIZE" \
	"($(bytes "$model_bytes") each, $layers layers); $kind page cache," \
	"median of $RUNS; $(date -u +%Y-%m-%d)."
echo
echo "| job | read | written | time | pipelined floor | x floor |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for name in $JOBS; do
	if [ "$name" = frank ]; then
		rd=$frank_bytes wr=$frank_bytes
	else
		rd=$((2 * model_bytes)) wr=$model_bytes
	fi
	echo "| $(label "$name") | $(bytes "$rd") | $(bytes "$wr")" \
		"| $(get "time.$name") s | $(get "floor.$name") s" \
		"| $(ratio "$(get "time.$name")" "$(get "floor.$name")")x |"
done
echo
printf '| peak RSS, MiB |'
for s in $RSS_SIZES; do printf ' models of %s |' "$s"; done
printf '\n| --- |'
for s in $RSS_SIZES; do printf ' ---: |'; done
printf '\n'
for name in frank gslerp; do
	printf '| %s |' "$name"
	for s in $RSS_SIZES; do printf ' %s |' "$(get "rss.$name.$s")"; done
	printf '\n'
done

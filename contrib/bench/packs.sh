#!/bin/sh
# SPDX-License-Identifier: MIT
# packs.sh - delta packs against their I/O floors, against full models, peak RSS
#
# Not a test.  Generates a synthetic Llama-shaped BF16 base and 4 fine-tunes
# of SIZE each outside the repository, extracts a pack of each at -p P
# (fine-tune j with --stream j-1, the mask it has as model j of a merge),
# then measures, in one run of this script, each RUNS times with the page
# cache dropped before every run (cold; warm when caches cannot be dropped):
#   - extract (base + ft1 read, the pack written), apply (base + pack read,
#     a model written) and merge --method dare_ties of the base and the 4
#     packs, each against the pipelined I/O floor of its own bytes
#     (iofloor -p, one reader per input);
#   - the same dare_ties merge of the base and the 4 full fine-tunes, and
#     the ratio full / packs (the packs are meant to be at least 2x faster),
#     beside the same ratio of their floors: the most two merges that each
#     ran at its floor would show on this machine;
#   - each job's CPU time (user + system, all threads), which set against
#     the cores tells a job bound by the CPU from one bound by the disk;
#   - that both merges wrote the same shards and index;
#   - peak RSS (/usr/bin/time -v) of extract, apply and the pack merge at
#     each of RSS_SIZES, so that flatness can be read off.
# Results go to stdout as Markdown tables, progress to stderr.  The models
# are removed at the end (KEEP=1 keeps them).
#
# Usage: contrib/bench/packs.sh [BUILD_DIR]   (default: build)
# Environment: SIZE (2G), P (0.9), RUNS (3), RSS_SIZES ("1G 3G"),
# BENCH_DIR (/var/tmp/dare-stream-packs).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
SIZE=${SIZE:-2G}
P=${P:-0.9}
RUNS=${RUNS:-3}
RSS_SIZES=${RSS_SIZES:-1G 3G}
BENCH_DIR=${BENCH_DIR:-/var/tmp/dare-stream-packs}
DS=$build/dare-stream
IOFLOOR=$build/contrib/bench/iofloor
NFT=4
BENCH=packs
R=$BENCH_DIR/results            # samples: one "key value" a line
# shellcheck source=contrib/bench/lib.sh disable=SC2034 # BENCH is for lib.sh
. "$top/contrib/bench/lib.sh"

bench_start

# gen DIR SIZE: base + NFT BF16 fine-tunes, 4 shards each, and their packs
gen() {
	[ -d "$1/ft$NFT" ] || "$build/tests/mkfixture" --size "$2" --shards 4 \
		--models "$NFT" --dtype bf16 --seed 1 "$1" >/dev/null
	for j in $(seq "$NFT"); do
		[ -f "$1/ft$j.dsd" ] || "$DS" extract -q --base "$1/base" \
			--model "$1/ft$j" -p "$P" --stream $((j - 1)) \
			-o "$1/ft$j.dsd"
	done
}

# job NAME DIR [TIMEV] (after clean): the command of one measured job,
# under /usr/bin/time -v into TIMEV when given
job() {
	name=$1
	d=$2
	set -- ${3:+/usr/bin/time -v -o "$3"}
	case $name in
	extract)
		"$@" "$DS" extract -q --base "$d/base" --model "$d/ft1" -p "$P" \
			-o "$BENCH_DIR/out.dsd" ;;
	apply)
		"$@" "$DS" apply -q --base "$d/base" "$d/ft1.dsd" \
			-o "$BENCH_DIR/out" ;;
	packs)
		"$@" "$DS" merge -q --method dare_ties -p "$P" --base "$d/base" \
			$(for j in $(seq "$NFT"); do echo "--model $d/ft$j.dsd"; done) \
			-o "$BENCH_DIR/out" ;;
	full)
		"$@" "$DS" merge -q --method dare_ties -p "$P" --base "$d/base" \
			$(for j in $(seq "$NFT"); do echo "--model $d/ft$j"; done) \
			-o "$BENCH_DIR/out" ;;
	esac
}

# clean: no output of an earlier job (its removal is not timed)
clean() { rm -rf "$BENCH_DIR/out" "$BENCH_DIR/out.dsd"; }

# inputs NAME DIR: the files job NAME reads, one input model per word
inputs() {
	case $1 in
	extract) echo "$2/base $2/ft1" ;;
	apply) echo "$2/base $2/ft1.dsd" ;;
	packs) echo "$2/base"; for j in $(seq "$NFT"); do echo "$2/ft$j.dsd"; done ;;
	full) echo "$2/base"; for j in $(seq "$NFT"); do echo "$2/ft$j"; done ;;
	esac
}

files() {
	for i in $(inputs "$1" "$2"); do
		if [ -d "$i" ]; then ls "$i"/*.safetensors; else echo "$i"; fi
	done
}

# written NAME DIR: the bytes job NAME writes
written() {
	case $1 in
	extract) size "$2/ft1.dsd" ;;
	*) size "$2"/base/*.safetensors ;;
	esac
}

M=$BENCH_DIR/m
say "generating base + $NFT fine-tunes of $SIZE and their packs at p $P in $M"
gen "$M" "$SIZE"
model_bytes=$(size "$M"/ft1/*.safetensors)
pack_bytes=$(size "$M"/ft1.dsd)

# The packs merge is the full merge (DESIGN 7): checked once, untimed.
clean
job full "$M"
mv "$BENCH_DIR/out" "$BENCH_DIR/out.full"
job packs "$M"
same=yes
for f in "$BENCH_DIR"/out.full/*.safetensors \
	"$BENCH_DIR"/out.full/*.index.json; do
	[ -e "$f" ] || continue
	cmp -s "$f" "$BENCH_DIR/out/$(basename "$f")" || same=no
done
rm -rf "$BENCH_DIR/out" "$BENCH_DIR/out.full"
say "merge of packs = merge of full models: $same"

JOBS="extract apply packs full"
for i in $(seq "$RUNS"); do
	for name in $JOBS; do
		# shellcheck disable=SC2046 # one word per file
		set -- $(files "$name" "$M")
		rm -f "$BENCH_DIR/floor.out"
		prepare "$@"
		nin=$(inputs "$name" "$M" | wc -w)
		t=$("$IOFLOOR" -p -j "$nin" "$BENCH_DIR/floor.out" \
			"$(written "$name" "$M")" "$@")
		rm -f "$BENCH_DIR/floor.out"
		put "floor.$name" "$t"
		time_job "$name" "$i" "$@"
	done
done
rm -rf "$BENCH_DIR/out" "$BENCH_DIR/out.dsd"
for name in $JOBS; do
	# shellcheck disable=SC2046 # one word per file
	put "read.$name" "$(size $(files "$name" "$M"))"
done
rm -rf "$M"

for s in $RSS_SIZES; do
	say "peak RSS, models of $s"
	gen "$BENCH_DIR/r$s" "$s"
	for name in extract apply packs; do
		clean
		job "$name" "$BENCH_DIR/r$s" "$BENCH_DIR/time.txt"
		put "rss.$name.$s" "$(rss "$BENCH_DIR/time.txt")"
		say "$name, models of $s: peak RSS $(get "rss.$name.$s") MiB"
	done
	rm -rf "$BENCH_DIR/r$s" "$BENCH_DIR/out" "$BENCH_DIR/out.dsd"
done

label() {
	case $1 in
	extract) echo "extract -p $P (base + ft1 -> pack)" ;;
	apply) echo "apply (base + pack -> model)" ;;
	packs) echo "merge dare_ties, base + $NFT packs" ;;
	full) echo "merge dare_ties, base + $NFT full models" ;;
	esac
}

echo "## dare-stream $("$DS" --version | cut -d' ' -f2) delta packs"
echo
echo "$(nproc) cores, $(uname -m); base + $NFT BF16 fine-tunes of $SIZE" \
	"($(bytes "$model_bytes") each), packs at p $P ($(bytes "$pack_bytes")" \
	"each, $(ratio "$((pack_bytes * 100))" "$model_bytes")% of a model);" \
	"$kind page cache, median of $RUNS; $(date -u +%Y-%m-%d)."
echo
echo "| job | read | written | time | pipelined floor | x floor | CPU (user + sys) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for name in $JOBS; do
	t=$(get "time.$name")
	f=$(get "floor.$name")
	echo "| $(label "$name") | $(bytes "$(get "read.$name")")" \
		"| $(bytes "$(if [ "$name" = extract ]; then echo "$pack_bytes"; else echo "$model_bytes"; fi)")" \
		"| $t s | $f s | $(ratio "$t" "$f")x | $(get "cpu.$name") s |"
done
echo
r=$(ratio "$(get time.full)" "$(get time.packs)")
v=$(awk -v r="$r" 'BEGIN { print (r != "-" && r >= 2) ? "PASS" : "FAIL" }')
echo "| $kind page cache | ratio | target | result |"
echo "| --- | ---: | ---: | --- |"
echo "| merge of full models / merge of packs | $r | >= 2 | $v |"
echo "| the same of their floors (the most merges at their floors give) |" \
	"$(ratio "$(get floor.full)" "$(get floor.packs)") | | |"
echo "| same bytes | $same | yes | $([ "$same" = yes ] && echo PASS || echo FAIL) |"
echo
printf '| peak RSS, MiB |'
for s in $RSS_SIZES; do printf ' models of %s |' "$s"; done
printf '\n| --- |'
for s in $RSS_SIZES; do printf ' ---: |'; done
printf '\n'
for name in extract apply packs; do
	printf '| %s |' "$(label "$name")"
	for s in $RSS_SIZES; do printf ' %s |' "$(get "rss.$name.$s")"; done
	printf '\n'
done

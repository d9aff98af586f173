#!/bin/sh
# SPDX-License-Identifier: MIT
# bench.sh - dare-stream against the I/O floors, kernel speed, peak memory
#
# Not a test.  Generates synthetic Llama-shaped BF16 checkpoints (a base and
# two fine-tunes of SIZE each) outside the repository, then measures, in one
# run of this script, for each method of METHODS (default dare_linear
# dare_ties ties della slerp model_stock, all task-vector methods at
# -p 0.9, della with --epsilon 0.05, slerp of base and ft1 at --t 0.5,
# model_stock of base, ft1 and ft2):
#   - passes: the most passes any tensor takes (from --dry-run);
#   - wall time of `dare-stream merge`, median of RUNS runs, warm page
#     cache (the inputs read just before each run) and cold (caches
#     dropped before each run, where permitted), and its ratio to two I/O
#     floors of the same bytes (iofloor): sequential (read every input
#     byte, then write and fsync the output bytes) and pipelined (one
#     reader per input model and a writer at the same time, the writer
#     never ahead of the readers: what a perfectly overlapped merge
#     achieves).  slerp's floor has slerp's bytes: base + one model in,
#     one model out.  A note follows when a warm run began with part of
#     its inputs out of the page cache;
#   - cold(ties) / cold(dare_ties) and cold(della) / cold(dare_ties), with
#     PASS when at most 1.3;
#   - kernel throughput per core for each method and path (kbench): the
#     writing pass alone and all passes of a tensor;
#   - peak RSS (/usr/bin/time -v) of each method at each of RSS_SIZES, so
#     that flatness can be read off.
# Progress goes to stderr; the results are printed at the end, to stdout,
# as Markdown tables.  The models are removed at the end (KEEP=1 keeps them).
#
# Usage: contrib/bench/bench.sh [BUILD_DIR]   (default: build)
# Environment: SIZE (3G), RUNS (3), RSS_SIZES ("1G 4G"), MEMORY (default
# budget unless set), BENCH_DIR (/var/tmp/dare-stream-bench), METHODS (as
# above), KBENCH_ARGS (kbench's arguments: elements per tensor, runs).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
SIZE=${SIZE:-3G}
RUNS=${RUNS:-3}
RSS_SIZES=${RSS_SIZES:-1G 4G}
BENCH_DIR=${BENCH_DIR:-/var/tmp/dare-stream-bench}
METHODS=${METHODS:-dare_linear dare_ties ties della slerp model_stock}
KBENCH_ARGS=${KBENCH_ARGS:-}
LIMIT=1.3                       # most cold(method) / cold(dare_ties) allowed
DS=$build/dare-stream
IOFLOOR=$build/contrib/bench/iofloor
TIMEV=

make -s -C "$build" dare-stream tests/mkfixture contrib/bench/iofloor \
	contrib/bench/kbench >/dev/null
mkdir -p "$BENCH_DIR"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$BENCH_DIR"' EXIT
R=$BENCH_DIR/results            # samples: one "key value" a line
: >"$R"

say() { echo "bench: $*" >&2; }
put() { echo "$1 $2" >>"$R"; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
# get KEY: the median of KEY's samples, empty when there is none
get() { awk -v k="$1" '$1 == k { print $2 }' "$R" | median | tr _ ' '; }
# ratio A B: A / B to two decimals, "-" when either is missing
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "" || b == "" || b + 0 == 0) print "-"
		else printf "%.2f\n", a / b }'
}
secs() { [ -n "$1" ] && echo "$1 s" || echo "-"; }
xfloor() { [ "$1" = - ] && echo "-" || echo "${1}x"; }
bytes() {
	awk -v n="$1" 'BEGIN {
		if (n >= 1e9) printf "%.2f GB\n", n / 1e9
		else printf "%.0f MB\n", n / 1e6 }'
}
can_drop() { [ -w /proc/sys/vm/drop_caches ]; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'; }
# size FILE...: bytes of the files together
size() { stat -c %s "$@" | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

# gen DIR SIZE: base + 2 BF16 fine-tunes, 4 shards each (reused if present)
gen() {
	[ -d "$1/ft2" ] || "$build/tests/mkfixture" --size "$2" --shards 4 \
		--models 2 --dtype bf16 --seed 1 "$1" >/dev/null
}

# opts METHOD: the options every run of METHOD merges with
opts() {
	case $1 in
	slerp) echo "--t 0.5" ;;
	della|della_linear) echo "-p 0.9 --epsilon 0.05" ;;
	linear|model_stock|nuslerp|karcher) ;;
	*) echo "-p 0.9" ;;
	esac
}
# models METHOD: the fine-tunes METHOD merges with the base
models() { case $1 in slerp) echo 1 ;; *) echo 2 ;; esac; }

# merge DIR METHOD [OPTION...]: dare-stream merge of DIR's models into
# $BENCH_DIR/out; under /usr/bin/time -v into the file TIMEV when set
merge() {
	dir=$1
	m=$2
	shift 2
	set -- "$@" --base "$dir/base" --model "$dir/ft1"
	[ "$(models "$m")" = 1 ] || set -- "$@" --model "$dir/ft2"
	# shellcheck disable=SC2046 # the options are words
	${TIMEV:+/usr/bin/time -v -o "$TIMEV"} "$DS" merge --method "$m" \
		$(opts "$m") ${MEMORY:+--memory "$MEMORY"} \
		-o "$BENCH_DIR/out" "$@"
}

# prepare DIR FINETUNES: the cache state of the series for these inputs:
# dropped when cold; read in full when warm, so that a run is warm even
# when the run before it dropped pages
prepare() {
	if [ "$kind" = cold ]; then
		drop
	elif [ "$2" = 1 ]; then
		cat "$1"/base/*.safetensors "$1"/ft1/*.safetensors >/dev/null
	else
		cat "$1"/base/*.safetensors "$1"/ft1/*.safetensors \
			"$1"/ft2/*.safetensors >/dev/null
	fi
}

# cached DIR FINETUNES: percent of these input bytes in the page cache
cached() {
	set -- "$1" "$2" "$1"/base/*.safetensors "$1"/ft1/*.safetensors
	[ "$2" = 1 ] || set -- "$@" "$1"/ft2/*.safetensors
	shift 2
	total=$(size "$@")
	fincore --bytes --noheadings --output RES "$@" 2>/dev/null |
		awk -v t="$total" '{ r += $1 } END {
			if (NR && t > 0) printf "%.0f\n", 100 * r / t }'
}

# merge_time DIR METHOD: seconds of one merge (output removed after)
merge_time() {
	rm -rf "$BENCH_DIR/out"
	prepare "$1" "$(models "$2")"
	if [ "$kind" = warm ]; then
		c=$(cached "$1" "$(models "$2")")
		[ -z "$c" ] || put "cached.$2" "$c"
	fi
	t0=$(now)
	merge "$1" "$2" -q
	elapsed "$t0"
	rm -rf "$BENCH_DIR/out"
}

# floor_time DIR FINETUNES MODE: seconds of the I/O floor (iofloor, MODE
# seq or pipe) for the bytes of a merge of the base and FINETUNES models
floor_time() {
	dir=$1
	flags=
	# pipelined: one reader per input model, as the merge reads them
	[ "$3" = pipe ] && flags="-p -j $(($2 + 1))"
	set -- "$dir"/base/*.safetensors "$dir"/ft1/*.safetensors
	[ "$2" = 1 ] || set -- "$@" "$dir"/ft2/*.safetensors
	rm -f "$BENCH_DIR/floor.out"
	prepare "$dir" "$2"
	# shellcheck disable=SC2086 # the flags are words
	"$IOFLOOR" $flags "$BENCH_DIR/floor.out" "$out_bytes" "$@"
	rm -f "$BENCH_DIR/floor.out"
}

# series KIND: every floor and every method, RUNS rounds, cold or warm
series() {
	kind=$1
	for i in $(seq "$RUNS"); do
		for n in 2 1; do
			for mode in seq pipe; do
				t=$(floor_time "$M" "$n" "$mode")
				say "$kind $i/$RUNS: floor, base + $n, $mode: $t s"
				put "$kind.floor.$mode.$n" "$t"
			done
		done
		for m in $METHODS; do
			t=$(merge_time "$M" "$m")
			say "$kind $i/$RUNS: $m: $t s"
			put "$kind.$m" "$t"
		done
	done
}

# ---- measurements -----------------------------------------------------------
M=$BENCH_DIR/m
say "generating base + 2 fine-tunes of $SIZE in $M"
gen "$M" "$SIZE"
out_bytes=$(size "$M"/base/*.safetensors)
in2=$(size "$M"/base/*.safetensors "$M"/ft1/*.safetensors "$M"/ft2/*.safetensors)
in1=$(size "$M"/base/*.safetensors "$M"/ft1/*.safetensors)
plan=$(merge "$M" dare_ties --dry-run | grep '^plan: read')
kpath=$(echo "$plan" | sed -n 's/.*kernel \([^,]*\),.*/\1/p')
iob=$(echo "$plan" | sed -n 's/.*I\/O \(.*\)$/\1/p')
for m in $METHODS; do
	p=$(merge "$M" "$m" --dry-run | awk '$1 == "tensor" && $3 == "merge" {
		sub(/^passes=/, "", $4); n = split($4, a, ","); if (n > max) max = n }
		END { print max + 0 }')
	say "$m: $p passes"
	put "passes.$m" "$p"
done
series warm
if can_drop; then
	series cold
else
	say "cold series skipped: /proc/sys/vm/drop_caches is not writable"
fi
rm -rf "$M" "$BENCH_DIR/out"

say "kernels, one thread"
# shellcheck disable=SC2086 # the arguments are words
"$build/contrib/bench/kbench" $KBENCH_ARGS >"$BENCH_DIR/kbench.txt"
cat "$BENCH_DIR/kbench.txt" >&2

for s in $RSS_SIZES; do
	say "peak RSS, models of $s"
	gen "$BENCH_DIR/r$s" "$s"
	for m in $METHODS; do
		rm -rf "$BENCH_DIR/out"
		b=$(merge "$BENCH_DIR/r$s" "$m" --dry-run | sed -n \
			's/.*window buffers \([0-9.]*\) \([KMGT]iB\).*/\1_\2/p')
		put "buffers.$m.$s" "$b"
		TIMEV=$BENCH_DIR/time.txt
		merge "$BENCH_DIR/r$s" "$m" -q
		TIMEV=
		rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' \
			"$BENCH_DIR/time.txt")
		say "$m, models of $s: peak RSS $((rss / 1024)) MiB"
		put "rss.$m.$s" "$((rss / 1024))"
	done
	rm -rf "$BENCH_DIR/r$s" "$BENCH_DIR/out"
done

# ---- results ----------------------------------------------------------------
echo "## dare-stream $("$DS" --version | cut -d' ' -f2) benchmark"
echo
echo "$(nproc) cores, $(uname -m), kernel path $kpath, I/O $iob," \
	"--memory ${MEMORY:-default}; base + 2 BF16 fine-tunes of $SIZE;" \
	"median of $RUNS run$([ "$RUNS" = 1 ] || echo s);" \
	"$(date -u +%Y-%m-%d)."
echo
echo "| I/O floor | read | written | warm, sequential | warm, pipelined | cold, sequential | cold, pipelined |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for n in 2 1; do
	if [ "$n" = 2 ]; then
		label="base + 2 fine-tunes"
		inb=$in2
	else
		label="base + 1 fine-tune (slerp)"
		inb=$in1
	fi
	echo "| $label | $(bytes "$inb") | $(bytes "$out_bytes")" \
		"| $(secs "$(get warm.floor.seq.$n)")" \
		"| $(secs "$(get warm.floor.pipe.$n)")" \
		"| $(secs "$(get cold.floor.seq.$n)")" \
		"| $(secs "$(get cold.floor.pipe.$n)") |"
done
echo
echo "| method | passes | warm | x seq. floor | x pipel. floor | cold | x seq. floor | x pipel. floor |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for m in $METHODS; do
	n=$(models "$m")
	line="| $(echo "$m $(opts "$m")" | sed 's/ *$//') | $(get "passes.$m")"
	for kind in warm cold; do
		t=$(get "$kind.$m")
		line="$line | $(secs "$t")"
		line="$line | $(xfloor "$(ratio "$t" "$(get "$kind.floor.seq.$n")")")"
		line="$line | $(xfloor "$(ratio "$t" "$(get "$kind.floor.pipe.$n")")")"
	done
	echo "$line |"
done
for m in $METHODS; do
	for kind in warm cold; do
		r=$(ratio "$(get "$kind.$m")" \
			"$(get "$kind.floor.pipe.$(models "$m")")")
		[ "$r" = - ] || awk -v r="$r" 'BEGIN { exit !(r < 0.8) }' ||
			continue
		echo "Note: $m ran at ${r}x the pipelined floor, $kind: below" \
			"0.8x the floor is not one; rerun on a quiet machine."
	done
	c=$(get "cached.$m")
	[ -z "$c" ] || [ "$c" -ge 99 ] ||
		echo "Note: $m's warm runs began with $c% of their input" \
			"bytes in the page cache (the inputs are read just" \
			"before each; too little free memory?)."
done
echo
echo "| cold page cache | ratio | limit | result |"
echo "| --- | ---: | ---: | --- |"
for m in ties della; do
	case " $METHODS " in *" $m "*) ;; *) continue ;; esac
	r=$(ratio "$(get "cold.$m")" "$(get cold.dare_ties)")
	if [ "$r" = - ]; then
		v="skipped"
	elif awk -v r="$r" -v l="$LIMIT" 'BEGIN { exit !(r <= l) }'; then
		v=PASS
	else
		v=FAIL
	fi
	echo "| $m / dare_ties | $r | $LIMIT | $v |"
done
echo
awk '
	NR == 1 { next }
	{
		if (!($2 in seen)) { seen[$2] = 1; path[++np] = $2 }
		if (!($1 in mseen)) { mseen[$1] = 1; meth[++nm] = $1 }
		pass[$1] = $3; w[$1, $2] = $4; a[$1, $2] = $5
	}
	END {
		printf "| kernel, one thread, Gelem/s per core |"
		for (i = 1; i <= np; i++) printf " %s |", path[i]
		printf "\n| --- |"
		for (i = 1; i <= np; i++) printf " ---: |"
		printf "\n"
		for (j = 1; j <= nm; j++) {
			m = meth[j]
			if (pass[m] == 1) {
				printf "| %s |", m
				for (i = 1; i <= np; i++)
					printf " %s |", w[m, path[i]]
				printf "\n"
				continue
			}
			printf "| %s, writing pass |", m
			for (i = 1; i <= np; i++) printf " %s |", w[m, path[i]]
			printf "\n| %s, all %d passes |", m, pass[m]
			for (i = 1; i <= np; i++) printf " %s |", a[m, path[i]]
			printf "\n"
		}
	}' "$BENCH_DIR/kbench.txt"
echo
line="| peak RSS (window buffers), --memory ${MEMORY:-default} |"
sep="| --- |"
for s in $RSS_SIZES; do
	line="$line models of $s |"
	sep="$sep ---: |"
done
echo "$line"
echo "$sep"
for m in $METHODS; do
	line="| $m |"
	for s in $RSS_SIZES; do
		line="$line $(get "rss.$m.$s") MiB ($(get "buffers.$m.$s")) |"
	done
	echo "$line"
done

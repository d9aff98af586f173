# SPDX-License-Identifier: MIT
# shellcheck shell=sh disable=SC2034,SC2154 # kind is for the sourcing script, build from it
# lib.sh - helpers sourced by the benchmark scripts of contrib/bench
#
# The sourcing script sets BENCH (its name, for progress lines), build (the
# build directory), BENCH_DIR (its scratch directory) and R (the file of
# samples, one "key value" a line).
# Sets kind to cold when the page cache can be dropped (root), else warm,
# and prepare FILE... to drop the cache (cold) or read FILE... (warm).
# time_job calls the sourcing script's job NAME DIR, with M its models.

say() { echo "$BENCH: $*" >&2; }
put() { echo "$1 $2" >>"$R"; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
# get KEY: the median of KEY's samples, empty when there is none
get() { awk -v k="$1" '$1 == k { print $2 }' "$R" | median; }
# ratio A B: A / B to two decimals, "-" when either is missing
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "" || b == "" || b + 0 == 0) print "-"
		else printf "%.2f\n", a / b }'
}
bytes() {
	awk -v n="$1" 'BEGIN {
		if (n >= 1e9) printf "%.2f GB\n", n / 1e9
		else printf "%.0f MB\n", n / 1e6 }'
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'; }
# size FILE...: bytes of the files together
size() { stat -c %s "$@" | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
# rss FILE: peak RSS in MiB from the output of /usr/bin/time -v
rss() {
	echo $(($(sed -n 's/.*Maximum resident set size (kbytes): //p' "$1") / 1024))
}
# bench_start: build what the scripts run, make BENCH_DIR (removed at exit
# unless KEEP=1) and an empty R
bench_start() {
	make -s -C "$build" dare-stream tests/mkfixture contrib/bench/iofloor \
		>/dev/null
	mkdir -p "$BENCH_DIR"
	[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$BENCH_DIR"' EXIT
	: >"$R"
}
# time_job NAME ROUND FILE...: the sourcing script's clean (removing an
# earlier job's output, with the discards that can set off, is no part of
# a job), prepare FILE..., then time its `job NAME $M DIR TIMEV` into the
# samples as time.NAME, and the CPU time it took (user + system, all its
# threads, from /usr/bin/time -v) as cpu.NAME
time_job() {
	name=$1
	round=$2
	shift 2
	clean
	prepare "$@"
	t0=$(now)
	job "$name" "$M" "$BENCH_DIR/cpu.txt"
	t=$(elapsed "$t0")
	put "time.$name" "$t"
	put "cpu.$name" "$(awk -F': ' '/User time|System time/ { s += $2 }
		END { printf "%.2f\n", s }' "$BENCH_DIR/cpu.txt")"
	say "$kind $round/$RUNS: $name $t s, its floor $(get "floor.$name") s"
}
# layers_of DIR: num_hidden_layers of DIR/config.json
layers_of() {
	sed -n 's/.*"num_hidden_layers": *\([0-9]*\).*/\1/p' "$1/config.json"
}
if [ -w /proc/sys/vm/drop_caches ]; then
	kind=cold
	prepare() { sync; echo 3 >/proc/sys/vm/drop_caches; }
else
	kind=warm
	prepare() { cat "$@" >/dev/null; }
fi

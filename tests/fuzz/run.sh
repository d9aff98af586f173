#!/bin/sh
# SPDX-License-Identifier: MIT
# run.sh - build the libFuzzer harnesses under ASan+UBSan and run each a while
#
# Environment: FUZZ_SECONDS (per harness, default 60; 0 only replays the
# committed corpus, as a regression test), FUZZ_HARNESSES (a subset of:
# header file index recipe pack), CLANG (default clang),
# DS_BUILDDIR (where config.h is; default: the source tree, then ./build),
# DS_KEEP=1 keeps the work directory.  Exit 0 when every harness ran clean,
# 1 on a finding (the input is printed in hex: add it to corpus/NAME/),
# 77 when clang or its fuzzer runtime is missing, 99 on a build error.

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
CLANG=${CLANG:-clang}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_HARNESSES=${FUZZ_HARNESSES:-header file index recipe pack}
LC_ALL=C
export LC_ALL

skip() { echo "SKIP fuzz: $*"; exit 77; }
hard() { echo "ERROR fuzz: $*"; exit 99; }

builddir=
for d in "${DS_BUILDDIR:-}" "$top" "$top/build" "$PWD"; do
	if [ -n "$d" ] && [ -f "$d/config.h" ]; then builddir=$d; break; fi
done
[ -n "$builddir" ] || hard "no config.h (configure first or set DS_BUILDDIR)"
command -v "$CLANG" >/dev/null 2>&1 || skip "$CLANG not found"
command -v pkg-config >/dev/null 2>&1 || skip "pkg-config not found"
deps=$(pkg-config --cflags --libs jansson yaml-0.1 libxxhash libzstd 2>/dev/null) ||
	skip "jansson, yaml-0.1 or libxxhash development files missing"

W=$(mktemp -d "${TMPDIR:-/tmp}/ds-fuzz.XXXXXX") || hard "mktemp failed"
# shellcheck disable=SC2317 # called by the trap
cleanup() {
	if [ "${DS_KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, '\
'unsigned long n) { (void)d; return (int)(n & 0); }\n' >"$W/probe.c"
"$CLANG" -fsanitize=fuzzer,address,undefined "$W/probe.c" -o "$W/probe" \
	>/dev/null 2>&1 ||
	skip "$CLANG cannot build a fuzzer (Debian: libclang-rt-14-dev)"

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
CFLAGS="-g -O1 -fno-omit-frame-pointer $SAN -Wall -Wextra -Wshadow \
-Wstrict-prototypes -Wmissing-prototypes -Wvla -Werror \
-Wno-unused-command-line-argument"
INC="-I$builddir -I$top/include -I$top/src/lib -I$top/tests -I$here"
DEPCF=$(pkg-config --cflags jansson yaml-0.1 libxxhash libzstd)
# The library sources the harnesses reach (no kernels: methods.c only takes
# their table as an argument), and the tests' shared helpers without their
# Check part, compiled once for all four.
SRC="src/lib/common/ctx.c src/lib/inputs/safetensors.c src/lib/inputs/model.c \
src/lib/inputs/pack.c src/lib/inputs/lora.c src/lib/kernels/scalar.c \
src/lib/recipe/recipe.c src/lib/recipe/recipe_yaml.c src/lib/methods/methods.c \
tests/testutil.c"

objs=
for s in $SRC; do
	o=$W/$(basename "$s").o
	# shellcheck disable=SC2086 # flag lists are split on purpose
	"$CLANG" $CFLAGS -fsanitize=fuzzer-no-link -DTESTUTIL_NO_CHECK $INC \
		$DEPCF -c "$top/$s" -o "$o" || hard "cannot compile $s"
	objs="$objs $o"
done

# -max_total_time=0 would mean "no limit": 0 replays the corpus instead.
if [ "$FUZZ_SECONDS" -gt 0 ] 2>/dev/null; then
	limit="-max_total_time=$FUZZ_SECONDS"
else
	limit="-runs=0"
fi

count() { find "$1" -type f | wc -l; }

failed=0
for h in $FUZZ_HARNESSES; do
	bin=$W/fuzz_$h
	# shellcheck disable=SC2086
	"$CLANG" $CFLAGS -fsanitize=fuzzer $INC "$here/fuzz_$h.c" $objs \
		$deps -lm -lpthread -o "$bin" || hard "cannot build fuzz_$h"
	mkdir -p "$W/corpus/$h" "$W/crash"
	cp "$here/corpus/$h"/* "$W/corpus/$h/" 2>/dev/null
	seeds=$(count "$W/corpus/$h")
	# The harnesses' own files go under $W: a crash skips their atexit.
	mkdir -p "$W/tmp"
	TMPDIR=$W/tmp "$bin" "$limit" -timeout=10 -rss_limit_mb=2048 \
		-error_exitcode=1 -timeout_exitcode=1 -print_final_stats=1 \
		-artifact_prefix="$W/crash/$h-" "$W/corpus/$h" \
		>"$W/$h.log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$W/$h.log")
	grown=$(count "$W/corpus/$h")
	if [ "$rc" -eq 0 ] && [ "$limit" = -runs=0 ]; then
		echo "ok   fuzz_$h: $seeds committed inputs replayed"
		continue
	elif [ "$rc" -eq 0 ]; then
		echo "ok   fuzz_$h: ${execs:-?} executions in ${FUZZ_SECONDS} s," \
			"corpus $seeds -> $grown inputs"
		continue
	fi
	failed=1
	echo "FAIL fuzz_$h: exit $rc after ${execs:-?} executions"
	grep -E 'ERROR|SUMMARY|runtime error|invariant|^    #[0-9]' \
		"$W/$h.log" | head -n 30
	for a in "$W/crash/$h-"*; do
		[ -f "$a" ] || continue
		echo "input $(basename "$a") ($(wc -c <"$a") bytes), hex:"
		od -An -tx1 -v "$a" | head -n 64
	done
done
exit $failed

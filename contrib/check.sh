#!/bin/sh
# SPDX-License-Identifier: MIT
# check.sh - the whole test suite: unit and CLI tests, again under ASan+UBSan,
# then make distcheck, then the packaging (make install, .deb, .rpm); ends
# with one line "N passed, N failed, N skipped"
set -u
cd "$(dirname "$0")/.." || exit 1
top=$(pwd)
jobs=$(nproc)
[ -x configure ] || autoreconf -fi >/dev/null || exit 1

# Test-only tools: the aarch64 cross compiler and qemu for the NEON path,
# clang's libFuzzer runtime for the fuzzers.
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
if [ "${DS_SKIP_DEPS:-}" != 1 ]; then
	echo "== installing test tools (apt-get)"
	$SUDO apt-get install -y -qq --no-install-recommends \
		gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user \
		clang libclang-rt-14-dev >/dev/null ||
		echo "(could not install them: those tests will be skipped)"
	# Packaging: Debian's tools, rpmbuild, and the shells of the completions.
	$SUDO apt-get install -y -qq --no-install-recommends \
		debhelper lintian rpm rpm2cpio zsh bash-completion >/dev/null ||
		echo "(could not install the packaging tools: those stages will be skipped)"
	# A one-node Slurm and GNU parallel for contrib/slurm and contrib/parallel
	# (tests/slurm.sh starts its own daemons; nothing is configured here);
	# jq and parallel for the examples of dare-stream(1).
	$SUDO apt-get install -y -qq --no-install-recommends \
		slurm-wlm munge parallel jq >/dev/null ||
		echo "(could not install Slurm: the slurm stage will be skipped)"
fi

passed=0 failed=0 skipped=0

# Add the results of one build directory: the individual checks of each
# test program (Check's "Checks: N, Failures: F, Errors: E", the CLI
# scripts' "# NAME: N checks, F failed", the NEON self-test's "neon: N
# checks, F failures"), or its overall result for a test that reports no
# count.
tally() {
	dir=$1
	for trs in $(find "$dir/tests" -name '*.trs' | sort); do
		log=${trs%.trs}.log
		res=$(sed -n 's/^:test-result: //p' "$trs" | head -n 1)
		counts=$(sed -n \
			-e 's/^[0-9]*%: Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\)$/\1 \2 \3/p' \
			-e 's/^# [a-z0-9-]*: \([0-9]*\) checks, \([0-9]*\) failed$/\1 \2 0/p' \
			-e 's/^[a-z0-9-]*: \([0-9]*\) checks, \([0-9]*\) failures$/\1 \2 0/p' \
			"$log" | tail -n 1)
		case $res in
		SKIP) skipped=$((skipped + 1)); continue ;;
		PASS | XFAIL) ok=1 ;;
		*) ok=0 ;;
		esac
		if [ -n "$counts" ]; then
			# shellcheck disable=SC2086 # three numbers
			set -- $counts
			bad=$(($2 + $3))
			[ "$ok" = 0 ] && [ "$bad" = 0 ] && bad=1
			passed=$((passed + $1 - $2 - $3))
			failed=$((failed + bad))
		elif [ "$ok" = 1 ]; then
			passed=$((passed + 1))
		else
			failed=$((failed + 1))
		fi
	done
	[ -f "$dir/test-suite.log" ] || failed=$((failed + 1))
}

# run NAME CONFIGURE-ARGS...: out-of-tree build and make check in build-NAME
run() {
	name=$1
	shift
	echo "== $name: configure $*"
	rm -rf "build-$name"
	mkdir "build-$name"
	(cd "build-$name" && "$top/configure" --quiet "$@" &&
		make -j"$jobs" >/dev/null && make -j"$jobs" check) ||
		true
	tally "build-$name"
}

run plain
# A sanitizer report must never pass for an expected exit status.
ASAN_OPTIONS=exitcode=86:detect_leaks=1
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=87
export ASAN_OPTIONS UBSAN_OPTIONS
run sanitize CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	LDFLAGS="-fsanitize=address,undefined"

echo "== fuzz: ${FUZZ_SECONDS:-60} s per harness, ASan+UBSan"
# The script itself, not make fuzz: make would turn its skip (77) into 2.
FUZZ_SECONDS=${FUZZ_SECONDS:-60} DS_BUILDDIR="$top/build-plain" \
	sh "$top/tests/fuzz/run.sh"
case $? in
0) passed=$((passed + 1)) ;;
77) skipped=$((skipped + 1)) ;;
*) failed=$((failed + 1)) ;;
esac

# A private one-node Slurm, once (not in make check: see Makefile.am): its
# checks join the tally like a CLI test's.
echo "== slurm: contrib/slurm and contrib/parallel on a one-node Slurm"
(cd build-plain && make slurm-check) >build-plain/slurm.log 2>&1
rc=$?
grep -E '^(FAIL|SKIP slurm|time:|# slurm:)' build-plain/slurm.log
counts=$(sed -n 's/^# slurm: \([0-9]*\) checks, \([0-9]*\) failed$/\1 \2/p' \
	build-plain/slurm.log)
# make turns the script's 77 into 2: a skip is told by its SKIP line.
if grep -q '^SKIP slurm:' build-plain/slurm.log; then
	skipped=$((skipped + 1))
elif [ -n "$counts" ]; then
	# shellcheck disable=SC2086 # two numbers
	set -- $counts
	bad=$2
	[ "$rc" != 0 ] && [ "$bad" = 0 ] && bad=1
	passed=$((passed + $1 - $2))
	failed=$((failed + bad))
else
	failed=$((failed + 1))
	tail -n 30 build-plain/slurm.log
fi

echo "== make distcheck"
rm -rf build-dist
mkdir build-dist
if (cd build-dist && "$top/configure" --quiet && make -j"$jobs" distcheck >distcheck.log 2>&1); then
	passed=$((passed + 1))
	echo "distcheck: ok"
else
	failed=$((failed + 1))
	tail -n 40 build-dist/distcheck.log
fi

# make install, the .deb and the .rpm (their checks join the tally).
. "$top/contrib/check-packaging.sh"

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]

#!/bin/sh
# SPDX-License-Identifier: MIT
# check.sh - the whole test suite: unit and CLI tests, again under ASan+UBSan,
# then make distcheck; ends with one line "N passed, N failed"
set -u
cd "$(dirname "$0")/.."
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
fi

passed=0 failed=0 skipped=0

# Add the totals of one build directory's test-suite.log.
tally() {
	log=$1/test-suite.log
	if [ ! -f "$log" ]; then
		failed=$((failed + 1))
		return
	fi
	get() { sed -n "s/^# $1: *\([0-9]*\)$/\1/p" "$log"; }
	passed=$((passed + $(get PASS) + $(get XFAIL)))
	failed=$((failed + $(get FAIL) + $(get XPASS) + $(get ERROR)))
	skipped=$((skipped + $(get SKIP)))
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
run sanitize CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	LDFLAGS="-fsanitize=address,undefined"

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

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]

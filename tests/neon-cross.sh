#!/bin/sh
# SPDX-License-Identifier: MIT
# neon-cross.sh - cross-build the NEON self-test for aarch64, run it in qemu
#
# Builds tests/neon_selftest.c with the engine's kernel and method sources
# for aarch64 (static, xxHash in header-only mode) and runs it with
# qemu-aarch64: the NEON path against the DESIGN 4 known answers and, bit
# for bit, against the scalar reference.  Exit 77 (skipped) when the cross
# compiler, qemu or xxhash.h is missing.  Override with AARCH64_CC,
# QEMU_AARCH64, XXHASH_H.
set -eu

CC=${AARCH64_CC:-aarch64-linux-gnu-gcc}
QEMU=${QEMU_AARCH64:-qemu-aarch64}
XXH=${XXHASH_H:-/usr/include/xxhash.h}
top=$(cd "$(dirname "$0")/.." && pwd)

for tool in "$CC" "$QEMU"; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "skip: $tool not found (apt-get install gcc-aarch64-linux-gnu qemu-user)"
		exit 77
	fi
done
if [ ! -r "$XXH" ]; then
	echo "skip: $XXH not found (apt-get install libxxhash-dev)"
	exit 77
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
# Our own config.h and a private copy of xxhash.h: the cross compiler must
# not see the host's /usr/include.
printf '#define DS_HAVE_NEON 1\n#define _GNU_SOURCE 1\n' >"$tmp/config.h"
cp "$XXH" "$tmp/xxhash.h"

"$CC" -std=gnu11 -O2 -static -ffp-contract=off \
	-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wvla -Werror -DXXH_INLINE_ALL \
	-I"$tmp" -I"$top/include" -I"$top/src/lib" \
	"$top/tests/neon_selftest.c" "$top/src/lib/common/ctx.c" \
	"$top/src/lib/methods/methods.c" "$top/src/lib/kernels/scalar.c" \
	"$top/src/lib/kernels/neon.c" "$top/src/lib/kernels/dispatch.c" \
	"$top/src/lib/kernels/lora.c" "$top/src/lib/kernels/lora_neon.c" \
	-lm -lpthread -o "$tmp/neon_selftest"

"$CC" -std=gnu11 -O2 -static -Wall -Wextra -Werror -I"$top/src/lib" \
	"$top/tests/test_bits.c" -o "$tmp/test_bits"
"$QEMU" "$tmp/test_bits"
"$QEMU" "$tmp/neon_selftest" neon

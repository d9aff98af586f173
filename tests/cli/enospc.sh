#!/bin/sh
# SPDX-License-Identifier: MIT
# enospc.sh - a full disk ends the merge cleanly: message, exit 1, no temps
#
# Needs root to mount a small tmpfs; skipped (77) where mounting is not
# permitted.
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup enospc

FX=$T/fx
mkfix "$FX" --models 2 --seed 8 --hidden 128 --vocab 512 --layers 2
inputs_record "$FX"
mkdir "$T/small" || hard_error "mkdir"
mount -t tmpfs -o size=256k tmpfs "$T/small" 2>/dev/null ||
	skip_all "cannot mount a tmpfs here (not root?)"
# The work directory's removal must not meet a mounted tmpfs.
trap 'umount "$T/small" 2>/dev/null; ds_cleanup' EXIT

say "== output larger than the 256 KiB file system"
run_expect 1 'No space left on device' "$DS_BIN" merge -q \
	--method dare_linear -p 0.5 -o "$T/small/out" \
	--base "$FX/base" --model "$FX/ft1" --model "$FX/ft2"
stderr_has "the message names an output file" "$T/small/out/"
no_output "$T/small/out"
check "no temporary file left on the small disk" \
	[ -z "$(find "$T/small" -name '*.partial')" ]
check "the small disk is empty again" [ -z "$(ls -A "$T/small")" ]

ds_finish

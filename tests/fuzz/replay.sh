#!/bin/sh
# SPDX-License-Identifier: MIT
# replay.sh - make check: each committed fuzz input once through its harness
# (ASan+UBSan); a crash or a broken invariant fails, no clang skips (77).
FUZZ_SECONDS=0
export FUZZ_SECONDS
exec sh "$(dirname "$0")/run.sh"

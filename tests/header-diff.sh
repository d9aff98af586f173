#!/bin/sh
# SPDX-License-Identifier: MIT
# header-diff.sh - dare-stream reads safetensors headers as the reference does
#
# tests/ref/strules.py writes a few thousand mutated headers (seeded) and
# judges each with its model of huggingface/safetensors; tests/sthdr reads
# them all with the library, dare-stream inspect a share of them.  Any
# disagreement fails, unless it is one of dare-stream's deliberate extra
# rules (DELIBERATE in strules.py).  Environment (set by `make check`):
# DS_BIN, DS_STHDR, PYTHON3; HEADER_DIFF_CASES, HEADER_DIFF_SEED to vary the
# run; DS_KEEP=1 keeps the files.  Exit 77 without python3 >= 3.9.
# shellcheck source=cli/lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/cli/lib.sh}"
ds_setup header-diff
need_python
here=$(cd "$(dirname "$0")" && pwd)
DS_STHDR=${DS_STHDR:-$here/../tests/sthdr}
[ -x "$DS_STHDR" ] || hard_error "DS_STHDR '$DS_STHDR' is not an executable"

"$PYTHON3" "$here/ref/strules.py" run --helper "$DS_STHDR" \
	--bin "$DS_BIN" --dir "$T/cases" \
	--cases "${HEADER_DIFF_CASES:-3000}" \
	--seed "${HEADER_DIFF_SEED:-20260512}"
case $? in
0) ok "every header read as the reference reads it, or refused on purpose" ;;
1) fail "headers read otherwise than the reference reads them" ;;
*) hard_error "strules.py could not run the comparison" ;;
esac
ds_finish

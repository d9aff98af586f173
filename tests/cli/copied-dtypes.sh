#!/bin/sh
# SPDX-License-Identifier: MIT
# copied-dtypes.sh - tensors of the dtypes not merged are the base's bytes
#
# FP8 (all five), MXFP4 blocks (F4) and scales (F8_E8M0), F6_E2M3, F6_E3M2,
# C64 and U16 tensors go through a merge byte for byte, with one notice that
# names the dtypes and their counts, and the output header is one the
# reference reader accepts (tests/ref/strules.py).
# Functions run through check look unreachable to shellcheck.
# shellcheck disable=SC2317
# shellcheck source=lib.sh
. "${DS_TESTLIB:-$(dirname "$0")/lib.sh}"
ds_setup copied-dtypes
need_python
here=$(cd "$(dirname "$0")" && pwd)
STRULES=$here/../ref/strules.py

say "== tensors of every dtype not merged are copied from the base"
# st_write FILE SEED: F32 'w' (merged) and one tensor of each copied dtype,
# its bytes a function of SEED (so base and model differ).
st_write() {
	py '
import struct
f, seed = sys.argv[1], int(sys.argv[2])
# name, dtype, shape, bytes (bits x elements / 8, by hand)
T = [("w", "F32", [4], 16), ("blocks", "F4", [3, 2], 3),
     ("scales", "F8_E8M0", [3], 3), ("q", "F6_E2M3", [4], 3),
     ("r", "F6_E3M2", [2, 2], 3), ("c", "C64", [1], 8),
     ("e4", "F8_E4M3FNUZ", [2], 2), ("e5", "F8_E5M2FNUZ", [2], 2),
     ("f8", "F8_E4M3", [5], 5), ("u", "U16", [1], 2)]
h, off, data = {}, 0, b""
for name, dt, shape, n in T:
    h[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
    if dt == "F32":
        data += struct.pack("<4f", *[seed + i / 4 for i in range(4)])
    else:
        data += bytes((seed * 31 + off + i) & 0xff for i in range(n))
    off += n
t = json.dumps(h, separators=(",", ":")).encode()
t += b" " * ((8 - len(t) % 8) % 8)
open(f, "wb").write(struct.pack("<Q", len(t)) + t + data)
' "$@"
}
mkdir -p "$T/dt/base" "$T/dt/ft"
st_write "$T/dt/base/model.safetensors" 1
st_write "$T/dt/ft/model.safetensors" 2
inputs_record "$T/dt"

# copied_ok OUT BASE: every tensor but w has the base's dtype, shape and
# bytes, and the reference would read OUT's shard.
copied_ok() {
	py '
sys.path.insert(0, os.path.dirname(sys.argv[3]))
import strules
def table(p):
    b = open(p, "rb").read()
    n = int.from_bytes(b[:8], "little")
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return b, h, {k: b[8 + n + v["data_offsets"][0]:8 + n +
                     v["data_offsets"][1]] for k, v in h.items()}
ob, oh, od = table(sys.argv[1])
bb, bh, bd = table(sys.argv[2])
ok, why, hit, _ = strules.verdict(ob)
if not ok or hit:
    sys.exit("the reference would not read the output: %s %s" % (why, hit))
for k in bh:
    if k == "w":
        continue
    if (oh[k]["dtype"], oh[k]["shape"], od[k]) != \
       (bh[k]["dtype"], bh[k]["shape"], bd[k]):
        sys.exit("%s: %s %s %r, the base %s %s %r" % (
            k, oh[k]["dtype"], oh[k]["shape"], od[k],
            bh[k]["dtype"], bh[k]["shape"], bd[k]))
if od["w"] == bd["w"] or set(oh) != set(bh):
    sys.exit("w was not merged, or the tensors differ")
' "$1/model.safetensors" "$2/model.safetensors" "$STRULES"
}

if ds_merge "$T/out-dt" --base "$T/dt/base" --model "$T/dt/ft" \
	--method task_arithmetic; then
	check "FP8, MXFP4, F6, C64 and U16 tensors are the base's bytes" \
		copied_ok "$T/out-dt" "$T/dt/base"
	stderr_has "one notice: 9 copied, by dtype in the enum's order" \
		"dare-stream: .*/base: 9 tensors copied from the base unchanged, as only F16, BF16 and F32 are merged: U16: 1 \('u'\), F8_E4M3: 1 \('f8'\), F8_E8M0: 1 \('scales'\), F8_E4M3FNUZ: 1 \('e4'\), F8_E5M2FNUZ: 1 \('e5'\), F4: 1 \('blocks'\), F6_E2M3: 1 \('q'\), F6_E3M2: 1 \('r'\), C64: 1 \('c'\)$"
	check "a notice, not nine warnings" \
		not grep -q 'warning' "$T/stderr"
	run "$DS_BIN" verify "$T/out-dt"
	check "dare-stream verify accepts the output (exit $ds_rc)" \
		test "$ds_rc" -eq 0
fi

ds_finish

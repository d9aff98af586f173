#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# packread.py - a delta pack read from dare-stream-pack(5) alone
"""Usage: packread.py PACK BASE MODEL

Reads PACK as the man page describes it, with nothing of dare-stream's
code: the magic, version and footer, the header's fields, the seek table,
and every frame, each decompressed on its own by the zstd program and
hashed by xxhsum (XXH3-64).  Then checks it against the models it was made
from: each tensor's base_xxh3 is the XXH3-64 of BASE's bytes of it, a
"delta" tensor's frames hold MODEL's values where the DARE mask (drawn by
dsref.py's Philox) keeps them, in element order, and a "whole" tensor's
all of MODEL's values.  Prints a line of counts; exits 1 naming the first
thing that differs."""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import dsref  # noqa: E402

FRAME = 65536
SIZES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4,
         "F16": 2, "BF16": 2, "I16": 2, "U16": 2, "F8_E4M3": 1,
         "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}


def fail(msg):
    print(f"packread: {msg}", file=sys.stderr)
    sys.exit(1)


def xxh3_files(paths):
    """XXH3-64 of each file, by xxhsum."""
    out = subprocess.run(["xxhsum", "-H3"] + paths, check=True,
                         capture_output=True, text=True).stdout
    got = {}
    for line in out.splitlines():
        # XXH3 (PATH) = HEX
        head, _, hexd = line.rpartition(" = ")
        got[head[head.index("(") + 1:-1]] = int(hexd, 16)
    return [got[p] for p in paths]


def unzstd(data):
    r = subprocess.run(["zstd", "-dcq"], input=data, capture_output=True)
    if r.returncode:
        fail("a frame zstd does not decompress: " + r.stderr.decode())
    return r.stdout


def main():
    if len(sys.argv) != 4:
        fail(__doc__)
    pack_path, base, model = sys.argv[1:]
    b = open(pack_path, "rb").read()
    if b[:8] != b"DSDPACK\0" or b[-8:] != b"DSDPEND\0":
        fail("magic")
    version, flags = struct.unpack("<II", b[8:16])
    if (version, flags) != (1, 0):
        fail(f"version {version} flags {flags}")
    H, L, F = struct.unpack("<QQQ", b[-32:-8])
    if H + L + 32 != len(b):
        fail("the footer does not give the file's length")
    h = json.loads(b[H:H + L])
    if (h["format"], h["version"], h["frame_elements"]) != \
            ("dare-stream-pack", 1, FRAME):
        fail("header format, version or frame_elements")
    seed, stream = int(h["seed"]), h["stream"]
    p = float.fromhex(h["p"])
    if abs(p - h["p_decimal"]) > 1e-12:
        fail("p and p_decimal differ")
    thr = dsref.drop_threshold(p)
    ends = [struct.unpack("<Q", b[16 + 16 * g:24 + 16 * g])[0]
            for g in range(F)]
    sums = [struct.unpack("<Q", b[24 + 16 * g:32 + 16 * g])[0]
            for g in range(F)]
    starts = [16 + 16 * F] + ends[:-1]
    if any(e < s for s, e in zip(starts, ends)) or (F and ends[-1] > H):
        fail("seek table ends decrease or pass the header")
    bm, mm = dsref.Model(base), dsref.Model(model)
    frames_seen, kept_all, numel_all = 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        files, want_sums = [], []
        for t in h["tensors"]:
            name, kind, es = t["name"], t["kind"], SIZES[t["dtype"]]
            n = math.prod(t["shape"])
            mt = mm.tensors[name]
            if (mt.dtype, list(mt.shape)) != (t["dtype"], t["shape"]):
                fail(f"{name}: dtype or shape differs from the model's")
            raw = mt.read()
            if t["first_frame"] != frames_seen or \
                    t["frames"] != (n + FRAME - 1) // FRAME:
                fail(f"{name}: first_frame or frames")
            bt = bm.tensors[name]
            bpath = os.path.join(tmp, f"base{len(files)}")
            open(bpath, "wb").write(bt.read())
            files.append(bpath)
            want_sums.append(int(t["base_xxh3"], 16))
            if kind == "delta":
                u = dsref.philox_u(seed, stream,
                                   dsref.xxh32(name.encode()), 0, n)
                keep = [thr is not None and x >= thr for x in u]
            elif kind == "whole":
                keep = [True] * n
            else:
                fail(f"{name}: kind {kind!r}")
            for f in range(t["frames"]):
                g = frames_seen + f
                vals = unzstd(b[starts[g]:ends[g]])
                lo, hi = f * FRAME, min(n, (f + 1) * FRAME)
                want = b"".join(raw[i * es:(i + 1) * es]
                                for i in range(lo, hi) if keep[i])
                if vals != want:
                    fail(f"{name}: frame {f} does not hold the model's "
                         f"kept values ({len(vals)} bytes, {len(want)} "
                         f"expected)")
                fpath = os.path.join(tmp, f"frame{g}")
                open(fpath, "wb").write(vals)
                files.append(fpath)
                want_sums.append(sums[g])
                kept_all += len(vals) // es
            frames_seen += t["frames"]
            numel_all += n
        if frames_seen != F:
            fail(f"the tensors' frames add up to {frames_seen}, not {F}")
        for path, got, want in zip(files, xxh3_files(files), want_sums):
            if got != want:
                fail(f"XXH3-64 of {os.path.basename(path)}: {got:016x}, "
                     f"the pack says {want:016x}")
    if len(h["tensors"]) != len(mm.tensors):
        fail("the pack does not hold every tensor of the model")
    print(f"ok: {len(h['tensors'])} tensors, {F} frames, "
          f"{kept_all} of {numel_all} values")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""dsref.py - independent reference of dare-stream's numerics and output format.

Written from DESIGN.md (sections 3-5 and 8) alone, Python standard library
only, so the tests compare the C engine against something that shares none
of its code.  Slow by design: fixtures of 100k-1M elements.

  dsref.py selftest                     known answers of section 4, conversions
  dsref.py check OUT --base B --model M [--model M ...] --method M [options]
                                        recompute every tensor, compare bits
  dsref.py validate DIR                 safetensors rules, index, CHECKSUMS
  dsref.py list PATH                    name dtype shape shard bytes sha256
"""

import argparse
import fnmatch
import hashlib
import json
import math
import os
import struct
import sys
from array import array

M32 = 0xFFFFFFFF
HEADER_MAX = 100_000_000
FLOAT_DTYPES = ("F16", "BF16", "F32")
DTYPE_SIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}
BIG_ENDIAN = sys.byteorder != "little"


class RefError(Exception):
    """An input or output that breaks the format rules."""


# ---- binary32 and the 16-bit formats (DESIGN 3) ----------------------------

FLT_MAX = float.fromhex("0x1.fffffep127")


def f32_round(x):
    """Round a double to the nearest binary32 (ties to even), overflow to inf.

    Written out rather than taken from struct, which raises OverflowError.
    """
    if x != x or x == 0.0 or math.isinf(x):
        return x
    m, e = math.frexp(abs(x))            # abs(x) = m * 2**e, 0.5 <= m < 1
    if e >= -125:                        # normal: 24 significant bits
        q = round(m * 16777216.0)        # exact scaling; round() is RNE
        r = math.ldexp(q, e - 24)
    else:                                # subnormal: quantum 2**-149
        r = math.ldexp(round(math.ldexp(abs(x), 149)), -149)
    if r > FLT_MAX:
        r = math.inf
    return math.copysign(r, x)


def r32(values):
    """Bulk binary32 rounding (array('f') casts without an overflow check;
    selftest checks it against f32_round)."""
    return array("f", values).tolist()


def f32_bits(values):
    a = array("f", values)
    b = array("I")
    b.frombytes(a.tobytes())
    return b


def bits_f32(bits):
    a = array("f")
    a.frombytes(array("I", bits).tobytes())
    return a.tolist()


def bf16_from_f32bits(x):
    if (x & 0x7FFFFFFF) > 0x7F800000:
        return (x >> 16) | 0x40          # NaN stays NaN, quiet
    return ((x + 0x7FFF + ((x >> 16) & 1)) >> 16) & 0xFFFF


def f16_from_f32bits(x):
    sign = (x >> 16) & 0x8000
    ax = x & 0x7FFFFFFF
    if ax > 0x7F800000:
        return sign | 0x7E00 | ((ax >> 13) & 0x3FF)
    if ax >= 0x477FF000:                 # >= 65520 rounds to inf
        return sign | 0x7C00
    if ax >= 0x38800000:                 # normal half
        r = ax - 0x38000000
        return sign | ((r + 0xFFF + ((r >> 13) & 1)) >> 13)
    if ax <= 0x33000000:                 # <= 2**-25 rounds to zero
        return sign
    m = (ax & 0x7FFFFF) | 0x800000
    shift = 126 - (ax >> 23)
    q, rem, half = m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1)
    if rem > half or (rem == half and q & 1):
        q += 1
    return sign | q


def f16_to_f32bits(h):
    sign = (h & 0x8000) << 16
    e, m = (h >> 10) & 0x1F, h & 0x3FF
    if e == 0x1F:
        return sign | 0x7F800000 | (m << 13)
    if e == 0:
        if m == 0:
            return sign
        v = math.ldexp(m, -24)           # exact in binary32
        return sign | struct.unpack("<I", struct.pack("<f", v))[0]
    return sign | ((e + 112) << 23) | (m << 13)


F16_TO_F32 = None


def f16_table():
    global F16_TO_F32
    if F16_TO_F32 is None:
        F16_TO_F32 = bits_f32([f16_to_f32bits(h) for h in range(65536)])
    return F16_TO_F32


def decode(dtype, data):
    """Raw little-endian bytes of a float tensor -> list of floats (exact)."""
    if dtype == "F32":
        a = array("f")
        a.frombytes(data)
        if BIG_ENDIAN:
            a.byteswap()
        return a.tolist()
    h = array("H")
    h.frombytes(data)
    if BIG_ENDIAN:
        h.byteswap()
    if dtype == "BF16":
        return bits_f32([v << 16 for v in h])
    tab = f16_table()
    return [tab[v] for v in h]


def encode_bits(dtype, values):
    """binary32 values -> output bit patterns of dtype (array H or I)."""
    bits = f32_bits(values)
    if dtype == "F32":
        return bits
    fn = bf16_from_f32bits if dtype == "BF16" else f16_from_f32bits
    return array("H", [fn(x) for x in bits])


def raw_bits(dtype, data):
    a = array("I" if DTYPE_SIZE[dtype] == 4 else "H")
    a.frombytes(data)
    if BIG_ENDIAN:
        a.byteswap()
    return a


def to_le_bytes(a):
    if BIG_ENDIAN:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def is_nan_bits(dtype, v):
    if dtype == "F32":
        return (v & 0x7FFFFFFF) > 0x7F800000
    if dtype == "BF16":
        return (v & 0x7FFF) > 0x7F80
    return (v & 0x7C00) == 0x7C00 and (v & 0x3FF) != 0


def ulp_distance(dtype, a, b):
    """Distance in units in the last place on the bit patterns; NaN == NaN,
    +0 and -0 differ by 1 (bits must match exactly at --max-ulp 0)."""
    if a == b:
        return 0
    na, nb = is_nan_bits(dtype, a), is_nan_bits(dtype, b)
    if na or nb:
        return 0 if na and nb else 1 << 40
    sign = 0x80000000 if dtype == "F32" else 0x8000

    def key(v):
        return -(v & (sign - 1)) if v & sign else v & (sign - 1)
    return max(1, abs(key(a) - key(b)))


# ---- XXH32 and Philox4x32-10 (DESIGN 4) ----------------------------------

P1, P2, P3, P4, P5 = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1


def rotl32(x, r):
    return ((x << r) | (x >> (32 - r))) & M32


def xxh32(data, seed=0):
    n, i = len(data), 0
    if n >= 16:
        v = [(seed + P1 + P2) & M32, (seed + P2) & M32, seed & M32,
             (seed - P1) & M32]
        while i + 16 <= n:
            for k in range(4):
                lane = int.from_bytes(data[i:i + 4], "little")
                v[k] = (rotl32((v[k] + lane * P2) & M32, 13) * P1) & M32
                i += 4
        h = (rotl32(v[0], 1) + rotl32(v[1], 7) + rotl32(v[2], 12) +
             rotl32(v[3], 18)) & M32
    else:
        h = (seed + P5) & M32
    h = (h + n) & M32
    while i + 4 <= n:
        lane = int.from_bytes(data[i:i + 4], "little")
        h = (rotl32((h + lane * P3) & M32, 17) * P4) & M32
        i += 4
    while i < n:
        h = (rotl32((h + data[i] * P5) & M32, 11) * P1) & M32
        i += 1
    h ^= h >> 15
    h = (h * P2) & M32
    h ^= h >> 13
    h = (h * P3) & M32
    return h ^ (h >> 16)


PM0, PM1, PW0, PW1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85


def philox_keys(k0, k1):
    keys = []
    for _ in range(10):
        keys.append((k0, k1))
        k0, k1 = (k0 + PW0) & M32, (k1 + PW1) & M32
    return keys


def philox(ctr, key):
    """One Philox4x32-10 block: 4 counter words, 2 key words -> 4 words."""
    c0, c1, c2, c3 = ctr
    for k0, k1 in philox_keys(*key):
        p0, p1 = PM0 * c0, PM1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0, p1 & M32,
                          (p0 >> 32) ^ c3 ^ k1, p0 & M32)
    return (c0, c1, c2, c3)


def philox_u(seed, j, name_hash, first, count):
    """u for flat indices first .. first+count-1 of model j's stream."""
    keys = philox_keys(seed & M32, (seed >> 32) & M32)
    out = []
    b_end = (first + count + 3) // 4
    for b in range(first // 4, b_end):
        c0, c1, c2, c3 = b & M32, b >> 32, j, name_hash
        for k0, k1 in keys:
            p0, p1 = PM0 * c0, PM1 * c2
            c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0, p1 & M32,
                              (p0 >> 32) ^ c3 ^ k1, p0 & M32)
        out += (c0, c1, c2, c3)
    skip = first % 4
    return out[skip:skip + count]


def drop_threshold(p):
    """T = floor(p * 2**32) in double; None for p == 1 (drop all)."""
    if p >= 1.0:
        return None
    return math.floor(p * 4294967296.0)


# ---- safetensors reading -------------------------------------------------

class Tensor:
    __slots__ = ("name", "dtype", "shape", "path", "start", "nbytes")

    def __init__(self, name, dtype, shape, path, start, nbytes):
        self.name, self.dtype, self.shape = name, dtype, shape
        self.path, self.start, self.nbytes = path, start, nbytes

    @property
    def numel(self):
        return math.prod(self.shape)

    def read(self):
        with open(self.path, "rb") as f:
            f.seek(self.start)
            data = f.read(self.nbytes)
        if len(data) != self.nbytes:
            raise RefError(f"{self.path}: short read of {self.name}")
        return data


def _no_dups(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise RefError(f"duplicate key '{k}'")
        seen[k] = v
    return seen


def read_header(path, problems=None):
    """Parse and check one shard.  Returns (header dict, data start).
    Rule violations raise RefError; notes go to problems when given."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise RefError(f"{path}: shorter than 8 bytes")
        n = struct.unpack("<Q", raw)[0]
        if n > HEADER_MAX or 8 + n > size:
            raise RefError(f"{path}: header length {n} out of range")
        text = f.read(n)
    if not text.startswith(b"{"):
        raise RefError(f"{path}: header does not start with '{{'")
    try:
        s = text.decode("utf-8")
        hdr, end = json.JSONDecoder(object_pairs_hook=_no_dups).raw_decode(s)
    except (UnicodeDecodeError, ValueError, RefError) as e:
        raise RefError(f"{path}: bad header JSON: {e}") from None
    if s[end:].strip(" "):
        raise RefError(f"{path}: header padding is not spaces")
    if problems is not None and (8 + n) % 8:
        problems.append(f"note: {path}: data does not start 8-byte aligned")
    check_entries(path, hdr, size - 8 - n)
    return hdr, 8 + n


def check_entries(path, hdr, buflen):
    """Dtypes, shapes, sizes, and offsets contiguous from 0 to buflen."""
    spans = []
    for name, t in hdr.items():
        if name == "__metadata__":
            if not isinstance(t, dict) or not all(
                    isinstance(v, str) for v in t.values()):
                raise RefError(f"{path}: __metadata__ must map str to str")
            continue
        dt, shape, offs = t.get("dtype"), t.get("shape"), t.get("data_offsets")
        if dt not in DTYPE_SIZE:
            raise RefError(f"{path}: {name}: unknown dtype {dt!r}")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and d >= 0 for d in shape):
            raise RefError(f"{path}: {name}: bad shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and
                all(isinstance(o, int) for o in offs) and 0 <= offs[0] <= offs[1]):
            raise RefError(f"{path}: {name}: bad data_offsets {offs!r}")
        if offs[1] - offs[0] != math.prod(shape) * DTYPE_SIZE[dt]:
            raise RefError(f"{path}: {name}: data_offsets {offs} do not "
                           f"match {dt} {shape}")
        spans.append((offs[0], offs[1], name))
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            raise RefError(f"{path}: {name}: data_offsets start at {b}, "
                           f"expected {pos} (hole or overlap)")
        pos = e
    if pos != buflen:
        raise RefError(f"{path}: tensors end at {pos} but the buffer has "
                       f"{buflen} bytes (file length)")


def shard_tensors(path, problems=None):
    hdr, start = read_header(path, problems)
    out = {}
    for name, t in hdr.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        out[name] = Tensor(name, t["dtype"], t["shape"], path, start + b, e - b)
    return hdr.get("__metadata__"), out


class Model:
    """A model argument: directory, .safetensors file or index file."""

    def __init__(self, arg, problems=None):
        self.arg = arg
        self.index = None
        self.shards = []
        self.tensors = {}
        self.meta = {}
        if os.path.isdir(arg):
            idx = os.path.join(arg, "model.safetensors.index.json")
            single = os.path.join(arg, "model.safetensors")
            if os.path.isfile(idx):
                self._load_index(idx)
            elif os.path.isfile(single):
                self.shards = [single]
            else:
                found = sorted(f for f in os.listdir(arg)
                               if f.endswith(".safetensors"))
                if len(found) != 1:
                    raise RefError(f"{arg}: no model.safetensors or index")
                self.shards = [os.path.join(arg, found[0])]
        elif arg.endswith(".json"):
            self._load_index(arg)
        elif os.path.isfile(arg):
            self.shards = [arg]
        else:
            raise RefError(f"{arg}: no such model")
        for p in self.shards:
            self.meta[p], ts = shard_tensors(p, problems)
            for name, t in ts.items():
                if name in self.tensors:
                    raise RefError(f"{p}: {name} also in "
                                   f"{self.tensors[name].path}")
                self.tensors[name] = t

    def _load_index(self, idx):
        with open(idx, "rb") as f:
            self.index = json.loads(f.read().decode("utf-8"),
                                    object_pairs_hook=_no_dups)
        wm = self.index.get("weight_map")
        if not isinstance(wm, dict):
            raise RefError(f"{idx}: no weight_map")
        d = os.path.dirname(idx) or "."
        names = []
        for tname, shard in wm.items():
            if (not isinstance(shard, str) or "/" in shard or "\\" in shard
                    or shard in ("", ".", "..")):
                raise RefError(f"{idx}: unsafe shard name {shard!r} "
                               f"for {tname}")
            if shard not in names:
                names.append(shard)
        self.index_path = idx
        self.shards = [os.path.join(d, s) for s in sorted(names)]

    def ordered(self):
        """Tensors shard by shard, in data order."""
        return sorted(self.tensors.values(),
                      key=lambda t: (self.shards.index(t.path), t.start))


# ---- merge methods (DESIGN 5) --------------------------------------------

class Recipe:
    def __init__(self, a):
        self.method = a.method
        n = len(a.model)
        self.n = n
        self.w = [f32_round(v) for v in per_model(a.weight, a.weights, n, 1.0)]
        self.lam = f32_round(a.lambda_)
        self.p = drop_rates(a, n)
        self.dare = a.method in ("dare_linear", "dare_ties")
        if self.dare and self.p is None:
            raise RefError(f"{a.method} needs -p, --drop-rates or --density")
        if a.normalize is None:
            self.normalize = a.method == "linear"
        else:
            self.normalize = a.normalize
        self.seed = a.seed
        self.s = []
        for j in range(n):
            p = self.p[j] if self.dare else 0.0
            if not self.dare or a.rescale == "none" or p >= 1.0:
                self.s.append(1.0)
            else:
                self.s.append(f32_round(1.0 / (1.0 - p)))
        wsum = 0.0
        for w in self.w:
            wsum = f32_round(wsum + w)
        self.wsum = wsum


def per_model(one, many, n, default):
    if many is not None:
        vals = [float(v) for v in many.split(",")]
        if len(vals) != n:
            raise RefError(f"{len(vals)} values for {n} models")
        return vals
    return [float(one) if one is not None else default] * n


def drop_rates(a, n):
    if a.densities is not None:
        return [1.0 - d for d in per_model(None, a.densities, n, 0)]
    if a.density is not None:
        return [1.0 - float(a.density)] * n
    if a.p is None and a.drop_rates is None:
        return None
    return per_model(a.p, a.drop_rates, n, 0.0)


def sparsify(rc, j, name_hash, b, x):
    """d_j: (x - b), or the DARE-masked and rescaled delta."""
    n = len(b)
    if not rc.dare:
        return r32([xv - bv for xv, bv in zip(x, b)])
    T = drop_threshold(rc.p[j])
    if T is None:
        return [0.0] * n
    u = philox_u(rc.seed, j, name_hash, 0, n)
    delta = r32([xv - bv for xv, bv in zip(x, b)])
    s = rc.s[j]
    if s != 1.0:
        delta = r32([dv * s for dv in delta])
    return [dv if uv >= T else 0.0 for dv, uv in zip(delta, u)]


def merge_linear(rc, b, xs):
    acc = [0.0] * len(b)
    for j, x in enumerate(xs):
        w = rc.w[j]
        acc = r32([a + t for a, t in zip(acc, r32([w * v for v in x]))])
    if rc.normalize:
        div = rc.wsum or 1.0
        acc = r32([a / div for a in acc])
    return acc


def add_lambda(rc, b, acc):
    lam = rc.lam
    return r32([bv + t for bv, t in zip(b, r32([lam * a for a in acc]))])


def merge_sum(rc, b, ds):
    """task_arithmetic and dare_linear: linear's sum of the deltas, on b."""
    return add_lambda(rc, b, merge_linear(rc, b, ds))


def merge_ties(rc, b, ds):
    """dare_ties: sign election per element, then the agreeing sum.

    acc starts at +0 and only ever adds nonzero values of one sign, so it
    is never -0: skipping an unselected model equals adding +0 to it."""
    n = len(b)
    es = [r32([rc.w[j] * v for v in d]) for j, d in enumerate(ds)]
    S = [0.0] * n
    for e in es:
        S = r32([s + v for s, v in zip(S, e)])
    pos = [s >= 0.0 for s in S]
    acc, D = [0.0] * n, [0.0] * n
    for j, e in enumerate(es):
        sel = [(v > 0.0) if p else (v < 0.0) for v, p in zip(e, pos)]
        acc = r32([a + v if k else a for a, v, k in zip(acc, e, sel)])
        w = rc.w[j]
        D = r32([d + w if k else d for d, k in zip(D, sel)])
    if rc.normalize:
        acc = r32([a / (d or 1.0) for a, d in zip(acc, D)])
    return add_lambda(rc, b, acc)


def merge_tensor(rc, name, b, xs):
    if rc.method == "linear":
        return merge_linear(rc, b, xs)
    h = xxh32(name.encode("utf-8"))
    ds = [sparsify(rc, j, h, b, x) for j, x in enumerate(xs)]
    if rc.method == "dare_ties":
        return merge_ties(rc, b, ds)
    return merge_sum(rc, b, ds)


# ---- check ---------------------------------------------------------------

def model_values(m, t, n):
    """First n elements (the base's rows) of model m's tensor like t."""
    mt = m.tensors.get(t.name)
    if mt is None:
        raise RefError(f"{m.arg}: tensor {t.name} missing")
    if mt.dtype not in FLOAT_DTYPES:
        raise RefError(f"{m.arg}: {t.name} is {mt.dtype}, not a float")
    if mt.numel < n or mt.shape[1:] != t.shape[1:]:
        raise RefError(f"{m.arg}: {t.name} shape {mt.shape} vs base {t.shape}")
    return decode(mt.dtype, mt.read()[:n * DTYPE_SIZE[mt.dtype]])


def expected_tensor(a, rc, base, models, t):
    """(dtype, bytes) the output must hold for base tensor t, and a kind."""
    if any(fnmatch.fnmatchcase(t.name, g) for g in a.exclude or []):
        return t.dtype, t.read(), "excluded"
    if t.dtype not in FLOAT_DTYPES:
        return t.dtype, t.read(), "copied"
    odt = a.dtype.upper() if a.dtype else t.dtype
    n = t.numel
    b = decode(t.dtype, t.read())
    xs = [model_values(m, t, n) for m in models]
    out = merge_tensor(rc, t.name, b, xs)
    return odt, to_le_bytes(encode_bits(odt, out)), "merged"


def compare(name, dtype, exp, got, max_ulp):
    """Returns (elements over max_ulp, worst ULP, first bad index)."""
    if exp == got:
        return 0, 0, None
    if dtype not in FLOAT_DTYPES:
        first = next(i for i in range(min(len(exp), len(got)))
                     if exp[i] != got[i]) if len(exp) == len(got) else 0
        return 1, 1 << 40, first
    ea, ga = raw_bits(dtype, exp), raw_bits(dtype, got)
    bad, worst, first = 0, 0, None
    for i, (x, y) in enumerate(zip(ea, ga)):
        if x != y:
            d = ulp_distance(dtype, x, y)
            worst = max(worst, d)
            if d > max_ulp:
                bad += 1
                if first is None:
                    first = i
    return bad, worst, first


def check_one(a, rc, base, models, out, t):
    """Compare one tensor; returns (ok, kind, worst ULP)."""
    odt, exp, kind = expected_tensor(a, rc, base, models, t)
    ot = out.tensors.get(t.name)
    if ot is None:
        print(f"MISSING {t.name}: not in the output")
        return False, kind, 0
    if ot.dtype != odt or ot.shape != t.shape:
        print(f"MISMATCH {t.name}: output {ot.dtype} {ot.shape}, "
              f"expected {odt} {t.shape}")
        return False, kind, 0
    bad, worst, first = compare(t.name, odt, exp, ot.read(), a.max_ulp)
    if bad:
        sz = DTYPE_SIZE[odt]
        e_hex = exp[first * sz:(first + 1) * sz][::-1].hex()
        g_hex = ot.read()[first * sz:(first + 1) * sz][::-1].hex()
        print(f"MISMATCH {t.name} ({kind}, {odt}): {bad} elements over "
              f"{a.max_ulp} ULP, max {worst} ULP; first at {first}: "
              f"expected 0x{e_hex}, got 0x{g_hex}")
        return False, kind, worst
    return True, kind, worst


def cmd_check(a):
    rc = Recipe(a)
    base = Model(a.base)
    models = [Model(m) for m in a.model]
    out = Model(a.out)
    failed, counts, worst = 0, {}, 0
    for t in base.ordered():
        if a.only and not any(fnmatch.fnmatchcase(t.name, g) for g in a.only):
            if t.name not in out.tensors:
                print(f"MISSING {t.name}: not in the output")
                failed += 1
            continue
        ok, kind, w = check_one(a, rc, base, models, out, t)
        counts[kind] = counts.get(kind, 0) + 1
        worst = max(worst, w)
        failed += not ok
    extra = sorted(set(out.tensors) - set(base.tensors))
    for name in extra:
        print(f"EXTRA {name}: in the output, not in the base")
    failed += len(extra)
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    verdict = "OK" if not failed else "FAILED"
    print(f"dsref check {a.method}: {sum(counts.values())} of "
          f"{len(base.tensors)} tensors ({kinds}), "
          f"{failed} mismatched, max {worst} ULP (allowed {a.max_ulp}): "
          f"{verdict}")
    return 0 if not failed else 1


# ---- validate ------------------------------------------------------------

def parse_checksums(path):
    names = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("XXH128 ("):
                name, _, h = line[8:].rpartition(") = ")
            else:
                h, sep, name = line.partition("  ")
                if not sep:
                    raise RefError(f"{path}: bad line {line!r}")
            if len(h) != 32 or any(c not in "0123456789abcdef" for c in h):
                raise RefError(f"{path}: bad hash in {line!r}")
            names[name] = h
    return names


def validate_index(m, problems):
    idx = m.index
    wm = idx["weight_map"]
    where = {t.name: os.path.basename(t.path) for t in m.tensors.values()}
    if set(wm) != set(where):
        miss = sorted(set(where) - set(wm))[:3]
        more = sorted(set(wm) - set(where))[:3]
        problems.append(f"index weight_map differs from the shards: not in "
                        f"the index {miss}, not in a shard {more}")
    for name, shard in wm.items():
        if name in where and where[name] != shard:
            problems.append(f"index maps {name} to {shard}, it is in "
                            f"{where[name]}")
    total = sum(t.nbytes for t in m.tensors.values())
    ts = (idx.get("metadata") or {}).get("total_size")
    if ts != total:
        problems.append(f"index metadata.total_size {ts}, tensors hold "
                        f"{total} bytes")
    d = os.path.dirname(m.index_path)
    on_disk = {f for f in os.listdir(d) if f.endswith(".safetensors")}
    listed = {os.path.basename(p) for p in m.shards}
    if on_disk != listed:
        problems.append(f"shard files {sorted(on_disk)} but the index "
                        f"names {sorted(listed)}")


def validate_files(d, problems):
    files = []
    for root, dirs, fs in os.walk(d):
        for f in fs + [x for x in dirs if os.path.islink(os.path.join(root, x))]:
            rel = os.path.relpath(os.path.join(root, f), d)
            files.append(rel)
    hidden = [f for f in files if any(p.startswith(".")
                                      for p in f.split(os.sep))]
    if hidden:
        problems.append(f"leftover hidden (temporary?) files: {hidden}")
    ck = os.path.join(d, "CHECKSUMS.xxh128")
    if not os.path.isfile(ck):
        problems.append("no CHECKSUMS.xxh128")
        return
    listed = parse_checksums(ck)
    want = set(files) - {"CHECKSUMS.xxh128"}
    if set(listed) != want:
        problems.append(f"CHECKSUMS.xxh128 lists {sorted(listed)}, directory "
                        f"has {sorted(want)}")


def cmd_validate(a):
    problems, notes = [], []
    try:
        m = Model(a.dir, notes)
        for p, meta in m.meta.items():
            if not isinstance(meta, dict) or meta.get("format") != "pt":
                problems.append(f"{p}: __metadata__ lacks \"format\": \"pt\" "
                                f"({meta!r})")
        if m.index is not None:
            validate_index(m, problems)
        elif len(m.shards) == 1 and os.path.isdir(a.dir):
            stray = [f for f in os.listdir(a.dir) if f.endswith(".safetensors")
                     and f != os.path.basename(m.shards[0])]
            if stray:
                problems.append(f"shards {stray} but no index")
        if os.path.isdir(a.dir) and not a.no_checksums:
            validate_files(a.dir, problems)
    except (RefError, OSError) as e:
        problems.append(str(e))
    for n in notes:
        print(n)
    for p in problems:
        print(f"INVALID {p}")
    if problems:
        print(f"dsref validate {a.dir}: {len(problems)} problems: FAILED")
        return 1
    print(f"dsref validate {a.dir}: {len(m.shards)} shards, "
          f"{len(m.tensors)} tensors: OK")
    return 0


def cmd_list(a):
    m = Model(a.path)
    for t in m.ordered():
        digest = hashlib.sha256(t.read()).hexdigest()
        shape = ",".join(str(d) for d in t.shape)
        print(f"{t.name}\t{t.dtype}\t[{shape}]\t{os.path.basename(t.path)}\t"
              f"{t.nbytes}\t{digest}")
    return 0


# ---- selftest ------------------------------------------------------------

PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32, M32, M32, M32), (M32, M32),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
     (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

MASK_EXAMPLES = [
    (0, 0, "model.layers.0.mlp.up_proj.weight", 0xDA893B3C,
     "e55b5e47 7bcbef69 68b3149d 4fe5907c d546b733 cf31041c d6805b37 "
     "c51dd972", "d9e3c4eb a6f445b7 6b556811 06af7bde", "1000111100010110"),
    (0x123456789ABCDEF0, 2, "lm_head.weight", 0x60B84ADF,
     "a9d9a09a d7345699 f617dc17 0451dde1 4f6871ef 5a84003a 9eee1426 "
     "74c7cfa7", "20750172 68bff788 bf8a26d0 a83cbecc", "1110001011110100"),
]


class Selftest:
    def __init__(self):
        self.failed = 0
        self.count = 0

    def eq(self, what, got, want):
        self.count += 1
        if got != want:
            self.failed += 1
            print(f"FAIL {what}: got {got!r}, want {want!r}")


def st_hashes(t):
    t.eq("XXH32('')", xxh32(b""), 0x02CC5D05)
    t.eq("XXH32('a')", xxh32(b"a"), 0x550D7456)
    t.eq("XXH32('abc')", xxh32(b"abc"), 0x32D153FF)
    t.eq("XXH32(36 bytes)",
         xxh32(b"0123456789abcdefghijklmnopqrstuvwxyz"), 0x9AA38E7E)
    for ctr, key, want in PHILOX_KAT:
        t.eq(f"philox {ctr} {key}", philox(ctr, key), want)


def st_mask(t):
    t.eq("T(0.5)", drop_threshold(0.5), 2147483648)
    t.eq("T(0.9)", drop_threshold(0.9), 3865470566)
    for seed, j, name, h, u8, u4, keep in MASK_EXAMPLES:
        t.eq(f"XXH32({name})", xxh32(name.encode()), h)
        first = [int(v, 16) for v in u8.split()]
        far = [int(v, 16) for v in u4.split()]
        t.eq(f"u 0..7 {name}", philox_u(seed, j, h, 0, 8), first)
        t.eq(f"u 2^36.. {name}", philox_u(seed, j, h, 1 << 36, 4), far)
        t.eq(f"u 2^36+1.. {name}", philox_u(seed, j, h, (1 << 36) + 1, 2),
             far[1:3])
        u16 = philox_u(seed, j, h, 0, 16)
        T = drop_threshold(0.5)
        t.eq(f"keep {name}", "".join("1" if u >= T else "0" for u in u16),
             keep)


def st_convert(t):
    def fb(x):
        return struct.unpack("<I", struct.pack("<f", x))[0]
    for x, want in [(0x3F800000, 0x3F80), (0x3F808000, 0x3F80),
                    (0x3F818000, 0x3F82), (0x3F808001, 0x3F81),
                    (0x7F800001, 0x7FC0), (0xFF800001, 0xFFC0),
                    (0x7F7FFFFF, 0x7F80), (0xFF7FFFFF, 0xFF80),
                    (0x80000000, 0x8000), (0x00000001, 0x0000)]:
        t.eq(f"bf16({x:08x})", bf16_from_f32bits(x), want)
    for x, want in [(1.0, 0x3C00), (65504.0, 0x7BFF), (65519.99, 0x7BFF),
                    (65520.0, 0x7C00), (-1e6, 0xFC00), (2.0 ** -24, 0x0001),
                    (2.0 ** -25, 0x0000), (1.5 * 2 ** -25, 0x0001),
                    (2.0 ** -14, 0x0400), (-(2.0 ** -15), 0x8200),
                    (1.0 + 2 ** -11, 0x3C00), (1.0 + 3 * 2 ** -11, 0x3C02),
                    (2.0 ** -14 - 2.0 ** -25, 0x0400)]:
        t.eq(f"f16({x!r})", f16_from_f32bits(fb(x)), want)
    for x, want in [(0x7FC00000, 0x7E00), (0x7F800001, 0x7E00),
                    (0x7F802000, 0x7E01), (0xFF800000, 0xFC00)]:
        t.eq(f"f16({x:08x})", f16_from_f32bits(x), want)
    for h, want in [(0x0001, fb(2.0 ** -24)), (0x8001, 0x80000000 | fb(2.0 ** -24)),
                    (0x03FF, fb(1023 * 2.0 ** -24)), (0x3C00, 0x3F800000),
                    (0x7C00, 0x7F800000), (0x7E01, 0x7FC02000)]:
        t.eq(f"f32(f16 {h:04x})", f16_to_f32bits(h), want)
    for h in range(0, 65536, 7):
        if not is_nan_bits("F16", h):
            t.eq(f"f16 roundtrip {h:04x}",
                 f16_from_f32bits(f16_to_f32bits(h)), h)


def st_round(t):
    tie = float.fromhex("0x1.ffffffp127")         # halfway FLT_MAX .. 2**128
    cases = [1.0, 1.0 + 2 ** -24, 1.0 + 3 * 2 ** -24, 1.0 + 2 ** -25,
             FLT_MAX, tie, math.nextafter(tie, 0), -tie, 1e39, -1e300,
             2.0 ** -149, 2.0 ** -150, 3 * 2.0 ** -151, 2.0 ** -126,
             2.0 ** -126 - 2.0 ** -150, 0.1, -0.0, math.inf, 1 / 3]
    want = [1.0, 1.0, 1.0 + 2 ** -22, 1.0, FLT_MAX, math.inf, FLT_MAX,
            -math.inf, math.inf, -math.inf, 2.0 ** -149, 0.0, 2.0 ** -149,
            2.0 ** -126, 2.0 ** -126]
    for i, w in enumerate(want):
        t.eq(f"f32_round({cases[i]!r})", f32_round(cases[i]), w)
    t.eq("f32_round(-0.0) sign", math.copysign(1, f32_round(-0.0)), -1.0)
    # The bulk path (array 'f') must agree with f32_round everywhere.
    x, vals = 0x9E3779B97F4A7C15, list(cases)
    for _ in range(20000):
        x = (x * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        vals.append(struct.unpack("<d", struct.pack("<Q", x))[0] *
                    2.0 ** -((x >> 7) % 1100))
    bulk = r32(vals)
    mine = [f32_round(v) for v in vals]
    bad = [v for v, p, q in zip(vals, bulk, mine)
           if not (p == q or (p != p and q != q)) or
           math.copysign(1, p) != math.copysign(1, q)]
    t.eq("bulk rounding == f32_round", bad[:3], [])


def st_methods(t):
    """Tiny hand-computed merges (DESIGN 5)."""
    class A:
        pass
    a = A()
    a.model, a.weight, a.weights, a.lambda_ = ["x", "y"], None, "1,1", 1.0
    a.p, a.drop_rates, a.density, a.densities = None, None, None, None
    a.rescale, a.seed, a.normalize = "inverse", 0, None
    a.method = "task_arithmetic"
    b, xs = [1.0, 2.0], [[1.5, 2.25], [0.5, 2.5]]
    t.eq("task_arithmetic", merge_tensor(Recipe(a), "t", b, xs), [1.0, 2.75])
    a.method, a.p = "dare_ties", "0"
    t.eq("dare_ties p=0", merge_tensor(Recipe(a), "t", b, xs), [1.5, 2.75])
    a.normalize = True
    t.eq("dare_ties p=0 normalize", merge_tensor(Recipe(a), "t", b, xs),
         [1.5, 2.375])
    a.method, a.normalize = "linear", None
    t.eq("linear", merge_tensor(Recipe(a), "t", b, xs), [1.0, 2.375])
    a.method, a.p, a.normalize = "dare_linear", "1", None
    t.eq("dare_linear p=1", merge_tensor(Recipe(a), "t", b, xs), b)
    a.p = "0.5"
    rc = Recipe(a)
    t.eq("s(0.5)", rc.s, [2.0, 2.0])


def cmd_selftest(_a):
    t = Selftest()
    for part in (st_hashes, st_mask, st_convert, st_round, st_methods):
        part(t)
    print(f"dsref selftest: {t.count} checks, {t.failed} failed: "
          f"{'OK' if not t.failed else 'FAILED'}")
    return 1 if t.failed else 0


# ---- command line --------------------------------------------------------

def seed_arg(s):
    v = int(s, 0)
    if not 0 <= v < 2 ** 64:
        raise argparse.ArgumentTypeError("seed out of range")
    return v


def add_check_args(p):
    p.add_argument("out")
    p.add_argument("--base", required=True)
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--method", default="dare_linear",
                   choices=("linear", "task_arithmetic", "dare_linear",
                            "dare_ties"))
    p.add_argument("-p", "--drop-rate", dest="p")
    p.add_argument("--drop-rates")
    p.add_argument("--density")
    p.add_argument("--densities")
    p.add_argument("--weight")
    p.add_argument("--weights")
    p.add_argument("--lambda", dest="lambda_", type=float, default=1.0)
    p.add_argument("--normalize", dest="normalize", action="store_true",
                   default=None)
    p.add_argument("--no-normalize", dest="normalize", action="store_false")
    p.add_argument("--rescale", choices=("inverse", "none"), default="inverse")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--dtype", choices=("bf16", "f16", "f32"))
    p.add_argument("--exclude", action="append")
    p.add_argument("--max-ulp", type=int, default=0)
    p.add_argument("--only", action="append", metavar="GLOB",
                   help="recompute only these tensors (others: presence)")


def main(argv):
    ap = argparse.ArgumentParser(prog="dsref.py", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("selftest").set_defaults(fn=cmd_selftest)
    pc = sub.add_parser("check")
    add_check_args(pc)
    pc.set_defaults(fn=cmd_check)
    pv = sub.add_parser("validate")
    pv.add_argument("dir")
    pv.add_argument("--no-checksums", action="store_true",
                    help="skip CHECKSUMS.xxh128 (for inputs)")
    pv.set_defaults(fn=cmd_validate)
    pl = sub.add_parser("list")
    pl.add_argument("path")
    pl.set_defaults(fn=cmd_list)
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except BrokenPipeError:
        return 0
    except (RefError, OSError, ValueError) as e:
        print(f"dsref.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

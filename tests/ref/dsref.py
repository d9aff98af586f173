#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""dsref.py - independent reference of dare-stream's numerics and output format.

Written from DESIGN.md (sections 3-5 and 8) alone, Python standard library
only, so the tests compare the C engine against something that shares none
of its code.  Where DESIGN describes a method relative to mergekit (karcher,
sce), the choices it leaves open follow mergekit and are named in comments.
Slow by design: fixtures of 100k-1M elements.

  dsref.py selftest                     known answers of section 4,
                                        conversions, hand-computed merges
  dsref.py check OUT [--base B] --model M [--model M ...] --method M [options]
                                        recompute every tensor, compare bits
                                        (options: those of dare-stream merge)
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
from functools import reduce
from operator import add, mul

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


# ---- LoRA adapters as models (DESIGN 7.1) ---------------------------------

class Computed:
    """A tensor whose binary32 values are computed, not read."""
    __slots__ = ("name", "dtype", "shape", "values")

    def __init__(self, name, shape, values):
        self.name, self.dtype, self.shape = name, "F32", shape
        self.values = values

    @property
    def numel(self):
        return math.prod(self.shape)

    def read(self):
        return to_le_bytes(encode_bits("F32", self.values))


def lora_values(w, a, b, r, s, trans):
    """W + (float)s * acc in binary32, acc = +0 + u[0]*v[0][c] + ... in k
    order, every product and sum rounded (no FMA).  Plain: u = B[i, :],
    v = A; transposed (fan_in_fan_out, embeddings): u = A[:, i], v = B^T."""
    rows, cols = w.shape
    wv = decode(w.dtype, w.read())
    av = decode(a.dtype, a.read())
    bv = decode(b.dtype, b.read())
    out = []
    for i in range(rows):
        if trans:
            u = [av[k * rows + i] for k in range(r)]
            v = [[bv[c * r + k] for c in range(cols)] for k in range(r)]
        else:
            u = bv[i * r:(i + 1) * r]
            v = [av[k * cols:(k + 1) * cols] for k in range(r)]
        for c in range(cols):
            acc = 0.0
            for k in range(r):
                acc = f32_round(acc + f32_round(u[k] * v[k][c]))
            out.append(f32_round(wv[i * cols + c] + f32_round(s * acc)))
    return out


class LoraModel(Model):
    """BASE+ADAPTER: the base with a PEFT LoRA adapter applied."""

    PREFIX = "base_model.model."

    def __init__(self, arg, problems=None):
        base, adapter = arg.rsplit("+", 1)
        super().__init__(base, problems)
        self.arg = arg
        with open(os.path.join(adapter, "adapter_config.json"), "rb") as f:
            cfg = json.loads(f.read().decode("utf-8"))
        if cfg.get("peft_type") != "LORA":
            raise RefError(f"{adapter}: not a LoRA adapter")
        for key in ("use_dora", "rank_pattern", "alpha_pattern"):
            if cfg.get(key):
                raise RefError(f"{adapter}: {key} is not supported")
        r, alpha = cfg["r"], cfg["lora_alpha"]
        # s in double, rounded once to binary32
        s = f32_round(alpha / math.sqrt(r) if cfg.get("use_rslora")
                      else alpha / r)
        fifo = bool(cfg.get("fan_in_fan_out"))
        _, ats = shard_tensors(os.path.join(adapter,
                                            "adapter_model.safetensors"))
        pairs = {}
        for name, t in ats.items():
            if not name.startswith(self.PREFIX):
                raise RefError(f"{adapter}: unexpected tensor {name}")
            mod = name[len(self.PREFIX):]
            for suf, role, emb in ((".lora_A.weight", "A", False),
                                   (".lora_B.weight", "B", False),
                                   (".lora_embedding_A", "A", True),
                                   (".lora_embedding_B", "B", True)):
                if mod.endswith(suf):
                    key = mod[:-len(suf)] + ".weight"
                    pairs.setdefault(key, {})[role] = t
                    pairs[key]["trans"] = emb or fifo
                    break
            else:
                if "lora_" in mod:
                    raise RefError(f"{adapter}: unsupported tensor {name}")
                if mod not in self.tensors:
                    raise RefError(f"{adapter}: {name}: no base tensor")
                self.tensors[mod] = t        # modules_to_save
        for key, pr in pairs.items():
            w = self.tensors.get(key)
            if w is None or "A" not in pr or "B" not in pr:
                raise RefError(f"{adapter}: incomplete pair for {key}")
            self.tensors[key] = Computed(key, w.shape, lora_values(
                w, pr["A"], pr["B"], r, s, pr["trans"]))


def open_model(arg):
    """A model argument, BASE+ADAPTER included."""
    if "+" in arg and not os.path.exists(arg):
        return LoraModel(arg)
    return Model(arg)


# ---- merge methods (DESIGN 5) --------------------------------------------

# Sparsifier of each task-vector method, whether it elects signs (ties'
# consensus), and the methods whose normalize is on by default (DESIGN 5,
# 5.2: mergekit's defaults).
SPARSIFIER = {
    "task_arithmetic": None, "dare_linear": "dare", "dare_ties": "dare",
    "ties": "magnitude", "breadcrumbs": "outliers",
    "breadcrumbs_ties": "outliers", "della": "della",
    "della_linear": "della",
}
CONSENSUS = ("dare_ties", "ties", "breadcrumbs_ties", "della")
NORMALIZE_ON = ("linear", "ties", "della")
# Methods that work without a --base (DESIGN 5.2 reading rules).
BASE_OPTIONAL = ("linear", "nuslerp", "karcher", "passthrough")
METHODS = ("linear",) + tuple(SPARSIFIER) + (
    "slerp", "nuslerp", "model_stock", "sce", "karcher", "passthrough")

BLOCK = 65536
NAN = math.nan


class Recipe:
    def __init__(self, a):
        self.method = a.method
        n = len(a.model)
        self.n = n
        self.w = [f32_round(v) for v in per_model(a.weight, a.weights, n, 1.0)]
        self.lam = f32_round(a.lambda_)
        self.sparsifier = SPARSIFIER.get(a.method)
        self.p, self.density = drop_rates(a, n)
        self.dare = self.sparsifier == "dare"
        if self.dare and self.p is None:
            raise RefError(f"{a.method} needs -p, --drop-rates or --density")
        if self.p is None:
            # ties, breadcrumbs and della without a density: mergekit's
            # default density 1 (every delta kept).
            self.p, self.density = [0.0] * n, [1.0] * n
        for v in self.p + self.density:
            if not 0.0 <= v <= 1.0:
                raise RefError(f"density or drop rate {v!r} outside [0, 1]")
        self.gamma = per_model(a.gamma, a.gammas, n, 0.01)
        self.epsilon = per_model(a.epsilon, a.epsilons, n, 0.15)
        for v in self.gamma + self.epsilon + [a.select_topk]:
            if not 0.0 <= v <= 1.0:
                raise RefError(f"gamma, epsilon or select_topk {v!r} "
                               f"outside [0, 1]")
        if self.sparsifier == "della":
            for d, e in zip(self.density, self.epsilon):
                if 0.0 < d < 1.0 and (d - e <= 0.0 or d + e >= 1.0):
                    raise RefError(f"della: density {d!r} -/+ epsilon {e!r} "
                                   f"must stay inside (0, 1)")
        if a.normalize is None:
            self.normalize = a.method in NORMALIZE_ON
        else:
            self.normalize = a.normalize
        self.rescale = a.rescale
        self.seed = a.seed
        self.s = []
        for j in range(n):
            p = self.p[j] if self.dare else 0.0
            if not self.dare or a.rescale != "inverse" or p >= 1.0:
                self.s.append(1.0)
            else:
                self.s.append(f32_round(1.0 / (1.0 - p)))
        wsum = 0.0
        for w in self.w:
            wsum = f32_round(wsum + w)
        self.wsum = wsum
        self.t = a.t
        self.filter_wise = a.filter_wise
        self.select_topk = a.select_topk
        self.max_iter = a.max_iter
        self.tol = a.tol
        self.scale = f32_round(a.scale)
        self.nuslerp_flatten = a.nuslerp_flatten
        self.nuslerp_row_wise = a.nuslerp_row_wise
        self.check_inputs(a.base is not None)

    def check_inputs(self, has_base):
        m, n = self.method, self.n
        if not has_base and m not in BASE_OPTIONAL:
            raise RefError(f"{m} needs --base")
        if not has_base and n == 0:
            raise RefError("no --base and no --model")
        if n == 0:
            return                       # the base comes back
        if m == "slerp" and n != 1:
            raise RefError("slerp takes --base and exactly one --model")
        if m == "nuslerp" and n > 2:
            raise RefError("nuslerp takes exactly two --model")
        if m == "model_stock" and n < 2:
            raise RefError("model_stock needs --base and two or more models")
        if m == "passthrough" and n != 1:
            raise RefError("passthrough takes exactly one --model")
        if m == "karcher" and (self.max_iter < 0 or not self.tol >= 0.0):
            raise RefError("karcher: bad --max-iter or --tol")


def per_model(one, many, n, default):
    if many is not None:
        vals = [float(v) for v in many.split(",")]
        if len(vals) != n:
            raise RefError(f"{len(vals)} values for {n} models")
        return vals
    return [float(one) if one is not None else default] * n


def drop_rates(a, n):
    """(p, density) per model, each the other's 1 - x in double (DESIGN 4,
    5); (None, None) when neither is given."""
    if a.densities is not None or a.density is not None:
        d = per_model(a.density, a.densities, n, 0.0)
        return [1.0 - v for v in d], d
    if a.p is None and a.drop_rates is None:
        return None, None
    p = per_model(a.p, a.drop_rates, n, 0.0)
    return p, [1.0 - v for v in p]


# ---- reductions and ranks (DESIGN 5, 5.1) --------------------------------

def bsum(vals):
    """binary64 sum by the block rule: each block of 65536 consecutive
    elements summed in order from +0, then the block sums in order from +0.
    (reduce(add) is a plain left-to-right double sum, unlike sum(), which
    compensates since Python 3.12.)"""
    total = 0.0
    for s in range(0, len(vals), BLOCK):
        total += reduce(add, vals[s:s + BLOCK], 0.0)
    return total


def dot64(x, y):
    """Σ x·y in binary64; binary32 products are exact in binary64."""
    return bsum(list(map(mul, x, y)))


def l1_64(x):
    return bsum(list(map(abs, x)))


def rows_of(shape, n):
    """DESIGN 5.1 rows: (row count r, row length m); a 0-D or 1-D tensor is
    one row, shape [r, ...] has r rows of n/r consecutive elements."""
    if len(shape) < 2:
        return 1, n
    r = shape[0]
    return r, (n // r if r else 0)


def desc_order(vals):
    """Indices of binary32 vals by DESIGN 5.1's rank rule: |v| descending,
    equal magnitudes by flat index (lower first), NaN above every number
    (NaNs among themselves by index).  The key is the magnitude's bit
    pattern, monotone in |v| for binary32 (+0 and -0 are equal)."""
    keys = []
    for i, x in enumerate(f32_bits(vals)):
        ax = x & 0x7FFFFFFF
        if ax > 0x7F800000:
            ax = 0x7F800001
        keys.append(((0x7F800001 - ax) << 32) | i)
    keys.sort()
    return [k & M32 for k in keys]


def l1_factor(delta, keep):
    """s = ‖δ‖₁ / ‖keep·δ‖₁ in binary64, 1 when either is below 1e-7,
    rounded once to binary32 (DESIGN 5, mergekit's rescale: true)."""
    before = l1_64(delta)
    after = l1_64([abs(v) if k else 0.0 for v, k in zip(delta, keep)])
    if before < 1e-7 or after < 1e-7:
        return 1.0
    return f32_round(before / after)


def apply_keep(delta, keep, s):
    """keep·δ·s in binary32 (s = 1: no product)."""
    if s == 1.0:
        return [v if k else 0.0 for v, k in zip(delta, keep)]
    return r32([v * s if k else 0.0 for v, k in zip(delta, keep)])


# ---- sparsifiers (DESIGN 4, 5, 5.1) --------------------------------------

def sparsify(rc, j, name_hash, b, x, shape=None):
    """d_j from δ_j = x - b (binary32) by the method's sparsifier."""
    n = len(b)
    delta = r32([xv - bv for xv, bv in zip(x, b)])
    kind = rc.sparsifier
    if kind is None:
        return delta
    if kind == "dare":
        return sparsify_dare(rc, j, name_hash, delta)
    if kind == "della":
        return sparsify_della(rc, j, name_hash, delta,
                              shape if shape is not None else [n])
    return sparsify_rank(rc, j, delta)


def sparsify_dare(rc, j, name_hash, delta):
    n = len(delta)
    T = drop_threshold(rc.p[j])
    if T is None:
        return [0.0] * n
    u = philox_u(rc.seed, j, name_hash, 0, n)
    if rc.rescale == "l1":
        keep = [uv >= T for uv in u]
        return apply_keep(delta, keep, l1_factor(delta, keep))
    s = rc.s[j]
    if s != 1.0:
        delta = r32([dv * s for dv in delta])
    return [dv if uv >= T else 0.0 for dv, uv in zip(delta, u)]


def keep_count(density, n):
    """k = min(n, floor(density·n + 0.5)) in double (DESIGN 5)."""
    return min(n, int(math.floor(density * n + 0.5)))


def sparsify_rank(rc, j, delta):
    """magnitude (TIES trim) and outliers (breadcrumbs): keep descending
    ranks t .. t+k-1, t = 0 for magnitude.  No rescale unless l1."""
    n = len(delta)
    k = keep_count(rc.density[j], n)
    t = 0
    if rc.sparsifier == "outliers":
        t = int(math.floor(rc.gamma[j] * n + 0.5))
        if k + t > n:
            t = n - k
    keep = bytearray(n)
    for i in desc_order(delta)[t:t + k]:
        keep[i] = 1
    s = l1_factor(delta, keep) if rc.rescale == "l1" else 1.0
    return apply_keep(delta, keep, s)


def sparsify_della(rc, j, name_hash, delta, shape):
    """DELLA MagPrune: per row, keep probability from the ascending rank
    of |δ|; the mask from section 4's stream; rescale per element (inverse),
    per row (l1) or none."""
    n = len(delta)
    d, e = rc.density[j], rc.epsilon[j]
    if d >= 1.0:
        return delta
    if d <= 0.0:
        return [0.0] * n
    u = philox_u(rc.seed, j, name_hash, 0, n)
    r, m = rows_of(shape, n)
    out = []
    for row in range(r):
        lo = row * m
        dr = delta[lo:lo + m]
        q = [0] * m
        for pos, i in enumerate(desc_order(dr)):
            q[i] = m - 1 - pos            # ascending rank of |δ|
        if m == 1:
            pis = [d]
        else:
            pis = [(d - e) + ((2.0 * e) * qi) / (m - 1) for qi in q]
        keep = [uv >= math.floor((1.0 - pi) * 4294967296.0)
                for uv, pi in zip(u[lo:lo + m], pis)]
        if rc.rescale == "inverse":
            inv = r32([1.0 / pi for pi in pis])      # (float)(1/π)
            out += r32([v * s if k else 0.0
                        for v, k, s in zip(dr, keep, inv)])
        elif rc.rescale == "l1":
            # Norms per row (DESIGN 5: "per-row reductions (della, ...)
            # apply the same rule within each row"); mergekit takes the
            # L1 ratio over the whole tensor.
            out += apply_keep(dr, keep, l1_factor(dr, keep))
        else:
            out += apply_keep(dr, keep, 1.0)
    return out


# ---- task-vector combines (DESIGN 5) -------------------------------------

def merge_linear(rc, b, xs):
    acc = [0.0] * len(xs[0])
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
    """task_arithmetic, dare_linear, breadcrumbs, della_linear: linear's sum
    of the deltas, on b."""
    return add_lambda(rc, b, merge_linear(rc, b, ds))


def elect(es):
    """Sign consensus: per element, which of es agree with the sign of
    S = Σ e (m = +1 when S >= 0, so a NaN S elects -1); a zero or NaN e
    never agrees."""
    n = len(es[0])
    S = [0.0] * n
    for e in es:
        S = r32([s + v for s, v in zip(S, e)])
    pos = [s >= 0.0 for s in S]
    return [[(v > 0.0) if p else (v < 0.0) for v, p in zip(e, pos)]
            for e in es]


def merge_ties(rc, b, ds):
    """dare_ties, ties, breadcrumbs_ties, della: sign election per element,
    then the agreeing sum.

    acc starts at +0 and only ever adds nonzero values of one sign, so it
    is never -0: skipping an unselected model equals adding +0 to it."""
    n = len(b)
    es = [r32([rc.w[j] * v for v in d]) for j, d in enumerate(ds)]
    sels = elect(es)
    acc, D = [0.0] * n, [0.0] * n
    for j, e in enumerate(es):
        sel = sels[j]
        acc = r32([a + v if k else a for a, v, k in zip(acc, e, sel)])
        w = rc.w[j]
        D = r32([d + w if k else d for d, k in zip(D, sel)])
    if rc.normalize:
        acc = r32([a / (d or 1.0) for a, d in zip(acc, D)])
    return add_lambda(rc, b, acc)


# ---- interpolations (DESIGN 5.2) -----------------------------------------

def clamp1(c):
    """Clamp to [-1, 1]; a NaN stays NaN."""
    if c > 1.0:
        return 1.0
    if c < -1.0:
        return -1.0
    return c


def slerp_vec(t, v0, v1):
    """DESIGN 5.2 slerp of two binary32 vectors (one reduction: N0, N1, D
    by the block rule over the vector's own element order)."""
    n0 = math.sqrt(dot64(v0, v0))
    n1 = math.sqrt(dot64(v1, v1))
    D = dot64(v0, v1)
    n0 = n0 if n0 > 1e-8 else 1.0
    n1 = n1 if n1 > 1e-8 else 1.0
    c = clamp1(D / (n0 * n1))
    if c != c:
        return [NAN] * len(v0)           # NaN stays NaN, in every element
    if abs(c) > 0.9995:
        s0, s1 = f32_round(1.0 - t), f32_round(t)
    else:
        theta = math.acos(c)
        st = math.sin(theta)
        s0 = f32_round(math.sin(theta - theta * t) / st)
        s1 = f32_round(math.sin(theta * t) / st)
    return r32([p + q for p, q in zip(r32([s0 * v for v in v0]),
                                      r32([s1 * v for v in v1]))])


def merge_slerp(rc, b, xs):
    return slerp_vec(rc.t, b, xs[0])


def nuslerp_t(rc):
    """t = w1/(w0 + w1) in double from the binary32 weights, 0.5 when
    |w0 + w1| < 1e-6."""
    w0, w1 = rc.w[0], rc.w[1]
    s = w0 + w1
    return 0.5 if abs(s) < 1e-6 else w1 / s


def merge_nuslerp(rc, b, xs, shape):
    n = len(xs[0])
    t = nuslerp_t(rc)
    if b is not None:
        v0 = r32([x - bv for x, bv in zip(xs[0], b)])
        v1 = r32([x - bv for x, bv in zip(xs[1], b)])
    else:
        v0, v1 = xs[0], xs[1]
    if rc.nuslerp_flatten or len(shape) < 2:
        # a 1-D tensor is one row and one column (DESIGN 5.2)
        res = slerp_vec(t, v0, v1)
    else:
        r, m = rows_of(shape, n)
        res = [0.0] * n
        if rc.nuslerp_row_wise:
            # Columns of the [r, n/r] view; the block rule runs over the
            # column's elements in row order (DESIGN: rows restart blocks at
            # their start; a column is read the same way).
            for c in range(m):
                res[c::m] = slerp_vec(t, v0[c::m], v1[c::m])
        else:
            for row in range(r):
                lo = row * m
                res[lo:lo + m] = slerp_vec(t, v0[lo:lo + m], v1[lo:lo + m])
    if b is None:
        return res
    return r32([bv + v for bv, v in zip(b, res)])


def merge_model_stock(rc, b, xs, shape):
    n, N = len(b), len(xs)
    os_ = [r32([x - bv for x, bv in zip(xv, b)]) for xv in xs]
    r, m = rows_of(shape, n) if rc.filter_wise else (1, n)
    acc = [0.0] * n
    for x in xs:
        acc = r32([a + v for a, v in zip(acc, x)])
    avg = r32([a / N for a in acc])
    out = []
    for row in range(r):
        lo, hi = row * m, row * m + m
        seg = [o[lo:hi] for o in os_]
        norms = [math.sqrt(dot64(o, o)) for o in seg]
        total, pairs = 0.0, 0
        for i in range(N):
            for j in range(i + 1, N):
                g = dot64(seg[i], seg[j])
                npr = norms[i] * norms[j]
                if npr < 1e-6:           # max(N_i·N_j, 1e-6); NaN stays
                    npr = 1e-6
                total += clamp1(g / npr)
                pairs += 1
        cos = total / pairs
        den = 1 + (N - 1) * cos
        tt = 0.0 if den == 0 else (N * cos) / den
        t32, u32 = f32_round(tt), f32_round(1.0 - tt)
        out += r32([p + q for p, q in zip(r32([t32 * v for v in avg[lo:hi]]),
                                          r32([u32 * v for v in b[lo:hi]]))])
    return out


def merge_sce(rc, b, xs):
    """SCE: variance top-k (select_topk < 1), weights from the mean of the
    kept δ², ties' consensus on the kept deltas themselves."""
    n, N = len(b), len(xs)
    ds = [r32([x - bv for x, bv in zip(xv, b)]) for xv in xs]
    tau = rc.select_topk
    if tau < 1.0:
        acc = [0.0] * n
        for d in ds:
            acc = r32([a + v for a, v in zip(acc, d)])
        mean = r32([a / N for a in acc])
        acc = [0.0] * n
        for d in ds:
            df = r32([v - mu for v, mu in zip(d, mean)])
            acc = r32([a + q for a, q in zip(acc, r32([v * v for v in df]))])
        var = r32([a / N for a in acc])
        nz = sum(1 for v in var if v != 0.0)     # NaN counts as non-zero
        k = int(math.floor(tau * nz))
        keep = bytearray(n)
        if tau > 0.0:
            for i in desc_order(var)[:k]:
                keep[i] = 1
        ds = [[v if kk else 0.0 for v, kk in zip(d, keep)] for d in ds]
    w = [dot64(d, d) / n for d in ds]
    wsum = 0.0
    for v in w:
        wsum += v
    if abs(wsum) < 1e-6:
        w = [f32_round(1.0 / N)] * N
    else:
        w = [f32_round(v / wsum) for v in w]
    sels = elect(ds)
    acc, D = [0.0] * n, [0.0] * n
    for j, d in enumerate(ds):
        sel, wj = sels[j], w[j]
        e = r32([wj * v for v in d])
        acc = r32([a + v if kk else a for a, v, kk in zip(acc, e, sel)])
        D = r32([dd + wj if kk else dd for dd, kk in zip(D, sel)])
    eps = f32_round(1e-6)
    div = [dd if not dd < 1e-6 else eps for dd in D]
    return r32([bv + v for bv, v in zip(b, r32([a / dv for a, dv in
                                                zip(acc, div)]))])


def karcher_coeffs(U, N, max_iter, tol):
    """mergekit's Karcher-mean loop on the coefficients c of
    u = Σ c_j u_j (u_j = x_j/‖x_j‖), with u_i·u_j = U[i][j].

    Choices DESIGN leaves open (all in double): Uc is Σ_k U[i][k]·c[k] in k
    order from 0, a norm is sqrt(Σ_i c_i·(Uc)_i) in i order (0 where that
    sum is below 0); T's coefficients get f·([k = i] − dot·c_k) with
    f = a_i·(θ/sin θ), model by model."""
    K = len(U)

    def times_u(c):
        return [reduce(add, [U[i][k] * c[k] for k in range(K)], 0.0)
                for i in range(K)]

    def norm(c):
        q = reduce(add, [ci * v for ci, v in zip(c, times_u(c))], 0.0)
        return math.sqrt(q) if q > 0.0 else (0.0 if q == q else q)

    alpha_sum = 0.0
    for _ in range(K):
        alpha_sum += 1.0 / N
    a = [(1.0 / N) / alpha_sum] * K
    c = [0.0 + ai for ai in a]
    nu = norm(c)
    if nu < tol:
        c = [1.0] + [0.0] * (K - 1)
    else:
        c = [ci / nu for ci in c]
    for _ in range(max_iter):
        T = [0.0] * K
        uc = times_u(c)
        for i in range(K):
            dot = clamp1(uc[i])
            theta = math.acos(dot)
            if theta < tol:
                continue
            f = a[i] * (theta / math.sin(theta))
            T = [T[k] + f * ((1.0 if k == i else 0.0) - dot * c[k])
                 for k in range(K)]
        nt = norm(T)
        if nt < tol:
            break
        cn, sn = math.cos(nt), math.sin(nt)
        c = [cn * c[k] + sn * (T[k] / nt) for k in range(K)]
        un = norm(c)
        if un > tol:
            c = [ci / un for ci in c]
    return c


def merge_karcher(rc, xs):
    n, N = len(xs[0]), len(xs)
    G = [[0.0] * N for _ in range(N)]
    for i in range(N):
        for j in range(i, N):
            G[i][j] = G[j][i] = dot64(xs[i], xs[j])
    norms = [math.sqrt(G[i][i]) for i in range(N)]
    valid = [j for j in range(N) if norms[j] > rc.tol]
    if not valid:
        return [0.0] * n
    U = [[G[i][j] / (norms[i] * norms[j]) for j in valid] for i in valid]
    c = karcher_coeffs(U, N, rc.max_iter, rc.tol)
    s = 0.0
    for nj in norms:
        s += (1.0 / N) * nj
    acc = [0.0] * n
    for cj, j in zip(c, valid):
        beta = f32_round((s * cj) / norms[j])
        acc = r32([v + q for v, q in zip(acc, r32([beta * x for x in xs[j]]))])
    return acc


def merge_tensor(rc, name, b, xs, shape=None):
    """Output values (binary32) of one float tensor; b is None without a
    base (nuslerp, karcher, passthrough, linear)."""
    m = rc.method
    if shape is None:
        shape = [len(xs[0]) if xs else len(b)]
    if not xs:
        return list(b)                   # a base and no model: the base
    if not xs[0]:
        return []                        # an empty tensor
    if m == "linear":
        return merge_linear(rc, b, xs)
    if len(xs) == 1 and m in ("nuslerp", "sce", "karcher", "passthrough"):
        x = xs[0]
        if m == "passthrough" and rc.scale != 1.0:
            return r32([rc.scale * v for v in x])
        return list(x)
    if m == "slerp":
        return merge_slerp(rc, b, xs)
    if m == "nuslerp":
        return merge_nuslerp(rc, b, xs, shape)
    if m == "model_stock":
        return merge_model_stock(rc, b, xs, shape)
    if m == "sce":
        return merge_sce(rc, b, xs)
    if m == "karcher":
        return merge_karcher(rc, xs)
    h = xxh32(name.encode("utf-8"))
    ds = [sparsify(rc, j, h, b, x, shape) for j, x in enumerate(xs)]
    if m in CONSENSUS:
        return merge_ties(rc, b, ds)
    return merge_sum(rc, b, ds)


# ---- check ---------------------------------------------------------------

def model_values(m, t, n):
    """First n elements (the layout's rows) of model m's tensor like t."""
    mt = m.tensors.get(t.name)
    if mt is None:
        raise RefError(f"{m.arg}: tensor {t.name} missing")
    if mt.dtype not in FLOAT_DTYPES:
        raise RefError(f"{m.arg}: {t.name} is {mt.dtype}, not a float")
    if mt.numel < n or mt.shape[1:] != t.shape[1:]:
        raise RefError(f"{m.arg}: {t.name} shape {mt.shape} vs layout "
                       f"{t.shape}")
    return decode(mt.dtype, mt.read()[:n * DTYPE_SIZE[mt.dtype]])


def copied_model(rc, models):
    """The model whose tensors are output unchanged: passthrough at scale 1
    and the one-model rule of nuslerp, sce and karcher (DESIGN 5.2)."""
    if len(models) != 1:
        return None
    if rc.method == "passthrough" and rc.scale == 1.0:
        return models[0]
    if rc.method in ("nuslerp", "sce", "karcher"):
        return models[0]
    return None


def expected_tensor(a, rc, layout, base, models, t):
    """(dtype, bytes) the output must hold for layout tensor t, and a kind.
    layout is the base, or the first model when there is no base; it gives
    the tensor list, excluded and non-float tensors."""
    if any(fnmatch.fnmatchcase(t.name, g) for g in a.exclude or []):
        return t.dtype, t.read(), "excluded"
    if t.dtype not in FLOAT_DTYPES:
        return t.dtype, t.read(), "copied"
    odt = a.dtype.upper() if a.dtype else t.dtype
    n = t.numel
    src = copied_model(rc, models)
    if src is not None:
        st = src.tensors.get(t.name)
        if st is not None and st.dtype == odt and st.shape[1:] == t.shape[1:]:
            model_values(src, t, n)          # the same checks
            return odt, st.read()[:n * DTYPE_SIZE[odt]], "merged"
    b = decode(t.dtype, t.read()) if base is not None else None
    xs = [model_values(m, t, n) for m in models]
    out = merge_tensor(rc, t.name, b, xs, t.shape)
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


def check_one(a, rc, layout, base, models, out, t):
    """Compare one tensor; returns (ok, kind, worst ULP)."""
    odt, exp, kind = expected_tensor(a, rc, layout, base, models, t)
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
    base = Model(a.base) if a.base is not None else None
    models = [open_model(m) for m in a.model]
    layout = base if base is not None else models[0]
    out = Model(a.out)
    failed, counts, worst = 0, {}, 0
    for t in layout.ordered():
        if a.only and not any(fnmatch.fnmatchcase(t.name, g) for g in a.only):
            if t.name not in out.tensors:
                print(f"MISSING {t.name}: not in the output")
                failed += 1
            continue
        ok, kind, w = check_one(a, rc, layout, base, models, out, t)
        counts[kind] = counts.get(kind, 0) + 1
        worst = max(worst, w)
        failed += not ok
    extra = sorted(set(out.tensors) - set(layout.tensors))
    where = "the base" if base is not None else "the first model"
    for name in extra:
        print(f"EXTRA {name}: in the output, not in {where}")
    failed += len(extra)
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    verdict = "OK" if not failed else "FAILED"
    print(f"dsref check {a.method}: {sum(counts.values())} of "
          f"{len(layout.tensors)} tensors ({kinds}), "
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


def check_namespace(words):
    """A check command line (OUT is a dummy) -> its argparse namespace."""
    p = argparse.ArgumentParser(prog="dsref.py check")
    add_check_args(p)
    return p.parse_args(["-"] + words)


def st_merge(t, what, words, b, xs, want, shape=None, name="t"):
    """One hand-computed merge: words are check options; one --model per
    entry of xs, --base when b is given.  Compared bit for bit (signed
    zeros differ, NaN equals NaN)."""
    argv = (["--base", "b"] if b is not None else []) + \
        [w for _ in xs for w in ("--model", "m")] + words
    got = merge_tensor(Recipe(check_namespace(argv)), name, b, xs, shape)

    def canon(vals):
        return [0x7FC00000 if v != v else x
                for v, x in zip(vals, f32_bits(vals))]
    t.count += 1
    if len(got) != len(want) or canon(got) != canon(want):
        t.failed += 1
        print(f"FAIL {what}: got {got!r}, want {want!r}")


def st_methods(t):
    """Tiny hand-computed merges (DESIGN 5)."""
    b, xs = [1.0, 2.0], [[1.5, 2.25], [0.5, 2.5]]
    # δ = [0.5, 0.25], [-0.5, 0.5]: Σ δ = [0, 0.75]
    st_merge(t, "task_arithmetic", ["--method", "task_arithmetic"], b, xs,
             [1.0, 2.75])
    # p = 0 keeps all; signs: [0] S = +0 elects +, only 0.5 agrees
    st_merge(t, "dare_ties p=0", ["--method", "dare_ties", "-p", "0"], b,
             xs, [1.5, 2.75])
    st_merge(t, "dare_ties p=0 normalize",
             ["--method", "dare_ties", "-p", "0", "--normalize"], b, xs,
             [1.5, 2.375])
    st_merge(t, "linear", ["--method", "linear"], b, xs, [1.0, 2.375])
    st_merge(t, "linear, no base", ["--method", "linear"], None, xs,
             [1.0, 2.375])
    st_merge(t, "dare_linear p=1",
             ["--method", "dare_linear", "-p", "1", "--lambda", "3"], b, xs, b)
    rc = Recipe(check_namespace(["--base", "b", "--model", "x", "--model",
                                 "y", "--method", "dare_linear", "-p", "0.5"]))
    t.eq("s(0.5)", rc.s, [2.0, 2.0])
    st_merge(t, "ties, a base and no model", ["--method", "ties"], b, [], b)


# The section 4 example stream: seed 0, j 0, this name; at p = 0.5
# (T = 2^31) elements 0..7 keep 1 0 0 0 1 1 1 1.
UP = "model.layers.0.mlp.up_proj.weight"


def st_sparsifiers(t):
    """magnitude, outliers, della, l1 (DESIGN 5, 5.1) on 4-10 elements."""
    z6 = [0.0] * 6
    x6 = [1.0, -3.0, 3.0, 2.0, -1.0, 0.5]
    # k = floor(0.5·6 + 0.5) = 3: |δ| 3 (index 1), 3 (index 2), 2 (index 3)
    st_merge(t, "ties density 0.5", ["--method", "ties", "--density", "0.5"],
             z6, [x6], [0.0, -3.0, 3.0, 2.0, 0.0, 0.0])
    # k = floor(0.6·6 + 0.5) = 4: the fourth is |1| at index 0 (beats 4)
    st_merge(t, "ties density 0.6 (lower index wins)",
             ["--method", "ties", "--density", "0.6"],
             z6, [x6], [1.0, -3.0, 3.0, 2.0, 0.0, 0.0])
    # l1: ‖δ‖₁ = 10.5, kept 8, s = 1.3125: 3·s = 3.9375, 2·s = 2.625
    st_merge(t, "ties density 0.5 l1",
             ["--method", "ties", "--density", "0.5", "--rescale", "l1"],
             z6, [x6], [0.0, -3.9375, 3.9375, 2.625, 0.0, 0.0])
    # n = 5: --density 0.1 gives 0.1·5 + 0.5 = 1 (k = 1), -p 0.9 gives
    # (1 - 0.9)·5 + 0.5 = 1 - 2^-53 (k = 0)
    x5 = [0.5, 4.0, -2.0, 1.0, 0.25]
    st_merge(t, "ties --density 0.1, n 5",
             ["--method", "ties", "--density", "0.1"], [0.0] * 5, [x5],
             [0.0, 4.0, 0.0, 0.0, 0.0])
    st_merge(t, "ties -p 0.9, n 5", ["--method", "ties", "-p", "0.9"],
             [0.0] * 5, [x5], [0.0] * 5)
    # two models, density 1: δ1 = [1, -1, .5, 0], δ2 = [-.5, 2, -.5, 0],
    # S = [.5, 1, 0, 0] elects + everywhere; agreeing: 1, 2, .5, none
    st_merge(t, "ties two models",
             ["--method", "ties"], [1.0] * 4,
             [[2.0, 0.0, 1.5, 1.0], [0.5, 3.0, 0.5, 1.0]],
             [2.0, 3.0, 1.5, 1.0])
    # breadcrumbs, n 10: |δ| descending 10 (i1), 9 (i8), 8 (i5), 7 (i3),
    # 4 ...; gamma 0.1 removes t = 1 (i1), density 0.3 keeps k = 3
    x10 = [3.0, -10.0, 0.5, 7.0, 1.0, -8.0, 2.0, 0.25, 9.0, 4.0]
    z10 = [0.0] * 10
    st_merge(t, "breadcrumbs gamma 0.1 density 0.3",
             ["--method", "breadcrumbs", "--density", "0.3", "--gamma", "0.1"],
             z10, [x10], [0.0, 0.0, 0.0, 7.0, 0.0, -8.0, 0.0, 0.0, 9.0, 0.0])
    # k = 9, t = 2: k + t > n so t = 1: everything but the top (i1)
    st_merge(t, "breadcrumbs k + t > n",
             ["--method", "breadcrumbs", "--density", "0.9", "--gamma", "0.2"],
             z10, [x10], [3.0, 0.0, 0.5, 7.0, 1.0, -8.0, 2.0, 0.25, 9.0, 4.0])
    # l1: gamma 0.25 removes 3 (i0), density 0.5 keeps -2, 2: s = 8/4 = 2
    st_merge(t, "breadcrumbs l1",
             ["--method", "breadcrumbs", "--density", "0.5", "--gamma",
              "0.25", "--rescale", "l1"], [0.0] * 4, [[3.0, -2.0, 2.0, 1.0]],
             [0.0, -4.0, 4.0, 0.0])
    # a NaN ranks above every number: gamma 0, density 0.25, k = 1
    nan = math.nan
    st_merge(t, "breadcrumbs NaN ranks first",
             ["--method", "breadcrumbs", "--density", "0.25", "--gamma", "0"],
             [0.0] * 4, [[1.0, nan, 3.0, 2.0]], [0.0, nan, 0.0, 0.0])
    # breadcrumbs_ties, gamma 0.25 (t = 1), density 0.5 (k = 2):
    # δ1 = [4, 1, -2, .5] keeps i2, i1 -> [0, 1, -2, 0];
    # δ2 = [-1, 2, 3, 8] keeps i2, i1 -> [0, 2, 3, 0]; S = [0, 3, 1, 0]
    # elects +: sums [0, 1 + 2, 3, 0]; normalize divides by [1, 2, 1, 1]
    x1, x2 = [4.0, 1.0, -2.0, 0.5], [-1.0, 2.0, 3.0, 8.0]
    st_merge(t, "breadcrumbs_ties",
             ["--method", "breadcrumbs_ties", "--density", "0.5",
              "--gamma", "0.25"], [0.0] * 4, [x1, x2], [0.0, 3.0, 3.0, 0.0])
    st_merge(t, "breadcrumbs_ties normalize",
             ["--method", "breadcrumbs_ties", "--density", "0.5",
              "--gammas", "0.25,0.25", "--normalize"], [0.0] * 4, [x1, x2],
             [0.0, 1.5, 3.0, 0.0])
    # DARE l1 on UP (keep 1 0 0 0 1 1 1 1): ‖δ‖₁ = 9, kept 6, s = 1.5
    st_merge(t, "dare_linear l1",
             ["--method", "dare_linear", "-p", "0.5", "--rescale", "l1"],
             [0.0] * 8, [[2.0] + [1.0] * 7],
             [3.0, 0.0, 0.0, 0.0, 1.5, 1.5, 1.5, 1.5], name=UP)
    # della with epsilon 0 is DARE with p = 1 - d: same keep pattern,
    # kept × (float)(1/0.5) = 2
    x8 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    d8 = [2.0, 0.0, 0.0, 0.0, 10.0, 12.0, 14.0, 16.0]
    st_merge(t, "della_linear epsilon 0",
             ["--method", "della_linear", "--density", "0.5",
              "--epsilon", "0"], [0.0] * 8, [x8], d8, name=UP)
    st_merge(t, "dare_linear p 0.5 (della epsilon 0)",
             ["--method", "dare_linear", "-p", "0.5"], [0.0] * 8, [x8], d8,
             name=UP)
    # della d 0.5, eps 0.25 on shape [2, 3]: rows of m = 3, π = 0.25 + 0.25q
    # for ascending rank q: T(π) = floor((1 - π)·2^32): q0 0xc0000000,
    # q1 0x80000000, q2 0x40000000.  u (UP, 0..5) = e55b5e47 7bcbef69
    # 68b3149d | 4fe5907c d546b733 cf31041c.
    # Row 0 |δ| = .5 .75 .25: q = 1 2 0: kept, kept, dropped (68b3 < c000);
    #   .5 × 2 = 1, .75 × (float)(4/3) = 1.0000000298 -> 1 in binary32.
    # Row 1 |δ| all 1: the lower index ranks higher, q = 2 1 0: all kept
    #   (4fe5 >= 4000, d546 >= 8000, cf31 >= c000): × (float)(4/3)
    #   (0x1.555556p+0), × 2, × 4.
    st_merge(t, "della_linear rows and rank ties",
             ["--method", "della_linear", "--density", "0.5",
              "--epsilon", "0.25"], [0.0] * 6,
             [[0.5, 0.75, 0.25, -1.0, 1.0, 1.0]],
             [1.0, 1.0, 0.0, -float.fromhex("0x1.555556p+0"), 2.0, 4.0],
             shape=[2, 3], name=UP)
    # l1 per row: row 0 |δ| 1 1 1, q = 2 1 0: u e55b >= 4000 kept,
    # 7bcb < 8000 and 68b3 < c000 dropped: s = 3/1; row 1 as above, all
    # kept: s = 1.  (Over the whole tensor s would be 6/4.)
    xl = [1.0, 1.0, 1.0, -1.0, 1.0, 1.0]
    st_merge(t, "della_linear l1 per row",
             ["--method", "della_linear", "--density", "0.5",
              "--epsilon", "0.25", "--rescale", "l1"], [0.0] * 6, [xl],
             [3.0, 0.0, 0.0, -1.0, 1.0, 1.0], shape=[2, 3], name=UP)
    st_merge(t, "della rescale none",
             ["--method", "della", "--density", "0.5",
              "--epsilon", "0.25", "--rescale", "none"], [0.0] * 6, [xl],
             [1.0, 0.0, 0.0, -1.0, 1.0, 1.0], shape=[2, 3], name=UP)
    st_merge(t, "della density 1 keeps all",
             ["--method", "della", "--density", "1"], [1.0] * 4,
             [[2.0, 0.0, 1.0, 1.5]], [2.0, 0.0, 1.0, 1.5], name=UP)


R2 = float.fromhex("0x1.6a09e6p+0")        # (float)sqrt(2)
R1 = float.fromhex("0x1.6a09e6p-1")        # (float)sin(pi/4)


def st_interpolations(t):
    """slerp, nuslerp, model_stock, sce, karcher, passthrough (DESIGN 5.2)."""
    v0, v1 = [1.0, 0.0, 2.0, -0.5], [0.5, 1.0, -1.0, 3.0]
    # D = 0.5 - 2 - 1.5 = -3, |c| < 0.9995: t = 0 gives s0 = 1, s1 = 0
    st_merge(t, "slerp t 0", ["--method", "slerp", "--t", "0"], v0, [v1], v0)
    st_merge(t, "slerp t 1", ["--method", "slerp", "--t", "1"], v0, [v1], v1)
    # orthogonal: θ = π/2, s0 = s1 = sin(π/4) -> R1
    st_merge(t, "slerp orthogonal", ["--method", "slerp"],
             [1.0, 0.0, 2.0, 0.0], [[0.0, 1.0, 0.0, 0.0]],
             [R1, R1, R2, 0.0])
    # colinear (c = 1): lerp, 0.75·v + 0.25·2v = 1.25·v
    st_merge(t, "slerp colinear", ["--method", "slerp", "--t", "0.25"],
             [4.0, -8.0, 0.5, 2.0], [[8.0, -16.0, 1.0, 4.0]],
             [5.0, -10.0, 0.625, 2.5])
    nan = math.nan
    st_merge(t, "slerp NaN", ["--method", "slerp"], [1.0, nan, 0.0, 0.0],
             [[1.0, 2.0, 3.0, 4.0]], [nan] * 4)
    # nuslerp equal weights (t = 0.5), orthogonal deltas [2,0..], [0,2..]:
    # 2·R1 = R2; with base 1: 1 + R2 = 0x1.3504f3p+1 exactly
    st_merge(t, "nuslerp no base", ["--method", "nuslerp"], None,
             [[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]],
             [R2, R2, 0.0, 0.0])
    q = float.fromhex("0x1.3504f3p+1")
    st_merge(t, "nuslerp base", ["--method", "nuslerp", "--weights", "2,2"],
             [1.0] * 4, [[3.0, 1.0, 1.0, 1.0], [1.0, 3.0, 1.0, 1.0]],
             [q, q, 1.0, 1.0])
    # weights 3, 1: t = 1/4; colinear lerp 0.75·x + 0.25·2x = 1.25·x
    st_merge(t, "nuslerp weights 3,1", ["--method", "nuslerp", "--weights",
                                        "3,1"], None,
             [[4.0, 8.0, -4.0, 0.0], [8.0, 16.0, -8.0, 0.0]],
             [5.0, 10.0, -5.0, 0.0])
    # per row of [2, 2]: row 0 orthogonal (R2 R2), row 1 [1 1] vs [2 2]
    # colinear: 0.5 + 1 = 1.5
    st_merge(t, "nuslerp rows", ["--method", "nuslerp",
                                 "--no-nuslerp-flatten"], None,
             [[2.0, 0.0, 1.0, 1.0], [0.0, 2.0, 2.0, 2.0]],
             [R2, R2, 1.5, 1.5], shape=[2, 2])
    st_merge(t, "nuslerp columns", ["--method", "nuslerp",
                                    "--no-nuslerp-flatten",
                                    "--nuslerp-row-wise"], None,
             [[2.0, 1.0, 0.0, 1.0], [0.0, 2.0, 2.0, 2.0]],
             [R2, 1.5, R2, 1.5], shape=[2, 2])
    # 1-D: one column, the whole vector: orthogonal [1,1], [1,-1] give
    # [R1 + R1, R1 - R1] (per element it would be [1, 0, 0, 0])
    st_merge(t, "nuslerp row-wise 1-D", ["--method", "nuslerp",
                                         "--no-nuslerp-flatten",
                                         "--nuslerp-row-wise"], None,
             [[1.0, 1.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0]],
             [R2, 0.0, 0.0, 0.0], shape=[4])
    st_merge(t, "nuslerp one model", ["--method", "nuslerp"], None,
             [[2.0, -1.0, 0.5, 0.0]], [2.0, -1.0, 0.5, 0.0])
    # model_stock, orthogonal offsets: cos 0, t 0, out = 0·avg + 1·b = b
    bm = [1.0, 2.0, 3.0, 4.0]
    st_merge(t, "model_stock orthogonal", ["--method", "model_stock"], bm,
             [[2.0, 2.0, 3.0, 4.0], [1.0, 3.0, 3.0, 4.0]], bm)
    # equal offsets: cos 1, t = 2/2 = 1, out = avg
    st_merge(t, "model_stock equal", ["--method", "model_stock"], bm,
             [[2.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 4.0]],
             [2.0, 2.0, 3.0, 4.0])
    # offsets [1,0,0,0] and [3,4,0,0]: cos = 3/5, t = 1.2/1.6 -> 0.75 and
    # 1 - t -> 0.25 in binary32; avg = [6, 10, 0, -4], b = [4, 8, 0, -4]
    st_merge(t, "model_stock cos 0.6", ["--method", "model_stock"],
             [4.0, 8.0, 0.0, -4.0],
             [[5.0, 8.0, 0.0, -4.0], [7.0, 12.0, 0.0, -4.0]],
             [5.5, 9.5, 0.0, -4.0])
    # filter_wise on [2, 2]: row 0 orthogonal (t 0: b), row 1 equal (avg)
    st_merge(t, "model_stock filter_wise", ["--method", "model_stock",
                                            "--filter-wise"], [1.0] * 4,
             [[2.0, 1.0, 2.0, 2.0], [1.0, 2.0, 2.0, 2.0]],
             [1.0, 1.0, 2.0, 2.0], shape=[2, 2])
    # sce, select_topk 1: δ1 = [1,1,1,1] (mean δ² 1), δ2 = [-2,2,2,0]
    # (mean 3): w = .25, .75; S = [-1,3,3,1]; agreeing: [δ2, both, both,
    # δ1]: [-1.5/.75, 1.75/1, 1.75/1, .25/.25] = [-2, 1.75, 1.75, 1]
    st_merge(t, "sce select_topk 1", ["--method", "sce"], [1.0] * 4,
             [[2.0, 2.0, 2.0, 2.0], [-1.0, 3.0, 3.0, 1.0]],
             [-1.0, 2.75, 2.75, 2.0])
    # select_topk 0.5: δ1 = [2,1,0,1], δ2 = [-2,-1,2,2]; variances
    # [4, 1, 1, .25], nz 4, k 2: i0 and i1 (beats i2 by index); kept
    # δ1 = [2,1,0,0], δ2 = [-2,-1,0,0]: w = .5, .5; S = 0 elects +:
    # [1/.5, .5/.5, 0/1e-6, 0/1e-6]
    st_merge(t, "sce select_topk 0.5", ["--method", "sce", "--select-topk",
                                        "0.5"], [1.0] * 4,
             [[3.0, 2.0, 1.0, 2.0], [-1.0, 0.0, 3.0, 3.0]],
             [3.0, 2.0, 1.0, 1.0])
    # karcher: two identical models (‖x‖ = 5, u·u = 1, θ = 0): β = .5 each
    xk = [1.0, 2.0, -2.0, 4.0]
    # select_topk 0 keeps no element: every delta 0, out = b + 0/1e-6
    st_merge(t, "sce select_topk 0", ["--method", "sce", "--select-topk",
                                      "0"], [1.0, -2.0, 0.5, 4.0],
             [[3.0, 2.0, 1.0, 2.0], [-1.0, 0.0, 3.0, 3.0]],
             [1.0, -2.0, 0.5, 4.0])
    st_merge(t, "karcher identical", ["--method", "karcher"], None,
             [xk, xk], xk)
    # orthogonal, equal norms 2: u = (u1 + u2)/√2, s = 2: β = √½ each
    st_merge(t, "karcher orthogonal", ["--method", "karcher"], None,
             [[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]],
             [R2, R2, 0.0, 0.0])
    # a zero model takes no part in u but counts in s = (0 + 5)/2: β = .5
    st_merge(t, "karcher zero model", ["--method", "karcher"], None,
             [[0.0] * 4, xk], [0.5, 1.0, -1.0, 2.0])
    st_merge(t, "karcher with a base (not averaged)", ["--method", "karcher"],
             [9.0] * 4, [xk, xk], xk)
    st_merge(t, "passthrough scale 2", ["--method", "passthrough", "--scale",
                                        "2"], None, [[1.0, -0.5, 3.0, 0.0]],
             [2.0, -1.0, 6.0, 0.0])
    st_merge(t, "passthrough scale 1", ["--method", "passthrough"], None,
             [[1.0, -0.5, 3.0, -0.0]], [1.0, -0.5, 3.0, -0.0])


def cmd_selftest(_a):
    t = Selftest()
    for part in (st_hashes, st_mask, st_convert, st_round, st_methods,
                 st_sparsifiers, st_interpolations):
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


def unit_arg(s):
    v = float(s)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{s}: outside [0, 1]")
    return v


def add_check_args(p):
    """The options of dare-stream merge that change output bytes."""
    p.add_argument("out")
    p.add_argument("--base")
    p.add_argument("--model", action="append", default=[])
    p.add_argument("--method", default="dare_linear", choices=METHODS)
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
    p.add_argument("--rescale", choices=("inverse", "l1", "none"),
                   default="inverse")
    p.add_argument("--gamma", help="outliers: top share removed (0.01)")
    p.add_argument("--gammas")
    p.add_argument("--epsilon", help="della: rank spread of pi (0.15)")
    p.add_argument("--epsilons")
    p.add_argument("--t", dest="t", type=float, default=0.5,
                   help="slerp: interpolation parameter (0.5)")
    p.add_argument("--filter-wise", action="store_true",
                   help="model_stock per row")
    p.add_argument("--select-topk", type=unit_arg, default=1.0,
                   help="sce: share of elements kept by variance (1)")
    p.add_argument("--max-iter", type=int, default=10,
                   help="karcher: iterations (10)")
    p.add_argument("--tol", type=float, default=1e-5,
                   help="karcher: tolerance (1e-5)")
    p.add_argument("--no-nuslerp-flatten", dest="nuslerp_flatten",
                   action="store_false", default=True)
    p.add_argument("--nuslerp-row-wise", action="store_true")
    p.add_argument("--scale", type=float, default=1.0,
                   help="passthrough: factor (1)")
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

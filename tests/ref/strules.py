#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""strules.py - which safetensors files the reference reader accepts.

An independent model, in plain Python, of what huggingface/safetensors
(safetensors/src/tensor.rs, SafeTensors::read_metadata, through serde and
serde_json) accepts, written from reading that code: it shares nothing with
dare-stream's C reader.  Python's json module is not used to judge a header
because it differs from serde_json where it matters (it keeps the last of
duplicate keys everywhere, reads -0 as an integer, takes integers of any
size, NaN and Infinity); headers are scanned here as serde_json scans them.

  strules.py verdict FILE...       "accept" or "refuse: REASON" for each
  strules.py run --helper H --bin B --dir D [--cases N] [--seed S]
                                   the differential test (tests/header-diff.sh)

The differential test writes N mutated headers (seeded, deterministic),
reads each with dare-stream (H, tests/sthdr, one process for all; and the
CLI B, `dare-stream inspect`, on every accepted file and a sample of the
refused) and with this model, and fails on any disagreement that is not
one of dare-stream's deliberate extra rules (DELIBERATE below).
"""

import argparse
import os
import random
import struct
import subprocess
import sys
import time

MAX_HEADER = 100_000_000
MAX_DEPTH = 127                # serde_json: the 128th nested level fails
U64 = 2**64
DS_MAX_DIMS = 32

# Dtype::bitsize of the reference.
BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64,
    "U64": 64,
}

# dare-stream's rules beyond the reference: where the reference accepts a
# file and dare-stream refuses it on purpose.  Each name has the reason and
# a fragment of dare-stream's message for it; the model below says which of
# them a header breaks.
DELIBERATE = {
    "leading-whitespace": (
        "the format says the header MUST begin with '{' (0x7B); serde_json "
        "skips whitespace before it", "begins with byte 0x"),
    "duplicate-tensor-name": (
        "the format disallows duplicate keys; the reference keeps the last "
        "entry of a name without a word", "duplicate tensor name"),
    "duplicate-metadata-key": (
        "the format disallows duplicate keys; the reference keeps the last "
        "value of a __metadata__ key", "__metadata__ has key"),
    "entry-not-object": (
        "a tensor entry [dtype, shape, data_offsets] is serde's sequence "
        "form of a struct, not the format's object", "expected an object"),
    "dtype-not-string": (
        "a dtype {\"F32\": null} is serde's map form of an enum variant, "
        "not the format's string", "unknown dtype {"),
    "nul-in-name": (
        "U+0000 in a tensor name or in __metadata__: dare-stream's names "
        "and metadata are C strings, which would end there", "holds U+0000"),
    "too-many-dims": (
        "more than DS_MAX_DIMS (32) dimensions: the format sets no limit, "
        "no checkpoint comes near it", "more than 32 dimensions"),
}


class Refused(Exception):
    """The reference refuses the file, for this reason."""


# ---- serde_json, as far as headers go --------------------------------------

class Obj:
    """A JSON object with every member in order, duplicates kept."""
    def __init__(self, members):
        self.members = members


class Num:
    """A number as serde_json classifies it: u64, i64 or f64."""
    def __init__(self, kind, value):
        self.kind, self.value = kind, value


WS = " \t\n\r"
ESC = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n",
       "r": "\r", "t": "\t"}


class Scanner:
    def __init__(self, text):
        self.s, self.i, self.depth = text, 0, 0

    def fail(self, what):
        raise Refused("JSON: %s at %d" % (what, self.i))

    def ws(self):
        while self.i < len(self.s) and self.s[self.i] in WS:
            self.i += 1

    def peek(self):
        self.ws()
        return self.s[self.i] if self.i < len(self.s) else ""

    def document(self):
        v = self.value()
        if self.peek() != "":
            self.fail("trailing characters")
        return v

    def value(self):
        c = self.peek()
        if c in "{[":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self.fail("recursion limit exceeded")
            self.i += 1
            v = self.obj() if c == "{" else self.arr()
            self.depth -= 1
            return v
        if c == '"':
            return self.string()
        if c == "-" or c.isdigit() and c.isascii():
            return self.number()
        for word, v in (("true", True), ("false", False), ("null", None)):
            if self.s.startswith(word, self.i):
                self.i += len(word)
                return v
        self.fail("expected value")

    def obj(self):
        members = []
        if self.peek() == "}":
            self.i += 1
            return Obj(members)
        while True:
            if self.peek() != '"':
                self.fail("key must be a string")
            k = self.string()
            if self.peek() != ":":
                self.fail("expected ':'")
            self.i += 1
            members.append((k, self.value()))
            c = self.peek()
            self.i += 1
            if c == "}":
                return Obj(members)
            if c != ",":
                self.fail("expected ',' or '}'")

    def arr(self):
        items = []
        if self.peek() == "]":
            self.i += 1
            return items
        while True:
            items.append(self.value())
            c = self.peek()
            self.i += 1
            if c == "]":
                return items
            if c != ",":
                self.fail("expected ',' or ']'")

    def hex4(self):
        h = self.s[self.i:self.i + 4]
        if len(h) < 4 or any(c not in "0123456789abcdefABCDEF" for c in h):
            self.fail("invalid escape")
        self.i += 4
        return int(h, 16)

    def string(self):
        self.i += 1
        out = []
        while True:
            if self.i >= len(self.s):
                self.fail("EOF while parsing a string")
            c = self.s[self.i]
            self.i += 1
            if c == '"':
                return "".join(out)
            if ord(c) < 0x20:
                self.fail("control character in a string")
            if c != "\\":
                out.append(c)
                continue
            e = self.s[self.i:self.i + 1]
            self.i += 1
            if e in ESC:
                out.append(ESC[e])
            elif e == "u":
                out.append(self.unicode())
            else:
                self.fail("invalid escape")

    def unicode(self):
        n = self.hex4()
        if 0xDC00 <= n <= 0xDFFF:
            self.fail("lone trailing surrogate")
        if 0xD800 <= n <= 0xDBFF:
            if self.s[self.i:self.i + 2] != "\\u":
                self.fail("lone leading surrogate")
            self.i += 2
            lo = self.hex4()
            if not 0xDC00 <= lo <= 0xDFFF:
                self.fail("lone leading surrogate")
            n = 0x10000 + ((n - 0xD800) << 10) + (lo - 0xDC00)
        return chr(n)

    def number(self):
        j = self.i
        neg = self.s[j] == "-"
        j += neg
        k = j
        while j < len(self.s) and self.s[j] in "0123456789":
            j += 1
        digits = self.s[k:j]
        if not digits:
            self.fail("invalid number")
        if len(digits) > 1 and digits[0] == "0":
            j = k + 1              # "01": the number is 0, then junk
            digits = "0"
        frac = False
        if j < len(self.s) and self.s[j] == ".":
            j += 1
            m = j
            while j < len(self.s) and self.s[j] in "0123456789":
                j += 1
            if m == j:
                self.fail("invalid number")
            frac = True
        if j < len(self.s) and self.s[j] in "eE":
            j += 1
            if j < len(self.s) and self.s[j] in "+-":
                j += 1
            m = j
            while j < len(self.s) and self.s[j] in "0123456789":
                j += 1
            if m == j:
                self.fail("invalid number")
            frac = True
        text = self.s[self.i:j]
        self.i = j
        if not frac:
            n = int(digits)
            if not neg and n < U64:
                return Num("u64", n)
            if neg and 0 < n <= 2**63:
                return Num("i64", -n)
            # -0, and integers beyond 64 bits, become doubles.
        try:
            x = float(text)
        except OverflowError:
            x = float("inf")
        if x in (float("inf"), float("-inf")):
            self.fail("number out of range")
        return Num("f64", x)


# ---- the reference's reading of the header ---------------------------------

def usize(v):
    """A usize from a buffered value: a u64 (serde refuses -0.0 and 8.0)."""
    if isinstance(v, Num) and v.kind == "u64":
        return v.value
    raise Refused("invalid type for an integer")


def dtype_of(v, hit):
    if isinstance(v, str):
        if v in BITS:
            return v
        raise Refused("unknown variant %r" % v)
    if isinstance(v, Obj) and len(v.members) == 1:
        name, unit = v.members[0]
        # serde's ContentRefDeserializer: a unit variant's value must be
        # null ({} is refused there, unlike in ContentDeserializer).
        if name in BITS and unit is None:
            hit.add("dtype-not-string")
            return name
    raise Refused("invalid dtype")


def tensor_info(name, v, hit):
    """TensorInfo from a buffered value: (dtype, shape, (begin, end))."""
    if isinstance(v, list):
        if len(v) != 3:
            raise Refused("invalid length of a tensor sequence")
        hit.add("entry-not-object")
        fields = dict(zip(("dtype", "shape", "data_offsets"), v))
        extra = False
    elif isinstance(v, Obj):
        fields, extra = {}, False
        for k, x in v.members:
            if k in ("dtype", "shape", "data_offsets"):
                if k in fields:
                    raise Refused("duplicate field %s" % k)
                fields[k] = x
            else:
                extra = True
        for k in ("dtype", "shape", "data_offsets"):
            if k not in fields:
                raise Refused("missing field %s" % k)
    else:
        raise Refused("invalid type for TensorInfo")
    dtype = dtype_of(fields["dtype"], hit)
    shape = fields["shape"]
    if not isinstance(shape, list):
        raise Refused("shape: invalid type")
    shape = [usize(d) for d in shape]
    offs = fields["data_offsets"]
    if not isinstance(offs, list) or len(offs) != 2:
        raise Refused("data_offsets: invalid tuple")
    offs = (usize(offs[0]), usize(offs[1]))
    if len(shape) > DS_MAX_DIMS:
        hit.add("too-many-dims")
    if "\0" in name:
        hit.add("nul-in-name")
    return dtype, shape, offs, extra


def read_metadata(data):
    """Refused, or (header length, tensors, extra keys, rules hit)."""
    if len(data) < 8:
        raise Refused("header too small")
    n = struct.unpack("<Q", data[:8])[0]
    if n > MAX_HEADER:
        raise Refused("header too large")
    if 8 + n > len(data):
        raise Refused("invalid header length")
    try:
        text = data[8:8 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("invalid UTF-8 in header") from None
    hit = set()
    if text[:1] in tuple(WS):
        hit.add("leading-whitespace")
    root = Scanner(text).document()
    if not isinstance(root, Obj):
        raise Refused("the header is not a map")
    meta_seen, tensors, names, extra = False, {}, [], False
    for k, v in root.members:
        if k == "__metadata__":
            if meta_seen:
                raise Refused("duplicate field __metadata__")
            meta_seen = True
            check_metadata(v, hit)
            continue
        info = tensor_info(k, v, hit)
        extra |= info[3]
        if k in tensors:
            hit.add("duplicate-tensor-name")
        tensors[k] = info[:3]          # a HashMap: the last one stays
        names.append(k)
    end = validate(tensors)
    if end + 8 + n != len(data):
        raise Refused("incomplete metadata, file not fully covered")
    return n, tensors, extra, hit


def check_metadata(v, hit):
    if v is None:
        return
    if not isinstance(v, Obj):
        raise Refused("__metadata__: invalid type")
    keys = set()
    for k, x in v.members:
        if not isinstance(x, str):
            raise Refused("__metadata__: a value is not a string")
        if k in keys:
            hit.add("duplicate-metadata-key")
        keys.add(k)
        if "\0" in k or "\0" in x:
            hit.add("nul-in-name")


def validate(tensors):
    """Metadata::validate: tiling from 0, sizes from bits; the data end."""
    start = 0
    for dtype, shape, (s, e) in sorted(tensors.values(),
                                       key=lambda t: t[2]):
        if s != start or e < s:
            raise Refused("invalid offset")
        start = e
        numel = 1
        for d in shape:                 # try_fold(checked_mul), in order
            numel *= d
            if numel >= U64:
                raise Refused("validation overflow")
        bits = numel * BITS[dtype]
        if bits >= U64:
            raise Refused("validation overflow")
        if bits % 8:
            raise Refused("misaligned slice")
        if e - s != bits // 8:
            raise Refused("tensor invalid info")
    return start


def verdict(data):
    """(reference accepts, reason, rules of DELIBERATE hit, result)."""
    try:
        res = read_metadata(data)
    except Refused as e:
        return False, str(e), set(), None
    except RecursionError:
        return False, "recursion", set(), None
    return True, "", res[3], res


# ---- the generator of mutated headers --------------------------------------

def dumps(v):
    """Our JSON AST to text: ("obj", [(key_text, v)]), ("arr", [v]) or a
    literal text (str), so duplicates, odd numbers and escapes survive."""
    if isinstance(v, str):
        return v
    kind, items = v
    if kind == "arr":
        return "[" + ",".join(dumps(x) for x in items) + "]"
    return "{" + ",".join(k + ":" + dumps(x) for k, x in items) + "}"


def qs(s):
    """A JSON string literal for s (non-ASCII kept as UTF-8)."""
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20:
            out.append("\\u%04x" % ord(c))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


COMMON = ["F32", "BF16", "F16", "I64", "U8", "BOOL", "F8_E4M3", "F4",
          "F6_E2M3", "C64"]
NAMES = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
         "model.layers.0.mlp.down_proj.weight", "w", "b", "scale", "x.y.z",
         "mlp.experts.0.blocks", "mlp.experts.0.scales", "é.weight", ""]


class Case:
    """A header (AST), its tensors, the data size and how it was changed."""
    def __init__(self, rnd):
        self.rnd = rnd
        self.what = []
        self.meta = None
        self.tensors = []            # [name_text, entry AST]
        self.lead = ""
        self.tail = ""
        self.pad = True
        self.data_delta = 0
        self.hlen_delta = 0
        self.raw_edit = None


def base_case(rnd):
    c = Case(rnd)
    n = rnd.choice([1, 1, 2, 3, 4, 6])
    names = rnd.sample(NAMES, n)
    off = 0
    for name in names:
        dt = rnd.choice(COMMON if rnd.random() < 0.7 else list(BITS))
        while True:
            shape = [rnd.choice([1, 2, 3, 4, 5, 8, 0 if rnd.random() < 0.1
                                 else 2]) for _ in range(rnd.choice(
                                     [0, 1, 1, 2, 2, 3, 4]))]
            numel = 1
            for d in shape:
                numel *= d
            if numel * BITS[dt] % 8 == 0:
                break
        nb = numel * BITS[dt] // 8
        entry = ["obj", [['"dtype"', qs(dt)],
                         ['"shape"', ["arr", [str(d) for d in shape]]],
                         ['"data_offsets"', ["arr", [str(off),
                                                     str(off + nb)]]]]]
        rnd.shuffle(entry[1])
        c.tensors.append([qs(name), entry])
        off += nb
    rnd.shuffle(c.tensors)
    c.data = off
    if rnd.random() < 0.4:
        c.meta = ["obj", [('"format"', '"pt"')]]
    return c


def entry_of(c):
    """A tensor whose entry is still an object, and the entry; or None."""
    objs = [t for t in c.tensors if isinstance(t[1], list) and
            t[1][0] == "obj"]
    if not objs:
        return None, None
    t = c.rnd.choice(objs)
    return t, t[1]


def member(entry, key):
    for m in entry[1]:
        if m[0] == key:
            return m
    return None


WEIRD_INTS = ["-0", "0.0", "1e0", "1E0", "-1", "01", "+1", "1.5", "-0.0",
              "00", "0e0", str(2**63), str(2**63 - 1), str(2**64 - 1),
              str(2**64), str(10**20), "1e400", "9" * 400, "0x10",
              "18446744073709551616", "1e-400", "-9223372036854775808",
              "true", "null", '"1"', "[1]", "{}"]


def m_number(c):
    t, e = entry_of(c)
    if e is None:
        return m_offset_delta(c)
    key = c.rnd.choice(['"shape"', '"data_offsets"'])
    m = member(e, key)
    if not m or isinstance(m[1], str) or not m[1][1]:
        return m_offset_delta(c)
    i = c.rnd.randrange(len(m[1][1]))
    old = m[1][1][i]
    if c.rnd.random() < 0.3 and old.isdigit():
        new = str(max(0, int(old) + c.rnd.choice([-1, 1, 2, 4, 8])))
    else:
        new = c.rnd.choice(WEIRD_INTS)
    m[1][1][i] = new
    c.what.append("number %s[%d] %s -> %s" % (key, i, old, new[:24]))


def m_offset_delta(c):
    c.data_delta = c.rnd.choice([-1, 1, 8])
    c.what.append("data size %+d" % c.data_delta)


DTYPE_SUBST = ["f32", "bf16", "F128", "F8", "FP8", "", "F4 ", " F32",
               '{"F32":null}', '{"BF16":{}}', '{"F32":1}', '{"F32":null,'
               '"F16":null}', "{}", "null", "32", '["F32"]',
               '"F\\u0033\\u0032"', '"F32\\u0000"', '"B\\u0046\\u00316"']


def m_dtype(c):
    t, e = entry_of(c)
    if e is None:
        return m_offset_delta(c)
    m = member(e, '"dtype"')
    if not m:
        return m_extra(c)
    if c.rnd.random() < 0.5:
        new = qs(c.rnd.choice(list(BITS)))
    else:
        new = c.rnd.choice(DTYPE_SUBST)
        if not new.startswith(("{", "[", '"')) and new not in ("null",
                                                               "32"):
            new = qs(new)
    m[1] = new
    c.what.append("dtype -> %s" % new)


def m_shape(c):
    t, e = entry_of(c)
    if e is None:
        return m_offset_delta(c)
    m = member(e, '"shape"')
    if not m or isinstance(m[1], str):
        return m_extra(c)
    dims = m[1][1]
    r = c.rnd.random()
    if r < 0.25:
        dims.insert(c.rnd.randrange(len(dims) + 1), "1")
        c.what.append("shape: a dim 1 more")
    elif r < 0.4 and dims:
        dims.pop(c.rnd.randrange(len(dims)))
        c.what.append("shape: a dim less")
    elif r < 0.5:
        dims.insert(c.rnd.randrange(len(dims) + 1), "0")
        c.what.append("shape: a dim 0 more")
    elif r < 0.75:
        k = c.rnd.choice([DS_MAX_DIMS - 1, DS_MAX_DIMS, DS_MAX_DIMS + 1,
                          40, 64, 130])
        dims[:] = dims + ["1"] * max(0, k - len(dims))
        c.what.append("shape: %d dims" % len(dims))
    else:
        m[1] = c.rnd.choice(["[]", "4", "null", '["2"]', "[[2]]", "{}",
                             "[2,]", "[,2]", "[2 2]"])
        c.what.append("shape -> %s" % m[1])


def json_value(rnd, depth=0):
    """A random JSON value for an ignored key, odd corners included."""
    r = rnd.random()
    if depth > 2 or r < 0.5:
        return rnd.choice(["1", "-0", "1e5", "1e400", "1e-400", "9" * 30,
                           "-" + "9" * 30, "0.5", "true", "null", '"s"',
                           '"a\\u0000b"', '"\\ud83d\\ude00"', '"\\ud83d"',
                           '"\\udc00"', '"tab\\there"', '"\\q"', "1.",
                           "[]", "{}", '"é"', "nul", '"ok"', "-", "2e308",
                           "1.7976931348623157e308"])
    if r < 0.75:
        return ["arr", [json_value(rnd, depth + 1)
                        for _ in range(rnd.randrange(3))]]
    return ["obj", [(qs(rnd.choice(["k", "dtype", "k", ""])),
                     json_value(rnd, depth + 1))
                    for _ in range(rnd.randrange(3))]]


def m_extra(c):
    t, e = entry_of(c)
    if e is None:
        return m_offset_delta(c)
    key = qs(c.rnd.choice(["strides", "offset", "x", "dtype ", "Dtype",
                           "__metadata__", "", "data_offsets\u0000"]))
    if c.rnd.random() < 0.15:
        d = c.rnd.choice([MAX_DEPTH - 3, MAX_DEPTH - 2, MAX_DEPTH - 1,
                          MAX_DEPTH, 200])
        v = "[" * d + "]" * d
        c.what.append("extra key, arrays %d deep" % d)
    else:
        v = json_value(c.rnd)
        c.what.append("extra key %s: %s" % (key, dumps(v)[:30]))
    e[1].insert(c.rnd.randrange(len(e[1]) + 1), [key, v])
    if c.rnd.random() < 0.2:
        e[1].append([key, json_value(c.rnd)])
        c.what.append("extra key twice")


def m_dup_key(c):
    t, e = entry_of(c)
    if e is None or not e[1]:
        return m_offset_delta(c)
    m = c.rnd.choice(e[1])
    e[1].insert(c.rnd.randrange(len(e[1]) + 1), [m[0], m[1]])
    c.what.append("entry key %s twice" % m[0])


def m_drop_key(c):
    t, e = entry_of(c)
    if e is None or not e[1]:
        return m_offset_delta(c)
    e[1].pop(c.rnd.randrange(len(e[1])))
    c.what.append("entry key dropped")


def m_entry_form(c):
    t, e = entry_of(c)
    if e is None:
        return m_offset_delta(c)
    r = c.rnd.random()
    vals = {k: v for k, v in e[1]}
    if r < 0.6 and all(k in vals for k in ('"dtype"', '"shape"',
                                           '"data_offsets"')):
        seq = [vals['"dtype"'], vals['"shape"'], vals['"data_offsets"']]
        if c.rnd.random() < 0.3:
            seq = seq[:2] if c.rnd.random() < 0.5 else seq + ["1"]
        t[1] = ["arr", seq]
        c.what.append("entry as a %d-array" % len(seq))
    else:
        t[1] = c.rnd.choice(["null", "5", '"F32"', "[]", "{}", "true"])
        c.what.append("entry -> %s" % t[1])


def m_dup_tensor(c):
    t = c.rnd.choice(c.tensors)
    if c.rnd.random() < 0.5:
        c.tensors.insert(c.rnd.randrange(len(c.tensors) + 1),
                         [t[0], t[1]])
        c.what.append("tensor %s twice, same entry" % t[0])
    else:
        other = c.rnd.choice(c.tensors)
        other[0] = t[0] if other is not t else other[0]
        c.what.append("a tensor renamed to %s" % t[0])
    if c.rnd.random() < 0.3:
        # Written differently, the same name.
        for x in c.tensors:
            if x[0] == t[0] and len(t[0]) > 2 and t[0][1].isalpha():
                x[0] = '"\\u%04x%s' % (ord(t[0][1]), t[0][2:])
                c.what.append("spelt with an escape")
                break


NAME_TEXT = ['"a\\u0000b"', '"\\u0000"', '"tab\\tname"', '"\\u00e9"',
             '"\\ud83d\\ude00"', '"\\ud83d"', '"\\udc00x"', '"a\\/b"',
             '"\\"q\\""', '"__metadata__"', '"__metadata_"', '""',
             '"new\nline"', '"\x7f"', '"\\x41"', '"\\u004"', "name", "'w'",
             "1"]


def m_name(c):
    t = c.rnd.choice(c.tensors)
    t[0] = c.rnd.choice(NAME_TEXT)
    c.what.append("name -> %r" % t[0])


META = ["null", "{}", '{"format":"pt"}', '{"a":"1","a":"2"}',
        '{"a":"1","b":"2","a":"1"}', '{"a":1}', '{"a":null}', '{"a":{}}',
        '"pt"', "[]", '{"a\\u0000":"x"}', '{"a":"x\\u0000"}',
        '{"":""}', '{"a":"\\ud83d"}', "true", '{"format":"pt",}']


def m_meta(c):
    r = c.rnd.random()
    c.meta = c.rnd.choice(META)
    if r < 0.25:
        c.meta2 = c.rnd.choice(META)
        c.what.append("__metadata__ twice: %s, %s" % (c.meta, c.meta2))
    else:
        c.what.append("__metadata__ %s" % c.meta)


def m_space(c):
    r = c.rnd.random()
    if r < 0.5:
        c.lead = c.rnd.choice([" ", "\n", "\t", "\r", "\f", "\v", "\0",
                               "\ufeff", "  \n "])
        c.what.append("before: %r" % c.lead)
    else:
        c.tail = c.rnd.choice([" ", "\n", "\t\r\n", "\f", "\0", "x", ",",
                               "}", "{}", "\v", "\u00a0"])
        c.pad = c.rnd.random() < 0.5
        c.what.append("after: %r" % c.tail)


BYTES = b'{}[],:"\\ 0123456789eE.-+ntfuxl\x00\xff\x80\xc0\xed\xa0'


def m_bytes(c):
    r = c.rnd.random()
    c.raw_edit = (r, c.rnd.random(), c.rnd.choice(list(BYTES)))
    c.what.append("byte edit")


def m_hlen(c):
    c.hlen_delta = c.rnd.choice([-1, 1, -8, 8, MAX_HEADER + 1, U64 - 1,
                                 -(2**40)])
    c.what.append("header length %+d" % c.hlen_delta)


def m_utf8(c):
    t = c.rnd.choice(c.tensors)
    bad = c.rnd.choice(["\udcff", "\udcc0\udcaf", "\udced\udca0\udc80",
                        "\udcf4\udc90\udc80\udc80", "\udce2\udc82"])
    t[0] = t[0][:-1] + bad + '"'
    c.what.append("name not UTF-8")


def m_add_tensor(c):
    """A tensor more at the end of the data, of any dtype, whose span is
    its bits / 8 rounded down or up, or off by one."""
    dt = c.rnd.choice(list(BITS))
    shape = [c.rnd.choice([1, 2, 3, 5, 7]) for _ in range(c.rnd.choice(
        [0, 1, 1, 2, 3]))]
    numel = 1
    for d in shape:
        numel *= d
    bits = numel * BITS[dt]
    k = max(0, c.rnd.choice([bits // 8, -(-bits // 8), bits // 8 + 1,
                             bits // 8 - 1]))
    name = qs("t%d.%s" % (len(c.tensors), dt.lower()))
    entry = ["obj", [['"dtype"', qs(dt)],
                     ['"shape"', ["arr", [str(d) for d in shape]]],
                     ['"data_offsets"', ["arr", [str(c.data),
                                                 str(c.data + k)]]]]]
    c.tensors.insert(c.rnd.randrange(len(c.tensors) + 1), [name, entry])
    c.data += k
    c.what.append("tensor %s %s, %d bits in %d bytes" % (dt, shape, bits,
                                                           k))


MUTATIONS = [
    (m_add_tensor, 8),
    (m_number, 14), (m_dtype, 10), (m_shape, 10), (m_extra, 12),
    (m_dup_key, 5), (m_drop_key, 3), (m_entry_form, 5), (m_dup_tensor, 6),
    (m_name, 6), (m_meta, 8), (m_space, 6), (m_bytes, 10),
    (m_offset_delta, 3), (m_hlen, 2), (m_utf8, 2),
]


def render(c):
    members = []
    if c.meta is not None:
        members.append(('"__metadata__"', c.meta))
    members += [(t[0], t[1]) for t in c.tensors]
    if getattr(c, "meta2", None) is not None:
        members.insert(c.rnd.randrange(len(members) + 1),
                       ('"__metadata__"', c.meta2))
    text = c.lead + dumps(["obj", members]) + c.tail
    body = text.encode("utf-8", "surrogateescape")
    if c.raw_edit:
        r, pos, b = c.raw_edit
        i = int(pos * len(body))
        if r < 0.35:
            body = body[:i] + body[i + 1:]
        elif r < 0.7:
            body = body[:i] + bytes([b]) + body[i:]
        elif r < 0.9:
            body = body[:i] + bytes([b]) + body[i + 1:]
        else:
            body = body[:i]
    if c.pad:
        body += b" " * ((8 - (8 + len(body)) % 8) % 8)
    n = len(body) + c.hlen_delta
    hlen = n if 0 <= n < U64 else (c.hlen_delta % U64)
    data = bytes((i * 7) & 0xff for i in range(max(0, c.data
                                                   + c.data_delta)))
    return struct.pack("<Q", hlen) + body + data


def make_case(rnd, k):
    c = base_case(rnd)
    if k % 10 != 0:             # one in ten stays as made (valid)
        kinds = [m for m, w in MUTATIONS for _ in range(w)]
        for _ in range(rnd.choice([1, 1, 1, 2, 2, 3])):
            rnd.choice(kinds)(c)
    return render(c), "; ".join(c.what) or "valid"


# ---- the differential run --------------------------------------------------

def expected_table(res):
    """Tensors of an accepted file as tests/sthdr prints them, sorted."""
    n, tensors = res[0], res[1]
    rows = []
    for name, (dt, shape, (s, e)) in tensors.items():
        rows.append("%s:%s:%s:%d:%d" % (name.encode().hex(), dt,
                                        ",".join(map(str, shape)),
                                        8 + n + s, e - s))
    return sorted(rows)


def run_cli(bins, paths):
    p = subprocess.run([bins, "inspect"] + paths, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120)
    return p.returncode, p.stdout.decode("utf-8", "replace"), \
        p.stderr.decode("utf-8", "replace")


def compare(i, path, what, ref, line, notes):
    """'agree', 'deliberate' or a failure text, for case i."""
    ok, reason, hit, res = ref
    fields = line.rstrip("\n").split("\t")
    ds_ok = fields[0] == "ok"
    if not ds_ok and path not in fields[-1]:
        return "FAIL %d (%s): the message does not name the file: %s" % (
            i, what, fields[-1])
    expect_ds = ok and not hit
    if ds_ok != expect_ds:
        return "FAIL %d (%s): reference %s%s, dare-stream %s%s" % (
            i, what, "accepts" if ok else "refuses: " + reason,
            " (dare-stream rules hit: %s)" % ", ".join(sorted(hit))
            if hit else "", "accepts" if ds_ok else "refuses: ",
            "" if ds_ok else fields[-1])
    if ds_ok:
        got = sorted(fields[2:])
        if got != expected_table(res):
            return "FAIL %d (%s): tensors differ: %s vs %s" % (
                i, what, got, expected_table(res))
        want_notes = 1 if res[2] else 0
        if int(fields[1]) != want_notes:
            return "FAIL %d (%s): %s notices, expected %d" % (
                i, what, fields[1], want_notes)
        notes[0] += want_notes
    if ok and not ds_ok:
        if not any(DELIBERATE[r][1] in fields[-1] for r in hit):
            return "FAIL %d (%s): refused on purpose (%s), but for another " \
                "reason: %s" % (i, what, ", ".join(sorted(hit)), fields[-1])
        return "deliberate"
    return "agree"


def differential(args):
    t0 = time.time()
    rnd = random.Random(args.seed)
    os.makedirs(args.dir, exist_ok=True)
    paths, whats, refs = [], [], []
    for k in range(args.cases):
        data, what = make_case(rnd, k)
        p = os.path.join(args.dir, "%05d.safetensors" % k)
        with open(p, "wb") as f:
            f.write(data)
        paths.append(p)
        whats.append(what)
        refs.append(verdict(data))
    h = subprocess.run([args.helper], input="\n".join(paths) + "\n",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=300)
    lines = h.stdout.splitlines()
    if h.returncode != 0 or len(lines) != len(paths):
        print("ERROR: %s exited %d with %d lines for %d files: %s" % (
            args.helper, h.returncode, len(lines), len(paths),
            h.stderr[-500:]))
        return 99
    fails, counts, rules, notes = [], {"agree": 0, "deliberate": 0}, {}, [0]
    for i, (p, w, r, line) in enumerate(zip(paths, whats, refs, lines)):
        v = compare(i, p, w, r, line, notes)
        if v in counts:
            counts[v] += 1
            if v == "deliberate":
                for name in r[2]:
                    rules[name] = rules.get(name, 0) + 1
        else:
            fails.append(v)
    fails += cli_check(args, paths, lines)
    ref_ok = sum(1 for r in refs if r[0])
    for f in fails[:40]:
        print(f)
    print("header-diff: %d cases (seed %d): the reference accepts %d, "
          "refuses %d; dare-stream agrees on %d, differs on purpose on %d, "
          "otherwise on %d; %d extra-key notices" % (
              len(paths), args.seed, ref_ok, len(paths) - ref_ok,
              counts["agree"], counts["deliberate"],
              len(fails), notes[0]))
    for name in sorted(rules):
        print("  deliberate %-22s %4d  (%s)" % (name, rules[name],
                                               DELIBERATE[name][0]))
    print("  %.1f s" % (time.time() - t0))
    return 1 if fails else 0


def cli_check(args, paths, lines):
    """The CLI on every file the helper took (a few processes) and on a
    sample of those it refused (one process each): the same verdicts."""
    fails = []
    taken = [p for p, l in zip(paths, lines) if l.startswith("ok")]
    for k in range(0, len(taken), 200):
        chunk = taken[k:k + 200]
        rc, out, err = run_cli(args.bin, chunk)
        if rc != 0 or sum(1 for p in chunk if p + ": " in out) != len(chunk):
            fails.append("FAIL cli: inspect of %d accepted files: exit %d, "
                         "%s" % (len(chunk), rc, err[-300:]))
    refused = [(p, l) for p, l in zip(paths, lines) if not l.startswith("ok")]
    sample = refused[::max(1, len(refused) // args.cli_sample)]
    for p, l in sample:
        rc, out, err = run_cli(args.bin, [p])
        msg = l.split("\t")[-1]
        if rc != 3 or msg not in err:
            fails.append("FAIL cli: %s: exit %d (expected 3) and '%s', "
                         "expected '%s'" % (p, rc, err.strip()[-200:], msg))
    print("header-diff: the CLI read %d accepted files and %d refused ones "
          "as the helper did (%d failures)" % (len(taken), len(sample),
                                                len(fails)))
    return fails


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verdict")
    v.add_argument("files", nargs="+")
    r = sub.add_parser("run")
    r.add_argument("--helper", required=True)
    r.add_argument("--bin", required=True)
    r.add_argument("--dir", required=True)
    r.add_argument("--cases", type=int, default=3000)
    r.add_argument("--seed", type=int, default=20260512)
    r.add_argument("--cli-sample", type=int, default=150)
    a = ap.parse_args()
    if a.cmd == "verdict":
        for f in a.files:
            with open(f, "rb") as fh:
                ok, reason, hit, _ = verdict(fh.read())
            print("%s: %s%s" % (f, "accept" if ok else "refuse: " + reason,
                                " (dare-stream refuses: %s)" %
                                ", ".join(sorted(hit)) if hit else ""))
        return 0
    return differential(a)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# gen.py - write the hostile-input corpus (malformed safetensors, indexes)
"""Write every malformed input case into DIR, plus DIR/cases.tsv.

Each line of cases.tsv is tab-separated:
  name  path-to-pass  exit-code  problem-fragment  file-fragment
path-to-pass is relative to DIR; both fragments must appear in the message
dare-stream prints (the file fragment names the offending file).
"""
import json
import os
import struct
import sys

SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"

# Two small F32 tensors that tile a 32-byte data section.
A = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
B = {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}
DATA = bytes(range(32))


def header_text(hdr):
    """A header as bytes: a dict is encoded, bytes and str are taken as is."""
    if isinstance(hdr, dict):
        return json.dumps(hdr, separators=(",", ":")).encode()
    if isinstance(hdr, str):
        return hdr.encode()
    return hdr


def st_file(hdr, data=DATA, hlen=None):
    """A safetensors file: LE u64 length, space-padded header, data."""
    text = header_text(hdr)
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    n = len(text) if hlen is None else hlen
    return struct.pack("<Q", n) + text + data


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


class Corpus:
    def __init__(self, top):
        self.top = top
        self.rows = []

    def case(self, name, exit_code, problem, file_frag, arg=None):
        self.rows.append((name, arg or name, str(exit_code), problem,
                          file_frag))
        return os.path.join(self.top, name)

    def single(self, name, content, problem):
        """A directory NAME holding one bad model.safetensors."""
        d = self.case(name, 3, problem, name + "/" + SINGLE)
        write(os.path.join(d, SINGLE), content)

    def header(self, name, hdr, problem, data=DATA):
        self.single(name, st_file(hdr, data), problem)

    def sharded(self, name, wmap, problem, file_frag, shard2=None):
        """Two valid shards (a in 1, b in 2) and an index with wmap."""
        d = self.case(name, 3, problem, name + "/" + file_frag)
        write(os.path.join(d, SHARD1), st_file(
            {"a": A}, DATA[:16]))
        write(os.path.join(d, SHARD2), shard2 if shard2 is not None else
              st_file({"b": dict(B, data_offsets=[0, 16])}, DATA[16:]))
        idx = wmap if isinstance(wmap, bytes) else json.dumps(
            {"metadata": {"total_size": 32}, "weight_map": wmap}).encode()
        write(os.path.join(d, INDEX), idx)
        return d

    def save(self):
        with open(os.path.join(self.top, "cases.tsv"), "w") as f:
            for row in self.rows:
                f.write("\t".join(row) + "\n")


def length_cases(c):
    good = st_file({"a": A, "b": B})
    c.single("empty-file", b"", "empty file")
    c.single("shorter-than-length", b"\x10\x00\x00", "shorter than the 8-byte")
    c.single("header-length-zero", struct.pack("<Q", 0) + good[8:],
             "header length is 0")
    c.single("header-beyond-file", struct.pack("<Q", len(good)) + good[8:],
             "beyond the end of the file")
    c.single("header-over-100MB", struct.pack("<Q", 100000001) + good[8:],
             "exceeds the limit")
    c.single("header-length-2^64-1", b"\xff" * 8 + good[8:],
             "exceeds the limit")


def json_cases(c):
    c.header("not-json", b'{"a": {"dtype": "F32", "shape": [2, 2], ',
             "not valid JSON")
    c.header("not-json-text", b"hello, world", "not a JSON object")
    c.header("json-not-object", b"[1, 2, 3]", "not a JSON object")
    c.header("json-string", b'"{}"', "not a JSON object")
    c.header("json-trailing-garbage",
             header_text({"a": A, "b": B}) + b"xyz", "not valid JSON")
    c.header("nul-in-header", b'{"a":\x00}', "not valid JSON")
    c.header("deep-nesting", b'{"a":' + b"[" * 100000,
             "nests arrays and objects more than 127 deep")
    c.header("number-beyond-double",
             b'{"a":{"x":1e999,' + header_text(A)[1:] + b',"b":'
             + header_text(B) + b"}", "beyond the range of a double")
    c.header("duplicate-name",
             b'{"a":' + header_text(A) + b',"a":' + header_text(B) + b"}",
             "duplicate tensor name")
    c.header("name-nul", b'{"a\\u0000":' + header_text(A) + b',"b":'
             + header_text(B) + b"}", "holds U+0000")
    c.header("metadata-twice", b'{"__metadata__":{},"a":' + header_text(A)
             + b',"__metadata__":null,"b":' + header_text(B) + b"}",
             "has __metadata__ twice")
    c.header("metadata-key-twice",
             b'{"__metadata__":{"format":"pt","format":"np"},"a":'
             + header_text(A) + b',"b":' + header_text(B) + b"}",
             "__metadata__ has key 'format' twice")
    c.header("name-not-utf8",
             b'{"a\xff\xfe":' + header_text(A) + b',"b":' + header_text(B)
             + b"}", "not valid UTF-8")
    c.header("name-overlong-utf8",
             b'{"\xc0\xaf":' + header_text(A) + b',"b":' + header_text(B)
             + b"}", "not valid UTF-8")
    # Valid JSON, a bad entry: the name must not reach a terminal raw.
    c.header("name-with-escape", b'{"a\\u001b[2J\\u0007":'
             + header_text(dict(A, dtype="F128")) + b',"b":' + header_text(B)
             + b"}", "unknown dtype")
    c.header("metadata-not-object", {"__metadata__": 3, "a": A, "b": B},
             "__metadata__")
    c.header("metadata-not-string",
             {"__metadata__": {"format": 1}, "a": A, "b": B},
             "must be a string")


def offset_cases(c):
    def offs(x, y):
        return dict(B, data_offsets=[x, y])
    c.header("offsets-overlap", {"a": A, "b": offs(8, 24)}, "overlap",
             DATA[:24])
    c.header("offsets-hole", {"a": A, "b": offs(20, 36)}, "hole",
             DATA + b"\0" * 4)
    c.header("offsets-hole-at-start",
             {"a": dict(A, data_offsets=[4, 20]), "b": offs(20, 36)},
             "hole", DATA + b"\0" * 4)
    c.header("offsets-reversed",
             {"a": dict(A, data_offsets=[16, 0]), "b": B}, "begin after end")
    c.header("offsets-past-end", {"a": A, "b": dict(
        B, shape=[8], data_offsets=[16, 48])}, "past the end")
    c.header("offset-2^63", {"a": A, "b": offs(16, 2**63)}, "expected 16")
    c.header("offset-beyond-2^64", {"a": A, "b": offs(16, 2**64)},
             "beyond 2^64 - 1")
    c.header("offset-negative-zero", b'{"a":{"dtype":"F32","shape":[2,2],'
             b'"data_offsets":[-0,16]},"b":' + header_text(B) + b"}",
             "-0 is a negative zero")
    c.header("offsets-huge", {"a": A, "b": offs(16, 2**63 - 1)},
             "expected 16")
    c.header("offsets-not-integers", {"a": A, "b": offs(16.0, 32.0)},
             "data_offsets must be")
    c.header("offsets-three", {"a": A, "b": dict(
        B, data_offsets=[16, 32, 48])}, "data_offsets must be")
    c.header("size-mismatch", {"a": dict(A, data_offsets=[0, 12]),
                               "b": offs(12, 28)}, "expected 16",
             DATA[:28])
    c.header("trailing-bytes", {"a": A, "b": B}, "trailing bytes",
             DATA + b"\0" * 8)
    c.header("truncated-data", {"a": A, "b": B}, "truncated", DATA[:20])
    c.header("no-data", {"a": A, "b": B}, "truncated", b"")


def shape_cases(c):
    c.header("numel-overflow", {"a": dict(A, shape=[2**40, 2**40]),
                                "b": B}, "more than 2^64 elements")
    c.header("bytes-overflow", {"a": dict(A, dtype="F64", shape=[2**61, 2]),
                                "b": B}, "2^64 bits or more")
    c.header("f4-odd-count", {"a": dict(A, dtype="F4", shape=[3],
                                        data_offsets=[0, 16]), "b": B},
             "not a whole number of bytes")
    c.header("dim-negative", {"a": dict(A, shape=[-2, 2]), "b": B},
             "non-negative integer, found -2")
    c.header("dim-fractional", {"a": dict(A, shape=[2.5, 2]), "b": B},
             "non-negative integer, found 2.5")
    c.header("dim-string", {"a": dict(A, shape=["2", 2]), "b": B},
             "non-negative integer, found \"2\"")
    c.header("dim-null", {"a": dict(A, shape=[None, 2]), "b": B},
             "non-negative integer, found null")
    c.header("dim-bigint", b'{"a":{"dtype":"F32","shape":['
             b'99999999999999999999999,2],"data_offsets":[0,16]}}',
             "beyond 2^64 - 1")
    c.header("shape-not-array", {"a": dict(A, shape=4), "b": B},
             "shape must be an array")
    c.header("too-many-dims", {"a": dict(A, shape=[1] * 32 + [4]), "b": B},
             "more than 32 dimensions")
    c.header("dtype-unknown", {"a": dict(A, dtype="F128"), "b": B},
             "unknown dtype \"F128\"")
    c.header("dtype-not-string", {"a": dict(A, dtype=4), "b": B},
             "unknown dtype 4")
    c.header("entry-not-object", {"a": 5, "b": B}, "expected an object")
    c.header("key-missing", {"a": {"dtype": "F32", "data_offsets": [0, 16]},
                             "b": B}, "missing key 'shape'")
    c.header("key-twice", b'{"a":{"dtype":"F32","dtype":"F32","shape":[2,2],'
             b'"data_offsets":[0,16]},"b":' + header_text(B) + b"}",
             "key 'dtype' appears twice")


def dir_cases(c):
    d = c.case("no-weights", 3, "no model.safetensors", "no-weights")
    write(os.path.join(d, "config.json"), b"{}\n")
    write(os.path.join(d, "pytorch_model.bin"), b"\0" * 16)
    d = c.case("weights-is-directory", 3, "no model.safetensors",
               "weights-is-directory")
    os.makedirs(os.path.join(d, SINGLE), exist_ok=True)


def special_file_cases(c):
    """Inputs that are not regular files must be refused, never hang."""
    d = c.case("fifo-shard", 3, "not a regular file",
               "fifo-shard/" + SINGLE, "fifo-shard/" + SINGLE)
    os.makedirs(d, exist_ok=True)
    os.mkfifo(os.path.join(d, SINGLE))
    d = c.case("fifo-index", 3, "not a regular file", "fifo-index/" + INDEX,
               "fifo-index/" + INDEX)
    os.makedirs(d, exist_ok=True)
    os.mkfifo(os.path.join(d, INDEX))
    d = c.case("device-shard", 3, "not a regular file",
               "device-shard/" + SINGLE, "device-shard/" + SINGLE)
    os.makedirs(d, exist_ok=True)
    os.symlink("/dev/zero", os.path.join(d, SINGLE))


def index_name_cases(c):
    a_b = {"a": SHARD1}
    d = c.sharded("index-shard-slash", dict(a_b, b="sub/" + SHARD2),
                  "not a plain file name", INDEX)
    write(os.path.join(d, "sub", SHARD2), st_file(
        {"b": dict(B, data_offsets=[0, 16])}, DATA[16:]))
    c.sharded("index-shard-dotdot", dict(a_b, b=".."),
              "not a plain file name", INDEX)
    d = c.sharded("index-shard-dotdot-path",
                  dict(a_b, b="../index-shard-slash/sub/" + SHARD2),
                  "not a plain file name", INDEX)
    d = os.path.join(c.top, "index-shard-absolute")
    c.sharded("index-shard-absolute",
              dict(a_b, b=os.path.abspath(os.path.join(d, SHARD2))),
              "not a plain file name", INDEX)
    c.sharded("index-shard-backslash", dict(a_b, b="..\\" + SHARD2),
              "not a plain file name", INDEX)
    c.sharded("index-shard-empty", dict(a_b, b=""),
              "not a plain file name", INDEX)
    c.sharded("index-shard-not-string", dict(a_b, b=3),
              "expected a shard file name", INDEX)
    c.sharded("index-shard-missing",
              dict(a_b, b="model-00003-of-00003.safetensors"), "missing",
              INDEX)


def index_content_cases(c):
    ok = {"a": SHARD1, "b": SHARD2}
    c.sharded("index-tensor-not-in-shard", dict(ok, c=SHARD1),
              "has no tensor 'c'", INDEX)
    c.sharded("index-tensor-wrong-shard", {"a": SHARD2, "b": SHARD1},
              "but it is in", INDEX)
    c.sharded("index-name-not-utf8",
              b'{"weight_map":{"a":"' + SHARD1.encode() + b'","b\xff":"'
              + SHARD2.encode() + b'"}}', "invalid UTF-8", INDEX)
    c.sharded("index-not-json", b'{"weight_map": {', "not a valid index",
              INDEX)
    c.sharded("index-not-object", b"[]", "expected an index", INDEX)
    c.sharded("index-no-weight-map", b'{"metadata": {}}',
              "expected an index", INDEX)
    c.sharded("index-empty-weight-map", b'{"weight_map": {}}',
              "weight_map is empty", INDEX)
    c.sharded("index-duplicate-tensor",
              b'{"weight_map":{"a":"' + SHARD1.encode() + b'","a":"'
              + SHARD2.encode() + b'"}}', "appears twice", INDEX)
    c.sharded("index-tensor-in-two-shards", ok, "in two shards", SHARD2,
              shard2=st_file({"a": A}, DATA[:16]))
    c.sharded("index-shard-truncated", ok, "truncated", SHARD2,
              shard2=st_file({"b": dict(B, data_offsets=[0, 16])},
                             DATA[16:24]))
    c.sharded("index-shard-bad-header", ok, "not valid JSON", SHARD2,
              shard2=st_file(b'{"b":'))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen.py DIR")
    c = Corpus(sys.argv[1])
    os.makedirs(c.top, exist_ok=True)
    for gen in (length_cases, json_cases, offset_cases, shape_cases,
                dir_cases, special_file_cases, index_name_cases,
                index_content_cases):
        gen(c)
    c.save()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# seeds.py - write the seed corpus of each fuzz harness into corpus/NAME/
"""Regenerate tests/fuzz/corpus/{header,file,index,recipe}/ (seeds only:
regression inputs found by fuzzing are committed next to them by hand and
are not touched here)."""
import hashlib
import json
import os
import struct
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "hostile"))
sys.dont_write_bytecode = True  # nothing written into the source tree
import gen  # noqa: E402  (tests/hostile/gen.py: the malformed files)

HERE = os.path.dirname(os.path.abspath(__file__))
A, B, DATA = gen.A, gen.B, gen.DATA


def put(harness, name, content):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(content)


def header_seeds():
    """8-byte LE data size, then the header text (fuzz_header.c)."""
    hdrs = {
        "two-f32": ({"a": A, "b": B}, 32),
        "metadata": ({"__metadata__": {"format": "pt"}, "a": A, "b": B}, 32),
        "empty": ({}, 0),
        "zero-size": ({"z": {"dtype": "BF16", "shape": [0, 4],
                             "data_offsets": [0, 0]}, "a": A}, 16),
        "scalar": ({"s": {"dtype": "F64", "shape": [],
                          "data_offsets": [0, 8]}}, 8),
        "all-dtypes": (None, None),
        "overflow": ({"a": dict(A, shape=[2**40, 2**40])}, 16),
        "hole": ({"a": A, "b": dict(B, data_offsets=[20, 36])}, 36),
        "dup": (b'{"a":' + gen.header_text(A) + b',"a":'
                + gen.header_text(A) + b"}", 16),
        "padded": (gen.header_text({"a": A}) + b"        ", 16),
    }
    sizes = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "U32": 4,
             "I32": 4, "U64": 8, "I64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
             "F16": 2, "BF16": 2, "F32": 4, "F64": 8}
    h, pos = {}, 0
    for dt, sz in sizes.items():
        h["t." + dt] = {"dtype": dt, "shape": [3, 1],
                        "data_offsets": [pos, pos + 3 * sz]}
        pos += 3 * sz
    hdrs["all-dtypes"] = (h, pos)
    for name, (hdr, size) in hdrs.items():
        put("header", name, struct.pack("<Q", size) + gen.header_text(hdr))


def file_seeds():
    """Whole files: valid ones and every single-file hostile case."""
    put("file", "valid", gen.st_file({"a": A, "b": B}))
    put("file", "valid-meta", gen.st_file(
        {"__metadata__": {"format": "pt"}, "a": A, "b": B}))
    put("file", "empty-header", gen.st_file({}, b""))
    with tempfile.TemporaryDirectory() as tmp:
        c = gen.Corpus(tmp)
        for g in (gen.length_cases, gen.json_cases, gen.offset_cases,
                  gen.shape_cases):
            g(c)
        for name, arg, *_ in c.rows:
            p = os.path.join(tmp, arg, gen.SINGLE)
            with open(p, "rb") as f:
                content = f.read()
            if len(content) < 4096:
                put("file", name, content)


def index_seeds():
    """Index files for the two shards fuzz_index.c writes."""
    s1, s2 = gen.SHARD1, gen.SHARD2
    up = "model.layers.0.mlp.up_proj.weight"
    ok = {"a": s1, "b": s1, "c": s2, up: s2}
    seeds = {
        "valid": {"metadata": {"total_size": 32}, "weight_map": ok},
        "no-metadata": {"weight_map": ok},
        "one-shard": {"weight_map": {"a": s1, "b": s1}},
        "partial": {"weight_map": {"a": s1}},
        "wrong-shard": {"weight_map": dict(ok, a=s2)},
        "missing-shard": {"weight_map": dict(ok, c="model-00003.safetensors")},
        "slash": {"weight_map": dict(ok, c="../" + s2)},
        "extra-tensor": {"weight_map": dict(ok, z=s1)},
        "not-string": {"weight_map": dict(ok, c=2)},
        "self": {"weight_map": dict(ok, c="model.safetensors.index.json")},
    }
    for name, obj in seeds.items():
        put("index", name, json.dumps(obj, indent=2).encode())
    put("index", "not-json", b'{"weight_map": {"a": "')
    put("index", "array", b"[]")


RECIPE = b"""# dare-stream 0.1.0 recipe
merge_method: dare_ties
base_model: "/models/base"
models:
  - model: "/models/ft1"
    parameters:
      weight: 0.7
      drop_rate: 0.9
  - model: "/models/ft2"
    parameters:
      weight: 0.3
      drop_rate: 0.5
parameters:
  lambda: 1.5
  normalize: true
  rescale: inverse
  seed: 0x2a
dtype: bf16
exclude:
  - "lm_head.*"
  - "model.embed_tokens.weight"
"""

MERGEKIT = b"""models:
  - model: org/base
  - model: org/math
    parameters:
      density: 0.53
      weight: 0.5
merge_method: dare_linear
base_model: org/base
parameters:
  normalize: false
dtype: bfloat16
"""


def recipe_seeds():
    put("recipe", "dare-stream", RECIPE)
    put("recipe", "mergekit", MERGEKIT)
    put("recipe", "flow", b"{merge_method: linear, models: [{model: a}, "
        b"{model: b, parameters: {weight: 2}}]}\n")
    put("recipe", "anchors", b"p: &p {weight: 1}\nmerge_method: linear\n"
        b"models:\n  - model: a\n    parameters: *p\n")
    put("recipe", "nan", b"merge_method: task_arithmetic\nbase_model: b\n"
        b"models:\n  - model: m\n    parameters: {weight: nan}\n"
        b"parameters: {lambda: -inf}\n")
    put("recipe", "escapes", b'merge_method: linear\nmodels:\n'
        b'  - model: "a\\x01b\\u00e9\\n"\nexclude: ["\\t*"]\n')
    put("recipe", "empty", b"")
    put("recipe", "not-mapping", b"- 1\n- 2\n")
    put("recipe", "tags", b"!!map {merge_method: !!str linear, models: "
        b"!!seq [{model: x}]}\n")


def main():
    header_seeds()
    file_seeds()
    index_seeds()
    recipe_seeds()
    names = sorted(os.listdir(os.path.join(HERE, "corpus")))
    print("seeds written for:", " ".join(names))
    # A digest of everything, so a change to the seeds shows in review.
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(os.path.join(HERE, "corpus"))):
        for f in sorted(files):
            with open(os.path.join(root, f), "rb") as fh:
                h.update(f.encode() + fh.read())
    print("corpus sha256:", h.hexdigest()[:16])


if __name__ == "__main__":
    main()

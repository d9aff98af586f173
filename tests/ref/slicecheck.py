#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""slicecheck.py - check a sliced merge (frankenmerge, layer stacking).

Independent of dare-stream: standard library only, reading the inputs and
the output safetensors and recomputing what DESIGN 5.3 says each output
tensor is.

    slicecheck.py OUT SPEC.json

SPEC (written by the test, by hand):
  {"method": "linear" | "task_arithmetic" | "passthrough",
   "normalize": true, "lambda": 1.0, "dtype": "F32" (optional),
   "base": DIR (task_arithmetic),
   "slices": [{"sources": [{"model": DIR, "range": [a, b], "weight": w}],
               "base_range": [a, b]}],
   "shard_size": BYTES, "per_layer": ["layer_types"]}

Checks: the output's tensor names and order (tensors outside the layers
whose name holds embed/wte/wpe first, from the first slice; the layers
renumbered; the rest from the last slice), every tensor's bits (linear and
task_arithmetic in binary32, summing from +0 in source order; passthrough
byte for byte), config.json's layer count and per-layer lists, and the
index: Hugging Face shard names, greedy filling, total_size.
"""
import json
import os
import re
import struct
import sys
from array import array

LAYER = re.compile(r"(^|\.)(layers|layer|h|blocks)\.(\d+)(\.|$)")
SIZES = {"F32": 4, "F16": 2, "BF16": 2}


def layer_of(name):
    m = LAYER.search(name)
    return (int(m.group(3)), m.start(3), m.end(3)) if m else None


def renumber(name, n):
    lo = layer_of(name)
    return name if lo is None else name[:lo[1]] + str(n) + name[lo[2]:]


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h, 8 + n


class Model:
    """Every tensor of a model directory: name -> (path, info, data offset)."""

    def __init__(self, d):
        self.dir = d
        self.t = {}
        self.order = []
        idx = os.path.join(d, "model.safetensors.index.json")
        if os.path.exists(idx):
            with open(idx) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        for fn in files:
            path = os.path.join(d, fn)
            h, off = read_header(path)
            for name, info in sorted(h.items(),
                                     key=lambda kv: kv[1]["data_offsets"]):
                self.t[name] = (path, info, off)
                self.order.append(name)

    def raw(self, name):
        path, info, off = self.t[name]
        a, b = info["data_offsets"]
        with open(path, "rb") as f:
            f.seek(off + a)
            return f.read(b - a)

    def values(self, name):
        return decode(self.t[name][1]["dtype"], self.raw(name))

    def config(self):
        with open(os.path.join(self.dir, "config.json")) as f:
            return json.load(f)


def decode(dt, data):
    if dt == "F32":
        return array("f", data).tolist()
    if dt == "F16":
        return list(struct.unpack("<%de" % (len(data) // 2), data))
    if dt == "BF16":
        h = array("H", data)
        return array("f", array("I", [x << 16 for x in h]).tobytes()).tolist()
    raise SystemExit("unsupported dtype " + dt)


def encode(dt, vals):
    f = array("f", vals)
    if dt == "F32":
        return f.tobytes()
    if dt == "F16":
        return struct.pack("<%de" % len(vals), *f.tolist())
    bits = array("I", f.tobytes())
    out = array("H")
    for x in bits:
        if (x & 0x7FFFFFFF) > 0x7F800000:
            out.append((x >> 16) | 0x40)
        else:
            out.append(((x + 0x7FFF + ((x >> 16) & 1)) >> 16) & 0xFFFF)
    return out.tobytes()


def r32(v):
    return array("f", v).tolist()


def linear(xs, ws, normalize):
    acc = [0.0] * len(xs[0])
    for x, w in zip(xs, ws):
        w = r32([w])[0]
        acc = r32([a + t for a, t in zip(acc, r32([w * v for v in x]))])
    if normalize:
        div = 0.0
        for w in ws:
            div = r32([div + r32([w])[0]])[0]
        acc = r32([a / (div or 1.0) for a in acc])
    return acc


class Checker:
    def __init__(self, out, spec):
        self.out = out
        self.spec = spec
        self.models = {}
        self.fails = 0
        self.checks = 0

    def model(self, d):
        if d not in self.models:
            self.models[d] = Model(d)
        return self.models[d]

    def eq(self, what, got, want):
        self.checks += 1
        if got != want:
            self.fails += 1
            if self.fails <= 10:
                print("FAIL %s: got %r, want %r" % (what, got, want))

    def plan(self):
        """(output name, slice, layer offset or None, input name) in order."""
        sl = self.spec["slices"]
        first = self.model(sl[0]["sources"][0]["model"])
        outside = [n for n in first.order if layer_of(n) is None]
        pre = [n for n in outside if re.search("embed|wte|wpe", n)]
        post = [n for n in outside if n not in pre]
        plan = [(n, 0, None, n) for n in pre]
        ol = 0
        for s, d in enumerate(sl):
            src = d["sources"][0]
            m = self.model(src["model"])
            for i in range(src["range"][1] - src["range"][0]):
                for n in m.order:
                    lo = layer_of(n)
                    if lo and lo[0] == src["range"][0] + i:
                        plan.append((renumber(n, ol), s, i, n))
                ol += 1
        plan += [(n, len(sl) - 1, None, n) for n in post]
        return plan, ol

    def expect(self, s, i, name):
        """Expected bytes and dtype of one output tensor."""
        sp = self.spec
        srcs = sp["slices"][s]["sources"]

        def nm(src_range):
            return name if i is None else renumber(name, src_range[0] + i)
        ms = [(self.model(x["model"]), nm(x["range"])) for x in srcs]
        lay_m, lay_n = ms[0]
        if sp["method"] == "task_arithmetic":
            lay_m = self.model(sp["base"])
            lay_n = nm(sp["slices"][s]["base_range"])
        dt = lay_m.t[lay_n][1]["dtype"]
        if sp["method"] == "passthrough" or dt not in SIZES:
            return ms[0][0].raw(ms[0][1]), dt
        odt = sp.get("dtype", dt)
        xs = [m.values(n) for m, n in ms]
        ws = [x["weight"] for x in srcs]
        if sp["method"] == "linear":
            return encode(odt, linear(xs, ws, sp.get("normalize", True))), odt
        b = lay_m.values(lay_n)
        ds = [r32([v - bv for v, bv in zip(x, b)]) for x in xs]
        acc = linear(ds, ws, sp.get("normalize", False))
        lam = r32([sp.get("lambda", 1.0)])[0]
        return encode(odt, r32([bv + t for bv, t in
                                zip(b, r32([lam * a for a in acc]))])), odt

    def run(self):
        plan, layers = self.plan()
        out = Model(self.out)
        self.check_order(out, plan)
        for oname, s, i, iname in plan:
            if oname not in out.t:
                continue
            want, dt = self.expect(s, i, iname)
            self.eq("%s dtype" % oname, out.t[oname][1]["dtype"], dt)
            self.eq("%s bytes" % oname, out.raw(oname) == want, True)
        self.check_config(out, layers, plan)
        self.check_index(out, plan)
        print("slicecheck: %d tensors, %d layers, %d checks, %d failed"
              % (len(plan), layers, self.checks, self.fails))
        return 1 if self.fails else 0

    def check_order(self, out, plan):
        """Names, and order across shards (shard k holds a run of them)."""
        idx = os.path.join(self.out, "model.safetensors.index.json")
        if os.path.exists(idx):
            with open(idx) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        names = []
        for fn in files:
            h, _ = read_header(os.path.join(self.out, fn))
            names += [n for n, _ in sorted(h.items(),
                                           key=lambda kv: kv[1]["data_offsets"])]
        self.eq("tensor names in output order", names, [p[0] for p in plan])

    def check_config(self, out, layers, plan):
        cfg = out.config()
        key = next(k for k in ("num_hidden_layers", "n_layer", "num_layers")
                   if k in cfg)
        self.eq("config.json " + key, cfg[key], layers)
        for k in self.spec.get("per_layer", []):
            want = []
            for d in self.spec["slices"]:
                src = d["sources"][0]
                c = self.model(src["model"]).config()
                want += c[k][src["range"][0]:src["range"][1]]
            self.eq("config.json " + k, cfg.get(k), want)

    def check_index(self, out, plan):
        idx = os.path.join(self.out, "model.safetensors.index.json")
        size = self.spec.get("shard_size", 5 * 10**9)
        nbytes = [len(out.raw(p[0])) for p in plan if p[0] in out.t]
        shards, used = [0], 0
        for nb in nbytes:
            if used and used + nb > size:
                shards.append(0)
                used = 0
            shards[-1] += 1
            used += nb
        if len(shards) == 1:
            self.eq("one shard, model.safetensors, no index",
                    (os.path.exists(os.path.join(self.out, "model.safetensors")),
                     os.path.exists(idx)), (True, False))
            return
        with open(idx) as f:
            ix = json.load(f)
        n = len(shards)
        want = {}
        k = 0
        for s, cnt in enumerate(shards):
            for _ in range(cnt):
                want[plan[k][0]] = "model-%05d-of-%05d.safetensors" % (s + 1, n)
                k += 1
        self.eq("index weight_map", ix["weight_map"], want)
        self.eq("index total_size", ix["metadata"]["total_size"], sum(nbytes))


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: slicecheck.py OUT SPEC.json")
    with open(sys.argv[2]) as f:
        spec = json.load(f)
    return Checker(sys.argv[1], spec).run()


if __name__ == "__main__":
    sys.exit(main())

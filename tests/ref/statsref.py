#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# statsref.py - delta statistics recomputed from the safetensors files alone
"""Independent expectation for `dare-stream delta-stats` (standard library).

  statsref.py stats BASE MODEL...            the figures, as JSON
  statsref.py check OUT.json BASE MODEL...   compare delta-stats --json
  statsref.py text OUT.txt BASE MODEL...     compare the printed table
  statsref.py svg FILE.svg BASE MODEL...     well-formed, one cell a tensor
  statsref.py drop SRC DST NAME              SRC without tensor NAME
  statsref.py poke FILE NAME INDEX VALUE     set one F32 element (nan, inf)

The rules are those of dare-stream(1), written here from the text, not
from the C code: d = x - b in binary32 (BF16 is bits << 16, F16 exact);
NaN deltas are counted apart and left out; mean is the binary64 sum of
|d| in element order over the count; the percentile q is the
ceil(q N)-th smallest |d| (nearest rank), reported as the upper edge of
its bin (|d| bits >> 15), clamped to the maximum, 0 for a zero.
"""
import array
import json
import os
import struct
import sys
import xml.etree.ElementTree as ET

FLOATS = {"F32", "BF16", "F16"}
FLOATY = FLOATS | {"F64", "F8_E4M3", "F8_E5M2"}
SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
         "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4, "I32": 4,
         "F32": 4, "U64": 8, "I64": 8, "F64": 8}
SFT_P99, CPT_P99 = 0.01, 0.03
PCTS = (("p50", 500), ("p99", 990), ("p999", 999))


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h, 8 + n


def shards(arg):
    """The safetensors files of a model argument, in the engine's order."""
    if os.path.isfile(arg) and arg.endswith(".json"):
        d = os.path.dirname(arg)
        wm = json.load(open(arg))["weight_map"]
        return [os.path.join(d, s) for s in sorted(set(wm.values()))]
    if os.path.isfile(arg):
        return [arg]
    idx = os.path.join(arg, "model.safetensors.index.json")
    if os.path.exists(idx):
        return shards(idx)
    one = os.path.join(arg, "model.safetensors")
    if os.path.exists(one):
        return [one]
    return sorted(os.path.join(arg, f) for f in os.listdir(arg)
                  if f.endswith(".safetensors"))


def lora_tensors(arg):
    """BASE+ADAPTER: the base's tensors with dsref's LoRA values (DESIGN
    7.1) as (F32, shape, None, values) and the adapter's replacements."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import dsref
    out, order = tensors(arg.rsplit("+", 1)[0])
    for name, t in dsref.LoraModel(arg).tensors.items():
        if isinstance(t, dsref.Computed):
            out[name] = ("F32", t.shape, None, t.values)
        elif out[name][2] != t.path:
            out[name] = (t.dtype, t.shape, t.path, t.start)
    return out, order


def tensors(arg):
    """name -> (dtype, shape, path, absolute offset), and names in order."""
    if "+" in arg and not os.path.exists(arg):
        return lora_tensors(arg)
    out, order = {}, []
    for p in shards(arg):
        h, base = header(p)
        for name, t in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            out[name] = (t["dtype"], t["shape"], p,
                         base + t["data_offsets"][0])
            order.append(name)
    return out, order


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def values(t):
    """The tensor's elements as binary32 values (Python floats)."""
    dtype, shape, path, off = t
    if path is None:
        return array.array("f", off)
    n = numel(shape)
    with open(path, "rb") as f:
        f.seek(off)
        raw = f.read(n * SIZES[dtype])
    if dtype == "F32":
        return array.array("f", raw)
    if dtype == "F16":
        return array.array("f", struct.unpack("<%de" % n, raw))
    h = array.array("H", raw)
    return array.array("f", array.array("I", (v << 16 for v in h)).tobytes())


def f2u(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


def u2f(u):
    return struct.unpack("<f", struct.pack("<I", u))[0]


def binned(t, mx):
    """The reported value of a true percentile t: its bin's upper edge."""
    if t == 0:
        return 0.0
    up = ((f2u(t) >> 15) + 1) << 15
    return u2f(min(up, f2u(mx)))


def figures(absd, nall):
    """Figures of the non-NaN |d| values absd out of nall deltas."""
    N = len(absd)
    s = {"n": nall, "nan": nall - N}
    if N == 0:
        s.update(zeros=0, sum=0.0, zero_fraction=None, max=None, mean=None,
                 p50=None, p99=None, p999=None, verdict="none", true={})
        return s
    tot = 0.0
    for a in absd:             # element order, no compensated sum()
        tot += a
    srt = sorted(absd)
    mx = srt[-1]
    zeros = sum(1 for a in absd if a == 0)
    s.update(zeros=zeros, sum=tot, zero_fraction=zeros / N, max=mx,
             mean=tot / N, true={})
    for key, num in PCTS:
        r = max(1, -(-N * num // 1000))
        s["true"][key] = srt[r - 1]
        s[key] = binned(srt[r - 1], mx)
    p99 = s["p99"]
    s["verdict"] = ("sft" if p99 <= SFT_P99 else
                    "cpt" if p99 >= CPT_P99 else "between")
    return s


def classify(bt, mt):
    if mt is None:
        return "missing"
    if bt[0] not in FLOATY and mt[0] not in FLOATY:
        return "not-float"
    if bt[0] not in FLOATS or mt[0] not in FLOATS:
        return "dtype"
    if list(bt[1]) != list(mt[1]):
        return "shape"
    return "compared"


def model_stats(base, order, arg):
    mt, morder = tensors(arg)
    out, every, nall, tot = [], [], 0, 0.0
    for name in order:
        why = classify(base[name], mt.get(name))
        if why != "compared":
            out.append({"name": name, "compared": False, "reason": why})
            continue
        b, x = values(base[name]), values(mt[name])
        d = array.array("f", (xi - bi for xi, bi in zip(x, b)))
        absd = [abs(v) for v in d if v == v]
        s = figures(absd, len(d))
        s.update(name=name, compared=True)
        out.append(s)
        every.extend(absd)
        nall += len(d)
        tot += s["sum"]
    for name in morder:
        if name not in base:
            out.append({"name": name, "compared": False, "reason": "extra"})
    overall = figures(every, nall)
    overall["sum"] = tot       # the tensors' sums added in order
    if overall["mean"] is not None:
        overall["mean"] = tot / len(every)
    return {"path": arg, "tensors": out, "overall": overall}


def stats(argv):
    base, order = tensors(argv[0])
    return {"base": argv[0],
            "models": [model_stats(base, order, a) for a in argv[1:]]}


# ---- comparisons --------------------------------------------------------

EXACT = ("n", "nan", "zeros", "sum", "zero_fraction", "max", "mean",
         "p50", "p99", "p999", "verdict")


def compare_figs(where, got, exp, bad):
    got = {k: float(v) if v in ("inf", "-inf") else v
           for k, v in got.items()}      # JSON has no infinity
    for k in EXACT:
        if got.get(k) != exp.get(k):
            bad.append("%s: %s is %r, expected %r" % (where, k, got.get(k),
                                                      exp.get(k)))
    for key, t in exp.get("true", {}).items():
        p = got.get(key)
        if p is None or not (t <= p and (p <= t * (1 + 2 ** -8) or
                                         p == exp["max"] or t == 0)):
            bad.append("%s: %s %r is not within 1/256 above the true %r"
                       % (where, key, p, t))


def check(argv):
    got = json.load(open(argv[0]))
    exp = stats(argv[1:])
    bad = []
    if len(got["models"]) != len(exp["models"]):
        bad.append("%d models, expected %d" % (len(got["models"]),
                                               len(exp["models"])))
    ntens = 0
    for gm, em in zip(got["models"], exp["models"]):
        gt = [t for t in gm["tensors"]]
        if [t["name"] for t in gt] != [t["name"] for t in em["tensors"]]:
            bad.append("%s: tensor list or order differs" % em["path"])
            continue
        for g, e in zip(gt, em["tensors"]):
            where = "%s: %s" % (em["path"], e["name"])
            if g["compared"] != e["compared"]:
                bad.append("%s: compared %r" % (where, g["compared"]))
            elif not e["compared"]:
                if g.get("reason") != e["reason"]:
                    bad.append("%s: reason %r, expected %r"
                               % (where, g.get("reason"), e["reason"]))
            else:
                compare_figs(where, g, e, bad)
                ntens += 1
        compare_figs("%s: overall" % em["path"], gm["overall"],
                     em["overall"], bad)
    for b in bad[:20]:
        print(b)
    print("%d models, %d tensors: %s" % (len(exp["models"]), ntens,
                                         "mismatch" if bad else "all equal"))
    return 1 if bad else 0


def g4(v):
    return "%.4g" % v


def text(argv):
    lines = open(argv[0]).read().splitlines()
    exp = stats(argv[1:])
    bad, n, li = [], 0, 0
    for em in exp["models"]:
        while li < len(lines) and not (lines[li].startswith("model ") and
                                       lines[li].endswith(em["path"])):
            li += 1
        if li == len(lines):
            bad.append("no table for %s" % em["path"])
            break
        rows = []
        li += 1
        while li < len(lines) and not lines[li].startswith("verdict: "):
            rows.append(lines[li])
            li += 1
        verdict = lines[li] if li < len(lines) else ""
        byname = {r.split()[0]: r.split()[1:] for r in rows if r.split()}
        for t in em["tensors"] + [dict(em["overall"], name="overall")]:
            cells = byname.get(t["name"])
            if cells is None:
                bad.append("%s: no line for %s" % (em["path"], t["name"]))
                continue
            if t["name"] == "overall":
                cells = cells[4:]      # "(21 tensors, N elements)"
            if not t.get("compared", True):
                want = ["not", "compared", "(%s)" % t["reason"]]
            elif t["max"] is None:
                want = ["all", "NaN"] if t["n"] else ["empty"]
            else:
                want = [g4(t[k]) for k in ("max", "mean", "p50", "p99",
                                           "p999", "zero_fraction")]
            if cells != want:
                bad.append("%s: %s printed %s, expected %s"
                           % (em["path"], t["name"], cells, want))
            n += 1
        word = {"sft": "SFT-like", "cpt": "continued-pre-training-like",
                "between": "between", "none": "no verdict"}
        ov = em["overall"]
        w = word[ov["verdict"]]
        if ov["verdict"] == "sft" and ov["zeros"] == ov["n"] - ov["nan"]:
            w = "identical to the base"
        if not verdict.startswith("verdict: " + w):
            bad.append("%s: %r, expected a verdict %r" % (em["path"],
                                                          verdict, w))
    for b in bad[:20]:
        print(b)
    print("%d lines checked: %s" % (n, "mismatch" if bad else "all equal"))
    return 1 if bad else 0


def svg(argv):
    ns = "{http://www.w3.org/2000/svg}"
    root = ET.parse(argv[0]).getroot()
    exp = stats(argv[1:])
    cells = [r for r in root.iter(ns + "rect") if r.get("class") == "cell"]
    want = sum(1 for m in exp["models"] for t in m["tensors"]
               if t["compared"])
    bad = []
    if root.tag != ns + "svg":
        bad.append("root is %s" % root.tag)
    if len(cells) != want:
        bad.append("%d cells, expected %d" % (len(cells), want))
    titles = sorted(c.find(ns + "title").text.split(":")[0] for c in cells)
    names = sorted(t["name"] for m in exp["models"] for t in m["tensors"]
                   if t["compared"])
    if titles != names:
        bad.append("cell titles do not name the compared tensors")
    alltext = " ".join("".join(t.itertext()) for t in root.iter(ns + "text"))
    for m in exp["models"]:
        if m["path"] not in alltext:
            bad.append("the map does not name %s" % m["path"])
    for b in bad:
        print(b)
    print("%d cells: %s" % (len(cells), "mismatch" if bad else "ok"))
    return 1 if bad else 0


# ---- editing fixtures ---------------------------------------------------

def drop(argv):
    src, dst, name = argv
    h, base = header(src)
    raw = open(src, "rb").read()
    meta = json.loads(raw[8:base]).get("__metadata__")
    out, data = {}, b""
    for n, t in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if n == name:
            continue
        a, b = t["data_offsets"]
        out[n] = dict(t, data_offsets=[len(data), len(data) + b - a])
        data += raw[base + a:base + b]
    if meta is not None:
        out["__metadata__"] = meta
    j = json.dumps(out, separators=(",", ":")).encode()
    j += b" " * (-(8 + len(j)) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(j)) + j + data)
    return 0


def poke(argv):
    path, name, index, value = argv
    for p in shards(path):
        h, base = header(p)
        if name in h:
            assert h[name]["dtype"] == "F32", "poke needs an F32 tensor"
            with open(p, "r+b") as f:
                f.seek(base + h[name]["data_offsets"][0] + 4 * int(index))
                f.write(struct.pack("<f", float(value)))
            return 0
    print("no tensor %s in %s" % (name, path))
    return 1


def main():
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd == "stats":
        json.dump(stats(argv), sys.stdout, indent=1,
                  default=lambda o: None)
        print()
        return 0
    return {"check": check, "text": text, "svg": svg, "drop": drop,
            "poke": poke}[cmd](argv)


if __name__ == "__main__":
    sys.exit(main())

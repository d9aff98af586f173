#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""params.py - each tensor's parameters, as DESIGN 5.3 resolves them.

Independent of dare-stream: standard library only.  Reads tensor names
(the first tab-separated field of each line of LIST, as `dsref.py list`
prints them; a line "total" is skipped) and a SPEC of parameters written
by the test, and groups the tensors by their resolved values, so that the
reference can recompute each group with plain numbers.

    params.py LIST SPEC.json

SPEC: {"layers": L (optional: 1 + the largest layer index of the names),
       "args": {"--weights": [P, ...], "--t": P, ...}}
(an option whose name ends in "s" takes one P per model, joined by commas)
where each P is a number, a gradient (a list of numbers) or a filter list
([{"filter": S, "value": V}, ...], the first entry whose filter is absent,
"*" or a substring of the name giving V, itself a number or a gradient).

Prints one line per group: the reference's arguments for it
("--weights 1,0.5 --t 0.25"), a tab, and the group's names separated by
spaces; groups in order of their first tensor.
"""
import json
import re
import sys

LAYER = re.compile(r"(^|\.)(layers|layer|h|blocks)\.(\d+)(\.|$)")


def layer_of(name):
    m = LAYER.search(name)
    return int(m.group(3)) if m else None


def gradient(g, x):
    """A gradient at x in [0, 1], in double (DESIGN 5.3)."""
    f = x * (len(g) - 1)
    i0 = int(f)
    i1 = min(len(g) - 1, i0 + 1)
    return (1 - (f - i0)) * g[i0] + (f - i0) * g[i1]


def resolve(p, name, x):
    if isinstance(p, list) and p and isinstance(p[0], dict):
        for e in p:
            s = e.get("filter")
            if s is None or s == "*" or s in name:
                return resolve(e["value"], name, x)
        raise SystemExit("params.py: no filter of %r matches %s" % (p, name))
    if isinstance(p, list):
        return gradient(p, x)
    return p


def main():
    names = [line.split("\t")[0].rstrip("\n") for line in open(sys.argv[1])]
    names = [n for n in names if n and n != "total"]
    with open(sys.argv[2]) as f:
        spec = json.load(f)
    layers = spec.get("layers")
    if layers is None:
        idx = [layer_of(n) for n in names if layer_of(n) is not None]
        layers = 1 + max(idx) if idx else 1
    groups = {}
    for name in names:
        i = layer_of(name)
        x = 0.0 if i is None else 1.0 if layers == 1 else i / (layers - 1)
        words = []
        for opt, ps in spec["args"].items():
            ps = ps if opt.endswith("s") else [ps]
            words += [opt, ",".join(repr(float(resolve(p, name, x)))
                                    for p in ps)]
        groups.setdefault(" ".join(words), []).append(name)
    for args, members in groups.items():
        print(args + "\t" + " ".join(members))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""mklora.py - write a PEFT LoRA adapter directory for a base model (tests).

  mklora.py BASE OUTDIR [--r R] [--alpha A] [--seed N] [--dtype D]
            [--targets q_proj,v_proj,...] [--rslora] [--fan-in-fan-out]
            [--embed] [--save lm_head,...] [--config KEY=JSON ...]
            [--drop NAME ...] [--extra NAME:D0xD1 ...] [--bad-rank NAME]
            [--fast]

adapter_config.json and adapter_model.safetensors as PEFT saves them:
base_model.model.<module>.lora_A.weight [r, in] and .lora_B.weight
[out, r] for base tensor <module>.weight [out, in] ([in, out] and the same
factors with --fan-in-fan-out); lora_embedding_A [r, rows] and
lora_embedding_B [cols, r] for the embedding (--embed); modules_to_save
copies as base_model.model.<module>.weight (--save).  --drop, --extra,
--bad-rank and --config make broken adapters for the refusal tests.
--fast tiles one block of random values (for benchmarks of large bases).
Standard library only.
"""

import argparse
import json
import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsref  # noqa: E402  (its safetensors reader)

PREFIX = "base_model.model."


def encode(dtype, vals):
    if dtype == "F32":
        return struct.pack(f"<{len(vals)}f", *vals)
    if dtype == "F16":
        return struct.pack(f"<{len(vals)}e", *vals)
    bits = struct.unpack(f"<{len(vals)}I", struct.pack(f"<{len(vals)}f",
                                                        *vals))
    return struct.pack(f"<{len(vals)}H", *[b >> 16 for b in bits])


def write_st(path, tensors):
    hdr, blobs, off = {}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        hdr[name] = {"dtype": dtype, "shape": shape,
                     "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hdr["__metadata__"] = {"format": "pt"}
    js = json.dumps(hdr, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)) + js + b"".join(blobs))


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("out")
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--targets", default="q_proj,v_proj,down_proj")
    ap.add_argument("--rslora", action="store_true")
    ap.add_argument("--fan-in-fan-out", action="store_true")
    ap.add_argument("--embed", action="store_true")
    ap.add_argument("--save", default="")
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--drop", action="append", default=[])
    ap.add_argument("--extra", action="append", default=[])
    ap.add_argument("--bad-rank", default=None)
    ap.add_argument("--fast", action="store_true")
    a = ap.parse_args(argv)
    dt = a.dtype.upper()
    rnd = random.Random(a.seed)
    base = dsref.Model(a.base)
    targets = [t for t in a.targets.split(",") if t]
    r = a.r
    ts = {}

    block = [rnd.gauss(0.0, 1.0) for _ in range(65537)] if a.fast else None

    def rand(n, scale):
        if block is not None:
            off = rnd.randrange(65537)
            reps = (block[off:] + block[:off]) * (n // 65537 + 1)
            return [v * scale for v in reps[:n]]
        return [rnd.gauss(0.0, scale) for _ in range(n)]

    for name, t in sorted(base.tensors.items()):
        if not name.endswith(".weight") or len(t.shape) != 2:
            continue
        mod = name[:-len(".weight")]
        rows, cols = t.shape
        if a.embed and mod.endswith("embed_tokens"):
            ts[f"{PREFIX}{mod}.lora_embedding_A"] = (
                dt, [r, rows], encode(dt, rand(r * rows, 0.05)))
            ts[f"{PREFIX}{mod}.lora_embedding_B"] = (
                dt, [cols, r], encode(dt, rand(cols * r, 0.05)))
            continue
        if not any(mod.endswith("." + x) for x in targets):
            continue
        ra = r + 1 if a.bad_rank and mod.endswith(a.bad_rank) else r
        if a.fan_in_fan_out:      # W is [in, out]
            sa, sb = [ra, rows], [cols, r]
        else:                     # W is [out, in]
            sa, sb = [ra, cols], [rows, r]
        ts[f"{PREFIX}{mod}.lora_A.weight"] = (
            dt, sa, encode(dt, rand(sa[0] * sa[1], 0.05)))
        ts[f"{PREFIX}{mod}.lora_B.weight"] = (
            dt, sb, encode(dt, rand(sb[0] * sb[1], 0.05)))
    for mod in [m for m in a.save.split(",") if m]:
        t = base.tensors[mod + ".weight"]
        vals = dsref.decode(t.dtype, t.read())
        vals = [v + g for v, g in zip(vals, rand(len(vals), 0.01))]
        ts[f"{PREFIX}{mod}.weight"] = (t.dtype, t.shape,
                                       encode(t.dtype, vals))
    for e in a.extra:
        name, shape = e.rsplit(":", 1)
        dims = [int(d) for d in shape.split("x")]
        n = 1
        for d in dims:
            n *= d
        ts[name] = (dt, dims, encode(dt, rand(n, 0.05)))
    for d in a.drop:
        del ts[d]
    cfg = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r,
        "lora_alpha": a.alpha, "lora_dropout": 0.0, "bias": "none",
        "use_rslora": a.rslora, "use_dora": False,
        "fan_in_fan_out": a.fan_in_fan_out,
        "target_modules": targets + (["embed_tokens"] if a.embed else []),
        "modules_to_save": [m for m in a.save.split(",") if m] or None,
        "rank_pattern": {}, "alpha_pattern": {},
        "base_model_name_or_path": a.base, "inference_mode": True,
    }
    for kv in a.config:
        k, v = kv.split("=", 1)
        cfg[k] = json.loads(v)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_st(os.path.join(a.out, "adapter_model.safetensors"), ts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

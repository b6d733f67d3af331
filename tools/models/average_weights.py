#!/usr/bin/python3
"""Average the weights of several exports of one network (Polyak averaging of EMA snapshots).

    tools/models/average_weights.py --out OUT.safetensors A.safetensors B.safetensors ...

Every input must hold the same tensors (names, dtypes, shapes) and the same network config
(`__metadata__.scoresde`). OUT gets the element-wise mean of every F32 tensor, summed in
float64 in the order given and rounded once, and the first input's metadata, with its
`training` entry extended by "averaged": [the inputs' training steps]. A slowly decaying EMA
(0.9999) is the usual choice for sampling diffusion models; when a run kept only a fast one
(0.999, about 1,000 steps), the mean of its snapshots over the last several thousand steps
plays that part.
"""
import argparse
import json
import struct
import sys

import numpy as np


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        sys.exit(f"{path}: not a safetensors file (too short)")
    n = struct.unpack("<Q", raw[:8])[0]
    if n > len(raw) - 8:
        sys.exit(f"{path}: header length {n} past the end of the file")
    header = json.loads(raw[8:8 + n])
    return header, memoryview(raw)[8 + n:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("inputs", nargs="+")
    args = ap.parse_args()
    headers, datas = zip(*(read(p) for p in args.inputs))
    first = headers[0]
    names = [k for k in first if k != "__metadata__"]
    for p, h in zip(args.inputs, headers):
        if sorted(k for k in h if k != "__metadata__") != sorted(names):
            sys.exit(f"{p}: other tensors than {args.inputs[0]}")
        if h.get("__metadata__", {}).get("scoresde") != first.get("__metadata__", {}).get("scoresde"):
            sys.exit(f"{p}: another network config than {args.inputs[0]}")
    out_data = bytearray(len(datas[0]))
    for k in names:
        t = first[k]
        if t["dtype"] != "F32":
            sys.exit(f"{k}: dtype {t['dtype']}, only F32 is averaged")
        acc = None
        for p, h, d in zip(args.inputs, headers, datas):
            if h[k]["dtype"] != "F32" or h[k]["shape"] != t["shape"]:
                sys.exit(f"{p}: {k} differs in dtype or shape")
            b, e = h[k]["data_offsets"]
            x = np.frombuffer(d[b:e], dtype="<f4").astype(np.float64)
            acc = x if acc is None else acc + x
        b, e = t["data_offsets"]
        out_data[b:e] = (acc / len(args.inputs)).astype("<f4").tobytes()
    meta = dict(first.get("__metadata__", {}))
    steps = []
    for h in headers:
        tr = json.loads(h.get("__metadata__", {}).get("training", "{}"))
        steps.append(tr.get("steps"))
    tr = json.loads(meta.get("training", "{}"))
    tr["averaged"] = steps
    meta["training"] = json.dumps(tr)
    header = dict(first)
    header["__metadata__"] = meta
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(args.out, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        f.write(out_data)
    print(f"{args.out}: mean of {len(args.inputs)} exports (steps {steps})")


if __name__ == "__main__":
    main()

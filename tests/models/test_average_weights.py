#!/usr/bin/python3
"""tools/models/average_weights.py: the mean of several exports, refusals, and a file the
engine loads.

    test_average_weights.py SCORESDE

Checks: the mean of three small safetensors files equals numpy's float64 mean rounded once,
tensor by tensor; the metadata is the first file's with "averaged": [steps]; exports with
other shapes or another network config are refused (exit status != 0, no output written);
the shipped Fashion-MNIST model averaged with itself keeps every weight bit and
`scoresde info` loads the result.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
TOOL = os.path.join(ROOT, "tools", "models", "average_weights.py")
failures = []


def check(ok, what):
    print(("ok     " if ok else "FAILED ") + what, flush=True)
    if not ok:
        failures.append(what)


def write(path, tensors, config="cfg", steps=1):
    header, blob = {}, b""
    for k, v in tensors.items():
        b = v.astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [len(blob), len(blob) + len(b)]}
        blob += b
    header["__metadata__"] = {"scoresde": config, "training": json.dumps({"steps": steps})}
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + blob)


def read(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    h = json.loads(raw[8:8 + n])
    out = {}
    for k, t in h.items():
        if k != "__metadata__":
            b, e = t["data_offsets"]
            out[k] = np.frombuffer(raw[8 + n + b:8 + n + e], dtype="<f4").reshape(t["shape"])
    return h.get("__metadata__", {}), out


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)


with tempfile.TemporaryDirectory() as d:
    rng = np.random.default_rng(0)
    sets = [{"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(7) * 1e3} for _ in range(3)]
    paths = []
    for i, s in enumerate(sets):
        paths.append(os.path.join(d, f"in{i}.safetensors"))
        write(paths[-1], s, steps=1000 * (i + 1))
    out = os.path.join(d, "mean.safetensors")
    r = run("--out", out, *paths)
    check(r.returncode == 0, f"three exports averaged ({r.stderr.strip()})")
    meta, got = read(out)
    for k in ("a", "b"):
        want = (sum(s[k].astype("<f4").astype(np.float64) for s in sets) / 3).astype("<f4")
        check(np.array_equal(got[k], want), f"tensor {k}: the float64 mean rounded once")
    tr = json.loads(meta["training"])
    check(tr.get("averaged") == [1000, 2000, 3000] and meta["scoresde"] == "cfg",
          f"metadata: first file's, averaged steps {tr.get('averaged')}")

    bad = os.path.join(d, "bad.safetensors")
    write(bad, {"a": np.zeros((4, 3)), "b": np.zeros(7)})
    refused = os.path.join(d, "refused.safetensors")
    r = run("--out", refused, paths[0], bad)
    check(r.returncode != 0 and not os.path.exists(refused) and "differs" in r.stderr,
          f"another shape refused: {r.stderr.strip()}")
    write(bad, sets[0], config="other")
    r = run("--out", refused, paths[0], bad)
    check(r.returncode != 0 and not os.path.exists(refused) and "config" in r.stderr,
          f"another network config refused: {r.stderr.strip()}")
    open(bad, "wb").write(b"\x01\x02")
    r = run("--out", refused, paths[0], bad)
    check(r.returncode != 0 and not os.path.exists(refused), f"a truncated file refused: {r.stderr.strip()}")

    model = os.path.join(ROOT, "models", "fashion-mnist-32.safetensors")
    self_avg = os.path.join(d, "self.safetensors")
    r = run("--out", self_avg, model, model)
    _, a = read(model)
    _, b = read(self_avg)
    check(r.returncode == 0 and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a),
          f"the shipped model averaged with itself: every one of {len(a)} tensors bit-identical")
    info = subprocess.run([sys.argv[1], "info", self_avg], capture_output=True, text=True)
    check(info.returncode == 0 and "DDPM++" in info.stdout, "scoresde info loads the result")

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)

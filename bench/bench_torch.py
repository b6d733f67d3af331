#!/usr/bin/python3
"""PyTorch side of bench_network: the same networks, weights and inputs.

    env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2 \\
        /usr/bin/python3 bench/bench_torch.py [--dir /tmp] [--iters N] [--batches 1,8]

Run build/bench/bench_network first: it writes DIR/bench_<name>.safetensors, the inputs
DIR/bench_<name>_x_B.npy / bench_<name>_t_B.npy and its outputs DIR/bench_<name>_out_B.npy. The torch
network is tests/engine/ncsnpp_ref.py (a functional re-implementation of score_sde_pytorch
NCSNpp.forward), run with torch.set_num_threads(2) under torch.no_grad(). Prints the
median wall time per call, the median process CPU time per call (all threads) and the max
relative difference to the C outputs.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "engine"))
import ncsnpp_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--only")
    args = ap.parse_args()
    torch.set_num_threads(2)
    print("# torch %s, threads %d" % (torch.__version__, torch.get_num_threads()))
    print("%-8s %5s %12s %12s %10s %12s %12s" % ("network", "batch", "ms/call", "ms/sample", "GFLOP/s",
                                                 "max rel diff", "cpu-ms/call"))
    for name in ("ncsnpp", "ddpmpp", "ncsnpp256"):
        if (args.only != name) if args.only else name == "ncsnpp256":
            continue
        path = os.path.join(args.dir, "bench_%s.safetensors" % name)
        sd, meta = ncsnpp_ref.read_safetensors(path)
        cfg = ncsnpp_ref.full_config()
        raw = json.loads(meta["scoresde"])
        for k, v in raw.items():
            cfg[k] = v
        gflop = float(os.environ.get("GFLOP_" + name.upper(), "0")) or None
        for B in [int(b) for b in args.batches.split(",")]:
            x = torch.from_numpy(np.load(os.path.join(args.dir, "bench_%s_x_%d.npy" % (name, B))))
            t = torch.from_numpy(np.load(os.path.join(args.dir, "bench_%s_t_%d.npy" % (name, B))))
            with torch.no_grad():
                lab, _ = ncsnpp_ref.labels_and_std(cfg, t)
                out = ncsnpp_ref.forward(cfg, sd, x, lab)  # warm-up
                times, cpus = [], []
                for _ in range(args.iters):
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = ncsnpp_ref.forward(cfg, sd, x, lab)
                    times.append(time.perf_counter() - t0)
                    cpus.append(time.process_time() - c0)
            med = sorted(times)[len(times) // 2]
            cmed = sorted(cpus)[len(cpus) // 2]
            cpath = os.path.join(args.dir, "bench_%s_out_%d.npy" % (name, B))
            diff = float("nan")
            if os.path.exists(cpath):
                c = np.load(cpath)
                ref = out.numpy()
                diff = max(float(np.abs(c[b] - ref[b]).max() / np.abs(ref[b]).max()) for b in range(B))
            gfs = "%10.1f" % (gflop * B / med) if gflop else "%10s" % "-"
            print("%-8s %5d %12.1f %12.1f %s %12.3g %12.1f" % (name, B, med * 1e3, med * 1e3 / B, gfs, diff,
                                                             cmed * 1e3))
            sys.stdout.flush()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""PyTorch side of bench_cuda, on the same GPU: the same NCSN++ configs, weights and inputs.

    build/bench/bench_cuda --dir D ...           # writes weights, inputs and C outputs into D
    /usr/bin/python3 bench/bench_torch_cuda.py --dir D [--iters N] [--configs cifar10,256]
        [--batches-cifar10 1,8,64] [--batches-256 1,4] [--modes fp32,default,tf32,bf16]
        [--benchmark]

The network is tests/engine/ncsnpp_ref.py (a functional re-implementation of
score_sde_pytorch NCSNpp.forward), eager, under torch.no_grad(), every tensor on the GPU.
Modes: fp32 = TF32 off for cuDNN and matmul (true fp32, what the C fp32 backend does);
default = PyTorch's defaults (cuDNN convolutions in TF32, matmul fp32); tf32 = TF32 on
for both; bf16 = torch.autocast(bfloat16). --benchmark sets cudnn.benchmark (timed
algorithm choice). Prints the median wall time per call (synchronised, as bench_cuda) and
the max relative difference to the C output of the matching precision (fp32 for default).
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


def set_mode(mode):
    torch.backends.cudnn.allow_tf32 = mode in ("default", "tf32")
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--configs", default="cifar10,256")
    ap.add_argument("--batches-cifar10", default="1,8,64")
    ap.add_argument("--batches-256", default="1,4")
    ap.add_argument("--modes", default="fp32,default,tf32,bf16")
    ap.add_argument("--benchmark", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_torch_cuda: no CUDA device for PyTorch", file=sys.stderr)
        return 77
    dev = torch.device("cuda")
    torch.set_default_device(dev)  # the reference creates its FIR kernels etc. with torch.tensor
    torch.backends.cudnn.benchmark = args.benchmark
    print("# torch %s, cuDNN %s, %s, cudnn.benchmark=%s" % (torch.__version__, torch.backends.cudnn.version(),
                                                            torch.cuda.get_device_name(0), args.benchmark))
    print("%-8s %-8s %5s %12s %12s %12s %14s" % ("config", "mode", "batch", "ms/call", "min ms", "ms/sample",
                                                 "rel diff to C"))
    for name in args.configs.split(","):
        path = os.path.join(args.dir, "bench_cuda_%s.safetensors" % name)
        if not os.path.exists(path):
            print("# %s: no %s (run bench_cuda first)" % (name, path))
            continue
        sd, meta = ncsnpp_ref.read_safetensors(path)
        sd = {k: v.to(dev) for k, v in sd.items()}
        cfg = ncsnpp_ref.full_config()
        for k, v in json.loads(meta["scoresde"]).items():
            cfg[k] = v
        batches = getattr(args, "batches_" + name).split(",")
        for mode in args.modes.split(","):
            set_mode(mode)
            for B in [int(b) for b in batches]:
                x = torch.from_numpy(np.load(os.path.join(args.dir, "bench_cuda_%s_x_%d.npy" % (name, B)))).to(dev)
                t = torch.from_numpy(np.load(os.path.join(args.dir, "bench_cuda_%s_t_%d.npy" % (name, B)))).to(dev)
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode == "bf16"):
                    lab, _ = ncsnpp_ref.labels_and_std(cfg, t)
                    for _ in range(3):  # warm-up
                        out = ncsnpp_ref.forward(cfg, sd, x, lab)
                    torch.cuda.synchronize()
                    times = []
                    for _ in range(args.iters):
                        t0 = time.perf_counter()
                        out = ncsnpp_ref.forward(cfg, sd, x, lab)
                        torch.cuda.synchronize()
                        times.append(time.perf_counter() - t0)
                times.sort()
                med = times[len(times) // 2]
                cprec = {"default": "fp32"}.get(mode, mode)
                cpath = os.path.join(args.dir, "bench_cuda_%s_%s_out_%d.npy" % (name, cprec, B))
                diff = float("nan")
                if os.path.exists(cpath):
                    c = np.load(cpath)
                    ref = out.float().cpu().numpy()
                    diff = max(float(np.abs(c[b] - ref[b]).max() / max(np.abs(ref[b]).max(), 1e-30))
                               for b in range(B))
                print("%-8s %-8s %5d %12.3f %12.3f %12.3f %14.3g" % (name, mode, B, med * 1e3, times[0] * 1e3,
                                                                    med * 1e3 / B, diff))
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

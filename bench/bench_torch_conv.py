#!/usr/bin/env python3
"""PyTorch CPU timing of the conv2d shapes of bench_ops.c, for comparison.
Run as: OMP_NUM_THREADS=2 /usr/bin/python3 bench/bench_torch_conv.py [threads]
Best of 5: wall clock and process CPU time (steadier on a loaded machine)."""
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
print("torch", torch.__version__, "threads", torch.get_num_threads())
for B, C, H in [(1, 128, 32), (8, 128, 32), (1, 256, 16), (8, 256, 16), (1, 256, 8), (8, 256, 8)]:
    x = torch.randn(B, C, H, H)
    w = torch.randn(C, C, 3, 3) * 0.05
    b = torch.randn(C)
    with torch.no_grad():
        F.conv2d(x, w, b, padding=1)
        best = cpu = 1e30
        for _ in range(5):
            t0, c0 = time.perf_counter(), time.process_time()
            F.conv2d(x, w, b, padding=1)
            best = min(best, time.perf_counter() - t0)
            cpu = min(cpu, time.process_time() - c0)
    flops = 2.0 * B * C * C * 9 * H * H
    print("B=%d C=%d %dx%d: %8.2f ms %6.1f GFLOP/s  cpu %6.1f GFLOP/s"
          % (B, C, H, H, best * 1e3, flops / best * 1e-9, flops / cpu * 1e-9))

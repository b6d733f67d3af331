#!/usr/bin/python3
"""PyTorch side of bench_train.sh: one DSM training step (forward + backward + Adam + EMA)
of the same NCSN++/DDPM++ network as `scoresde train`, timed per step.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2 /usr/bin/python3 bench/bench_train_torch.py \\
        --model RUN/export.safetensors --batch 32 --steps 12

The network is tests/engine/ncsnpp_ref.py (a functional re-implementation of
score_sde_pytorch's NCSNpp.forward) on the weights and config of MODEL (a `scoresde train
--export` file: channels, nf and the rest come from its config, so `--channels 3` or
`--nf 32` on the C side carry over), trained with the official recipe (losses.get_sde_loss_fn, continuous, mean
over pixels off; optimization_manager: warmup lr, grad clip 1; EMA 0.9999) at
torch.set_num_threads(THREADS). Input: random data in [-1, 1] (the timing does not depend on
it). Prints the median and minimum wall time per step and the median process CPU time per
step (all threads); the first step is a warm-up.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "engine"))
import ncsnpp_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sd, meta = ncsnpp_ref.read_safetensors(args.model)
    cfg = ncsnpp_ref.full_config()
    for k, v in json.loads(meta["scoresde"]).items():
        cfg[k] = v
    params = {k: v.clone().float().requires_grad_(True) for k, v in sd.items()}
    ema = {k: v.detach().clone() for k, v in params.items()}
    opt = torch.optim.Adam(list(params.values()), lr=2e-4, betas=(0.9, 0.999), eps=1e-8)
    B = args.batch
    C, S = cfg["data"]["num_channels"], cfg["data"]["image_size"]
    x0 = torch.rand(B, C, S, S) * 2 - 1
    eps = 1e-5
    times, cpus = [], []
    for step in range(args.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        t = torch.rand(B) * (1 - eps) + eps
        z = torch.randn_like(x0)
        s = cfg["sde"]
        lmc = -0.25 * t ** 2 * (s["beta_max"] - s["beta_min"]) - 0.5 * t * s["beta_min"]
        mean = torch.exp(lmc)[:, None, None, None] * x0
        std = torch.sqrt(1.0 - torch.exp(2.0 * lmc))
        xt = mean + std[:, None, None, None] * z
        lab, std2 = ncsnpp_ref.labels_and_std(cfg, t)
        out = ncsnpp_ref.forward(cfg, params, xt, lab)
        score = -out / std2[:, None, None, None]
        loss = torch.square(score * std[:, None, None, None] + z).reshape(B, -1).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for g in opt.param_groups:
            g["lr"] = 2e-4 * min(step / 5000.0, 1.0)
        torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm=1.0)
        opt.step()
        with torch.no_grad():
            for k, p in params.items():
                ema[k].mul_(0.9999).add_(p.detach(), alpha=1 - 0.9999)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if step > 0:
            times.append(dt)
            cpus.append(dc)
    ts, cs = sorted(times), sorted(cpus)
    print("torch %s threads %d batch %d steps %d: median %.1f ms/step, min %.1f ms/step, "
          "%.2f steps/s (median), median cpu %.1f ms/step" %
          (torch.__version__, torch.get_num_threads(), B, len(ts), ts[len(ts) // 2] * 1e3,
           ts[0] * 1e3, 1.0 / ts[len(ts) // 2], cs[len(cs) // 2] * 1e3))


if __name__ == "__main__":
    main()

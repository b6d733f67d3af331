#!/usr/bin/python3
"""Colorization and likelihood evaluation of an RGB score model on the held-out emoji
(models/emoji-32.md). Runs the `scoresde` CLI, then computes the metrics with numpy.

    /usr/bin/python3 tools/models/eval_colorize.py --model models/emoji-32.safetensors \
        [--bin build/engine/scoresde] [--data runs/emoji-32/data/heldout.npy] \
        [--n 64] [--steps 500] [--bpd-n 16] [--threads 2] [--work runs/emoji-32/eval] \
        [--figure models/emoji-32-colorize.png]

* Images: --n held-out glyphs, evenly spaced over heldout.npy (indices
  round(i * N / n)), written to WORK/orig.npy; their grayscale versions, the mean of R,
  G and B (the luminance coordinate `scoresde colorize` holds), to WORK/gray.npy.
* Colorization: `scoresde colorize` (reverse-diffusion predictor + Langevin corrector,
  snr 0.16, --steps steps, seed 0, one sample per image) -> WORK/colorized.npy.
* PSNR of each output against the original, RGB, after rounding both to 8 bits:
  10 log10(255^2 / MSE) per image, reported as mean +- standard error over images,
  (pooled: the same over all pixels of all images; an exact match counts as 148 dB in
  the per-image numbers, MSE floor 1e-10), for the model and two baselines: the gray image replicated to RGB, and the gray image
  plus the training set's mean chroma per pixel (the best fixed colouring in the MSE
  sense; luminance kept, values clipped to [0, 1]).
* Colourfulness: Hasler & Suesstrunk (2003) M = sqrt(sd_rg^2 + sd_yb^2)
  + 0.3 sqrt(mean_rg^2 + mean_yb^2), rg = R - G, yb = (R + G)/2 - B on [0, 255],
  per image, mean +- SE over images, for original, colorized, both baselines.
* Test bits/dim: `scoresde likelihood --dequantize` (seed 0) on the first --bpd-n of the
  evaluation images (0 skips it).
* Figure: rows gray input / colorized / original for the first 8 evaluation images,
  each glyph upscaled 2x (nearest).
Prints a summary and writes WORK/metrics.json.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
from PIL import Image


def psnr(a, b):
    a8 = np.round(np.clip(a, 0, 1) * 255).astype(np.float64)
    b8 = np.round(np.clip(b, 0, 1) * 255).astype(np.float64)
    mse = ((a8 - b8) ** 2).reshape(len(a8), -1).mean(axis=1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def colourfulness(x):
    x = np.clip(x, 0, 1).astype(np.float64) * 255
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg = (r - g).reshape(len(x), -1)
    yb = (0.5 * (r + g) - b).reshape(len(x), -1)
    return (np.sqrt(rg.std(axis=1) ** 2 + yb.std(axis=1) ** 2)
            + 0.3 * np.sqrt(rg.mean(axis=1) ** 2 + yb.mean(axis=1) ** 2))


def stat(v):
    v = np.asarray(v, dtype=np.float64)
    return {"mean": float(v.mean()), "se": float(v.std(ddof=1) / np.sqrt(len(v))),
            "median": float(np.median(v)), "n": int(len(v))}


def pooled_psnr(a, b):
    a8 = np.round(np.clip(a, 0, 1) * 255).astype(np.float64)
    b8 = np.round(np.clip(b, 0, 1) * 255).astype(np.float64)
    return float(10 * np.log10(255.0 ** 2 / ((a8 - b8) ** 2).mean()))


def run(cmd, env):
    print("+ " + " ".join(cmd), flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    dt = time.time() - t0
    out = re.sub(r"[^\n]*\r", "", p.stdout)   # drop progress-bar redraws
    sys.stdout.write(out)
    if p.returncode != 0:
        sys.exit("command failed (%d)" % p.returncode)
    return out, dt


def tile(rows, scale=2, pad=2):
    n = len(rows[0])
    s = 32 * scale
    im = np.ones((len(rows) * (s + pad) + pad, n * (s + pad) + pad, 3), dtype=np.uint8) * 255
    for r, row in enumerate(rows):
        for c, x in enumerate(row):
            x = np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x
            t = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
            t = t.repeat(scale, axis=0).repeat(scale, axis=1)
            y0, x0 = pad + r * (s + pad), pad + c * (s + pad)
            im[y0:y0 + s, x0:x0 + s] = t
    return Image.fromarray(im)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--bin", default="build/engine/scoresde")
    ap.add_argument("--data", default="runs/emoji-32/data/heldout.npy")
    ap.add_argument("--train", default="runs/emoji-32/data/train.npy")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--bpd-n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="runs/emoji-32/eval")
    ap.add_argument("--figure", default=None)
    a = ap.parse_args()

    os.makedirs(a.work, exist_ok=True)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS=str(a.threads),
               OMP_WAIT_POLICY="passive")
    env.pop("OPENBLAS_CORETYPE", None)
    held = np.load(a.data).astype(np.float32)
    idx = np.unique(np.round(np.arange(a.n) * len(held) / a.n).astype(int))
    orig = np.ascontiguousarray(held[idx])
    gray = orig.mean(axis=1, keepdims=True)
    p_orig, p_gray = os.path.join(a.work, "orig.npy"), os.path.join(a.work, "gray.npy")
    p_col = os.path.join(a.work, "colorized.npy")
    np.save(p_orig, orig)
    np.save(p_gray, gray)

    _, t_col = run([a.bin, "colorize", "--model", a.model, "--in", p_gray, "--out", p_col,
                    "--n", str(len(orig)), "--steps", str(a.steps), "--seed", "0",
                    "--threads", str(a.threads)], env)
    col = np.load(p_col).astype(np.float32).reshape(orig.shape)

    train = np.load(a.train).astype(np.float32)
    chroma = (train - train.mean(axis=1, keepdims=True)).mean(axis=0)   # [3,32,32]
    gray3 = np.repeat(gray, 3, axis=1)
    meanc = np.clip(gray3 + chroma[None], 0, 1)
    lum_err = float(np.abs(col.mean(axis=1) - gray[:, 0]).max())

    res = {"model": a.model, "n": int(len(orig)), "indices": idx.tolist(),
           "colorize": {"steps": a.steps, "predictor": "reverse_diffusion",
                        "corrector": "langevin", "snr": 0.16, "seed": 0,
                        "threads": a.threads, "wall_s": round(t_col, 1),
                        "max_luminance_deviation": lum_err},
           "psnr": {"colorized": stat(psnr(col, orig)), "gray": stat(psnr(gray3, orig)),
                    "gray_plus_mean_chroma": stat(psnr(meanc, orig))},
           "colourfulness": {"original": stat(colourfulness(orig)),
                             "colorized": stat(colourfulness(col)),
                             "gray": stat(colourfulness(gray3)),
                             "gray_plus_mean_chroma": stat(colourfulness(meanc))}}
    res["psnr_pooled"] = {"colorized": pooled_psnr(col, orig), "gray": pooled_psnr(gray3, orig),
                          "gray_plus_mean_chroma": pooled_psnr(meanc, orig)}
    res["psnr"]["gray_exact"] = int((psnr(gray3, orig) > 100).sum())
    d = psnr(col, orig) - psnr(gray3, orig)
    res["psnr"]["colorized_minus_gray"] = stat(d)
    res["psnr"]["colorized_better_than_gray"] = int((d > 0).sum())

    if a.bpd_n > 0:
        p_b = os.path.join(a.work, "bpd.npy")
        np.save(p_b, np.ascontiguousarray(orig[:a.bpd_n]))
        out, t_b = run([a.bin, "likelihood", "--model", a.model, "--in", p_b, "--n",
                        str(min(a.bpd_n, len(orig))), "--dequantize", "--seed", "0",
                        "--threads", str(a.threads),
                        "--logp-out", os.path.join(a.work, "logp.npy")], env)
        m = re.findall(r"bits/dim\s+([0-9.]+)\s*\+/-\s*([0-9.]+)", out)
        res["bits_per_dim"] = {"n": min(a.bpd_n, len(orig)), "wall_s": round(t_b, 1),
                               "output": [l for l in out.splitlines() if "bits/dim" in l][-1:]}
        if m:
            res["bits_per_dim"].update(mean=float(m[-1][0]), se=float(m[-1][1]))

    if a.figure:
        k = min(8, len(orig))
        tile([gray[:k], col[:k], orig[:k]]).save(a.figure, optimize=True)
        res["figure"] = a.figure

    with open(os.path.join(a.work, "metrics.json"), "w") as f:
        json.dump(res, f, indent=1)
    ps, cf = res["psnr"], res["colourfulness"]
    print("\n%d held-out emoji, colorize %d steps, %.0f s" % (len(orig), a.steps, t_col))
    for k in ("colorized", "gray", "gray_plus_mean_chroma", "colorized_minus_gray"):
        print("PSNR %-24s %6.2f +- %.2f dB (median %.2f)%s" % (
            k, ps[k]["mean"], ps[k]["se"], ps[k]["median"],
            "  pooled %.2f dB" % res["psnr_pooled"][k] if k in res["psnr_pooled"] else ""))
    print("images whose gray version is exact (PSNR 148 dB, MSE floor 1e-10): %d"
          % ps["gray_exact"])
    print("colorized better than gray on %d of %d" % (ps["colorized_better_than_gray"],
                                                     len(orig)))
    for k in ("original", "colorized", "gray", "gray_plus_mean_chroma"):
        print("colourfulness %-21s %6.1f +- %.1f" % (k, cf[k]["mean"], cf[k]["se"]))
    print("max |mean(RGB) - gray| of the colorized: %.2e" % lum_err)
    if "bits_per_dim" in res:
        b = res["bits_per_dim"]
        print("test bits/dim (%d images): %.3f +- %.3f (%.0f s)" % (
            b["n"], b.get("mean", float("nan")), b.get("se", float("nan")), b["wall_s"]))


if __name__ == "__main__":
    main()

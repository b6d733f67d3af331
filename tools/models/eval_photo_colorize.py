#!/usr/bin/python3
"""Evaluates an RGB score model as a photo colorizer THROUGH THE ELEMENT
(models/photo-32.md): held-out photographs at 256x256 go through gst-launch-1.0 ...
scoresdecolorize ..., and the outputs are compared with the originals.

    /usr/bin/python3 tools/models/eval_photo_colorize.py --model models/photo-32.safetensors \
        [--data runs/photo-32/data/heldout256.npy] [--plugins build/plugins] \
        [--sampler dpmpp-2m] [--steps 20] [--work runs/photo-32/eval] \
        [--figure docs/img/x.jpg] [--compare models/emoji-32.safetensors] [--label NAME]
    /usr/bin/python3 tools/models/eval_photo_colorize.py --video ... (see video())

* Images: heldout256.npy of tools/models/make_photos.py (uint8 [M,256,256,3], 4 squares
  of each of the 5 held-out photos). Gray input: the mean of R, G and B rounded to 8
  bits (the element's and `scoresde colorize`'s gray convention), written as 8-bit gray
  PNGs WORK/gray_NN.png.
* Colorization: one gst-launch-1.0 run, multifilesrc ! pngdec ! scoresdecolorize
  model=M sampler=S steps=N seed=0 (temporal-seed and chroma-only at their defaults,
  i.e. every frame uses noise stream 0 and keeps the 256-px luminance) ! videoconvert !
  RGB ! pngenc ! multifilesink.
* PSNR on 8-bit RGB against the original, per image (mean +- standard error over the
  images, median) and pooled over all pixels; for the model and for the gray input
  replicated to RGB (the baseline of issue 14).
* Baseline 2: the gray input plus the training set's mean chroma (a constant RGB offset
  of zero mean, the best fixed colouring in the MSE sense), clipped to [0, 255].
* Colourfulness M of Hasler & Suesstrunk (2003) on [0, 255] per image (mean +- SE), for
  the originals and the colorized; the ratio of the means.
* Figure (--figure): rows gray / [--compare model] / model / original for the first
  square of each held-out photo plus one more (6 columns), 256 px each, JPEG.
Prints a summary and writes WORK/metrics.json.

--video: a pan-and-zoom clip over one held-out photo (see video()), colorized with
temporal-seed on and off; frame-to-frame chroma change against the source clip's.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_colorize as ec  # noqa: E402


def psnr(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def pooled_psnr(a, b):
    return float(10 * np.log10(255.0 ** 2 / ((a.astype(np.float64) - b) ** 2).mean()))


def colourfulness(x):
    """x: uint8 [n,H,W,3]; eval_colorize's measure (Hasler & Suesstrunk) on [0, 255]."""
    return ec.colourfulness(x.transpose(0, 3, 1, 2) / 255.0)


def stat(v):
    return ec.stat(v) if len(v) > 1 else {**ec.stat(list(v) * 2), "se": 0.0, "n": 1}


def to_gray(x):
    return np.round(x.astype(np.float64).mean(axis=-1)).astype(np.uint8)


def colorize(frames_gray, work, model, sampler, steps, plugins, extra=(), fps=1):
    """Runs the element on uint8 [n,H,W] gray frames; returns uint8 [n,H,W,3] and s."""
    os.makedirs(work, exist_ok=True)
    for f in glob.glob(os.path.join(work, "gray_*.png")) + \
            glob.glob(os.path.join(work, "col_*.png")):
        os.remove(f)
    for i, g in enumerate(frames_gray):
        Image.fromarray(g, "L").save(os.path.join(work, "gray_%03d.png" % i))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OMP_WAIT_POLICY="passive", GST_PLUGIN_PATH=plugins)
    env.pop("OPENBLAS_CORETYPE", None)
    props = ["model=" + os.path.abspath(model), "seed=0"]
    if sampler:
        props.append("sampler=" + sampler)
    if steps:
        props.append("steps=%d" % steps)
    props += list(extra)
    cmd = ["gst-launch-1.0", "-q", "multifilesrc",
           "location=" + os.path.join(work, "gray_%03d.png"), "index=0",
           "stop-index=%d" % (len(frames_gray) - 1),
           "caps=image/png,framerate=(fraction)%d/1" % fps, "!", "pngdec", "!",
           "videoconvert", "!", "video/x-raw,format=GRAY8", "!", "scoresdecolorize"] + props + [
           "!", "videoconvert", "!", "video/x-raw,format=RGB", "!", "pngenc", "!",
           "multifilesink", "location=" + os.path.join(work, "col_%03d.png")]
    print("+ " + " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, env=env, check=True)
    dt = time.time() - t0
    out = np.stack([np.asarray(Image.open(os.path.join(work, "col_%03d.png" % i)).convert("RGB"))
                    for i in range(len(frames_gray))])
    return out, dt


def figure(rows, path, pad=4):
    n, h, w = len(rows[0]), rows[0][0].shape[0], rows[0][0].shape[1]
    im = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, x in enumerate(row):
            x = np.repeat(x[..., None], 3, axis=-1) if x.ndim == 2 else x
            im[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = x
    Image.fromarray(im).save(path, quality=90, optimize=True)


def images(a):
    orig = np.load(a.data)
    gray = to_gray(orig)
    gray3 = np.repeat(gray[..., None], 3, axis=-1)
    col, dt = colorize(gray, a.work, a.model, a.sampler, a.steps, a.plugins, a.prop)
    # baseline: gray plus the training set's mean chroma (one RGB offset of zero mean,
    # the best constant colouring in the MSE sense), clipped to [0, 255]
    tr = np.load(a.train, mmap_mode="r")
    off = (tr - tr.mean(axis=1, keepdims=True)).mean(axis=(0, 2, 3)) * 255.0
    meanc = np.clip(np.round(gray3.astype(np.float64) + off), 0, 255).astype(np.uint8)
    lum = np.abs(col.astype(np.float64).mean(axis=-1) - gray).max()
    res = {"model": a.model, "sampler": a.sampler or "(element default)",
           "steps": a.steps, "n": int(len(orig)), "wall_s": round(dt, 1),
           "max_luminance_deviation_8bit": float(lum),
           "mean_chroma_offset_rgb": off.round(2).tolist(),
           "psnr": {"colorized": stat(psnr(col, orig)), "gray": stat(psnr(gray3, orig)),
                    "gray_plus_mean_chroma": stat(psnr(meanc, orig))},
           "psnr_pooled": {"colorized": pooled_psnr(col, orig),
                           "gray": pooled_psnr(gray3, orig),
                           "gray_plus_mean_chroma": pooled_psnr(meanc, orig)},
           "colourfulness": {"original": stat(colourfulness(orig)),
                             "colorized": stat(colourfulness(col)),
                             "gray_plus_mean_chroma": stat(colourfulness(meanc))}}
    d = psnr(col, orig) - psnr(gray3, orig)
    res["psnr"]["colorized_minus_gray"] = stat(d)
    res["psnr"]["colorized_better_than_gray"] = int((d > 0).sum())
    res["colourfulness_ratio"] = (res["colourfulness"]["colorized"]["mean"]
                                  / res["colourfulness"]["original"]["mean"])
    res["per_image"] = {"psnr_colorized": psnr(col, orig).round(2).tolist(),
                        "psnr_gray": psnr(gray3, orig).round(2).tolist(),
                        "colourfulness_colorized": colourfulness(col).round(1).tolist(),
                        "colourfulness_original": colourfulness(orig).round(1).tolist()}
    np.save(os.path.join(a.work, "colorized.npy"), col)
    if a.figure:
        idx = list(range(0, len(orig), 4))[:5] + [len(orig) - 2]
        rows = [[gray[i] for i in idx]]
        if a.compare:
            cc, _ = colorize(gray[idx], a.work + "-compare", a.compare, a.sampler, a.steps,
                             a.plugins)
            rows.append(list(cc))
        rows += [[col[i] for i in idx], [orig[i] for i in idx]]
        figure(rows, a.figure)
        res["figure"] = {"path": a.figure, "indices": idx, "compare": a.compare}
    with open(os.path.join(a.work, "metrics.json"), "w") as f:
        json.dump(res, f, indent=1)
    ps, cf = res["psnr"], res["colourfulness"]
    print("\n%s, %s, %d held-out 256x256 images through scoresdecolorize, %.0f s" % (
        a.label or a.model, res["sampler"], len(orig), dt))
    for k in ("colorized", "gray", "gray_plus_mean_chroma", "colorized_minus_gray"):
        print("PSNR %-22s %6.2f +- %.2f dB (median %.2f)%s" % (
            k, ps[k]["mean"], ps[k]["se"], ps[k]["median"],
            "  pooled %.2f dB" % res["psnr_pooled"][k] if k in res["psnr_pooled"] else ""))
    print("colorized better than gray on %d of %d" % (ps["colorized_better_than_gray"], len(orig)))
    for k in ("original", "colorized", "gray_plus_mean_chroma"):
        print("colourfulness %-21s %6.1f +- %.1f" % (k, cf[k]["mean"], cf[k]["se"]))
    print("colourfulness ratio colorized/original: %.2f" % res["colourfulness_ratio"])
    print("max |mean(RGB) - gray| (8-bit): %.1f" % lum)


def pan_zoom(path, n, size=(256, 192)):
    """n frames: a slow pan from left to right with a zoom from the full height to 60%
    of it, over a photo reduced to a short side of 512 px."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    k = 512 / min(w, h)
    im = im.resize((round(w * k), round(h * k)), Image.LANCZOS, reducing_gap=3.0)
    w, h = im.size
    frames = []
    for i in range(n):
        t = i / max(n - 1, 1)
        ch = h * (1.0 - 0.4 * t)
        cw = ch * size[0] / size[1]
        x0 = (w - cw) * t
        y0 = (h - ch) * 0.5
        frames.append(np.asarray(im.transform(size, Image.EXTENT, (x0, y0, x0 + cw, y0 + ch),
                                              Image.BICUBIC), dtype=np.uint8))
    return np.stack(frames)


def chroma(x):
    """The two chroma coordinates of the orthogonal colour transform, on [0, 255]."""
    x = x.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([(r - g) / np.sqrt(2), (r + g - 2 * b) / np.sqrt(6)], axis=-1)


def frame_change(x):
    c = chroma(x)
    return np.sqrt(((c[1:] - c[:-1]) ** 2).sum(axis=-1)).mean(axis=(1, 2))


def video(a):
    src = pan_zoom(a.video, a.frames)
    gray = to_gray(src)
    res = {"model": a.model, "photo": a.video, "frames": a.frames, "size": [256, 192],
           "sampler": a.sampler or "(element default)", "steps": a.steps,
           "source_chroma_change": stat(frame_change(src))}
    outs = {}
    for ts in ("true", "false"):
        col, dt = colorize(gray, a.work + "-video-ts" + ts, a.model, a.sampler, a.steps,
                           a.plugins, ["temporal-seed=" + ts] + a.prop, fps=8)
        outs[ts] = col
        res["temporal_seed_" + ts] = {"chroma_change": stat(frame_change(col)),
                                      "wall_s": round(dt, 1),
                                      "psnr": stat(psnr(col, src)),
                                      "colourfulness": stat(colourfulness(col))}
    res["gray_psnr"] = stat(psnr(np.repeat(gray[..., None], 3, -1), src))
    res["source_colourfulness"] = stat(colourfulness(src))
    if a.figure:
        idx = np.round(np.linspace(0, a.frames - 1, 6)).astype(int).tolist()
        figure([[gray[i] for i in idx], [outs["true"][i] for i in idx],
                [outs["false"][i] for i in idx], [src[i] for i in idx]], a.figure)
        res["figure"] = {"path": a.figure, "frames": idx}
    os.makedirs(a.work, exist_ok=True)
    with open(os.path.join(a.work, "video.json"), "w") as f:
        json.dump(res, f, indent=1)
    print("\nvideo: %d frames of %s" % (a.frames, a.video))
    print("mean frame-to-frame chroma change: source %.2f" % res["source_chroma_change"]["mean"])
    for ts in ("true", "false"):
        r = res["temporal_seed_" + ts]
        print("  temporal-seed=%-5s %.2f  (PSNR %.2f dB, colourfulness %.1f, %.0f s)" % (
            ts, r["chroma_change"]["mean"], r["psnr"]["mean"], r["colourfulness"]["mean"],
            r["wall_s"]))
    print("gray PSNR %.2f dB, source colourfulness %.1f" % (res["gray_psnr"]["mean"],
                                                          res["source_colourfulness"]["mean"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="runs/photo-32/data/heldout256.npy")
    ap.add_argument("--train", default="runs/photo-32/data/train.npy")
    ap.add_argument("--plugins", default="build/plugins")
    ap.add_argument("--sampler", default=None)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--work", default="runs/photo-32/eval")
    ap.add_argument("--figure", default=None)
    ap.add_argument("--compare", default=None)
    ap.add_argument("--label", default=None)
    ap.add_argument("--prop", action="append", default=[],
                    help="one more element property NAME=VALUE (repeatable)")
    ap.add_argument("--video", default=None, help="photo to pan over (held-out)")
    ap.add_argument("--frames", type=int, default=24)
    a = ap.parse_args()
    if a.video:
        video(a)
    else:
        images(a)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Frechet distance against NFE for every sampler on fashion-mnist-32 (docs/sampling.md).

Reads the results.json of tools/models/eval_fashion_mnist.py runs named SAMPLER-NFE
(e.g. dpmpp-2m-20), plus `rk45` and `pc1000`, under one folder, prints the markdown table
and writes the plot:

    for s in ddim dpmpp-2m dpmpp-3m dpmpp-2m-sde heun; do for n in 5 10 20 50; do
      /usr/bin/python3 tools/models/eval_fashion_mnist.py --model models/fashion-mnist-32.safetensors \\
        --out runs/fd/$s-$n --sampler "--sampler $s --steps $n" --n 1000 --guided-n 0; done; done
    # and --out runs/fd/rk45 --sampler "--sampler ode", --out runs/fd/pc1000 --sampler "--sampler pc --steps 1000"
    tools/plot_fd_vs_nfe.py runs/fd docs/img/fashion-fd-vs-nfe.png rk45=NFE
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SAMPLERS = ["ddim", "dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde", "heun"]
# the references: label and NFE per sample (RK45's is adaptive: pass it, e.g. rk45=270)
REFERENCES = {"rk45": ["ode (RK45, tolerance 1e-5)", None],
              "pc1000": ["pc, 1000 steps (reverse diffusion + Langevin)", 2000]}


def load(folder, name):
    path = os.path.join(folder, name, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        res = json.load(f)
    u = res["unconditional"]
    return {"fd": u["frechet_distance"], "min": u["min_count"], "max": u["max_count"],
            "n": u["n"]}


def main(folder, png, extra):
    for kv in extra:
        key, nfe = kv.split("=")
        REFERENCES[key][1] = float(nfe)
    rows, curves = [], {}
    for s in SAMPLERS:
        for nfe in (5, 10, 20, 50):
            r = load(folder, f"{s}-{nfe}")
            if r is None:
                continue
            shown = nfe + 1 if s == "heun" and nfe % 2 == 0 else nfe  # heun: N/2 steps + final
            rows.append((s, str(shown), r))
            curves.setdefault(s, []).append((shown, r["fd"]))
    refs = {}
    for key, (label, nfe) in REFERENCES.items():
        r = load(folder, key)
        if r is not None:
            r["nfe"] = nfe
            rows.append((label, "%.0f" % nfe if nfe else "adaptive", r))
            if r["n"] == 1000:  # a distance from fewer samples is biased up: not on the plot
                refs[key] = r
    print("| sampler | NFE | Fréchet distance | class counts min-max | samples |")
    print("|---|---|---|---|---|")
    for name, nfe, r in rows:
        print(f"| {name} | {nfe} | {r['fd']:.1f} | {r['min']}-{r['max']} | {r['n']} |")

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for s, pts in curves.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=s)
    styles = {"rk45": ("k", "--"), "pc1000": ("0.5", ":")}
    for key, r in refs.items():
        color, ls = styles[key]
        lab = REFERENCES[key][0] + (f", {r['nfe']:.0f} NFE" if r["nfe"] else "")
        ax.axhline(r["fd"], color=color, ls=ls, label=lab)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([5, 10, 20, 50])
    ax.set_xticklabels(["5", "10", "20", "50"])
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("Fréchet distance (judge features, 1000 samples)")
    ax.set_title("fashion-mnist-32: sample quality against NFE")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: plot_fd_vs_nfe.py RUNS_FOLDER OUT.png [rk45=NFE]")
    main(sys.argv[1], sys.argv[2], sys.argv[3:])

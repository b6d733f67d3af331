#!/usr/bin/python3
"""Convergence plot of the few-step solvers (docs/sampling.md).

Runs `test_fewstep conv`, which prints one CSV line per (mixture, SDE, solver, schedule,
NFE): the median over 32 samples of the RMS error against the exact-score probability-flow
ODE solved by RK45 at rtol = atol = 1e-10, and plots error against NFE on log-log axes,
one panel per mixture and SDE, with reference slopes 1, 2 and 3.

    tools/plot_convergence.py build/tests/engine/test_fewstep docs/fewstep-convergence.png
    tools/plot_convergence.py - docs/fewstep-convergence.png < table.csv
"""
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SOLVERS = {"ddim": "C0", "dpmpp-2m": "C1", "dpmpp-3m": "C2", "heun": "C3"}


def read_table(source):
    if source == "-":
        text = sys.stdin.read()
    else:
        text = subprocess.run([source, "conv"], check=True, capture_output=True, text=True,
                              env={"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1"}).stdout
    rows = []
    for line in text.splitlines():
        mix, sde, solver, schedule, nfe, err = line.split(",")
        rows.append((mix, sde, solver, schedule, int(nfe), float(err)))
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows = read_table(sys.argv[1])
    mixtures, sdes = ["2d", "64d"], ["ve", "vp", "subvp"]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), sharex=True, sharey=True)
    for r, mix in enumerate(mixtures):
        for c, sde in enumerate(sdes):
            ax = axes[r][c]
            for solver, colour in SOLVERS.items():
                for schedule, style in (("logsnr", "-o"), ("karras", ":s")):
                    pts = sorted((n, e) for m, s, v, sc, n, e in rows
                                 if (m, s, v, sc) == (mix, sde, solver, schedule))
                    if pts:
                        ax.loglog(*zip(*pts), style, color=colour, ms=3,
                                  label=f"{solver} ({schedule})")
            for order, ls in ((1, (0, (1, 3))), (2, (0, (3, 3))), (3, (0, (6, 3)))):
                ax.loglog([10, 80], [0.3, 0.3 * 8.0 ** -order], color="grey", lw=0.8, ls=ls)
                ax.annotate(f"slope {order}", (80, 0.3 * 8.0 ** -order), fontsize=7,
                            color="grey")
            ax.set_title(f"{mix} mixture, {sde.upper() if sde != 'subvp' else 'sub-VP'}")
            ax.grid(True, which="both", lw=0.3)
            ax.set_xticks([5, 10, 20, 40, 80], ["5", "10", "20", "40", "80"])
            if r == 1:
                ax.set_xlabel("network evaluations (NFE)")
            if c == 0:
                ax.set_ylabel("median RMS error vs RK45 (1e-10)")
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle("Few-step solvers against the exact probability-flow ODE (Gaussian mixtures)")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()

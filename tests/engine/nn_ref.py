#!/usr/bin/env python3
"""Independent PyTorch reference for the C neural-network ops (engine/src/nn/ops_*.c).

Each op is written the way score_sde_pytorch (models/layers.py, layerspp.py,
up_or_down_sampling.py, op/upfirdn2d.py native path) computes it, on random inputs. For
every case it writes into OUTDIR:

  cases.txt                       one "name op" line per case
  <name>_params.npy               int32 op parameters, in the order test_nn_ops.c expects
  <name>_in<i>.npy                inputs and parameters (float32)
  <name>_out.npy                  forward output
  <name>_dout.npy                 a random output gradient
  <name>_grad<i>.npy              autograd gradient of <out, dout> w.r.t. in<i>

Usage:
  nn_ref.py OUTDIR                write the files
  nn_ref.py --run TEST_EXE        (meson) write into a temporary folder, then run
                                  TEST_EXE --torch FOLDER; exit 77 (skip) without torch
"""
import math
import os
import subprocess
import sys
import tempfile


def have_torch():
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
        return True
    except Exception:
        return False


def generate(outdir, seed=1234):
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    cases = []

    def rand(*shape, scale=1.0):
        return ((torch.rand(*shape, generator=gen) * 2 - 1) * scale).float()

    def save(name, op, params, inputs, fn):
        ins = [t.clone().requires_grad_(True) for t in inputs]
        out = fn(*ins)
        dout = rand(*out.shape)
        grads = torch.autograd.grad(out, ins, dout, allow_unused=True)
        np.save(os.path.join(outdir, name + "_params.npy"), np.asarray(params, dtype=np.int32))
        for i, t in enumerate(inputs):
            np.save(os.path.join(outdir, "%s_in%d.npy" % (name, i)), t.detach().numpy())
            if grads[i] is not None:
                np.save(os.path.join(outdir, "%s_grad%d.npy" % (name, i)), grads[i].numpy())
        np.save(os.path.join(outdir, name + "_out.npy"), out.detach().numpy())
        np.save(os.path.join(outdir, name + "_dout.npy"), dout.numpy())
        cases.append("%s %s" % (name, op))

    # ---- conv2d: params B, Cin, H, W, Cout, KH, KW, stride, pad t, b, l, r
    def conv(name, B, Ci, H, W, Co, KH, KW, stride, pt, pb, pl, pr, wscale=0.2):
        x, w, b = rand(B, Ci, H, W), rand(Co, Ci, KH, KW, scale=wscale), rand(Co)
        save(name, "conv2d", [B, Ci, H, W, Co, KH, KW, stride, pt, pb, pl, pr], [x, w, b],
             lambda x, w, b: F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, b, stride=stride))

    conv("conv3x3", 2, 16, 16, 16, 32, 3, 3, 1, 1, 1, 1, 1)
    conv("conv3x3_c64", 1, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 1, wscale=0.05)
    conv("conv_in", 2, 3, 16, 16, 16, 3, 3, 1, 1, 1, 1, 1)
    conv("conv1x1", 2, 24, 8, 8, 16, 1, 1, 1, 0, 0, 0, 0)
    conv("conv3x3_s2_p0", 2, 8, 9, 9, 8, 3, 3, 2, 0, 0, 0, 0)
    # layerspp.Downsample(fir=False, with_conv=True): F.pad(x, (0, 1, 0, 1)) + stride-2 conv
    conv("conv3x3_s2_pad0101", 2, 8, 8, 8, 16, 3, 3, 2, 0, 1, 0, 1)

    # ---- linear (nn.Linear): params B, in, out
    x, w, b = rand(3, 64), rand(256, 64, scale=0.2), rand(256)
    save("linear", "linear", [3, 64, 256], [x, w, b], lambda x, w, b: F.linear(x, w, b))

    # ---- NIN (layers.NIN: W [in, out], contract over channels): params B, Cin, HW, Cout
    B, Ci, H, W_, Co = 2, 32, 8, 8, 24
    x, w, b = rand(B, Ci, H, W_), rand(Ci, Co, scale=0.2), rand(Co)

    def nin(x, w, b):
        y = torch.einsum("bhwi,io->bhwo", x.permute(0, 2, 3, 1), w) + b
        return y.permute(0, 3, 1, 2)
    save("nin", "nin", [B, Ci, H * W_, Co], [x, w, b], nin)

    # ---- GroupNorm(min(C//4, 32), C, eps=1e-6): params B, C, HW, G
    for name, (B, C, H, W_) in {"gn_c64": (2, 64, 8, 8), "gn_c48": (2, 48, 4, 4),
                                "gn_c128": (1, 128, 4, 4), "gn_c16": (3, 16, 6, 5)}.items():
        G = min(C // 4, 32)
        x, g, b = rand(B, C, H, W_, scale=2.0) + 0.5, rand(C) + 1.0, rand(C)
        save(name, "groupnorm", [B, C, H * W_, G], [x, g, b],
             lambda x, g, b, G=G: F.group_norm(x, G, g, b, eps=1e-6))
    B, C, H, W_ = 2, 32, 8, 8
    x, g, b = rand(B, C, H, W_, scale=2.0), rand(C) + 1.0, rand(C)
    save("gn_silu", "groupnorm_silu", [B, C, H * W_, 8], [x, g, b],
         lambda x, g, b: F.silu(F.group_norm(x, 8, g, b, eps=1e-6)))

    x = rand(1000, scale=6.0)
    save("silu", "silu", [1000], [x], lambda x: F.silu(x))

    # ---- AttnBlockpp core (layerspp.py): params B, C, N = H*W
    def attn(q, k, v):
        B, C, H, W_ = q.shape
        w = torch.einsum("bchw,bcij->bhwij", q, k) * (int(C) ** (-0.5))
        w = torch.reshape(w, (B, H, W_, H * W_))
        w = F.softmax(w, dim=-1)
        w = torch.reshape(w, (B, H, W_, H, W_))
        return torch.einsum("bhwij,bcij->bchw", w, v)
    for name, (B, C, H, W_) in {"attn_c32": (2, 32, 8, 8), "attn_c16": (1, 16, 4, 6)}.items():
        q, k, v = rand(B, C, H, W_, scale=2), rand(B, C, H, W_, scale=2), rand(B, C, H, W_)
        save(name, "attention", [B, C, H * W_], [q, k, v], attn)

    # ---- FIR resampling: upfirdn2d, native path (zero-insert, pad, correlate, stride)
    def upfirdn2d(x, k, up=1, down=1, pad=(0, 0)):
        B, C, H, W_ = x.shape
        x = x.reshape(B * C, 1, H, W_)
        if up > 1:  # zero insertion: x at multiples of `up`
            z = x.new_zeros(B * C, 1, H * up, W_ * up)
            z[:, :, ::up, ::up] = x
            x = z
        x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
        x = F.conv2d(x, torch.flip(k, [0, 1])[None, None])
        x = x[:, :, ::down, ::down]
        return x.reshape(B, C, x.shape[2], x.shape[3])

    def setup_kernel(k):
        k = np.asarray(k, dtype=np.float32)
        k = np.outer(k, k)
        return torch.tensor(k / np.sum(k))

    fir = setup_kernel([1, 3, 3, 1])

    def upsample_2d(x, factor=2):
        k = fir * (factor ** 2)
        p = k.shape[0] - factor
        return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))

    def downsample_2d(x, factor=2):
        p = fir.shape[0] - factor
        return upfirdn2d(x, fir, down=factor, pad=((p + 1) // 2, p // 2))

    def conv_downsample_2d(x, w, b, factor=2):
        conv_w = w.shape[-1]
        p = (fir.shape[0] - factor) + (conv_w - 1)
        x = upfirdn2d(x, fir, pad=((p + 1) // 2, p // 2))
        return F.conv2d(x, w, stride=factor, padding=0) + b.reshape(1, -1, 1, 1)

    for name, (B, C, H, W_) in {"firup": (2, 3, 8, 8), "firup_odd": (1, 2, 5, 7)}.items():
        save(name, "fir_up", [B, C, H, W_], [rand(B, C, H, W_)], upsample_2d)
    for name, (B, C, H, W_) in {"firdown": (2, 3, 8, 8), "firdown_rect": (1, 2, 6, 10)}.items():
        save(name, "fir_down", [B, C, H, W_], [rand(B, C, H, W_)], downsample_2d)
    for name, (B, Ci, H, W_, Co) in {"firconvdown_c3": (2, 3, 16, 16, 16),
                                     "firconvdown_c16": (1, 16, 8, 8, 32)}.items():
        x, w, b = rand(B, Ci, H, W_), rand(Co, Ci, 3, 3, scale=0.2), rand(Co)
        save(name, "fir_conv_down", [B, Ci, H, W_, Co], [x, w, b], conv_downsample_2d)

    # ---- naive_upsample_2d / naive_downsample_2d
    def naive_up(x, factor=2):
        _B, C, H, W_ = x.shape
        x = torch.reshape(x, (-1, C, H, 1, W_, 1)).repeat(1, 1, 1, factor, 1, factor)
        return torch.reshape(x, (-1, C, H * factor, W_ * factor))

    def naive_down(x, factor=2):
        _B, C, H, W_ = x.shape
        x = torch.reshape(x, (-1, C, H // factor, factor, W_ // factor, factor))
        return torch.mean(x, dim=(3, 5))
    save("nearest", "nearest_up", [2, 3, 4, 5], [rand(2, 3, 4, 5)], naive_up)
    save("avgpool", "avgpool", [2, 3, 6, 8], [rand(2, 3, 6, 8)], naive_down)

    # ---- GaussianFourierProjection(embedding_size=E, scale=16) on u = ln sigma
    E = 16
    Wf = (torch.randn(E, generator=gen) * 16).float()
    sig = torch.exp(torch.rand(4, generator=gen) * math.log(50 / 0.01) + math.log(0.01))
    u = torch.log(sig).float()

    def fourier(u, W):
        x_proj = u[:, None] * W[None, :] * 2 * np.pi
        return torch.cat([torch.sin(x_proj), torch.cos(x_proj)], dim=-1)
    save("fourier", "fourier", [4, E], [u, Wf], fourier)

    # ---- get_timestep_embedding(timesteps, dim, max_positions=10000)
    def timestep(t, dim, max_positions=10000):
        half_dim = dim // 2
        emb = math.log(max_positions) / (half_dim - 1)
        emb = torch.exp(torch.arange(half_dim, dtype=torch.float32) * -emb)
        emb = t.float()[:, None] * emb[None, :]
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
        if dim % 2 == 1:
            emb = F.pad(emb, (0, 1), mode="constant")
        return emb
    # Continuous VP nets feed 999·t. torch.exp (1-ulp vectorised) and the C side's
    # correctly rounded exp can differ by one ulp in a frequency, which at t ~ 999 moves
    # sin/cos by ~1.5e-5 (measured); t is kept below 10 so the comparison tests the op.
    t = torch.rand(4, generator=gen).float() * 9.99
    save("timestep128", "timestep", [4, 128], [t], lambda t: timestep(t, 128))
    t = torch.rand(3, generator=gen).float() * 3
    save("timestep33", "timestep", [3, 33], [t], lambda t: timestep(t, 33))

    with open(os.path.join(outdir, "cases.txt"), "w") as f:
        f.write("\n".join(cases) + "\n")
    return len(cases)


def main(argv):
    if len(argv) == 3 and argv[1] == "--run":
        if not have_torch():
            print("# SKIP: %s has no torch/numpy" % sys.executable)
            return 77
        with tempfile.TemporaryDirectory(prefix="nn_ref_") as d:
            n = generate(d)
            print("# %d PyTorch reference cases written to %s" % (n, d), flush=True)
            return subprocess.run([argv[2], "--torch", d]).returncode
    if len(argv) == 2 and not argv[1].startswith("-"):
        if not have_torch():
            print("torch/numpy not available", file=sys.stderr)
            return 77
        os.makedirs(argv[1], exist_ok=True)
        print("%d cases written to %s" % (generate(argv[1]), argv[1]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

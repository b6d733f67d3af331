#!/usr/bin/python3
"""Independent PyTorch reference of the NCSN++ / DDPM++ forward (score_sde_pytorch
models/ncsnpp.py NCSNpp, layerspp.py, up_or_down_sampling.py), written from the official
code as a plain function over a name-keyed state dict, for the options the conformance
fixtures do not cover. The one PyTorch-port bug that blocks options (negative-step
slicing in upsample_conv_2d) is replaced by torch.flip; fir=False Upsample uses
F.interpolate(scale_factor=2) (the port passes the size as scale_factor and crashes).

As a test (meson): `ncsnpp_ref.py --run SCORESDE_CLI` builds small random-weight networks
for several configs, writes model.safetensors / x.npy / t.npy to a temp folder, runs
`scoresde score --raw` and `scoresde score`, and compares with this reference (per sample
max |diff| <= 1e-4 max |ref|). Exit 77 (skip) without torch.
As a module: plan(cfg) -> [(name, shape)], forward(cfg, sd, x, labels), score(...),
read_safetensors / write_safetensors.
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    if __name__ == "__main__":
        print("1..0 # SKIP torch/numpy not available")
        sys.exit(77)
    raise

# ---- safetensors -----------------------------------------------------------------------


def read_safetensors(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", {})
    data = b[8 + n:]
    sd = {}
    for k, v in h.items():
        assert v["dtype"] == "F32"
        a, e = v["data_offsets"]
        sd[k] = torch.from_numpy(np.frombuffer(data[a:e], "<f4").reshape(v["shape"]).copy())
    return sd, meta


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, off = [], 0
    for name, t in tensors:
        b = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


# ---- config ------------------------------------------------------------------------------

DEFAULTS = dict(nf=128, ch_mult=[1, 2, 2, 2], num_res_blocks=4, attn_resolutions=[16],
                resblock_type="biggan", fir=True, fir_kernel=[1, 3, 3, 1], skip_rescale=True,
                progressive="none", progressive_input="residual", progressive_combine="sum",
                embedding_type="fourier", fourier_scale=16, scale_by_sigma=True,
                conditional=True, resamp_with_conv=True, init_scale=0.0, dropout=0.0,
                sde={"kind": "ve", "sigma_min": 0.01, "sigma_max": 50.0, "beta_min": 0.1,
                     "beta_max": 20.0, "N": 1000},
                continuous=True, data={"image_size": 32, "num_channels": 3, "centered": False})


def full_config(**kw):
    c = json.loads(json.dumps(DEFAULTS))
    for k, v in kw.items():
        if k in ("sde", "data"):
            c[k].update(v)
        else:
            c[k] = v
    return c


def groups(c):
    return min(c // 4, 32)


# ---- parameter plan (replays NCSNpp.__init__) --------------------------------------------


def plan(cfg):
    """[(name, shape, trainable)] in state_dict order (without the sigmas buffer)."""
    nf, L, R = cfg["nf"], len(cfg["ch_mult"]), cfg["num_res_blocks"]
    C0, S = cfg["data"]["num_channels"], cfg["data"]["image_size"]
    fir, rb = cfg["fir"], cfg["resblock_type"]
    out, mods = [], [0]

    def mod():
        mods[0] += 1
        return mods[0] - 1

    def p(i, sub, shape, tr=True):
        out.append(("all_modules.%d.%s" % (i, sub), tuple(shape), tr))

    def conv(i, pre, o, n, k):
        p(i, pre + "weight", (o, n, k, k))
        p(i, pre + "bias", (o,))

    def gn(i, pre, c):
        p(i, pre + "weight", (c,))
        p(i, pre + "bias", (c,))

    def nin(i, pre, n, o):
        p(i, pre + "W", (n, o))
        p(i, pre + "b", (o,))

    def resblock(n, o=None, up=False, down=False):
        o = o or n
        i = mod()
        gn(i, "GroupNorm_0.", n)
        conv(i, "Conv_0.", o, n, 3)
        p(i, "Dense_0.weight", (o, 4 * nf))
        p(i, "Dense_0.bias", (o,))
        gn(i, "GroupNorm_1.", o)
        conv(i, "Conv_1.", o, o, 3)
        if rb == "biggan":
            if n != o or up or down:
                conv(i, "Conv_2.", o, n, 1)
        elif n != o:
            nin(i, "NIN_0.", n, o)

    def attn(c):
        i = mod()
        gn(i, "GroupNorm_0.", c)
        for k in range(4):
            nin(i, "NIN_%d." % k, c, c)

    def resample(n, o, with_conv):
        i = mod()
        if with_conv:
            conv(i, "Conv2d_0." if fir else "Conv_0.", o, n, 3)

    if cfg["embedding_type"] == "fourier":
        p(mod(), "W", (nf,), False)
        ed = 2 * nf
    else:
        ed = nf
    if cfg["conditional"]:
        i = mod(); p(i, "weight", (4 * nf, ed)); p(i, "bias", (4 * nf,))
        i = mod(); p(i, "weight", (4 * nf, 4 * nf)); p(i, "bias", (4 * nf,))
    conv(mod(), "", nf, C0, 3)
    hs_c, in_ch, ipc, res = [nf], nf, C0, S
    for l in range(L):
        for _ in range(R):
            o = nf * cfg["ch_mult"][l]
            resblock(in_ch, o)
            in_ch = o
            if res in cfg["attn_resolutions"]:
                attn(in_ch)
            hs_c.append(in_ch)
        if l != L - 1:
            if rb == "ddpm":
                resample(in_ch, in_ch, cfg["resamp_with_conv"])
            else:
                resblock(in_ch, down=True)
            if cfg["progressive_input"] == "input_skip":
                conv(mod(), "Conv_0.", in_ch, ipc, 1)
                if cfg["progressive_combine"] == "cat":
                    in_ch *= 2
            elif cfg["progressive_input"] == "residual":
                resample(ipc, in_ch, True)
                ipc = in_ch
            hs_c.append(in_ch)
            res //= 2
    in_ch = hs_c[-1]
    resblock(in_ch); attn(in_ch); resblock(in_ch)
    pc = 0
    for l in reversed(range(L)):
        for _ in range(R + 1):
            o = nf * cfg["ch_mult"][l]
            resblock(in_ch + hs_c.pop(), o)
            in_ch = o
        if res in cfg["attn_resolutions"]:
            attn(in_ch)
        prog = cfg["progressive"]
        if prog != "none":
            if l == L - 1:
                gn(mod(), "", in_ch)
                if prog == "output_skip":
                    conv(mod(), "", C0, in_ch, 3); pc = C0
                else:
                    conv(mod(), "", in_ch, in_ch, 3); pc = in_ch
            elif prog == "output_skip":
                gn(mod(), "", in_ch); conv(mod(), "", C0, in_ch, 3); pc = C0
            else:
                resample(pc, in_ch, True); pc = in_ch
        if l != 0:
            if rb == "ddpm":
                resample(in_ch, in_ch, cfg["resamp_with_conv"])
            else:
                resblock(in_ch, up=True)
            res *= 2
    if cfg["progressive"] != "output_skip":
        gn(mod(), "", in_ch)
        conv(mod(), "", C0, in_ch, 3)
    return out


def random_weights(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape, _ in plan(cfg):
        if name.endswith(".W") and name.startswith("all_modules.0.") and cfg["embedding_type"] == "fourier":
            t = torch.randn(shape, generator=g) * cfg["fourier_scale"]
        elif "GroupNorm" in name and name.endswith("weight") or (len(shape) == 1 and "weight" in name):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            t = 0.05 * torch.randn(shape, generator=g)
        sd[name] = t.float()
    return sd


# ---- FIR resampling (up_or_down_sampling.py with upfirdn2d_native) ------------------------


def upfirdn2d(x, k, up=1, down=1, pad=(0, 0)):
    B, C, H, W = x.shape
    kh, kw = k.shape
    x = x.reshape(B * C, 1, H, 1, W, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    x = x.reshape(B * C, 1, H * up, W * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    w = torch.flip(k, [0, 1]).view(1, 1, kh, kw)
    x = F.conv2d(x, w)
    x = x[:, :, ::down, ::down]
    return x.reshape(B, C, x.shape[2], x.shape[3])


def fir_kernel(k, gain=1.0):
    k = np.asarray(k, dtype=np.float32)
    k = np.outer(k, k)
    k /= k.sum()
    return torch.tensor(k * gain)


def upsample_2d(x, kk):
    k = fir_kernel(kk, 4.0)
    p = k.shape[0] - 2
    return upfirdn2d(x, k, up=2, pad=((p + 1) // 2 + 1, p // 2))


def downsample_2d(x, kk):
    k = fir_kernel(kk)
    p = k.shape[0] - 2
    return upfirdn2d(x, k, down=2, pad=((p + 1) // 2, p // 2))


def conv_downsample_2d(x, w, kk):
    k = fir_kernel(kk)
    p = (k.shape[0] - 2) + (w.shape[-1] - 1)
    x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, w, stride=2)


def upsample_conv_2d(x, w, kk):
    k = fir_kernel(kk, 4.0)
    convW, inC, outC = w.shape[-1], w.shape[1], w.shape[0]
    p = (k.shape[0] - 2) - (convW - 1)
    w = torch.reshape(w, (1, -1, inC, convW, convW))
    w = torch.flip(w, [3, 4]).permute(0, 2, 1, 3, 4)
    w = torch.reshape(w, (inC, -1, convW, convW))
    x = F.conv_transpose2d(x, w, stride=2, padding=0)
    return upfirdn2d(x, k, pad=((p + 1) // 2 + 1, p // 2 + 1))


# ---- forward (NCSNpp.forward) ---------------------------------------------------------------


def forward(cfg, sd, x, labels):
    act = F.silu
    nf, L, R = cfg["nf"], len(cfg["ch_mult"]), cfg["num_res_blocks"]
    fir, kk, rescale = cfg["fir"], cfg["fir_kernel"], cfg["skip_rescale"]
    idx = [0]

    def P(sub):
        return sd["all_modules.%d.%s" % (idx[0], sub)]

    def has(sub):
        return ("all_modules.%d.%s" % (idx[0], sub)) in sd

    def nxt():
        idx[0] += 1

    def gnorm(h, pre=""):
        return F.group_norm(h, groups(h.shape[1]), P(pre + "weight"), P(pre + "bias"), eps=1e-6)

    def conv(h, pre="", stride=1, padding=None):
        w = P(pre + "weight")
        return F.conv2d(h, w, P(pre + "bias"), stride=stride,
                        padding=w.shape[-1] // 2 if padding is None else padding)

    def nin(h, pre):
        W, b = P(pre + "W"), P(pre + "b")
        return (torch.einsum("bchw,co->bohw", h, W) + b[None, :, None, None])

    def join(a, b):
        return (a + b) / np.sqrt(2.0) if rescale else a + b

    def naive_up(h):
        return F.interpolate(h, scale_factor=2, mode="nearest")

    def naive_down(h):
        return F.avg_pool2d(h, 2, 2)

    def resblock(h, temb, up=False, down=False):
        x0 = h
        h = act(gnorm(h, "GroupNorm_0."))
        if up:
            h, x0 = (upsample_2d(h, kk), upsample_2d(x0, kk)) if fir else (naive_up(h), naive_up(x0))
        elif down:
            h, x0 = (downsample_2d(h, kk), downsample_2d(x0, kk)) if fir else (naive_down(h), naive_down(x0))
        h = conv(h, "Conv_0.")
        if temb is not None:
            h = h + F.linear(act(temb), P("Dense_0.weight"), P("Dense_0.bias"))[:, :, None, None]
        h = act(gnorm(h, "GroupNorm_1."))
        h = conv(h, "Conv_1.")
        if has("Conv_2.weight"):
            x0 = conv(x0, "Conv_2.")
        elif has("NIN_0.W"):
            x0 = nin(x0, "NIN_0.")
        out = join(x0, h)
        nxt()
        return out

    def attn(h):
        B, C, H, W = h.shape
        g = gnorm(h, "GroupNorm_0.")
        q, k, v = nin(g, "NIN_0."), nin(g, "NIN_1."), nin(g, "NIN_2.")
        w = torch.einsum("bchw,bcij->bhwij", q, k) * (int(C) ** (-0.5))
        w = F.softmax(w.reshape(B, H, W, H * W), dim=-1).reshape(B, H, W, H, W)
        o = nin(torch.einsum("bhwij,bcij->bchw", w, v), "NIN_3.")
        nxt()
        return join(h, o)

    def downsample(h, with_conv):  # layerspp.Downsample
        if not with_conv:
            out = downsample_2d(h, kk) if fir else naive_down(h)
        elif fir:
            out = conv_downsample_2d(h, P("Conv2d_0.weight"), kk) + P("Conv2d_0.bias")[None, :, None, None]
        else:
            out = conv(F.pad(h, (0, 1, 0, 1)), "Conv_0.", stride=2, padding=0)
        nxt()
        return out

    def upsample(h, with_conv):  # layerspp.Upsample
        if not with_conv:
            out = upsample_2d(h, kk) if fir else naive_up(h)
        elif fir:
            out = upsample_conv_2d(h, P("Conv2d_0.weight"), kk) + P("Conv2d_0.bias")[None, :, None, None]
        else:
            out = conv(naive_up(h), "Conv_0.")
        nxt()
        return out

    if cfg["embedding_type"] == "fourier":
        used = labels
        u = torch.log(labels)
        proj = u[:, None] * P("W")[None, :] * 2 * np.pi
        temb = torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)
        nxt()
    else:
        half = nf // 2
        e = math.log(10000) / (half - 1)
        e = torch.exp(torch.arange(half, dtype=torch.float32) * -e)
        e = labels.float()[:, None] * e[None, :]
        temb = torch.cat([torch.sin(e), torch.cos(e)], dim=1)
        if nf % 2 == 1:
            temb = F.pad(temb, (0, 1))
        N = cfg["sde"]["N"]
        sig = torch.tensor(np.exp(np.linspace(np.log(cfg["sde"]["sigma_max"]),
                                              np.log(cfg["sde"]["sigma_min"]), N)))
        used = sig[labels.long()] if cfg["scale_by_sigma"] else None
    if cfg["conditional"]:
        temb = F.linear(temb, P("weight"), P("bias")); nxt()
        temb = F.linear(act(temb), P("weight"), P("bias")); nxt()
    else:
        temb = None
    if not cfg["data"]["centered"]:
        x = 2 * x - 1.0
    pin = cfg["progressive_input"]
    ipyr = x if pin != "none" else None
    hs = [conv(x)]
    nxt()
    for l in range(L):
        for _ in range(R):
            h = resblock(hs[-1], temb)
            if h.shape[-1] in cfg["attn_resolutions"]:
                h = attn(h)
            hs.append(h)
        if l != L - 1:
            h = downsample(hs[-1], cfg["resamp_with_conv"]) if cfg["resblock_type"] == "ddpm" \
                else resblock(hs[-1], temb, down=True)
            if pin == "input_skip":
                ipyr = downsample_2d(ipyr, kk) if fir else naive_down(ipyr)
                c = conv(ipyr, "Conv_0.")
                nxt()
                h = torch.cat([c, h], dim=1) if cfg["progressive_combine"] == "cat" else c + h
            elif pin == "residual":
                ipyr = downsample(ipyr, True)
                ipyr = join(ipyr, h)
                h = ipyr
            hs.append(h)
    h = resblock(hs[-1], temb)
    h = attn(h)
    h = resblock(h, temb)
    pyr = None
    prog = cfg["progressive"]
    for l in reversed(range(L)):
        for _ in range(R + 1):
            h = resblock(torch.cat([h, hs.pop()], dim=1), temb)
        if h.shape[-1] in cfg["attn_resolutions"]:
            h = attn(h)
        if prog != "none":
            if l == L - 1:
                pyr = act(gnorm(pyr if False else h)); nxt()
                pyr = conv(pyr); nxt()
            elif prog == "output_skip":
                pyr = upsample_2d(pyr, kk) if fir else naive_up(pyr)
                ph = act(gnorm(h)); nxt()
                ph = conv(ph); nxt()
                pyr = pyr + ph
            else:
                pyr = upsample(pyr, True)
                pyr = join(pyr, h)
                h = pyr
        if l != 0:
            h = upsample(h, cfg["resamp_with_conv"]) if cfg["resblock_type"] == "ddpm" \
                else resblock(h, temb, up=True)
    if prog == "output_skip":
        h = pyr
    else:
        h = act(gnorm(h)); nxt()
        h = conv(h); nxt()
    assert "all_modules.%d.weight" % idx[0] not in sd and not any(
        k.startswith("all_modules.%d." % idx[0]) for k in sd), "modules left over"
    if cfg["scale_by_sigma"]:
        h = h / used.reshape(-1, 1, 1, 1)
    return h.float()


# ---- labels and score (models/utils.py get_score_fn) --------------------------------------


def labels_and_std(cfg, t):
    s = cfg["sde"]
    if s["kind"] == "ve":
        if cfg["continuous"]:
            return s["sigma_min"] * (s["sigma_max"] / s["sigma_min"]) ** t, None
        return torch.round((1.0 - t) * (s["N"] - 1)), None
    lmc = -0.25 * t ** 2 * (s["beta_max"] - s["beta_min"]) - 0.5 * t * s["beta_min"]
    if s["kind"] == "subvp":
        return t * 999, 1.0 - torch.exp(2.0 * lmc)
    if cfg["continuous"]:
        return t * 999, torch.sqrt(1.0 - torch.exp(2.0 * lmc))
    N = s["N"]
    betas = torch.linspace(s["beta_min"] / N, s["beta_max"] / N, N)
    sq = torch.sqrt(1.0 - torch.cumprod(1.0 - betas, dim=0))
    lab = t * (N - 1)
    return lab, sq[lab.long()]


def score(cfg, sd, x, t):
    lab, std = labels_and_std(cfg, t)
    out = forward(cfg, sd, x, lab)
    if std is None:
        return out
    return -out / std[:, None, None, None]


# ---- the test -----------------------------------------------------------------------------

CASES = {
    # resblock ddpm, fir off: layerspp.Downsample (pad + 3x3 stride 2) / Upsample (nearest + 3x3)
    "ddpm_blocks_nofir_vp": dict(nf=8, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[8],
                                 resblock_type="ddpm", fir=False, progressive_input="none",
                                 embedding_type="positional", scale_by_sigma=False,
                                 sde={"kind": "vp"}, data={"image_size": 16, "centered": True}),
    # ddpm blocks with FIR conv resampling (upsample_conv_2d), residual pyramids both ways
    "ddpm_blocks_fir_conv_residual": dict(nf=8, ch_mult=[1, 2, 1], num_res_blocks=1,
                                          attn_resolutions=[4], resblock_type="ddpm", fir=True,
                                          progressive="residual", progressive_input="residual",
                                          data={"image_size": 16, "num_channels": 2}),
    # biggan + FIR, progressive residual output (FIR upsample with conv) and residual input
    "biggan_residual_out": dict(nf=8, ch_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[8],
                                progressive="residual", progressive_input="residual",
                                data={"image_size": 16}),
    # input_skip with combine=cat, output_skip, fir off (nearest / mean pyramids), no rescale
    "cat_combine_nofir": dict(nf=8, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[8],
                              fir=False, progressive="output_skip", progressive_input="input_skip",
                              progressive_combine="cat", skip_rescale=False,
                              data={"image_size": 16}),
    # combine=sum for the same net with FIR
    "sum_combine_fir": dict(nf=8, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[8],
                            progressive="output_skip", progressive_input="input_skip",
                            progressive_combine="sum", data={"image_size": 16}),
    # positional embedding + scale_by_sigma: VE discrete (SMLD labels, sigmas table)
    "positional_scale_by_sigma_ve_discrete": dict(nf=8, ch_mult=[1, 2], num_res_blocks=1,
                                                  attn_resolutions=[4], embedding_type="positional",
                                                  continuous=False, data={"image_size": 8}),
    # attention at several levels incl. the lowest, plus a resolution that matches none;
    # unconditional (no temb MLP); odd nf
    "odd_attn_unconditional": dict(nf=12, ch_mult=[1, 2, 1], num_res_blocks=1,
                                   attn_resolutions=[16, 4, 5], conditional=False,
                                   progressive_input="none", data={"image_size": 16}),
    # DDPM++ VP discrete, no skip rescale
    "vp_discrete_noskip": dict(nf=8, ch_mult=[1, 2], num_res_blocks=2, attn_resolutions=[4],
                               fir=False, progressive_input="none", embedding_type="positional",
                               scale_by_sigma=False, skip_rescale=False, continuous=False,
                               sde={"kind": "vp"}, data={"image_size": 8, "centered": True}),
    # sub-VP continuous with output_skip pyramid and nearest resampling
    "subvp_output_skip": dict(nf=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[],
                              fir=False, progressive="output_skip", progressive_input="none",
                              embedding_type="positional", scale_by_sigma=False,
                              sde={"kind": "subvp"}, data={"image_size": 8, "centered": True}),
}


def rel_err(got, ref):
    worst = 0.0
    for b in range(ref.shape[0]):
        m = float(np.abs(ref[b]).max())
        e = float(np.abs(got[b] - ref[b]).max())
        worst = max(worst, e / m if m > 0 else e)
    return worst


def run_tests(cli):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in CASES.items():
            cfg = full_config(**kw)
            sd = random_weights(cfg, seed=len(name))
            names = [n for n, _, _ in plan(cfg)]
            mpath = os.path.join(tmp, name + ".safetensors")
            write_safetensors(mpath, [(n, sd[n]) for n in names],
                              {"format": "pt", "scoresde": json.dumps(cfg)})
            C, S = cfg["data"]["num_channels"], cfg["data"]["image_size"]
            B = 3
            t = torch.tensor([0.02, 0.37, 0.93], dtype=torch.float32)
            x = torch.randn(B, C, S, S, generator=torch.Generator().manual_seed(7))
            if not cfg["data"]["centered"]:
                x = x * 0.5 + 0.5
            np.save(os.path.join(tmp, "x.npy"), x.numpy())
            np.save(os.path.join(tmp, "t.npy"), t.numpy())
            with torch.no_grad():
                lab, _ = labels_and_std(cfg, t)
                raw = forward(cfg, sd, x, lab).numpy()
                sc = score(cfg, sd, x, t).numpy()
            for mode, ref in (("raw", raw), ("score", sc)):
                outp = os.path.join(tmp, "out.npy")
                cmd = [cli, "score", "--model", mpath, "--in", os.path.join(tmp, "x.npy"),
                       "--t", os.path.join(tmp, "t.npy"), "--out", outp]
                if mode == "raw":
                    cmd.append("--raw")
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode != 0:
                    results.append((False, "%s %s: scoresde failed: %s" % (name, mode, p.stderr.strip())))
                    continue
                e = rel_err(np.load(outp), ref)
                results.append((e <= 1e-4, "%s: %s vs PyTorch reference, max rel err %.3g" % (name, mode, e)))
    for i, (ok, msg) in enumerate(results, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, msg))
    print("1..%d" % len(results))
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--run":
        sys.exit(run_tests(sys.argv[2]))
    print(__doc__)
    sys.exit(2)

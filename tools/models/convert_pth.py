#!/usr/bin/python3
"""Convert an official score_sde_pytorch checkpoint (checkpoint_N.pth) to a scoresde
.safetensors model file.

    convert_pth.py CHECKPOINT --out MODEL.safetensors
                   [--config CONFIG.json] [--preset NAME] [--set KEY=JSON ...]
                   [--weights ema|model]

Weights (docs/math.md#checkpoints): the checkpoint dict holds 'model' (the raw
training weights, keys 'module.all_modules.<i>.<sub>') and 'ema' whose 'shadow_params'
is an unnamed list in model.parameters() order restricted to trainable parameters, i.e.
the state_dict order minus the 'sigmas' buffer and minus the frozen Fourier W. Sampling
uses the EMA weights, so by default every trainable tensor comes from shadow_params (in
order, each shape checked) and only the Fourier W (all_modules.0.W) from 'model'.

Config: the checkpoint does not store one. Give the architecture with --preset (a
released config of docs/math.md#net-configs), --config (the flat config.json of the conformance
fixtures, or a scoresde config with "sde"/"data" objects) and/or --set key=value
overrides (value parsed as JSON, else taken as a string). The output's __metadata__ gets
"format": "pt" and "scoresde": the full config JSON (model fields, "sde", "continuous",
"data"); the C loader checks every tensor name and shape against it.

Needs only torch (for torch.load) and the standard library. Run with Debian's
/usr/bin/python3 (python3-torch). `scoresde convert --from pth` calls this script.
"""
import argparse
import json
import struct
import sys

MODEL_KEYS = ["name", "nf", "ch_mult", "num_res_blocks", "attn_resolutions", "resblock_type",
              "fir", "fir_kernel", "skip_rescale", "progressive", "progressive_input",
              "progressive_combine", "embedding_type", "fourier_scale", "scale_by_sigma",
              "conditional", "init_scale", "dropout", "resamp_with_conv", "nonlinearity",
              "normalization", "attention_type", "conv_size"]

_NCSNPP_CIFAR = {
    "name": "ncsnpp", "nf": 128, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 4,
    "attn_resolutions": [16], "resblock_type": "biggan", "fir": True, "fir_kernel": [1, 3, 3, 1],
    "skip_rescale": True, "progressive": "none", "progressive_input": "residual",
    "progressive_combine": "sum", "embedding_type": "fourier", "fourier_scale": 16,
    "scale_by_sigma": True, "conditional": True, "init_scale": 0.0, "dropout": 0.1,
    "resamp_with_conv": True, "nonlinearity": "swish", "normalization": "GroupNorm",
    "attention_type": "ddpm", "conv_size": 3,
    "sde": {"kind": "ve", "sigma_min": 0.01, "sigma_max": 50.0, "N": 1000},
    "continuous": True,
    "data": {"image_size": 32, "num_channels": 3, "centered": False, "dataset": "cifar10"},
}


def _preset(base, **kw):
    c = json.loads(json.dumps(base))
    for k, v in kw.items():
        if k in ("sde", "data"):
            c[k].update(v)
        else:
            c[k] = v
    return c


_DDPMPP_CIFAR = _preset(_NCSNPP_CIFAR, fir=False, progressive_input="none",
                        embedding_type="positional", scale_by_sigma=False,
                        sde={"kind": "vp", "beta_min": 0.1, "beta_max": 20.0, "N": 1000},
                        data={"centered": True})
_NCSNPP_256 = _preset(_NCSNPP_CIFAR, ch_mult=[1, 1, 2, 2, 2, 2, 2], num_res_blocks=2,
                      progressive="output_skip", progressive_input="input_skip", dropout=0.0,
                      sde={"sigma_max": 348.0, "N": 2000}, data={"image_size": 256})

PRESETS = {
    "ve/cifar10_ncsnpp_continuous": _NCSNPP_CIFAR,
    "ve/cifar10_ncsnpp_deep_continuous": _preset(_NCSNPP_CIFAR, num_res_blocks=8),
    "ve/cifar10_ncsnpp": _preset(_NCSNPP_CIFAR, embedding_type="positional", continuous=False),
    "vp/cifar10_ddpmpp_continuous": _DDPMPP_CIFAR,
    "vp/cifar10_ddpmpp_deep_continuous": _preset(_DDPMPP_CIFAR, num_res_blocks=8),
    "vp/cifar10_ddpmpp": _preset(_DDPMPP_CIFAR, continuous=False),
    "vp/cifar10_ncsnpp_continuous": _preset(_NCSNPP_CIFAR, embedding_type="positional",
                                            scale_by_sigma=False,
                                            sde={"kind": "vp", "beta_min": 0.1, "beta_max": 20.0},
                                            data={"centered": True}),
    "subvp/cifar10_ddpmpp_continuous": _preset(_DDPMPP_CIFAR, sde={"kind": "subvp"}),
    "subvp/cifar10_ddpmpp_deep_continuous": _preset(_DDPMPP_CIFAR, num_res_blocks=8,
                                                    sde={"kind": "subvp"}),
    "ve/celebahq_256_ncsnpp_continuous": _preset(_NCSNPP_256, data={"dataset": "celebahq"}),
    "ve/ffhq_256_ncsnpp_continuous": _preset(_NCSNPP_256, data={"dataset": "ffhq"}),
    "ve/church_ncsnpp_continuous": _preset(_NCSNPP_256, sde={"sigma_max": 380.0},
                                           data={"dataset": "lsun_church"}),
    "ve/bedroom_ncsnpp_continuous": _preset(_NCSNPP_256, sde={"sigma_max": 378.0},
                                            data={"dataset": "lsun_bedroom"}),
    "ve/ffhq_ncsnpp_continuous": _preset(_NCSNPP_256, nf=16, ch_mult=[1, 2, 4, 8, 16, 32, 32, 32],
                                         num_res_blocks=1, sde={"sigma_max": 1348.0},
                                         data={"image_size": 1024, "dataset": "ffhq"}),
}


def normalize_config(raw):
    """Any accepted layout -> {model fields..., "sde": {...}, "continuous", "data": {...}}."""
    src = dict(raw)
    if isinstance(src.get("model"), dict):
        src.update(src.pop("model"))
    out = {k: src[k] for k in MODEL_KEYS if k in src}
    sde = src.get("sde")
    sde_obj = {}
    if isinstance(sde, str):
        kind = {"vesde": "ve", "vpsde": "vp", "subvpsde": "subvp"}.get(sde.lower(), sde.lower())
        sde_obj["kind"] = kind
    elif isinstance(sde, dict):
        sde_obj.update(sde)
    for k in ("sigma_min", "sigma_max", "beta_min", "beta_max"):
        if k in src and k not in sde_obj:
            sde_obj[k] = src[k]
    if "num_scales" in src and "N" not in sde_obj:
        sde_obj["N"] = src["num_scales"]
    if "num_scales" in sde_obj:
        sde_obj["N"] = sde_obj.pop("num_scales")
    if "kind" in sde_obj:
        out["sde"] = sde_obj
    if "continuous" in src:
        out["continuous"] = bool(src["continuous"])
    data = dict(src.get("data") or {})
    for k in ("image_size", "num_channels", "centered", "dataset"):
        if k in src and k not in data:
            data[k] = src[k]
    if data:
        out["data"] = data
    return out


def merge(base, over):
    out = json.loads(json.dumps(base))
    for k, v in over.items():
        if k in ("sde", "data") and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, float32 numpy array) in order."""
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name, arr in tensors:
        b = arr.astype("<f4", copy=False).tobytes(order="C")
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", help="config JSON (fixture config.json or scoresde layout)")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="a released config")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one field (sde.sigma_max=348, data.dataset=x, nf=64)")
    ap.add_argument("--weights", choices=["ema", "model"], default="ema",
                    help="ema: EMA shadow parameters (default, what sampling uses)")
    args = ap.parse_args(argv)

    cfg = {}
    if args.preset:
        cfg = json.loads(json.dumps(PRESETS[args.preset]))
    if args.config:
        with open(args.config) as f:
            cfg = merge(cfg, normalize_config(json.load(f)))
    for item in args.set:
        if "=" not in item:
            ap.error("--set needs KEY=VALUE, got %r" % item)
        key, val = item.split("=", 1)
        try:
            val = json.loads(val)
        except ValueError:
            pass
        if "." in key:
            outer, inner = key.split(".", 1)
            cfg.setdefault(outer, {})[inner] = val
        else:
            cfg = merge(cfg, normalize_config({key: val}))
    if not cfg:
        ap.error("no config: give --preset, --config or --set")
    cfg.setdefault("name", "ncsnpp")

    import torch  # late: --help works without torch
    ck = torch.load(args.checkpoint, map_location="cpu")
    if not isinstance(ck, dict):
        sys.exit("convert_pth: %s is not a checkpoint dict" % args.checkpoint)
    if "model" in ck:
        model_sd = ck["model"]
    else:  # a bare state_dict
        model_sd = ck
        if args.weights == "ema":
            sys.exit("convert_pth: no 'model'/'ema' entries (a bare state_dict?); "
                     "use --weights model to convert it as is")

    def strip(k):
        return k[len("module."):] if k.startswith("module.") else k

    names = [strip(k) for k in model_sd.keys()]
    values = {strip(k): v for k, v in model_sd.items()}
    fourier = cfg.get("embedding_type", "fourier") == "fourier"
    frozen = {"all_modules.0.W"} if fourier else set()
    params = [n for n in names if n != "sigmas"]
    trainable = [n for n in params if n not in frozen]

    out = {}
    if args.weights == "ema":
        ema = ck.get("ema")
        if not isinstance(ema, dict) or "shadow_params" not in ema:
            sys.exit("convert_pth: checkpoint has no ema.shadow_params")
        shadow = ema["shadow_params"]
        if len(shadow) != len(trainable):
            sys.exit("convert_pth: %d EMA shadow parameters but the model has %d trainable "
                     "tensors (wrong embedding_type?)" % (len(shadow), len(trainable)))
        for name, t in zip(trainable, shadow):
            if tuple(t.shape) != tuple(values[name].shape):
                sys.exit("convert_pth: EMA tensor for %s has shape %s, model has %s"
                         % (name, tuple(t.shape), tuple(values[name].shape)))
            out[name] = t
        for name in frozen:
            if name not in values:
                sys.exit("convert_pth: the model has no %s (embedding_type fourier?)" % name)
            out[name] = values[name]
    else:
        for name in params:
            out[name] = values[name]

    tensors = [(n, out[n].detach().to(torch.float32).contiguous().numpy()) for n in params]
    meta = {"format": "pt",
            "scoresde": json.dumps(cfg, separators=(",", ":")),
            "source": "score_sde_pytorch checkpoint (%s weights, step %s)"
                      % (args.weights, ck.get("step", "?"))}
    write_safetensors(args.out, tensors, meta)
    print("convert_pth: wrote %d tensors (%s weights) to %s" % (len(tensors), args.weights,
                                                                 args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

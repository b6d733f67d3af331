#!/usr/bin/python3
"""Independent Fashion-MNIST classifier for evaluating the shipped score model.

A small CNN (PyTorch, CPU) trained on the CLEAN Fashion-MNIST training images only --
no noise, no time input, nothing shared with scoresde's own time-dependent guidance
classifier. It is the judge of tools/models/eval_fashion_mnist.py: it labels generated
samples (class histogram, guided-class accuracy) and its 128-d penultimate layer gives
the features of a Frechet distance (an FID-like number with this net in place of
Inception).

Inputs are exactly the score model's data: 28x28 images zero-padded by 2 pixels per side
to 32x32 (engine/cli/cmd_train.c, docs/training.md), values in [0,1], shape [N,1,32,32].

    /usr/bin/python3 tools/models/fashion_classifier.py train      # writes the weights
    /usr/bin/python3 tools/models/fashion_classifier.py test       # test accuracy

Weights: models/fashion-mnist-32-evalnet.safetensors (float32, safetensors format written
by the tiny writer below; metadata holds the test accuracy and the training recipe).
Training is deterministic: fixed seed, one thread, a fixed batch order.
"""
import gzip
import json
import os
import struct
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
WEIGHTS = os.path.join(ROOT, "models", "fashion-mnist-32-evalnet.safetensors")
CLASSES = ["T-shirt/top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle boot"]
FEATURE_DIM = 128


# ----------------------------------------------------------------------------- data

def read_idx(path):
    """An IDX file (gzip or plain) as a numpy array of its declared shape."""
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def pad32(img28):
    """uint8 [N,28,28] -> float32 [N,1,32,32] in [0,1], 2 zero pixels per side
    (the padding of scoresde train: smaller images are zero-padded, centred)."""
    n, h, w = img28.shape
    out = np.zeros((n, 1, 32, 32), np.float32)
    top, left = (32 - h) // 2, (32 - w) // 2
    out[:, 0, top:top + h, left:left + w] = img28.astype(np.float32) / 255.0
    return out


def load_split(split):
    """('train'|'test') -> (images float32 [N,1,32,32] in [0,1], labels int64 [N])."""
    pre = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(DATA_DIR, f"{pre}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(DATA_DIR, f"{pre}-labels-idx1-ubyte.gz"))
    return pad32(x), y.astype(np.int64)


# ----------------------------------------------------------------------- safetensors

_ST_DTYPES = {"F32": np.float32, "I64": np.int64}


def save_safetensors(path, tensors, metadata=None):
    """Minimal safetensors writer: {name: float32/int64 array}, string metadata."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        a = np.asarray(tensors[name])   # (np.ascontiguousarray would make a 0-d array 1-d)
        code = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}[a.dtype]
        b = a.tobytes(order="C")
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_safetensors(path):
    """-> ({name: numpy array}, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, d in header.items():
        a, b = d["data_offsets"]
        out[name] = np.frombuffer(raw[base + a:base + b], _ST_DTYPES[d["dtype"]]).reshape(tuple(d["shape"])).copy()
    return out, meta


# ---------------------------------------------------------------------------- model

def build_net():
    import torch.nn as nn

    class EvalNet(nn.Module):
        """3 conv stages (16, 32, 64 channels; BatchNorm, ReLU, 2x2 max-pool) on 32x32,
        then Linear(1024 -> 128) + ReLU = the feature layer, dropout, Linear(128 -> 10)."""

        def __init__(self):
            super().__init__()
            def stage(cin, cout):
                return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                        nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                        nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
            self.conv = nn.Sequential(*stage(1, 16), *stage(16, 32), *stage(32, 64))
            self.fc = nn.Linear(64 * 4 * 4, FEATURE_DIM)
            self.drop = nn.Dropout(0.3)
            self.head = nn.Linear(FEATURE_DIM, 10)

        def features(self, x):
            return self.fc(self.conv(x).flatten(1)).relu()

        def forward(self, x):
            return self.head(self.drop(self.features(x)))

    return EvalNet()


def load_net(path=WEIGHTS):
    """The trained evaluation network (eval mode) and its metadata."""
    import torch
    tensors, meta = load_safetensors(path)
    net = build_net()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    net.eval()
    return net, meta


def predict(net, x, batch=500):
    """x: float array [N,1,32,32] in [0,1] (a [N,32,32] array is accepted) ->
    (logits [N,10] float64, features [N,128] float64)."""
    import torch
    x = np.asarray(x, np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.shape[1:] != (1, 32, 32):
        raise ValueError(f"expected [N,1,32,32] images, got {x.shape}")
    logits, feats = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))
            f = net.features(xb)
            feats.append(f.double().numpy())
            logits.append(net.head(f).double().numpy())
    return np.concatenate(logits), np.concatenate(feats)


# ---------------------------------------------------------------- Frechet distance

def feature_stats(f):
    f = np.asarray(f, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, s1, mu2, s2):
    """||mu1-mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (FID formula). The trace of the
    matrix square root is the sum of sqrt of the eigenvalues of S1 S2, computed as the
    symmetric sqrt(S1) S2 sqrt(S1), so no complex sqrtm is needed."""
    def psd_sqrt(s):
        w, v = np.linalg.eigh((s + s.T) / 2)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    r = psd_sqrt(s1)
    m = r @ s2 @ r
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = np.sqrt(np.clip(ev, 0, None)).sum()
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


# ------------------------------------------------------------------------- training

def train(epochs=4, batch=128, lr=2e-3, seed=0, out=WEIGHTS):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(int(os.environ.get("EVALNET_THREADS", "1")))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    xtr, ytr = load_split("train")
    xte, yte = load_split("test")
    net = build_net()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = len(xtr) // batch
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    t0 = time.time()
    step = 0
    for ep in range(epochs):
        net.train()
        perm = rng.permutation(len(xtr))
        flips = rng.random(len(xtr)) < 0.5   # horizontal flips, as the score model's data
        run_loss, run_n = 0.0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            xb = xtr[idx].copy()
            f = flips[idx]
            xb[f] = xb[f][..., ::-1]
            xb = torch.from_numpy(xb)
            yb = torch.from_numpy(ytr[idx])
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            run_loss += loss.item()
            run_n += 1
            if step % 100 == 0:
                print(f"epoch {ep} step {step}/{total} loss {run_loss / run_n:.4f} "
                      f"{time.time() - t0:.0f} s", file=sys.stderr, flush=True)
                run_loss, run_n = 0.0, 0
        net.eval()
        acc = accuracy(net, xte, yte)
        print(f"epoch {ep}: test accuracy {acc * 100:.2f} %  ({time.time() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    wall = time.time() - t0
    acc = accuracy(net, xte, yte)
    meta = {"format": "scoresde-evalnet-1",
            "description": "independent Fashion-MNIST CNN for evaluation (clean data only), "
                           "tools/models/fashion_classifier.py",
            "input": "[N,1,32,32] in [0,1], 28x28 zero-padded by 2 pixels per side",
            "classes": json.dumps(CLASSES),
            "test_accuracy": f"{acc:.4f}",
            "train": json.dumps({"epochs": epochs, "batch": batch, "lr": lr, "seed": seed,
                                 "optimizer": "Adam, one-cycle", "augment": "horizontal flip",
                                 "threads": torch.get_num_threads(),
                                 "wall_seconds": round(wall, 1), "torch": torch.__version__})}
    sd = {}
    for k, v in net.state_dict().items():
        a = v.detach().numpy()
        sd[k] = a.astype(np.float32) if a.dtype != np.int64 else a
    save_safetensors(out, sd, meta)
    print(f"wrote {out}: test accuracy {acc * 100:.2f} %, {wall:.0f} s", file=sys.stderr)
    return acc


def accuracy(net, x, y):
    logits, _ = predict(net, x)
    return float((logits.argmax(1) == y).mean())


def main(argv):
    cmd = argv[1] if len(argv) > 1 else "test"
    if cmd == "train":
        epochs = int(argv[2]) if len(argv) > 2 else 4
        train(epochs=epochs)
    elif cmd == "test":
        import torch
        torch.set_num_threads(1)
        net, meta = load_net()
        x, y = load_split("test")
        logits, _ = predict(net, x)
        pred = logits.argmax(1)
        print(f"test accuracy {float((pred == y).mean()) * 100:.2f} % (stored {meta.get('test_accuracy')})")
        for k, name in enumerate(CLASSES):
            print(f"  {k} {name:12s} {float((pred[y == k] == k).mean()) * 100:.1f} %")
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

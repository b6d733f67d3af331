#!/usr/bin/python3
"""The independent Fashion-MNIST evaluation CNN (models/fashion-mnist-32-evalnet.safetensors)
and the Frechet distance of tools/models/eval_fashion_mnist.py on real data.

Checks, on the padded 32x32 test images exactly as the evaluation feeds them:
  * the shipped weights load and classify the first 1000 test images with >= 88 % accuracy;
  * its histogram of those 1000 is near uniform (every class 50..200 of 1000, the 2x bound
    the model evaluation applies to samples);
  * the feature Frechet distance ranks what it must: 1000 held-out real test images are
    close to the test set (FD < 1/4 of every corrupted set's), while 1000 images of only
    five classes, 1000 Gaussian-blurred images and 1000 noise images are far;
  * frechet_distance equals the scipy.linalg.sqrtm formula on random covariances, and the
    safetensors writer/reader round-trips.
Exit 77 (skip) without torch or the Debian dataset-fashion-mnist files.
"""
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "models"))

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)
import fashion_classifier as fc  # noqa: E402

if not os.path.exists(os.path.join(fc.DATA_DIR, "t10k-images-idx3-ubyte.gz")):
    print(f"skip: no Fashion-MNIST in {fc.DATA_DIR}")
    sys.exit(77)

failures = []


def check(ok, what):
    print(("ok     " if ok else "FAILED ") + what, flush=True)
    if not ok:
        failures.append(what)


t0 = time.time()
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
net, meta = fc.load_net()
x, y = fc.load_split("test")
check(x.shape == (10000, 1, 32, 32) and float(x[:, :, :2].max()) == 0.0 and float(x[:, :, :, -2:].max()) == 0.0,
      "test images padded to 32x32 with a 2-pixel zero border")

logits, feats = fc.predict(net, x)
pred = logits.argmax(1)
acc = float((pred[:1000] == y[:1000]).mean())
check(acc >= 0.88, f"accuracy on the first 1000 test images {acc * 100:.1f} % >= 88 %")
full = float((pred == y).mean())
check(abs(full - float(meta["test_accuracy"])) < 1e-3,
      f"full test accuracy {full * 100:.2f} % equals the stored {float(meta['test_accuracy']) * 100:.2f} %")
counts = np.bincount(pred[:1000], minlength=10)
check(counts.min() >= 50 and counts.max() <= 200, f"predicted histogram of 1000 test images {counts.tolist()} within [50, 200]")

mu, s = fc.feature_stats(feats)
rng = np.random.default_rng(1)
# reference = test images 1000..9999; the probes are the first 1000 (held out) and corruptions
mu_r, s_r = fc.feature_stats(feats[1000:])
fd_real = fc.frechet_distance(*fc.feature_stats(feats[:1000]), mu_r, s_r)
half = np.flatnonzero(y[1000:] < 5)[:1000] + 1000
fd_half = fc.frechet_distance(*fc.feature_stats(feats[half]), mu_r, s_r)
xb = torch.nn.functional.avg_pool2d(torch.from_numpy(x[:1000]), 3, 1, 1).numpy()
fd_blur = fc.frechet_distance(*fc.feature_stats(fc.predict(net, xb)[1]), mu_r, s_r)
noise = rng.random((1000, 1, 32, 32)).astype(np.float32)
fd_noise = fc.frechet_distance(*fc.feature_stats(fc.predict(net, noise)[1]), mu_r, s_r)
print(f"FD to test[1000:]: held-out real {fd_real:.3f}, classes 0-4 only {fd_half:.3f}, "
      f"3x3 blur {fd_blur:.3f}, uniform noise {fd_noise:.3f}")
check(fd_real < 0.25 * min(fd_half, fd_blur, fd_noise), "held-out real images are 4x closer than any corruption")
check(fd_half < fd_noise, "five-class mix is closer than noise")

# the formula against scipy's sqrtm
try:
    import scipy.linalg
    a = rng.standard_normal((40, 8)); b = rng.standard_normal((50, 8)) * 1.5 + 0.3
    m1, c1 = fc.feature_stats(a); m2, c2 = fc.feature_stats(b)
    ref = float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2))))
    got = fc.frechet_distance(m1, c1, m2, c2)
    check(abs(got - ref) < 1e-8 * max(1, abs(ref)), f"frechet_distance {got:.10f} equals the sqrtm formula {ref:.10f}")
    check(abs(fc.frechet_distance(m1, c1, m1, c1)) < 1e-9, "frechet_distance of a distribution to itself is 0")
except ImportError:
    print("scipy missing: sqrtm comparison skipped")

with tempfile.TemporaryDirectory() as d:
    p = os.path.join(d, "t.safetensors")
    t = {"a": rng.standard_normal((3, 5)).astype(np.float32), "n": np.array(7, np.int64)}
    fc.save_safetensors(p, t, {"k": "v"})
    back, m = fc.load_safetensors(p)
    check(all(np.array_equal(back[k], t[k]) and back[k].dtype == t[k].dtype for k in t) and m == {"k": "v"},
          "safetensors writer/reader round trip")

print(f"{time.time() - t0:.1f} s")
sys.exit(1 if failures else 0)

#!/usr/bin/python3
"""Builds the photo-32 data set (models/photo-32.md) from Debian's wallpaper packages.

    /usr/bin/python3 tools/models/make_photos.py [OUTDIR]      (default runs/photo-32/data)

Needs the Debian packages mate-backgrounds, plasma-workspace-wallpapers, python3-pil and
python3-numpy (`scripts/setup.sh train` installs them).

Photographs only. The 21 files of PHOTOS were chosen by looking at every image of
gnome-backgrounds 43.1-1, mate-backgrounds 1.26.0-1, plasma-workspace-wallpapers
4:5.27.5-2 and ukui-wallpapers 20.04.3-1.1 (Debian 12): gnome-backgrounds and
ukui-wallpapers hold only renders and illustrations, mate-backgrounds' abstract/ and
desktop/ folders too (Elephants.jpg is a painting), and of the photographs of
plasma-workspace-wallpapers two are monochrome (Grey, ColdRipple: R = G = B, no colour
to learn) and left out; its renders (Altai, Canopee, Flow, Honeywave, Volna, ...) and
paintings (Autumn, SafeLanding) too.

Split by source photograph: PHOTOS sorted by "package/name"; every fourth (positions 3,
7, 11, ...) is held out (5 of 21), the others are for training (16).

Training crops: each photo is first reduced so its short side is 512 px (Lanczos). Then
CROPS square crops, side s = exp(U(log 0.15, log 1)) times the short side (several
scales, from a 77-px detail to the full height), position uniform, each resized to 32x32
(Lanczos, Pillow's reducing_gap for an area-like prefilter). The random numbers come from
numpy's default_rng(crc32 of the photo's name), so each photo's crops do not depend on
the list. Horizontal flips are left to the trainer (`random_flip`, on by default).
Written as float32 [N,3,32,32] in [0,1], the layout `scoresde train --data X.npy` reads:
  train.npy         the training crops (16 photos x CROPS)
  heldout.npy       the same kind of crops of the 5 held-out photos (HELD_CROPS each)
  heldout256.npy    uint8 [M,256,256,3]: evaluation images of the held-out photos at
                    256x256: the centred full-height square and 3 random squares of
                    0.4..0.8 of the short side per photo (M = 20)
  photos.tsv        split, package, file, licence, author, size, crops
"""
import os
import sys
import zlib

import numpy as np
from PIL import Image

SIZE = 32
CROPS = 1200
HELD_CROPS = 200
PREP = 512
EVAL = 256

MATE = "/usr/share/backgrounds/mate/nature/"
PLASMA = "/usr/share/wallpapers/%s/contents/images/2560x1600.jpg"
MATE_LIC = "GPL-2+ (debian/copyright)"
PLASMA_LIC = "GPL-2+ (debian/copyright, Files: *); LGPLv3 (metadata.json)"
# (package, file, author as in debian/copyright or metadata.json)
PHOTOS = [
    ("mate-backgrounds", MATE + "Aqua.jpg", "Charles Barbin"),
    ("mate-backgrounds", MATE + "Blinds.jpg", "Lennart Poettering, Andrea Cimitan"),
    ("mate-backgrounds", MATE + "Dune.jpg", "Marco Cogoni, Hylke Bons"),
    ("mate-backgrounds", MATE + "FreshFlower.jpg", "Jens Ansorg"),
    ("mate-backgrounds", MATE + "Garden.jpg", "Charles Barbin"),
    ("mate-backgrounds", MATE + "GreenMeadow.jpg", "Timothy Schellhase, Lapo Calamandrei"),
    ("mate-backgrounds", MATE + "LadyBird.jpg", "Charles Barbin"),
    ("mate-backgrounds", MATE + "RainDrops.jpg", "\"blackcombwhistler07\""),
    ("mate-backgrounds", MATE + "Storm.jpg", "Sergey Nazarov"),
    ("mate-backgrounds", MATE + "TwoWings.jpg", "Charles Barbin, Hylke Bons"),
    ("mate-backgrounds", MATE + "Wood.jpg", "Jean-Francois Fortin Tam"),
    ("mate-backgrounds", MATE + "YellowFlower.jpg", "Charles Barbin"),
    ("plasma-workspace-wallpapers", PLASMA % "BytheWater", "Maciej Wiklo"),
    ("plasma-workspace-wallpapers", PLASMA % "ColorfulCups", "Dmitri Popov"),
    ("plasma-workspace-wallpapers", PLASMA % "DarkestHour", "Risto Saukonpaa"),
    ("plasma-workspace-wallpapers", PLASMA % "EveningGlow", "Ian Hex"),
    ("plasma-workspace-wallpapers", PLASMA % "FallenLeaf", "Martin Klapetek"),
    ("plasma-workspace-wallpapers", PLASMA % "Kite", "Risto Saukonpaa"),
    ("plasma-workspace-wallpapers", PLASMA % "OneStandsOut", "Risto Saukonpaa"),
    ("plasma-workspace-wallpapers", PLASMA % "Path", "Risto Saukonpaa"),
    ("plasma-workspace-wallpapers", PLASMA % "summer_1am", "Risto Saukonpaa"),
]


def name_of(path):
    return path.split("/")[4] if path.startswith("/usr/share/wallpapers/") else \
        os.path.splitext(os.path.basename(path))[0]


def key_of(pkg, path):
    return "%s/%s" % (pkg, name_of(path))


def split():
    """[(held_out, package, path, author)] in the sorted order."""
    rows = sorted(PHOTOS, key=lambda r: key_of(r[0], r[1]))
    return [(i % 4 == 3,) + r for i, r in enumerate(rows)]


def load(path, short=PREP):
    im = Image.open(path)
    im = im.convert("RGB")
    w, h = im.size
    k = short / min(w, h)
    return im.resize((round(w * k), round(h * k)), Image.LANCZOS, reducing_gap=3.0)


def crops(im, n, rng, lo=0.15, hi=1.0, size=SIZE):
    w, h = im.size
    m = min(w, h)
    out = []
    for _ in range(n):
        s = int(round(m * np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        s = max(size, min(s, m))
        x0 = int(rng.integers(0, w - s + 1))
        y0 = int(rng.integers(0, h - s + 1))
        c = im.crop((x0, y0, x0 + s, y0 + s)).resize((size, size), Image.LANCZOS,
                                                     reducing_gap=3.0)
        out.append(np.asarray(c, dtype=np.uint8))
    return out


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/photo-32/data"
    os.makedirs(out, exist_ok=True)
    train, held, held256, rows = [], [], [], []
    for h, pkg, path, author in split():
        name = name_of(path)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        full = Image.open(path)
        im = load(path)
        n = HELD_CROPS if h else CROPS
        c = crops(im, n, rng)
        (held if h else train).extend(c)
        if h:
            im2 = load(path, 2 * EVAL)     # short side 512 for the 256-px squares
            w, hh = im2.size
            m = min(w, hh)
            sq = [im2.crop(((w - m) // 2, (hh - m) // 2, (w - m) // 2 + m, (hh - m) // 2 + m))
                  .resize((EVAL, EVAL), Image.LANCZOS, reducing_gap=3.0)]
            sq += [Image.fromarray(a) for a in crops(im2, 3, rng, 0.4, 0.8, EVAL)]
            held256.extend(np.asarray(s, dtype=np.uint8) for s in sq)
        rows.append(("heldout" if h else "train", pkg, path,
                     MATE_LIC if pkg == "mate-backgrounds" else PLASMA_LIC, author,
                     "%dx%d" % full.size, n))
        print("%-8s %-28s %-22s %dx%d" % (rows[-1][0], pkg, name, *full.size), flush=True)
    f32 = lambda l: np.ascontiguousarray(np.stack(l).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
    np.save(os.path.join(out, "train.npy"), f32(train))
    np.save(os.path.join(out, "heldout.npy"), f32(held))
    np.save(os.path.join(out, "heldout256.npy"), np.ascontiguousarray(np.stack(held256)))
    with open(os.path.join(out, "photos.tsv"), "w") as f:
        f.write("split\tpackage\tfile\tlicence\tauthor\tsize\tcrops\n")
        for r in rows:
            f.write("\t".join(str(v) for v in r) + "\n")
    print("train %d crops of %d photos, held-out %d crops + %d 256-px images of %d photos -> %s"
          % (len(train), sum(r[0] == "train" for r in rows), len(held), len(held256),
             sum(r[0] == "heldout" for r in rows), out))


if __name__ == "__main__":
    main()

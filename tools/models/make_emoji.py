#!/usr/bin/python3
"""Builds the emoji-32 data set (models/emoji-32.md) from Debian's fonts-noto-color-emoji.

    /usr/bin/python3 tools/models/make_emoji.py [OUTDIR]      (default runs/emoji-32/data)

Needs the Debian packages fonts-noto-color-emoji, python3-fonttools, python3-pil and
python3-numpy. Every glyph of NotoColorEmoji.ttf's CBDT colour strike (a 136x128 PNG)
is composited on white, padded to a white square, resized to 32x32 (Lanczos, Pillow's
reducing_gap for an area-like prefilter) and written as float32 [N,3,32,32] in [0,1],
the layout `scoresde train --data X.npy` reads.

Dropped: blank glyphs (fewer than 2% of pixels away from white) and near-duplicates
(mean absolute RGB difference below 2/255 from a glyph already kept, at 32x32).

Split: glyphs are grouped by their Unicode sequence with skin-tone modifiers
(U+1F3FB..1F3FF), gender signs (U+2640, U+2642), ZWJ and VS-16 removed, so the
skin-tone and gender variants of one emoji are always on the same side. A group is
held out when crc32 of its key is 0 mod 10 (deterministic, about 10%). Writes
train.npy, heldout.npy and names.txt (split, glyph name, codepoints per row, in order).
"""
import io
import os
import sys
import zlib

import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
SIZE = 32
STRIP = set(range(0x1F3FB, 0x1F400)) | {0x2640, 0x2642, 0x200D, 0xFE0F}


def glyph_sequences(font):
    """glyph name -> tuple of code points (cmap for single glyphs, GSUB ligatures)."""
    seq = {}
    for cp, name in font.getBestCmap().items():
        seq.setdefault(name, (cp,))
    changed = True
    ligs = []
    if "GSUB" in font:
        for lookup in font["GSUB"].table.LookupList.Lookup:
            for sub in lookup.SubTable:
                if sub.LookupType == 7:   # extension
                    sub = sub.ExtSubTable
                if getattr(sub, "LookupType", None) != 4:
                    continue
                for first, entries in sub.ligatures.items():
                    for lig in entries:
                        ligs.append(([first] + list(lig.Component), lig.LigGlyph))
    while changed:   # ligature components may themselves be ligatures (rare)
        changed = False
        for comps, out in ligs:
            if out in seq or not all(c in seq for c in comps):
                continue
            seq[out] = tuple(cp for c in comps for cp in seq[c])
            changed = True
    return seq


def render(png):
    im = Image.open(io.BytesIO(png)).convert("RGBA")
    side = max(im.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
    rgb = canvas.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS, reducing_gap=3.0)
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/emoji-32/data"
    font = TTFont(FONT)
    strike = font["CBDT"].strikeData[0]
    seqs = glyph_sequences(font)
    order = font.getGlyphOrder()
    kept, names, keys = [], [], []
    blank = dup = 0
    for name in order:
        if name not in strike:
            continue
        g = strike[name]
        g.decompile()
        x = render(g.imageData)
        if (np.abs(x - 1.0).max(axis=0) > 0.05).mean() < 0.02:
            blank += 1
            continue
        if kept:
            d = np.abs(np.stack(kept) - x).mean(axis=(1, 2, 3))
            if d.min() < 2.0 / 255:
                dup += 1
                continue
        seq = seqs.get(name, ())
        key = " ".join("%X" % c for c in seq if c not in STRIP) or name
        kept.append(x)
        names.append((name, " ".join("%X" % c for c in seq)))
        keys.append(key)
    held = np.array([zlib.crc32(k.encode()) % 10 == 0 for k in keys])
    data = np.stack(kept)
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "train.npy"), np.ascontiguousarray(data[~held]))
    np.save(os.path.join(out, "heldout.npy"), np.ascontiguousarray(data[held]))
    with open(os.path.join(out, "names.txt"), "w") as f:
        for split in (False, True):
            for (name, cps), h in zip(names, held):
                if h == split:
                    f.write("%s\t%s\t%s\n" % ("heldout" if h else "train", name, cps))
    print("%d glyphs in the strike, %d blank, %d near-duplicates dropped; %d groups; "
          "train %d, held-out %d -> %s" % (len(strike), blank, dup, len(set(keys)),
                                           int((~held).sum()), int(held.sum()), out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes example inputs for the pipelines from the Fashion-MNIST test set: the first
two test images of every class (test_00..09: one per class in class order,
test_10..19: the second ones), 28x28 zero-padded to 32x32 exactly as the shipped model
was trained, as 8-bit grayscale PNGs.

Reads the Debian package dataset-fashion-mnist. Standard library only; deterministic.
Usage: make_fashion_examples.py OUTDIR
"""
import gzip
import os
import struct
import sys
import zlib

DATA = "/usr/share/datasets/fashion-mnist"
SIZE, PAD = 32, 2


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n = struct.unpack(">II", raw[:8])
    dims = [struct.unpack(">I", raw[8 + 4 * i:12 + 4 * i])[0] for i in range((magic & 0xFF) - 1)]
    return n, dims, raw[8 + 4 * len(dims):]


def write_gray_png(path, pixels):
    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(pixels[y * SIZE:(y + 1) * SIZE]) for y in range(SIZE))
    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
                chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    n, (h, w), images = read_idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))
    _, _, labels = read_idx(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"))
    taken = {}
    for i in range(n):
        k = labels[i]
        if taken.get(k, 0) >= 2:
            continue
        img = [0] * (SIZE * SIZE)
        for y in range(h):
            for x in range(w):
                img[(y + PAD) * SIZE + x + PAD] = images[i * h * w + y * w + x]
        index = k + 10 * taken.get(k, 0)
        write_gray_png(os.path.join(out, "test_%02d.png" % index), img)
        taken[k] = taken.get(k, 0) + 1
        if len(taken) == 10 and all(v == 2 for v in taken.values()):
            break


if __name__ == "__main__":
    main()

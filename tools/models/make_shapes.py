#!/usr/bin/env python3
"""Writes the `shapes32` data set: 64 RGB 32x32 PNG images of simple coloured shapes.

It is the data of the analytic test model models/shapes-32.json, the exact
score of these images noised by the SDE. Standard library only; deterministic.
Usage: make_shapes.py OUTDIR
"""
import math
import os
import random
import struct
import sys
import zlib

SIZE = 32
COUNT = 64


def write_png(path, rows):
    raw = b"".join(b"\x00" + bytes(row) for row in rows)

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def inside(kind, x, y, cx, cy, r, angle):
    dx, dy = x - cx, y - cy
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    if kind == "square":
        return abs(u) <= r * 0.85 and abs(v) <= r * 0.85
    if kind == "ring":
        d = math.hypot(dx, dy)
        return r * 0.55 <= d <= r
    # triangle pointing along the rotated v axis
    return v <= r * 0.6 and v >= -r and abs(u) <= (r * 0.6 - v) * 0.58


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(32)
    kinds = ["circle", "square", "triangle", "ring"]
    for i in range(COUNT):
        bg = [rng.randint(200, 255)] * 3
        kind = kinds[i % 4]
        colour = [rng.randint(20, 235) for _ in range(3)]
        cx, cy = rng.uniform(11, 21), rng.uniform(11, 21)
        r = rng.uniform(7, 11)
        angle = rng.uniform(0, math.pi)
        rows = []
        for y in range(SIZE):
            row = []
            for x in range(SIZE):
                # 4x4 supersampling for smooth edges
                hits = sum(inside(kind, x + (sx + 0.5) / 4, y + (sy + 0.5) / 4, cx, cy, r, angle)
                           for sx in range(4) for sy in range(4)) / 16.0
                row += [round(b + (c - b) * hits) for b, c in zip(bg, colour)]
            rows.append(row)
        write_png(os.path.join(out, "shape_%02d.png" % i), rows)


if __name__ == "__main__":
    main()

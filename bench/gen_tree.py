#!/usr/bin/env python3
"""Generate a deterministic mixed tree for benchmarks: incompressible binaries, text dumps,
and many small files. Usage: gen_tree.py DIR TOTAL_MIB"""
import os, random, sys

root, total_mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
total = total_mib * 1024 * 1024
os.makedirs(root, exist_ok=True)
words = [b"alpha", b"beta", b"gamma", b"insert", b"into", b"values", b"select", b"where", b"42", b"NULL"]
written, i = 0, 0
while written < total:
    kind = i % 10
    d = os.path.join(root, f"dir{i % 17}", f"sub{i % 5}")
    os.makedirs(d, exist_ok=True)
    if kind < 3:      # large incompressible (media, compressed archives)
        size = rng.randint(8, 48) * 1024 * 1024
        data = rng.randbytes(size)
    elif kind < 6:    # text dumps, compressible
        size = rng.randint(4, 32) * 1024 * 1024
        line_words = [b" ".join(rng.choice(words) for _ in range(8)) + b";\n" for _ in range(4096)]
        data = (b"".join(line_words) * (size // (len(b"".join(line_words))) + 1))[:size]
    else:             # a burst of small files
        for j in range(200):
            s = rng.randint(0, 64 * 1024)
            with open(os.path.join(d, f"small-{i}-{j}"), "wb") as f:
                f.write(rng.randbytes(s))
            written += s
        i += 1
        continue
    size = min(size, total - written)
    with open(os.path.join(d, f"file-{i}"), "wb") as f:
        f.write(data[:size])
    written += size
    i += 1
print(f"generated {written / 1048576:.0f} MiB in {root}")

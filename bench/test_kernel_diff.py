"""kernel_diff.py reads profile_step.py's per-step tables and refuses files without one."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernel_diff  # noqa: E402

TABLE = """# ours: per step

## kernels (per step)

| name | count | ms |
|---|---|---|
| `gemm` | 12 | 1.500 |
| `mul` | 4 | 0.250 |

## operators (per step)

| name | count | ms |
|---|---|---|
| `aten::mm` | 12 | 9.000 |
"""


class KernelDiff(unittest.TestCase):
    def write(self, text):
        f = tempfile.NamedTemporaryFile("w", suffix=".md", delete=False)
        f.write(text)
        f.close()
        self.addCleanup(os.unlink, f.name)
        return f.name

    def test_reads_the_kernel_table_only(self):
        k = kernel_diff.kernels(self.write(TABLE))
        self.assertEqual(k, {"gemm": (12.0, 1.5), "mul": (4.0, 0.25)})

    def test_a_file_without_a_kernel_table_is_refused_by_name(self):
        path = self.write("# nothing here\n")
        with self.assertRaises(SystemExit) as e:
            kernel_diff.kernels(path)
        self.assertIn(path, str(e.exception.code))


if __name__ == "__main__":
    unittest.main()

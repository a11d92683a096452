"""``python -m ecufl.bench_drift``: kernels trained turn by turn in one process, one line per round."""

from __future__ import annotations

import json
import subprocess
import sys


def test_one_line_per_round_with_every_kernel(mnist_dir):
    proc = subprocess.run([sys.executable, "-m", "ecufl.bench_drift", "--kernels", "numpy,c", "--samples", "500",
                           "--rounds", "2", "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [d["round"] for d in lines] == [0, 1]
    assert all(set(d["samples_per_cpu_second"]) == {"numpy", "c"} for d in lines)
    assert all(v > 0 for d in lines for v in d["samples_per_cpu_second"].values())

"""The GPU benchmark's code path, on CPU (no timing is asserted; GPU figures come from a GPU run)."""

import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

SCRIPT = str(REPO_ROOT / "benchmarks" / "gpu_throughput.py")


def test_smoke_run_on_cpu_trains_and_reports():
    result = subprocess.run([sys.executable, SCRIPT, "--smoke"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "256               sdpa" in result.stdout and "failed" not in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_gpu_nothing_is_measured():
    result = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "No CUDA device: nothing measured" in result.stdout

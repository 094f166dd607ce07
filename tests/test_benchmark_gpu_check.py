"""scripts/gpu_check.sh, the first thing a session lent a GPU runs, exercised on CPU at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_cpu_quick(tmp_path: Path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    cmd = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--quick", "--out-dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "== pytest -m cuda" in done.stdout and "== benchmark" in done.stdout
    (json_file,) = tmp_path.glob("cpu-*.json")
    report = json.loads(json_file.read_text())
    assert report["meta"]["note"].startswith("pytest -m cuda (exit 0): ")
    assert "skipped" in report["meta"]["note"]  # no CUDA device here: the CUDA tests are collected and skipped
    rows = {(r["cell"], r["B"], r["backend"]) for r in report["timings"]}
    assert {("lstm", 4, "script"), ("ln_lstm", 4, "eager"), ("gru", 1, "torch.nn")} <= rows
    assert report["parity"] and all(c["pass"] for c in report["parity"])
    assert "Note: pytest -m cuda" in json_file.with_suffix(".md").read_text()


def test_gpu_check_rejects_unknown_arguments():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "tpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "--device: expected cpu or cuda, got 'tpu'" in done.stderr

"""The adding-problem script end to end, at a length where it runs in a minute."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "adding_problem.py"


@pytest.mark.slow
def test_adding_problem_short_run_writes_report(tmp_path):
    spec = importlib.util.spec_from_file_location("adding_problem", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "ADDING.md"
    args = "--seq-len 20 --steps 600 --val-every 100 --cells gru --lr 1e-2 --num-train 4000"
    results = module.main([*args.split(), "--out", str(out)])
    assert results["gru"]["test_mse"] < 0.05
    text = out.read_text()
    assert "python scripts/adding_problem.py --seq-len 20" in text and "| gru |" in text

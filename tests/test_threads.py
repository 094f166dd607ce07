"""CPU threads of the entry points: the wait policy reaches libgomp before torch loads; the user's choice wins."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cpu_threads", REPO / "scripts" / "cpu_threads.py")
assert _spec is not None and _spec.loader is not None
cpu_threads = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpu_threads)

QUIET = ["extras.print_config=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def torch_default_threads() -> int:
    """Torch's intra-op thread count in a fresh process with no thread settings in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)



@pytest.fixture
def one_thread_after() -> Iterator[None]:
    yield
    torch.set_num_threads(1)  # what conftest set for the whole session


def test_automatic_environment_is_passive_waiting() -> None:
    environ: dict[str, str] = {"PATH": "/bin"}
    with pytest.warns(UserWarning, match="after torch was imported"):  # this process has torch already
        cpu_threads.prepare_environment(environ)
    assert environ == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}  # the count stays torch's default


@pytest.mark.parametrize(
    ("user", "added"),
    [
        ({"OMP_NUM_THREADS": "4"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
        ({"MKL_NUM_THREADS": "3"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, {}),
        ({"GOMP_SPINCOUNT": "1000"}, {}),  # libgomp's own knob: no policy on top
        ({"KMP_BLOCKTIME": "0"}, {}),  # Intel OpenMP's
        ({"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "active"}, {}),
    ],
)
def test_user_environment_wins(user: dict[str, str], added: dict[str, str]) -> None:
    environ = dict(user)
    with pytest.warns(UserWarning):
        cpu_threads.prepare_environment(environ)
    assert environ == {**user, **added}


def test_module_imports_without_torch() -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('cpu_threads', {str(REPO / 'scripts' / 'cpu_threads.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_set_threads_applies_and_reports(one_thread_after: None) -> None:
    line = cpu_threads.set_threads(2, {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})
    assert torch.get_num_threads() == 2
    assert line == "CPU threads: 2 intra-op (threads=2); OMP_WAIT_POLICY=PASSIVE"
    line = cpu_threads.set_threads(None, {"MKL_NUM_THREADS": "5"})
    assert torch.get_num_threads() == 2  # None keeps what is in effect
    assert line == "CPU threads: 2 intra-op (MKL_NUM_THREADS=5); no wait policy set"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_set_threads_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match=r"threads: expected a positive integer or null.*got"):
        cpu_threads.set_threads(bad)  # type: ignore[arg-type]


def run_train(tmp_path: Path, env: dict[str, str], *overrides: str) -> tuple[str, str]:
    """``scripts/train.py`` on a tiny experiment with ``env`` as the only thread settings; (libgomp, run log)."""
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    clean.update(PYTHONPATH=python_path, SEQFORGE_LOG_DIR=str(tmp_path / "logs"), OMP_DISPLAY_ENV="VERBOSE", **env)
    args = [sys.executable, str(REPO / "scripts" / "train.py"), "+experiment=parity_gru", "debug=fdr", *QUIET]
    result = subprocess.run([*args, *overrides], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (log_file,) = (tmp_path / "logs" / "parity_gru" / "runs").glob("*/parity_gru.log")
    return result.stdout + result.stderr, log_file.read_text()


@pytest.mark.parametrize(
    ("env", "overrides", "libgomp", "logged"),
    [
        ({}, (), ("GOMP_SPINCOUNT = '0'",),  # PASSIVE; libgomp's unset default spins 300000 times
         "CPU threads: {default} intra-op (torch's default); OMP_WAIT_POLICY=PASSIVE"),
        # the user's environment reaches libgomp unchanged; the threads key sets torch's count over it
        ({"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"}, ("threads=3",),
         ("OMP_NUM_THREADS = '2'", "OMP_WAIT_POLICY = 'ACTIVE'"),
         "CPU threads: 3 intra-op (threads=3); OMP_WAIT_POLICY=ACTIVE"),
    ],
    ids=["automatic", "user-environment-and-threads-key"],
)  # fmt: skip
def test_train_script_applies_and_logs_thread_settings(
    tmp_path: Path, env: dict[str, str], overrides: tuple[str, ...], libgomp: tuple[str, ...], logged: str
) -> None:
    output, log = run_train(tmp_path, env, *overrides)
    for setting in libgomp:  # what libgomp read when torch loaded it (OMP_DISPLAY_ENV prints its settings)
        assert setting in output, output[-3000:]
    assert logged.format(default=torch_default_threads()) in log

"""CPU threads of the entry points: the OpenMP wait policy before torch loads, the intra-op count after.

OpenMP threads that spin while they wait slow down every other process on the same cores, and are slowed
down by them: on a loaded 2-core machine the README's main job took 284 s with torch's defaults (two
threads, libgomp's default spinning) and 23 s with ``OMP_WAIT_POLICY=PASSIVE``, with which two threads were
faster than one in 3 of 4 rounds (``benchmarks/THREADS.md``). So the automatic choice is the passive wait policy and
torch's own thread count (one per physical core).

libgomp reads its environment once, when torch loads it, so each script calls :func:`prepare_environment`
before anything imports torch. This module imports only the standard library and lives beside the
scripts because importing any ``seqforge`` module imports torch. Once Hydra has composed the config,
:func:`set_threads` applies its ``threads`` key.

What wins: ``threads=N`` over the user's environment (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` for the
count; ``OMP_WAIT_POLICY``/``GOMP_SPINCOUNT``/``KMP_BLOCKTIME`` for waiting) over the automatic choice.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Mapping, MutableMapping

COUNT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch's intra-op default reads these
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # libgomp, libgomp, Intel OpenMP

log = logging.getLogger(__name__)


def prepare_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless ``environ`` already chose how OpenMP threads wait.

    Call it before the first ``import torch`` of the process: later, libgomp has read its settings.
    """
    if "torch" in sys.modules:
        warnings.warn(
            "prepare_environment() was called after torch was imported: the OpenMP wait policy can no longer "
            "change; call it at the top of the script",
            stacklevel=2,
        )
    if not any(name in environ for name in WAIT_VARIABLES):
        environ["OMP_WAIT_POLICY"] = "PASSIVE"


def set_threads(threads: int | None, environ: Mapping[str, str] = os.environ) -> str:
    """Use ``threads`` intra-op CPU threads (``None``: keep what the environment chose); log what is used.

    Returns:
        The logged line, e.g. ``"CPU threads: 2 intra-op (torch's default); OMP_WAIT_POLICY=PASSIVE"``.

    Raises:
        ValueError: ``threads`` is not a positive integer or ``None``.
    """
    import torch  # here, not at the top: the module must stay importable before torch

    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected a positive integer or null (automatic), got {threads!r}")
        torch.set_num_threads(threads)
        source = f"threads={threads}"
    else:
        chosen = [f"{name}={environ[name]}" for name in COUNT_VARIABLES if name in environ]
        source = ", ".join(chosen) or "torch's default"
    waiting = [f"{name}={environ[name]}" for name in WAIT_VARIABLES if name in environ]
    line = f"CPU threads: {torch.get_num_threads()} intra-op ({source}); {', '.join(waiting) or 'no wait policy set'}"
    log.info(line)
    return line

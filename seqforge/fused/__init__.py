"""Fused recurrent backends: TorchScript loops with a hand-written backward, ``torch.compile``, torch's
native/cuDNN kernels, and ``auto``; plus CUDA-graph capture and a fusion report.

Importing this package registers ``"script"``, ``"compile"``, ``"cudnn"`` (also as ``"native"``, its name on
CPU) and ``"auto"`` in
:mod:`seqforge.fused.registry` (the eager backend is registered by :mod:`seqforge.layers.recurrent`).
"""

from seqforge.fused.backends import AUTO, COMPILE, CUDNN, NATIVE, SCRIPT, choose_backend
from seqforge.fused.export import export_torchscript
from seqforge.fused.fusion import fusion_groups
from seqforge.fused.registry import Backend, available_backends, get_backend, register_backend

for _backend in (SCRIPT, COMPILE, CUDNN, NATIVE, AUTO):
    register_backend(_backend)

__all__ = [
    "Backend",
    "available_backends",
    "choose_backend",
    "export_torchscript",
    "fusion_groups",
    "get_backend",
    "register_backend",
]

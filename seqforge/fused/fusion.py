"""Find the fusion groups TorchScript made of the fused loops after warm-up.

The profiling executor optimizes a scripted function during its first calls; afterwards
``torch.jit.last_executed_optimized_graph()`` returns the graph that actually ran. Fusion shows as
``prim::TensorExprGroup`` (NNC), ``prim::FusionGroup`` (legacy fuser) or ``prim::CudaFusionGroup`` (nvFuser)
nodes, usually inside the loop body. On CPU the TensorExpr fuser is off by default, so none may appear there.
"""

from __future__ import annotations

from typing import Any

import torch

from seqforge.fused.function import scripted

FUSION_KINDS = ("prim::TensorExprGroup", "prim::FusionGroup", "prim::CudaFusionGroup")
WARMUP_CALLS = 3


def fusion_groups(graph: torch.Graph) -> dict[str, int]:
    """Count the fusion-group nodes of each kind in ``graph``, descending into loop and if blocks."""
    counts = dict.fromkeys(FUSION_KINDS, 0)
    pending = list(graph.nodes())
    while pending:
        node = pending.pop()
        if node.kind() in counts:
            counts[node.kind()] += 1
        for block in node.blocks():
            pending.extend(block.nodes())
    return counts


def loop_fusion_report(mode: str, batch: int, hidden: int, steps: int, device: str | torch.device,
                       dtype: torch.dtype = torch.float32, layer_norm: bool = False) -> dict[str, Any]:  # fmt: skip
    """Warm up the scripted forward and backward loops of ``mode`` and report their fusion groups.

    Returns ``{"forward": {kind: count}, "backward": {kind: count}, "fused": bool}``.
    """
    gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype).to(device)

    gi, h0, c0 = rand(steps, batch, gates * hidden), rand(batch, hidden), rand(batch, hidden)
    w_hh, b_hh = rand(gates * hidden, hidden), rand(gates * hidden)
    ln_g = (rand(gates * hidden), rand(gates * hidden)) if layer_norm else (None, None)
    ln_c = (rand(hidden), rand(hidden)) if layer_norm and mode == "LSTM" else (None, None)
    if mode == "LSTM":
        fwd_name, fwd_args = "lstm_forward", (gi, h0, c0, w_hh, b_hh, *ln_g, *ln_c, None, None, True)
    elif mode == "GRU":
        fwd_name, fwd_args = "gru_forward", (gi, h0, w_hh, b_hh, *ln_g, None, True)
    else:
        fwd_name, fwd_args = "rnn_forward", (gi, h0, w_hh, b_hh, *ln_g, mode == "RNN_RELU", None, True)
    bwd_args: tuple[Any, ...]
    with torch.no_grad():
        for _ in range(WARMUP_CALLS):
            out = scripted(fwd_name)(*fwd_args)
        forward = fusion_groups(torch.jit.last_executed_optimized_graph())
        h_all, c_all, saved, tanh_c, raw, mean, rstd, mean_c, rstd_c = out
        dh = torch.ones_like(h_all)
        ln_hh = (ln_g[0], raw, mean, rstd)
        if mode == "LSTM":
            bwd_name = "lstm_backward"
            bwd_args = (dh, dh, c0, c_all, saved, tanh_c, w_hh, None, *ln_hh, ln_c[0], mean_c, rstd_c, None)
        elif mode == "GRU":
            bwd_name, bwd_args = "gru_backward", (dh, h0, h_all, saved, w_hh, None, *ln_hh)
        else:
            bwd_name, bwd_args = "rnn_backward", (dh, h_all, w_hh, None, *ln_hh, mode == "RNN_RELU")
        for _ in range(WARMUP_CALLS):
            scripted(bwd_name)(*bwd_args)
        backward = fusion_groups(torch.jit.last_executed_optimized_graph())
    fused = any(forward.values()) and any(backward.values())
    return {"forward": forward, "backward": backward, "fused": fused}

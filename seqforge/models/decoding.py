"""Autoregressive token decoding shared by every generating model: samplers and a batched beam search.

A model plugs in through two functions over its decoding *state* (any structure of tensors it likes):

- ``step(tokens, state) -> (logits, state)``: ``tokens`` ``(N,)`` int64 are the previous tokens, ``logits``
  ``(N, V)`` score the next token;
- ``reorder(state, index) -> state``: keep rows ``index`` ``(N',)`` of the batch (used to repeat each
  sentence ``beam_size`` times and to follow the surviving beams).

:func:`sample_decode` runs greedy / temperature / top-k / top-p decoding, :func:`beam_search` runs beam
search for all sentences and all beams as one ``(B * K, ...)`` batch (no Python loop over sentences).
Both return tokens after the start token, with the end token included and ``pad_id`` after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

StepFn = Callable[[Tensor, Any], tuple[Tensor, Any]]
ReorderFn = Callable[[Any, Tensor], Any]


def check_stop(owner: str, eos_id: int | None, max_len: int | None) -> int:
    """The number of steps to run at most; decoding must have an end token or a maximum length."""
    if max_len is None:
        if eos_id is None:
            raise ValueError(
                f"{owner}: decoding needs an end token (eos_id) or a maximum length (max_len); got neither"
            )
        raise ValueError(f"{owner}: max_len is required (a bound on the steps even when eos_id={eos_id} is set)")
    if max_len < 1:
        raise ValueError(f"{owner}: max_len must be >= 1, got {max_len}")
    return max_len


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set logits outside the top-k tokens and outside the top-p nucleus to ``-inf``. ``logits``: ``(N, V)``.

    The nucleus is the smallest set of most likely tokens whose probability reaches ``top_p`` (the most
    likely token is always kept).
    """
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"filter_logits: top_k must be >= 1, got {top_k}")
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"filter_logits: top_p must be in (0, 1], got {top_p}")
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(
    logits: Tensor,
    strategy: str = "greedy",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick the next token ``(N,)`` from ``logits (N, V)``: ``"greedy"`` (argmax) or ``"sample"``."""
    if strategy == "greedy":
        return logits.argmax(dim=-1)
    if strategy != "sample":
        raise ValueError(f"next_token: strategy must be 'greedy' or 'sample', got {strategy!r}")
    if temperature <= 0:
        raise ValueError(f"next_token: temperature must be > 0, got {temperature}")
    probs = torch.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample_decode(
    step: StepFn,
    state: Any,
    start: Tensor,
    max_len: int | None,
    eos_id: int | None = None,
    pad_id: int = 0,
    strategy: str = "greedy",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Decode one token at a time from ``start`` ``(B,)`` (the start tokens).

    Returns:
        ``(tokens, lengths)``: ``tokens`` ``(B, L)`` with ``L <= max_len``, the end token included and
        ``pad_id`` after it; ``lengths`` ``(B,)`` counts tokens up to and including the end token.
    """
    max_len = check_stop("sample_decode", eos_id, max_len)
    tokens = start
    finished = torch.zeros_like(start, dtype=torch.bool)
    lengths = torch.zeros_like(start)
    out = []
    for _ in range(max_len):
        logits, state = step(tokens, state)
        tokens = next_token(logits, strategy, temperature, top_k, top_p, generator)
        tokens = tokens.masked_fill(finished, pad_id)
        lengths += (~finished).long()
        out.append(tokens)
        if eos_id is not None:
            finished |= tokens == eos_id
            if bool(finished.all()):
                break
    return torch.stack(out, dim=1), lengths


@torch.no_grad()
def beam_search(
    step: StepFn,
    reorder: ReorderFn,
    state: Any,
    start: Tensor,
    beam_size: int,
    max_len: int | None,
    eos_id: int | None,
    pad_id: int = 0,
    length_penalty: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Beam search over a batch: every sentence and beam advance together as rows of one tensor.

    Args:
        step, reorder: the model's decoding functions (module docstring); ``state`` has batch ``B``.
        start: ``(B,)`` start tokens.
        beam_size: ``K`` hypotheses kept per sentence.
        length_penalty: ``alpha``; finished hypotheses are ranked by ``log p / length ** alpha``
            (``0`` ranks by raw log-probability, larger values favour longer outputs).

    Returns:
        ``(tokens, lengths, scores)`` best first: ``tokens`` ``(B, K, L)`` (end token included, then
        ``pad_id``), ``lengths`` ``(B, K)``, ``scores`` ``(B, K)`` the length-normalised log-probabilities.
    """
    max_len = check_stop("beam_search", eos_id, max_len)
    if beam_size < 1:
        raise ValueError(f"beam_search: beam_size must be >= 1, got {beam_size}")
    B, K, device = start.shape[0], beam_size, start.device
    state = reorder(state, torch.arange(B, device=device).repeat_interleave(K))
    tokens = start.repeat_interleave(K)  # (B*K,)
    # only the first beam of each sentence is alive at the start, so the K beams do not duplicate it
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, K, dtype=torch.long, device=device)
    history = torch.empty(B, K, 0, dtype=torch.long, device=device)
    offsets = (torch.arange(B, device=device) * K).unsqueeze(1)  # (B, 1)
    for _ in range(max_len):
        logits, state = step(tokens, state)
        log_probs = torch.log_softmax(logits.float(), dim=-1).view(B, K, -1)  # (B, K, V)
        V = log_probs.shape[-1]
        # a finished beam can only continue with pad at no cost, keeping its score
        frozen = torch.full_like(log_probs, float("-inf"))
        frozen[..., pad_id] = 0.0
        log_probs = torch.where(finished.unsqueeze(-1), frozen, log_probs)
        candidates = (scores.unsqueeze(-1) + log_probs).view(B, K * V)
        scores, flat = candidates.topk(K, dim=-1)  # (B, K)
        beam, tokens_bk = flat // V, flat % V
        history = torch.cat([history.gather(1, beam.unsqueeze(-1).expand_as(history)), tokens_bk.unsqueeze(-1)], -1)
        was_finished = finished.gather(1, beam)
        lengths = lengths.gather(1, beam) + (~was_finished).long()
        finished = was_finished | (tokens_bk == eos_id if eos_id is not None else torch.zeros_like(was_finished))
        state = reorder(state, (offsets + beam).view(-1))
        tokens = tokens_bk.view(-1)
        if bool(finished.all()):
            break
    normalised = scores / lengths.clamp(min=1).float() ** length_penalty
    normalised, order = normalised.sort(dim=-1, descending=True)
    history = history.gather(1, order.unsqueeze(-1).expand_as(history))
    return history, lengths.gather(1, order), normalised


def select_rows(x: Any, index: Tensor, dim: int = 0) -> Any:
    """``index_select`` along ``dim`` on a tensor or every tensor of a (nested) tuple/list; ``None`` passes."""
    if x is None:
        return None
    if isinstance(x, Tensor):
        return x.index_select(dim, index)
    return type(x)(select_rows(item, index, dim) for item in x)

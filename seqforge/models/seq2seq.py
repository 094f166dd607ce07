"""Sequence-to-sequence with attention: bidirectional encoder, attentional decoder with input feeding.

Encoder: source embedding -> (bi)directional recurrent stack -> memory ``(B, S, H)`` (a linear map of the
outputs) and a summary that a learned bridge turns into the decoder's initial state.

Decoder step ``t`` (Luong et al. 2015 with Bahdanau-style choices of score)::

    x_t  = [embed(y_{t-1}); h~_{t-1}]                 # input feeding (zeros at t = 0)
    o_t  = rnn(x_t, state_{t-1})                      # (B, H)
    c_t, a_t = attention(o_t, memory, source mask)    # context (B, H), weights (B, S)
    h~_t = tanh(W_c [o_t; c_t])                       # attentional vector
    p(y_t) = softmax(W_out h~_t)

With ``attention="none"`` the decoder is a plain conditional language model: ``h~_t = o_t``, no feeding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from seqforge.layers.attention import ATTENTION_KINDS, length_mask, make_attention
from seqforge.layers.spec import RecurrentSpec, SpecLike
from seqforge.models.common import SequenceEncoder, StateBridge, check_token_ids, decoder_step, sequence_masks
from seqforge.models.decoding import beam_search, sample_decode, select_rows


class Seq2Seq(nn.Module):
    """Encoder-decoder over token ids with attention, teacher forcing, greedy and batched beam search.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes; ``pad_id``/``bos_id``/``eos_id`` special ids.
        attention: ``"additive" | "dot" | "general" | "multihead" | "none"``.
        bridge: ``"linear"`` (learned map from the encoder's final state) or ``"zero"`` initial state.
        rnn: one :class:`~seqforge.layers.spec.RecurrentSpec` (or a mapping of its keys) for the encoder and
            the decoder; its ``bidirectional`` (default ``True`` here) is the encoder's, the decoder reads left
            to right.

    ``forward(src, src_lengths, tgt_in, teacher_forcing_ratio=1.0)`` returns ``(logits, attn)``:
    ``logits`` ``(B, T, tgt_vocab_size)``, ``attn`` ``(B, T, S)`` (``None`` without attention).

    Example::

        >>> import torch
        >>> from seqforge.models import Seq2Seq
        >>> net = Seq2Seq(12, 12, rnn={"hidden_size": 16}, embedding_dim=8)
        >>> src, lens = torch.randint(4, 12, (3, 5)), torch.tensor([5, 4, 2])
        >>> tokens, lengths = net.generate(src, lens, beam_size=3, max_len=7)
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
        embedding_dim: int = 64,
        rnn: SpecLike = None,
        attention: str = "additive",
        num_heads: int = 4,
        bridge: str = "linear",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if attention not in (*ATTENTION_KINDS, "none"):
            raise ValueError(f"{name}: attention must be one of {(*ATTENTION_KINDS, 'none')}, got {attention!r}")
        if bridge not in ("linear", "zero"):
            raise ValueError(f"{name}: bridge must be 'linear' or 'zero', got {bridge!r}")
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        spec = RecurrentSpec.of(name, rnn, bidirectional=True)
        hidden_size = spec.hidden_size
        self.hidden_size, self.num_layers = hidden_size, spec.num_layers
        self.attention_kind = attention
        self.encoder = SequenceEncoder(None, src_vocab_size, embedding_dim, spec, pad_id, owner=name)
        enc_size = self.encoder.output_size
        feeding = attention != "none"
        decoder = spec.build(embedding_dim + (hidden_size if feeding else 0), bidirectional=False, owner=name)
        self.bridge = StateBridge(enc_size, decoder) if bridge == "linear" else None  # (registration order kept)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, embedding_dim, padding_idx=pad_id)
        self.decoder = decoder
        if feeding:
            self.memory_proj = nn.Linear(enc_size, hidden_size)
            self.attention = make_attention(attention, hidden_size, hidden_size, num_heads=num_heads)
            self.combine = nn.Linear(2 * hidden_size, hidden_size)
        self.dropout = nn.Dropout(spec.dropout)
        self.out = nn.Linear(hidden_size, tgt_vocab_size)

    # --- encoding -----------------------------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor) -> dict[str, Any]:
        """Run the encoder; return the decoder's initial state (a dict of tensors, batch ``B``)."""
        memory, enc_state = self.encoder(src, src_lengths)  # (B, S, D*H)
        B = src.shape[0]
        if self.bridge is not None:
            hidden = self.bridge(self.encoder.summary(enc_state))
        else:
            hidden = self.decoder.init_state(B, memory.device, memory.dtype)
        state: dict[str, Any] = {"hidden": hidden, "attn": None, "masks": sequence_masks(self.decoder, B)}
        if self.attention_kind != "none":
            keys, values = self.attention.project_memory(self.memory_proj(memory))  # once per source
            state.update(
                keys=keys,  # (B, S, H') as the attention projected them
                values=values,  # (B, S, H)
                mask=length_mask(src_lengths.to(src.device), src.shape[1]),  # (B, S)
                feed=memory.new_zeros(B, self.hidden_size),
            )
        return state

    # --- one decoder step -----------------------------------------------------------------------------------
    def decode_step(self, tokens: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """``tokens`` ``(B,)`` previous target ids -> ``(logits (B, V), new state)``; ``state["attn"]`` ``(B, S)``."""
        x = self.dropout(self.tgt_embedding(tokens))  # (B, E)
        if self.attention_kind != "none":
            x = torch.cat([x, state["feed"]], dim=-1)
        out, hidden = decoder_step(self.decoder, x, state["hidden"], state.get("masks"))  # (B, H)
        new = dict(state, hidden=hidden)
        if self.attention_kind != "none":
            context, weights = self.attention(out, new["keys"], new["values"], new["mask"], projected=True)
            out = torch.tanh(self.combine(torch.cat([out, context], dim=-1)))
            new.update(feed=out, attn=weights)
        return self.out(self.dropout(out)), new

    @staticmethod
    def reorder_state(state: dict[str, Any], index: Tensor) -> dict[str, Any]:
        """Keep batch rows ``index`` of every tensor in ``state`` (hidden states have batch on dim 1)."""
        return {key: select_rows(value, index, dim=1 if key == "hidden" else 0) for key, value in state.items()}

    # --- training -------------------------------------------------------------------------------------------
    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, teacher_forcing_ratio: float = 1.0
    ) -> tuple[Tensor, Tensor | None]:
        """Decode ``tgt_in`` ``(B, T)`` (starting with BOS) given the source.

        With ``teacher_forcing_ratio < 1`` each sentence feeds its own greedy prediction instead of the
        gold token with probability ``1 - ratio`` at every step after the first (scheduled sampling).
        """
        name = type(self).__name__
        if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"{name}: tgt_in must be (B, T) with B={src.shape[0]}, got {tuple(tgt_in.shape)}")
        check_token_ids(name, "tgt_in", tgt_in, self.tgt_vocab_size)
        state = self.encode(src, src_lengths)
        logits: list[Tensor] = []
        attn: list[Any] = []  # (B, S) weights per step, or None without attention
        tokens = tgt_in[:, 0]
        for t in range(tgt_in.shape[1]):
            if t > 0:
                tokens = tgt_in[:, t]
                if teacher_forcing_ratio < 1.0:
                    own = torch.rand(tokens.shape, device=tokens.device) >= teacher_forcing_ratio
                    tokens = torch.where(own, logits[-1].argmax(-1), tokens)
            step_logits, state = self.decode_step(tokens, state)
            logits.append(step_logits)
            attn.append(state["attn"])
        return torch.stack(logits, 1), (torch.stack(attn, 1) if attn[0] is not None else None)

    # --- inference ------------------------------------------------------------------------------------------
    def _start(self, src: Tensor, src_lengths: Tensor, max_len: int | None) -> tuple[dict[str, Any], Tensor, int]:
        state = self.encode(src, src_lengths)
        start = torch.full((src.shape[0],), self.bos_id, dtype=torch.long, device=src.device)
        return state, start, (2 * src.shape[1] + 10 if max_len is None else max_len)

    @torch.no_grad()
    def greedy(self, src: Tensor, src_lengths: Tensor, max_len: int | None = None) -> tuple[Tensor, Tensor]:
        """Greedy decoding -> ``(tokens (B, L), lengths (B,))``, EOS included; ``max_len`` defaults to ``2S + 10``."""
        state, start, max_len = self._start(src, src_lengths, max_len)
        return sample_decode(self.decode_step, state, start, max_len, self.eos_id, self.pad_id)

    @torch.no_grad()
    def beam_search(
        self,
        src: Tensor,
        src_lengths: Tensor,
        beam_size: int = 4,
        max_len: int | None = None,
        length_penalty: float = 0.0,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Batched beam search -> ``(tokens (B, K, L), lengths (B, K), scores (B, K))``, best beam first."""
        state, start, max_len = self._start(src, src_lengths, max_len)
        return beam_search(
            self.decode_step, self.reorder_state, state, start, beam_size, max_len, self.eos_id, self.pad_id,
            length_penalty,
        )  # fmt: skip

    @torch.no_grad()
    def generate(
        self,
        src: Tensor,
        src_lengths: Tensor,
        beam_size: int = 1,
        max_len: int | None = None,
        length_penalty: float = 0.0,
    ) -> tuple[Tensor, Tensor]:
        """Best output per sentence: greedy when ``beam_size == 1``, else the top beam. ``(B, L)``, ``(B,)``."""
        if beam_size == 1:
            return self.greedy(src, src_lengths, max_len)
        tokens, lengths, _ = self.beam_search(src, src_lengths, beam_size, max_len, length_penalty)
        return tokens[:, 0], lengths[:, 0]

"""Attention modules: masking, normalisation, and parity with torch's own attention in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqforge.layers.attention import (
    AdditiveAttention,
    DotAttention,
    GeneralAttention,
    MultiHeadAttention,
    length_mask,
    make_attention,
)

KINDS = ["additive", "dot", "general", "multihead"]
B, S, H = 3, 6, 8


def _inputs(tq: int | None = None):
    torch.manual_seed(0)
    query = torch.randn(B, H) if tq is None else torch.randn(B, tq, H)
    keys = torch.randn(B, S, H)
    lengths = torch.tensor([6, 3, 1])
    return query, keys, lengths, length_mask(lengths, S)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tq", [None, 4])
def test_weights_sum_to_one_and_are_zero_on_padding(kind, tq):
    attn = make_attention(kind, H, H, num_heads=2)
    query, keys, lengths, mask = _inputs(tq)
    context, weights = attn(query, keys, mask=mask)
    expected_w = (B, S) if tq is None else (B, tq, S)
    assert weights.shape == expected_w
    assert context.shape == ((B, H) if tq is None else (B, tq, H))
    pad = ~mask if tq is None else (~mask).unsqueeze(1).expand(-1, tq, -1)
    assert torch.all(weights[pad] == 0.0)  # exactly zero, not just small
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


@pytest.mark.parametrize("kind", KINDS)
def test_padding_content_does_not_change_the_result(kind):
    attn = make_attention(kind, H, H, num_heads=2)
    query, keys, lengths, mask = _inputs()
    noisy = keys.clone()
    noisy[~mask] = 1e3 * torch.randn(int((~mask).sum()), H)
    c1, w1 = attn(query, keys, mask=mask)
    c2, w2 = attn(query, noisy, mask=mask)
    torch.testing.assert_close(c1, c2)
    torch.testing.assert_close(w1, w2)


@pytest.mark.parametrize("kind", KINDS)
def test_row_without_valid_keys_gives_zeros_not_nan(kind):
    attn = make_attention(kind, H, H, num_heads=2)
    query, keys, _, mask = _inputs()
    mask[1] = False
    context, weights = attn(query, keys, mask=mask)
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    assert torch.all(weights[1] == 0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("separate_values", [False, True])
def test_projected_memory_gives_the_same_result_and_gradients(kind, separate_values):
    """``project_memory`` once + ``projected=True`` per step equals the plain call, forward and backward."""
    query, keys, _, mask = _inputs(tq=2)
    values = torch.randn(B, S, H) if separate_values else None
    attn = make_attention(kind, H, H, num_heads=2).double()
    q, k = query.double().requires_grad_(), keys.double().requires_grad_()
    v = None if values is None else values.double().requires_grad_()
    inputs = [t for t in (q, k, v) if t is not None]
    plain = attn(q, k, v, mask)
    plain_grads = torch.autograd.grad(sum(x.sum() for x in plain), [*inputs, *attn.parameters()], allow_unused=True)
    pk, pv = attn.project_memory(k, v)
    cached = attn(q, pk, pv, mask, projected=True)
    cached_grads = torch.autograd.grad(sum(x.sum() for x in cached), [*inputs, *attn.parameters()], allow_unused=True)
    for a, b in zip(plain, cached):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(plain_grads, cached_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_additive_matches_its_formula_in_float64():
    attn = AdditiveAttention(5, H, attention_size=7).double()
    torch.manual_seed(1)
    q, k = torch.randn(B, 5, dtype=torch.float64), torch.randn(B, S, H, dtype=torch.float64)
    mask = length_mask(torch.tensor([6, 4, 2]), S)
    context, weights = attn(q, k, mask=mask)
    for b in range(B):
        n = int(mask[b].sum())
        scores = torch.stack(
            [attn.v.weight[0] @ torch.tanh(attn.query_proj.weight @ q[b] + attn.key_proj(k[b, s])) for s in range(n)]
        )
        ref = torch.softmax(scores, dim=0)
        torch.testing.assert_close(weights[b, :n], ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(context[b], ref @ k[b, :n], rtol=1e-12, atol=1e-12)


def test_scaled_dot_matches_torch_sdpa_in_float64():
    attn = DotAttention(H, H, scaled=True)
    torch.manual_seed(2)
    q = torch.randn(B, 4, H, dtype=torch.float64)
    k = torch.randn(B, S, H, dtype=torch.float64)
    v = torch.randn(B, S, 5, dtype=torch.float64)
    mask = length_mask(torch.tensor([6, 2, 5]), S)
    context, _ = attn(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1))
    torch.testing.assert_close(context, ref, rtol=1e-12, atol=1e-12)


def test_general_is_dot_after_a_linear_map():
    attn = GeneralAttention(H, 5)
    torch.manual_seed(3)
    q, k = torch.randn(B, H), torch.randn(B, S, 5)
    _, weights = attn(q, k)
    ref = torch.softmax(torch.einsum("bh,bsh->bs", q, attn.weight(k)), dim=-1)
    torch.testing.assert_close(weights, ref)


def test_multihead_matches_torch_multiheadattention_in_float64():
    heads = 2
    ours = MultiHeadAttention(H, H, num_heads=heads).double()
    ref = torch.nn.MultiheadAttention(H, heads, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    torch.manual_seed(4)
    q = torch.randn(B, 3, H, dtype=torch.float64)
    k = torch.randn(B, S, H, dtype=torch.float64)
    mask = length_mask(torch.tensor([6, 4, 1]), S)
    context, weights = ours(q, k, mask=mask)
    ref_context, ref_weights = ref(q, k, k, key_padding_mask=~mask)
    torch.testing.assert_close(context, ref_context, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-10, atol=1e-10)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="DotAttention: query_size and key_size must be equal"):
        DotAttention(4, 5)
    with pytest.raises(ValueError, match="MultiHeadAttention: query_size"):
        MultiHeadAttention(6, 6, num_heads=4)
    with pytest.raises(ValueError, match="kind must be one of"):
        make_attention("cosine", H, H)
    attn = AdditiveAttention(H, H)
    query, keys, _, mask = _inputs()
    with pytest.raises(ValueError, match=r"AdditiveAttention: mask must be a bool tensor of shape \(3, 6\)"):
        attn(query, keys, mask=mask[:, :4])
    with pytest.raises(ValueError, match="AdditiveAttention: query must be"):
        attn(query[:2], keys, mask=mask)
    with pytest.raises(ValueError, match="keys and values must be"):
        attn(query, keys, keys[:, :3])

"""Property-based tests of the layers (hypothesis): over random sizes, lengths (1 and the maximum
included), batch sizes (1 included), directions, cells and backends, a padded batch computes exactly what
each sequence computes alone, without NaN, and padding never leaks into outputs or states."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqforge
from seqforge.fused.registry import available_backends

CPU_BACKENDS = [b for b in available_backends() if b not in ("compile",)]


@st.composite
def layer_cases(draw):
    steps = draw(st.integers(1, 7))
    batch = draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    if draw(st.booleans()):
        lengths[draw(st.integers(0, batch - 1))] = steps  # the maximum length is common in practice
    return {
        "cell": draw(st.sampled_from(["lstm", "gru", "rnn", "rnn_relu"])),
        "input_size": draw(st.integers(1, 5)),
        "hidden_size": draw(st.integers(1, 5)),
        "num_layers": draw(st.integers(1, 3)),
        "bidirectional": draw(st.booleans()),
        "layer_norm": draw(st.booleans()),
        "backend": draw(st.sampled_from(CPU_BACKENDS)),
        "steps": steps,
        "lengths": lengths,
        "seed": draw(st.integers(0, 2**16)),
    }


def _flat(state):
    return state if isinstance(state, tuple) else (state,)


@settings(max_examples=40, deadline=None)
@given(layer_cases())
def test_padded_batch_equals_each_sequence_alone(case):
    torch.manual_seed(case["seed"])
    kwargs = {k: case[k] for k in ("num_layers", "bidirectional", "layer_norm")}
    try:
        layer = seqforge.make_recurrent(
            case["cell"], case["input_size"], case["hidden_size"], batch_first=True, backend=case["backend"], **kwargs
        ).double()
    except ValueError as err:  # a backend that cannot run these options says so at construction
        assert "backend" in str(err) or case["backend"] in str(err)
        return
    lengths = torch.tensor(case["lengths"])
    x = torch.randn(len(lengths), case["steps"], case["input_size"], dtype=torch.float64)
    out, state = layer(x, lengths=lengths)
    assert torch.isfinite(out).all()
    for b, n in enumerate(case["lengths"]):
        assert torch.all(out[b, n:] == 0)
        out_b, state_b = layer(x[b : b + 1, :n])
        torch.testing.assert_close(out[b : b + 1, :n], out_b, atol=1e-10, rtol=1e-8)
        for s, s_b in zip(_flat(state), _flat(state_b)):
            torch.testing.assert_close(s[:, b : b + 1], s_b, atol=1e-10, rtol=1e-8)

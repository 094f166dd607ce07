"""Predict with a trained checkpoint alone: classify, tag, translate, generate, continue text, forecast.

Inputs are strings, one per example, read by what the checkpoint's datamodule knows:

- token input: text, split like the training data (characters or words) and encoded with the stored
  vocabulary; datamodules without a vocabulary (synthetic ones) take space-separated token ids;
- float input: a series, time steps separated by ``;`` and channels by ``,`` (a univariate series may be
  comma-separated values), normalized like the training data (UCR channel statistics, forecasting scaler);
- conditional generation: the condition's class id.

Outputs are strings too: class names (or ids), one tag per input token, decoded text (or ids), or the
forecast in original units.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from seqforge.checkpoint import load_from_checkpoint
from seqforge.data.base import read_lines
from seqforge.data.vocab import Vocabulary, detokenize, tokenize
from seqforge.utils.config import ConfigError, PredictSchema, check_top_level

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- encoding
def _vocab(datamodule: Any, *names: str) -> Vocabulary | None:
    for name in names:
        vocab = getattr(datamodule, name, None)
        if isinstance(vocab, Vocabulary):
            return vocab
    return None


def encode_tokens(datamodule: Any, text: str, vocab_names: Sequence[str] = ("vocab", "src_vocab"),
                  mode_name: str = "tokenize") -> Tensor:
    """``text`` -> int64 ids ``(T,)`` with the datamodule's vocabulary (or space-separated ids without one)."""
    vocab = _vocab(datamodule, *vocab_names)
    if vocab is None:
        try:
            ids = [int(token) for token in text.split()]
        except ValueError:
            raise ValueError(f"predict: this model's data have no vocabulary; give space-separated token ids, "
                             f"got {text!r}") from None
        sizes = datamodule.net_kwargs
        size = next((sizes[key] for key in ("vocab_size", "src_vocab_size") if key in sizes), None)
        outside = [i for i in ids if size is not None and not 0 <= i < size]
        if outside:
            raise ValueError(f"predict: the model reads token ids in [0, {size}) (its vocab_size), got {outside[:5]} "
                             f"in {text!r}")
    else:
        tokens = tokenize(text, getattr(datamodule, mode_name, None) or "char")
        ids = vocab.encode(tokens)
        unknown = sorted({t for t, i in zip(tokens, ids, strict=True) if i == vocab.unk_id and t != "<unk>"})
        if unknown:
            log.warning(f"predict: tokens {unknown[:10]} of {text!r} are not in the checkpoint's vocabulary; "
                        "they are read as <unk>")
    if not ids:
        raise ValueError(f"predict: empty input {text!r}")
    return torch.tensor(ids, dtype=torch.long)


def decode_tokens(datamodule: Any, ids: Sequence[int], vocab_names: Sequence[str], mode_name: str) -> str:
    """Ids -> text (specials stripped, stops at EOS); space-joined ids without a vocabulary."""
    vocab = _vocab(datamodule, *vocab_names)
    if vocab is None:
        out = []
        for i in ids:
            if int(i) == 2:  # EOS
                break
            if int(i) > 2:
                out.append(str(int(i)))
        return " ".join(out)
    return detokenize(vocab.decode(ids), getattr(datamodule, mode_name, None) or "char")


def encode_series(datamodule: Any, text: str) -> Tensor:
    """``"1,2;3,4"`` (steps by ``;``, channels by ``,``) or ``"1,2,3"`` (univariate) -> float ``(T, C)``."""
    try:
        if ";" in text:
            rows = [[float(v) for v in step.split(",")] for step in text.split(";") if step.strip()]
        else:
            rows = [[float(v)] for v in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"predict: expected numbers ('1.5,2;0.3,1' or '1,2,3'), got {text!r}") from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(f"predict: every time step needs the same number of channels, got {text!r}")
    x = np.asarray(rows, dtype=np.float64)  # (T, C)
    channels = datamodule.net_kwargs.get("input_size")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"predict: the model reads {channels} channels per step (its input_size), got "
                         f"{x.shape[1]} in {text[:60]!r}")
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if mean is not None and std is not None:
        x = (x - np.asarray(mean)) / np.asarray(std)
    scaler = getattr(datamodule, "scaler", None)
    if scaler is not None:
        x = scaler.transform(x)
    return torch.from_numpy(x.astype(np.float32))


def _one(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.unsqueeze(0), torch.tensor([x.shape[0]])


def _encode_input(task: Any, text: str) -> Tensor:
    """Token ids when the net embeds tokens, else a float series."""
    takes_tokens = getattr(getattr(task.net, "encoder", None), "embedding", None) is not None
    return encode_tokens(task.datamodule, text) if takes_tokens else encode_series(task.datamodule, text)


# ---------------------------------------------------------------------------------------- per task
def _classify(task: Any, text: str, **_: Any) -> str:
    dm = task.datamodule
    out = task.net(*_one(_encode_input(task, text)))[0]  # (C,) logits or (O,) regression values
    if getattr(task.net, "num_classes", None):
        index = int(out.argmax())
        classes = getattr(dm, "classes", None)
        return str(classes[index]) if classes else str(index)
    return ",".join(f"{v:.6g}" for v in out.tolist())


def _tag(task: Any, text: str, **_: Any) -> str:
    tags = task.net(*_one(_encode_input(task, text)))[0].argmax(-1).tolist()  # (T,)
    return " ".join(str(t) for t in tags)


def _translate(task: Any, text: str, max_len: int, **_: Any) -> str:
    dm = task.datamodule
    src, lengths = _one(encode_tokens(dm, text, ("src_vocab",), "tokenize"))
    tokens, _ = task.net.generate(src, lengths, beam_size=int(getattr(task, "beam_size", 1) or 1), max_len=max_len)
    return decode_tokens(dm, tokens[0].tolist(), ("tgt_vocab",), "tgt_tokenize")


def _generate(task: Any, text: str, max_len: int, temperature: float, **_: Any) -> str:
    dm = task.datamodule
    try:
        cond = torch.tensor([int(text)])
    except ValueError:
        raise ValueError(f"predict: conditional generation takes a class id, got {text!r}") from None
    conditions = dm.net_kwargs["num_conditions"]
    if not 0 <= int(cond) < conditions:
        raise ValueError(f"predict: the model generates for class ids in [0, {conditions}) (its num_conditions), "
                         f"got {text!r}")
    strategy = "sample" if temperature > 0 else "greedy"
    out, lengths = task.net.generate(cond, max_len=max_len, strategy=strategy, temperature=max(temperature, 1e-6))
    if out.dtype.is_floating_point:
        return ",".join(f"{v:.6g}" for v in out[0, : int(lengths[0]), 0].tolist())
    return decode_tokens(dm, out[0].tolist(), ("vocab", "tgt_vocab"), "tokenize")


def _continue(task: Any, text: str, max_len: int, temperature: float, **_: Any) -> str:
    dm = task.datamodule
    prompt = encode_tokens(dm, text).unsqueeze(0)
    strategy = "sample" if temperature > 0 else "greedy"
    new, _ = task.net.generate(prompt, max_new_tokens=max_len, strategy=strategy,
                               temperature=max(temperature, 1e-6))
    return text + decode_tokens(dm, new[0].tolist(), ("vocab",), "tokenize")


def _forecast(task: Any, text: str, **_: Any) -> str:
    dm = task.datamodule
    history = encode_series(dm, text)  # (W, 1) scaled
    point = task.net.point(task.net(*_one(history)))[0].numpy()  # (H,) scaled
    scaler = getattr(dm, "scaler", None)
    values = scaler.inverse_transform(point) if scaler is not None else point
    return ",".join(f"{v:.6g}" for v in np.asarray(values).tolist())


PREDICTORS: dict[str, Callable[..., str]] = {
    "ClassificationTask": _classify,
    "RegressionTask": _classify,
    "TaggingTask": _tag,
    "Seq2SeqTask": _translate,
    "GenerationTask": _generate,
    "LanguageModelTask": _continue,
    "ForecastingTask": _forecast,
}


@torch.no_grad()
def predict(
    task: L.LightningModule,
    inputs: Sequence[str],
    max_len: int = 50,
    temperature: float = 1.0,
    num_samples: int = 1,
) -> list[str]:
    """One output string per input (``num_samples`` per input for sampled generation).

    Args:
        task: from :func:`seqforge.load_from_checkpoint` (carries ``task.datamodule``).
        inputs: strings as described in the module docstring.
        max_len: longest generated / translated output.
        temperature: sampling temperature for generation; ``0`` decodes greedily.
        num_samples: outputs per input for language models and conditional generators.
    """
    for cls in type(task).__mro__:
        if cls.__name__ in PREDICTORS:
            predictor = PREDICTORS[cls.__name__]
            break
    else:
        raise TypeError(f"predict: no predictor for {type(task).__name__}; known tasks: {sorted(PREDICTORS)}")
    repeat = num_samples if predictor in (_continue, _generate) and temperature > 0 else 1
    task.eval()
    return [predictor(task, text, max_len=max_len, temperature=temperature)
            for text in inputs for _ in range(repeat)]


def predict_from_config(cfg: DictConfig) -> list[str]:
    """Run :func:`predict` as ``configs/predict.yaml`` describes; print or write the outputs."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("config 'ckpt_path': predict needs a checkpoint: scripts/predict.py ckpt_path=PATH")
    check_top_level(cfg, PredictSchema)
    if (cfg.input is None) == (cfg.input_file is None):
        raise ConfigError("config 'input'/'input_file': give exactly one (input=\"...\" or input_file=PATH)")
    inputs = [str(cfg.input)] if cfg.input is not None else \
        [line for line in read_lines(cfg.input_file, "predict input_file") if line.strip()]
    if cfg.seed is not None:
        L.seed_everything(cfg.seed)
    task = load_from_checkpoint(cfg.ckpt_path, allow=tuple(cfg.allow_targets))
    outputs = predict(task, inputs, max_len=cfg.max_len, temperature=cfg.temperature, num_samples=cfg.num_samples)
    if cfg.output_file is not None:
        Path(cfg.output_file).write_text("\n".join(outputs) + "\n", encoding="utf-8")
    else:
        for line in outputs:
            print(line)
    return outputs

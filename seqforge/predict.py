"""Predict with a trained checkpoint alone: classify, tag, translate, generate, continue text, forecast.

Inputs are strings, one per example, read by what the checkpoint's datamodule knows (or series arrays
``(T, C)``, as :func:`read_inputs` reads a ``.ts`` or ``.csv`` file):

- token input: text, split like the training data (characters or words; by the datamodule's
  ``split_text`` where it has one) and encoded with the stored vocabulary; datamodules without a
  vocabulary (synthetic ones) take space-separated token ids;
- float input: a series, time steps separated by ``;`` and channels by ``,`` (a univariate series may be
  comma-separated values), raw values normalized like the training data (UCR channel statistics,
  forecasting scaler);
- conditional generation: the condition's class id.

Outputs are :class:`Prediction` strings: class names (or ids), one tag per input token (tag names or ids;
the Viterbi path for a tagger with a CRF head), decoded text (or
ids), or the forecast in original units; ``truncated`` marks an output that reached ``max_len`` before its
end token. Inputs run in padded batches with their lengths (``batch_size``), on ``device``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import track
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from seqforge.checkpoint import load_from_checkpoint
from seqforge.data.base import read_lines
from seqforge.data.series import read_csv_column
from seqforge.data.ucr import read_ts
from seqforge.data.vocab import Vocabulary, detokenize, tokenize
from seqforge.layers.crf import CRF
from seqforge.tasks.forecasting import write_panel_forecasts
from seqforge.train import quiet_third_party
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
        split_text = getattr(datamodule, "split_text", None)  # a datamodule that splits its own texts
        tokens = split_text(text) if callable(split_text) else tokenize(text, getattr(datamodule, mode_name, None)
                                                                        or "char")  # fmt: skip
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


def encode_series(datamodule: Any, series: str | np.ndarray) -> Tensor:
    """``"1,2;3,4"`` (steps by ``;``, channels by ``,``), ``"1,2,3"`` (univariate) or an array ``(T, C)`` (as
    :func:`seqforge.data.ucr.read_ts` reads) -> float ``(T, C)``, normalized like the training data."""
    text = series if isinstance(series, str) else f"array of shape {series.shape}"
    if isinstance(series, str):
        try:
            if ";" in series:
                rows = [[float(v) for v in step.split(",")] for step in series.split(";") if step.strip()]
            else:
                rows = [[float(v)] for v in series.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"predict: expected numbers ('1.5,2;0.3,1' or '1,2,3'), got {series!r}") from None
        if not rows or len({len(r) for r in rows}) != 1:
            raise ValueError(f"predict: every time step needs the same number of channels, got {series!r}")
        x = np.asarray(rows, dtype=np.float64)  # (T, C)
    else:
        x = np.asarray(series, dtype=np.float64).reshape(len(series), -1)
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


class Prediction(str):
    """One output string; ``truncated`` is True when decoding stopped at ``max_len`` before an end token (the
    output may be cut: raise ``max_len``)."""

    truncated: bool

    def __new__(cls, text: str, truncated: bool = False) -> Prediction:
        obj = super().__new__(cls, text)
        obj.truncated = truncated
        return obj


Item = str | np.ndarray  # a text line, or a series array (T, C) read from a .ts file


def _pad(rows: list[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-padded batch ``(B, T, ...)`` (zeros, the pad id) and lengths ``(B,)``."""
    lengths = torch.tensor([r.shape[0] for r in rows], device=device)
    return pad_sequence(rows, batch_first=True).to(device), lengths


def _encode_input(task: Any, item: Item) -> Tensor:
    """Token ids when the net embeds tokens, else a float series."""
    takes_tokens = getattr(getattr(task.net, "encoder", None), "embedding", None) is not None
    if takes_tokens and not isinstance(item, str):
        raise ValueError("predict: this model reads token ids or text, got a series array (a .ts file?)")
    return encode_tokens(task.datamodule, str(item)) if takes_tokens else encode_series(task.datamodule, item)


def _ends(tokens: Tensor, eos_id: int) -> list[bool]:
    return (tokens == eos_id).any(dim=1).tolist()


# ---------------------------------------------------------------------------------------- per task
def _classify(task: Any, items: list[Item], device: torch.device, **_: Any) -> list[Prediction]:
    classes = getattr(task.datamodule, "classes", None)
    out = task.net(*_pad([_encode_input(task, i) for i in items], device)).cpu()  # (B, C) logits or (B, O)
    if getattr(task.net, "num_classes", None):
        return [Prediction(str(classes[k]) if classes else str(k)) for k in out.argmax(-1).tolist()]
    return [Prediction(",".join(f"{v:.6g}" for v in row)) for row in out.tolist()]


def _tag(task: Any, items: list[Item], device: torch.device, **_: Any) -> list[Prediction]:
    """One tag per input token: the Viterbi path of a CRF head, else the per-step argmax; tag names when the
    datamodule has them (``tags``), else tag ids."""
    x, lengths = _pad([_encode_input(task, i) for i in items], device)
    logits = task.net(x, lengths)  # (B, T, C)
    crf = getattr(task.net, "crf", None)
    ids = (crf.decode(logits, lengths) if isinstance(crf, CRF) else logits.argmax(-1)).cpu()  # (B, T)
    names = getattr(task.datamodule, "tags", None)
    return [Prediction(" ".join(str(names[t]) if names else str(t) for t in row[:n].tolist()))
            for row, n in zip(ids, lengths.tolist())]  # fmt: skip


def _translate(task: Any, items: list[Item], device: torch.device, max_len: int, **_: Any) -> list[Prediction]:
    dm = task.datamodule
    src, lengths = _pad([encode_tokens(dm, str(i), ("src_vocab",), "tokenize") for i in items], device)
    tokens, _ = task.net.generate(src, lengths, beam_size=int(getattr(task, "beam_size", 1) or 1), max_len=max_len)
    tokens = tokens.cpu()
    return [Prediction(decode_tokens(dm, row.tolist(), ("tgt_vocab",), "tgt_tokenize"), not ended)
            for row, ended in zip(tokens, _ends(tokens, task.net.eos_id))]  # fmt: skip


def _generate(task: Any, items: list[Item], device: torch.device, max_len: int, temperature: float,
              **_: Any) -> list[Prediction]:  # fmt: skip
    dm = task.datamodule
    conditions = dm.net_kwargs["num_conditions"]
    ids = []
    for item in items:
        try:
            ids.append(int(str(item)))
        except ValueError:
            raise ValueError(f"predict: conditional generation takes a class id, got {item!r}") from None
        if not 0 <= ids[-1] < conditions:
            raise ValueError(f"predict: the model generates for class ids in [0, {conditions}) (its "
                             f"num_conditions), got {item!r}")
    strategy = "sample" if temperature > 0 else "greedy"
    out, lengths = task.net.generate(torch.tensor(ids, device=device), max_len=max_len, strategy=strategy,
                                     temperature=max(temperature, 1e-6))  # fmt: skip
    out = out.cpu()
    if out.dtype.is_floating_point:  # real values have no end token: max_len is their length
        return [Prediction(",".join(f"{v:.6g}" for v in row[:n, 0].tolist())) for row, n in zip(out, lengths.tolist())]
    return [Prediction(decode_tokens(dm, row.tolist(), ("vocab", "tgt_vocab"), "tokenize"), not ended)
            for row, ended in zip(out, _ends(out, task.net.eos_id))]  # fmt: skip


def _continue(task: Any, items: list[Item], device: torch.device, max_len: int, temperature: float,
              **_: Any) -> list[Prediction]:  # fmt: skip
    """Prompts continue for ``max_len`` new tokens (fewer if the model emits ``<eos>``); prompts of the same
    length share a batch."""
    dm = task.datamodule
    prompts = [encode_tokens(dm, str(i)) for i in items]
    strategy = "sample" if temperature > 0 else "greedy"
    outputs: list[Prediction | None] = [None] * len(items)
    for size in sorted({p.shape[0] for p in prompts}):
        rows = [k for k, p in enumerate(prompts) if p.shape[0] == size]
        new, _ = task.net.generate(torch.stack([prompts[k] for k in rows]).to(device), max_new_tokens=max_len,
                                   strategy=strategy, temperature=max(temperature, 1e-6))  # fmt: skip
        for k, row in zip(rows, new.cpu()):
            outputs[k] = Prediction(str(items[k]) + decode_tokens(dm, row.tolist(), ("vocab",), "tokenize"))
    return [o for o in outputs if o is not None]


def _forecast(task: Any, items: list[Item], device: torch.device, **_: Any) -> list[Prediction]:
    dm = task.datamodule
    points = task.net.point(task.net(*_pad([encode_series(dm, i) for i in items], device))).cpu().numpy()  # (B, H)
    scaler = getattr(dm, "scaler", None)
    values = scaler.inverse_transform(points) if scaler is not None else points
    return [Prediction(",".join(f"{v:.6g}" for v in np.asarray(row).tolist())) for row in values]


PREDICTORS: dict[str, Callable[..., list[Prediction]]] = {
    "ClassificationTask": _classify,
    "RegressionTask": _classify,
    "TaggingTask": _tag,
    "Seq2SeqTask": _translate,
    "GenerationTask": _generate,
    "LanguageModelTask": _continue,
    "ForecastingTask": _forecast,
}
DECODERS = (_translate, _generate, _continue)  # the predictors that use max_len
LM_MAX_LEN = 100  # new tokens of a language model's continuation when max_len is not given


def default_max_len(task: Any) -> int:
    """Longest output when none is given: the longest training target plus half of it (at least 5 more); a
    language model continues for :data:`LM_MAX_LEN` tokens. Reads the checkpoint's training data."""
    dm = task.datamodule
    if type(task).__name__ == "LanguageModelTask":
        return LM_MAX_LEN
    try:
        dm.setup("fit")  # the fitted vocabularies stay those of the checkpoint
        longest = max(int(sample[-1].shape[0]) for sample in dm.splits["train"])
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ValueError(f"predict: max_len was not given and the training data cannot be read to choose it "
                         f"({type(err).__name__}: {err}); pass max_len=N") from err
    return longest + max(5, longest // 2)


def _predictor(task: Any) -> Callable[..., list[Prediction]]:
    for cls in type(task).__mro__:
        if cls.__name__ in PREDICTORS:
            return PREDICTORS[cls.__name__]
    raise TypeError(f"predict: no predictor for {type(task).__name__}; known tasks: {sorted(PREDICTORS)}")


@torch.no_grad()
def predict(
    task: L.LightningModule,
    inputs: Sequence[Item],
    max_len: int | None = None,
    temperature: float = 1.0,
    num_samples: int = 1,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[Prediction]:
    """One output per input (``num_samples`` per input for sampled generation), in input order.

    Args:
        task: from :func:`seqforge.load_from_checkpoint` (carries ``task.datamodule``).
        inputs: strings as described in the module docstring, or series arrays ``(T, C)``.
        max_len: longest generated / translated output (new tokens for a language model); ``None``: from the
            training data (:func:`default_max_len`). An output that reaches it without an end token has
            ``truncated=True`` (and a warning is logged).
        temperature: sampling temperature for generation; ``0`` decodes greedily.
        num_samples: outputs per input for language models and conditional generators.
        batch_size: inputs run together (padded, with their lengths).
        device: where the net runs (``"cuda"`` on a GPU machine).
        progress: show a progress bar over the batches (on stderr).
    """
    predictor = _predictor(task)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"predict: batch_size must be a positive int, got {batch_size!r}")
    if max_len is None and predictor in DECODERS:
        max_len = default_max_len(task)
    repeat = num_samples if predictor in (_continue, _generate) and temperature > 0 else 1
    items = [item for item in inputs for _ in range(repeat)]
    device = torch.device(device)
    task.eval().to(device)
    batches: Iterable[int] = range(0, len(items), batch_size)
    if progress:
        total = -(-len(items) // batch_size)
        batches = track(batches, description="predict", total=total, console=Console(stderr=True))
    outputs: list[Prediction] = []
    for start in batches:
        outputs += predictor(task, items[start:start + batch_size], device=device, max_len=max_len,
                             temperature=temperature)  # fmt: skip
    cut = [k for k, out in enumerate(outputs) if out.truncated]
    if cut:
        log.warning(f"predict: {len(cut)} of {len(outputs)} outputs reached max_len={max_len} before an end token "
                    f"(inputs {cut[:10]}); they may be cut: raise max_len")
    return outputs


def read_inputs(path: str | Path, task: Any, column: str | None = None) -> list[Item]:
    """The inputs in ``path``, read by its suffix as the datamodules read their data:

    - ``.ts`` (UCR/UEA): one series per row (labels, if any, are ignored);
    - ``.tsv``: the first tab-separated column of each line (the sources of a pairs file);
    - ``.csv``: one series, the column ``column`` (default: the training data's ``column``) of a CSV with a
      header; its last ``window`` values (the training window) are the history to forecast from;
    - anything else: one input per non-empty line.
    """
    path = Path(path)
    if path.suffix == ".ts":
        return list(read_ts(path)[0])
    if path.suffix == ".csv":
        column = column or getattr(task.datamodule, "column", None)
        if column is None:
            raise ValueError(f"predict: input_file {str(path)!r} is a CSV; name its series with input_column=NAME")
        series = read_csv_column(path, column)
        window = getattr(task.datamodule, "window", None) or len(series)
        return [series[-window:].reshape(-1, 1)]
    lines: list[Item] = [line.split("\t")[0] if path.suffix == ".tsv" else line
                         for line in read_lines(path, "predict input_file") if line.strip()]  # fmt: skip
    return lines


def predict_from_config(cfg: DictConfig) -> list[Prediction]:
    """Run :func:`predict` as ``configs/predict.yaml`` describes; print or write the outputs (one per line, a
    truncated one followed by a tab and ``[truncated: max_len reached]``)."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("config 'ckpt_path': predict needs a checkpoint: scripts/predict.py ckpt_path=PATH")
    check_top_level(cfg, PredictSchema)
    if (cfg.input is None) == (cfg.input_file is None):
        raise ConfigError("config 'input'/'input_file': give exactly one (input=\"...\" or input_file=PATH)")
    quiet_third_party()
    if cfg.seed is not None:
        L.seed_everything(cfg.seed)
    task = load_from_checkpoint(cfg.ckpt_path, allow=tuple(cfg.allow_targets))
    if hasattr(task.datamodule, "forecast_inputs"):  # many series (PanelDataModule): a forecast CSV and plots
        if cfg.input_file is None or cfg.output_file is None:
            raise ConfigError("config 'input_file'/'output_file': a forecaster over many series forecasts a table: "
                              "input_file=TABLE.csv output_file=FORECASTS.csv (plots go to FORECASTS_plots/)")
        output = Path(cfg.output_file)
        write_panel_forecasts(task, output, cfg.input_file, plot_folder=output.with_name(f"{output.stem}_plots"))
        return []
    inputs = [str(cfg.input)] if cfg.input is not None else read_inputs(cfg.input_file, task, cfg.input_column)
    outputs = predict(task, inputs, max_len=cfg.max_len, temperature=cfg.temperature, num_samples=cfg.num_samples,
                      batch_size=cfg.batch_size, device=cfg.device, progress=cfg.progress)  # fmt: skip
    lines = [out + ("\t[truncated: max_len reached]" if out.truncated else "") for out in outputs]
    if cfg.output_file is not None:
        Path(cfg.output_file).write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        for line in lines:
            print(line)
    return outputs

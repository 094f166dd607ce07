"""One typed description of a model's recurrent part: :class:`RecurrentSpec`.

Every model in :mod:`seqforge.models` takes its recurrent settings as one argument ``rnn`` (a
:class:`RecurrentSpec`, a mapping of its fields, or ``None`` for the model's defaults) instead of listing
them in its own signature; in a config they are the node ``model.net.rnn``::

    python scripts/train.py +experiment=ucr_gru model.net.rnn.hidden_size=64 model.net.rnn.cell=mingru
    python scripts/train.py +experiment=ucr_gru 'model.net.rnn.cell={_target_:mypkg.cells.MyCell,my_option:3}'

A model with an encoder and a decoder (:class:`~seqforge.models.Seq2Seq`, the autoregressive
:class:`~seqforge.models.Forecaster`) builds both from the same spec; ``bidirectional`` applies to the
encoder only, since a decoder generates left to right.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from seqforge.cells.base import cell_name
from seqforge.layers.recurrent import CellSpec, Recurrent, make_recurrent, resolve_cell

# Options only the built-in layers (seqforge.RNN/LSTM/GRU) have, with their neutral values.
BUILTIN_ONLY: dict[str, Any] = {"layer_norm": False, "forget_bias": None, "cuda_graphs": True}


@dataclasses.dataclass(frozen=True)
class RecurrentSpec:
    """The recurrent stack of a model: which cell, how wide and deep, which regularizers and backend.

    Args:
        cell: a name (``rnn``, ``rnn_relu``, ``lstm``, ``gru``, ``indrnn``, ``mingru``, ``cfc``; any case), a
            cell class or ``functools.partial`` of one, or a ``{_target_: pkg.MyCell, **cell_kwargs}`` mapping
            (see :func:`seqforge.layers.recurrent.resolve_cell`).
        hidden_size, num_layers: as ``torch.nn.LSTM``.
        bidirectional: read sequences both ways (encoders only; a decoder is always one direction).
        dropout: between stacked layers, and in the models also on the stack's inputs (embeddings) and outputs.
        backend: ``eager``, ``script``, ``compile``, ``cudnn`` or ``auto`` (see :class:`seqforge.Recurrent`).
        recurrent_dropout, zoneout: per-step regularizers of the state (see :class:`seqforge.Recurrent`).
        layer_norm, forget_bias, cuda_graphs: options of the built-in cells only (see :class:`seqforge.LSTM`).

    Example:
        >>> spec = RecurrentSpec.of("MyModel", {"cell": "gru", "hidden_size": 8}, num_layers=2)
        >>> spec.build(3).hidden_size, spec.num_layers
        (8, 2)
    """

    cell: CellSpec = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    backend: str = "eager"
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    layer_norm: bool = False
    forget_bias: float | None = None
    cuda_graphs: bool = True

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The field names, in order: what ``model.net.rnn`` may hold."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def of(cls, owner: str, spec: RecurrentSpec | Mapping[str, Any] | None, **defaults: Any) -> RecurrentSpec:
        """The spec a model was given: ``spec`` itself, or the fields of a mapping over the model's ``defaults``.

        Raises:
            TypeError: naming ``owner``, the unknown key and the known ones (with a close match if any).
        """
        if isinstance(spec, RecurrentSpec):
            return spec
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise TypeError(f"{owner}: rnn must be a RecurrentSpec or a mapping of its keys, got {spec!r}")
        known = cls.keys()
        for key in (*defaults, *spec):
            if key in ("_target_", "_partial_", "_convert_", "_recursive_") or key in known:
                continue
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TypeError(f"{owner}: rnn has no key {key!r}; {hint}the keys of a recurrent spec are {list(known)}")
        given = {str(k): v for k, v in spec.items() if not str(k).startswith("_")}
        return cls(**{**defaults, **given})

    def build(self, input_size: int, *, bidirectional: bool | None = None, owner: str = "model") -> Recurrent:
        """The layer, ``batch_first=True``, reading ``input_size`` features; ``bidirectional`` overrides the
        spec's (``False`` for decoders).

        Raises:
            ValueError: an option of the built-in cells (``layer_norm``, ``forget_bias``, ``cuda_graphs``) set for
                another cell, naming ``owner``, the option and the cell.
        """
        cell = resolve_cell(self.cell)
        options = {key: getattr(self, key) for key in BUILTIN_ONLY}
        if not isinstance(cell, str):  # a cell run by Recurrent: no built-in options
            for key, value in options.items():
                if value != BUILTIN_ONLY[key]:
                    raise ValueError(f"{owner}: rnn.{key}={value!r} needs a built-in cell (rnn, rnn_relu, lstm, "
                                     f"gru), got {cell_name(cell)}")  # fmt: skip
            options = {}
        return make_recurrent(
            cell,
            input_size,
            self.hidden_size,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional if bidirectional is None else bidirectional,
            dropout=self.dropout if self.num_layers > 1 else 0.0,
            batch_first=True,
            backend=self.backend,
            recurrent_dropout=self.recurrent_dropout,
            zoneout=self.zoneout,
            **options,
        )

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1


SpecLike = RecurrentSpec | Mapping[str, Any] | None  # what a model's ``rnn`` argument takes

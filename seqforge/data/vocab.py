"""Token vocabularies with fixed special ids, stored as plain data so they ride along in checkpoints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

TOKENIZERS = ("char", "space")


def tokenize(text: str, mode: str) -> list[str]:
    """Split ``text`` into tokens: ``"char"`` gives characters, ``"space"`` whitespace-separated words."""
    if mode == "char":
        return list(text)
    if mode == "space":
        return text.split()
    raise ValueError(f"tokenize: mode must be one of {TOKENIZERS}, got {mode!r}")


def detokenize(tokens: Sequence[str], mode: str) -> str:
    """Inverse of :func:`tokenize` (whitespace runs become single spaces in ``"space"`` mode)."""
    if mode not in TOKENIZERS:
        raise ValueError(f"detokenize: mode must be one of {TOKENIZERS}, got {mode!r}")
    return ("" if mode == "char" else " ").join(tokens)


class Vocabulary:
    """A mapping between tokens and ids with the special ids ``pad=0, bos=1, eos=2, unk=3``.

    Regular tokens get ids from 4 on, in the order given. Unknown tokens encode to ``unk_id``.

    Example::

        >>> vocab = Vocabulary.build([["h", "i"], ["h", "o"]])
        >>> vocab.encode(["h", "i", "x"], bos=True, eos=True)
        [1, 4, 5, 3, 2]
        >>> vocab.decode([1, 4, 5, 2, 0])
        ['h', 'i']
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    unk_id = 3
    specials = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        tokens = list(tokens)
        for token in tokens:
            if not isinstance(token, str) or token == "":
                raise TypeError(f"Vocabulary: tokens must be non-empty strings, got {token!r}")
            if token in self.specials:
                raise ValueError(f"Vocabulary: {token!r} is a reserved special token; pass regular "
                                 "tokens only")
        self.itos: list[str] = list(self.specials) + tokens
        self.stoi: dict[str, int] = {token: i for i, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            duplicates = sorted({t for t in tokens if tokens.count(t) > 1})
            raise ValueError(f"Vocabulary: duplicate tokens {duplicates[:10]}")

    @classmethod
    def build(cls, sequences: Iterable[Iterable[str]]) -> Vocabulary:
        """Vocabulary of every distinct token in ``sequences`` (sorted, so the ids do not depend on order).

        Tokens spelled like a special (``"<unk>"``) map to that special and are not added again.
        """
        seen: set[str] = set().union(*map(set, sequences))
        return cls(sorted(seen - set(cls.specials)))

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    @property
    def tokens(self) -> list[str]:
        """Regular tokens (without the specials), in id order."""
        return self.itos[len(self.specials) :]

    def encode(self, tokens: Iterable[str], bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids for ``tokens``, optionally wrapped in ``bos_id`` ... ``eos_id``."""
        ids = [self.stoi.get(token, self.unk_id) for token in tokens]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int], strip: bool = True) -> list[str]:
        """Tokens for ``ids``. With ``strip``, ``pad``/``bos`` are dropped and decoding stops at ``eos``."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"Vocabulary.decode: id {i} outside [0, {len(self.itos)})")
            if strip and i == self.eos_id:
                break
            if strip and i in (self.pad_id, self.bos_id):
                continue
            out.append(self.itos[i])
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state: ``{"tokens": [...]}`` (regular tokens only)."""
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Vocabulary:
        """Rebuild a vocabulary saved by :meth:`state_dict`."""
        if "tokens" not in state:
            raise ValueError(f"Vocabulary.from_state_dict: expected a 'tokens' key, got keys {sorted(state)}")
        return cls(state["tokens"])

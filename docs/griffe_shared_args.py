"""Griffe extension: read seqforge's shared argument lines (``batch_size, num_workers: DataLoader settings.``
or ``vocab_size / output_size: ...`` in an ``Args:`` section) as one entry per name with the shared text, so
the reference lists every parameter and griffe still flags names that are not in the signature."""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Attributes):\s*$")
SHARED = re.compile(r"^(?P<indent>\s+)(?P<names>\w+(?:\s*(?:,|/)\s*\w+)+):(?P<text>\s.*|)$")


def split_shared_args(docstring: str) -> str:
    """The docstring with each shared argument line of its ``Args`` sections written once per name."""
    out: list[str] = []
    in_args, depth = False, 0
    for line in docstring.splitlines():
        if SECTION.match(line):
            in_args, depth = True, len(line) - len(line.lstrip())
        elif in_args and line.strip() and len(line) - len(line.lstrip()) <= depth:
            in_args = False  # the next section, or the text after the sections
        match = SHARED.match(line) if in_args else None
        if match is None:
            out.append(line)
            continue
        names = re.split(r"\s*[,/]\s*", match["names"])
        out += [f"{match['indent']}{name}:{match['text']}" for name in names]
    return "\n".join(out)


class SharedArgs(Extension):
    """Applies :func:`split_shared_args` to every docstring griffe reads."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = split_shared_args(obj.docstring.value)

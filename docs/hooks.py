"""mkdocs hook: a link from an included README/benchmarks page to a repository file that is not a docs
page (``results/runs/``, a raw result table) keeps its text and loses its link; a link to a file that
exists nowhere is left for mkdocs' strict link check to refuse."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    here = Path(page.file.src_uri).parent  # docs/ mirrors the repository's layout
    docs = {f.src_uri for f in files}

    def relink(match: re.Match[str]) -> str:
        text, target = match.groups()
        if "://" in target or target.startswith(("#", "/", "mailto:")):
            return match.group(0)
        path = (here / target.split("#")[0]).as_posix()
        if path in docs or not (REPO / path).exists():
            return match.group(0)
        return text

    return LINK.sub(relink, markdown)

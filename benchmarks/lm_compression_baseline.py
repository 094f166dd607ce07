"""Compression baseline of a character-LM split: bits per character of the test text given the training text.

    python benchmarks/lm_compression_baseline.py +experiment=lm_auto                          # Shakespeare
    python benchmarks/lm_compression_baseline.py +experiment=lm_auto data.name=convention_speeches

The arguments are the training command's overrides: that config's data module is built and its own split read
(``parts()``), so the test text is exactly the one the model is tested on. Python's ``lzma`` (xz's LZMA2,
preset ``9 | PRESET_EXTREME``, 64 MiB dictionary) compresses the UTF-8 training text, then training + test;
the difference in bytes, times 8, over the number of test characters is what the test text costs given the
training text. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import time

from hydra.utils import instantiate

from seqforge.utils.config import compose_config

PRESET = 9 | lzma.PRESET_EXTREME


def compressed_size(text: str) -> int:
    """Bytes of ``text`` (UTF-8) compressed by lzma at ``PRESET``."""
    return len(lzma.compress(text.encode("utf-8"), preset=PRESET))


def lzma_bits_per_char(train: str, test: str) -> float:
    """``(compressed(train + test) - compressed(train)) * 8 / len(test)``: bits per test character given
    ``train``."""
    if not test:
        raise ValueError("lzma_bits_per_char: the test text is empty")
    return (compressed_size(train + test) - compressed_size(train)) * 8 / len(test)


def main(argv: list[str] | None = None) -> dict[str, float | int | str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="the training command's overrides (+experiment=lm_auto ...)")
    args = parser.parse_args(argv)
    cfg = compose_config("train", args.overrides)
    datamodule = instantiate(cfg.data)
    parts = datamodule.parts()
    start = time.perf_counter()
    result: dict[str, float | int | str] = {
        "corpus": str(datamodule.text_file()),
        "train_chars": len(parts["train"]),
        "test_chars": len(parts["test"]),
        "lzma_bits_per_char": lzma_bits_per_char(parts["train"], parts["test"]),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

"""The API reference and guides (mkdocs.yml, docs/): README's sections are the guide pages, the shared
argument lines of the docstrings become one entry per name, and the strict build refuses broken references."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
pytestmark = pytest.mark.skipif(shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None,
                                reason="the docs tools (dev extra) are not installed")


def includes() -> list[tuple[Path, str, dict[str, str]]]:
    """Every ``include-markdown`` directive under docs/: (page, included file, its start/end options)."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for block in re.findall(r"\{%\s*include-markdown(.*?)%\}", page.read_text(encoding="utf-8"), re.S):
            (path,) = re.findall(r'^\s*"([^"]+)"', block)
            options = dict(re.findall(r'(\w+)="([^"]*)"', block))
            found.append((page, path, options))
    return found


def test_every_readme_section_is_one_docs_page_included_from_readme_itself() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    from_readme = [(page, options) for page, path, options in includes() if (page.parent / path).resolve() == REPO /
                   "README.md"]
    for page, options in from_readme:
        for key in ("start", "end"):
            if key in options:
                assert options[key] in readme, f"{page.name}: {key}={options[key]!r} is no longer in README.md"
    starts = {options.get("start") for _, options in from_readme}
    sections = [line for line in readme.splitlines() if line.startswith("## ")]
    assert sections and all(section in starts for section in sections), set(sections) - starts
    assert any("start" not in options for _, options in from_readme)  # the front page: README's opening


def test_every_benchmark_page_is_a_docs_page() -> None:
    included = {(page.relative_to(DOCS).as_posix(), path) for page, path, _ in includes()}
    for table in sorted((REPO / "benchmarks").glob("*.md")):
        assert (f"benchmarks/{table.name}", f"../../benchmarks/{table.name}") in included, table.name


def load_extension():
    spec = importlib.util.spec_from_file_location("griffe_shared_args", DOCS / "griffe_shared_args.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shared_argument_lines_become_one_entry_per_name_only_inside_args_sections() -> None:
    pytest.importorskip("griffe")
    split = load_extension().split_shared_args
    docstring = """Summary: a, b: not an argument line.

    Args:
        x: first.
        batch_size, num_workers: DataLoader settings,
            shared.
        vocab_size / output_size: the output width.

    Returns:
        a, b: a pair (left alone).
    """
    assert split(docstring).splitlines() == [
        "Summary: a, b: not an argument line.", "", "    Args:", "        x: first.",
        "        batch_size: DataLoader settings,", "        num_workers: DataLoader settings,", "            shared.",
        "        vocab_size: the output width.", "        output_size: the output width.", "", "    Returns:",
        "        a, b: a pair (left alone).", "    "]


def build(tmp_path: Path, page: str) -> subprocess.CompletedProcess:
    """``mkdocs build`` with the project's mkdocs.yml settings over a one-page site holding ``page``."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    (tmp_path / "docs").mkdir(parents=True)
    (tmp_path / "docs" / "index.md").write_text(page, encoding="utf-8")
    python = config["plugins"][-1]["mkdocstrings"]["handlers"]["python"]
    python["paths"] = [str(REPO)]
    python["options"]["extensions"] = [str(DOCS / "griffe_shared_args.py") + ":SharedArgs"]
    config.update(docs_dir=str(tmp_path / "docs"), site_dir=str(tmp_path / "site"), nav=["index.md"],
                  hooks=[str(DOCS / "hooks.py")])
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_strict_build_renders_a_module_and_refuses_a_broken_cross_reference(tmp_path: Path) -> None:
    good = ("# API\n\n::: seqforge.utils.optuna_sampler\n\n"
            "See [the sampler][seqforge.utils.optuna_sampler.trial_seed].\n")
    result = build(tmp_path / "good", good)
    assert result.returncode == 0, result.stderr[-3000:]
    html = (tmp_path / "good" / "site" / "index.html").read_text(encoding="utf-8")
    assert 'id="seqforge.utils.optuna_sampler.TrialSeededTPESampler"' in html
    broken = good.replace("optuna_sampler.trial_seed]", "optuna_sampler.no_such_name]")
    result = build(tmp_path / "broken", broken)
    assert result.returncode == 1 and "seqforge.utils.optuna_sampler.no_such_name" in result.stderr, result.stderr


def test_strict_build_refuses_a_link_to_a_missing_file(tmp_path: Path) -> None:
    result = build(tmp_path, "# Page\n\nSee [the results](benchmarks/NO_SUCH_FILE.md).\n")
    assert result.returncode == 1 and "NO_SUCH_FILE.md" in result.stderr, result.stderr


@pytest.mark.slow  # the whole reference: about 10 s on an idle machine, 40 s on a loaded one (.ci/run builds it too)
def test_the_documentation_builds_in_strict_mode(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
               "--site-dir", str(tmp_path / "site")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    setup = (tmp_path / "site" / "setup" / "index.html").read_text(encoding="utf-8")
    assert "pip install torch==2.13.0" in setup  # README's section, included


def test_the_top_level_page_lists_every_name_import_seqforge_gives() -> None:
    import seqforge

    page = (DOCS / "api" / "seqforge.md").read_text(encoding="utf-8")
    listed = {name for cell in re.findall(r"^\| (`[^|]*`) \|", page, re.M) for name in re.findall(r"`(\w+)`", cell)}
    assert listed == set(seqforge.__all__) - {"__version__"}

"""No one in through a checkpoint: its stored config may instantiate only allowlisted classes.

Each crafted checkpoint starts from a real one written by a short training run; the tests assert on the
side effect the payload would have had (a marker file, printed text, an imported module), not only on the
error.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from test_train import EXPERIMENTS, QUIET

from seqforge.checkpoint import UnsafeCheckpointError, check_stored_config, load_from_checkpoint
from seqforge.evaluate import evaluate
from seqforge.predict import predict_from_config
from seqforge.train import train
from seqforge.utils.config import CONFIG_DIR, compose_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real checkpoint (ucr_lstm, fast_dev_run) as its path and its loaded dict."""
    out = tmp_path_factory.mktemp("ucr_lstm")
    metrics = train(compose_config("train", ["+experiment=ucr_lstm", "debug=fdr", *QUIET], out))
    path = metrics["best_ckpt_path"]
    return {"path": path, "checkpoint": torch.load(path, weights_only=True)}


def craft(trained: dict[str, Any], tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the real checkpoint with ``edit`` applied to its ``seqforge`` entry, saved in ``tmp_path``."""
    checkpoint = copy.deepcopy(trained["checkpoint"])
    edit(checkpoint["seqforge"])
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    return path


def _set(node: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value


# where a payload hides in the stored config: the nodes instantiated, a list, a partial, net_kwargs
PLACES = ["config.data", "config.model.net", "config.model.optimizer", "config.model.net.rnn.cell",
          "config.model.net.tuple", "net_kwargs.input_size"]


@pytest.mark.parametrize("place", PLACES)
def test_builtins_print_is_refused_and_never_called(place: str, trained: dict[str, Any], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    payload: Any = {"_target_": "builtins.print", "_args_": ["PWNED"]}
    if place.endswith("optimizer"):
        payload["_partial_"] = True
    if place.endswith("rnn.cell"):
        payload = {"hooks": [payload]}  # inside a list of a plain dict
    if place.endswith("tuple"):
        place, payload = "config.model.net.rnn.cell", ({"x": 1}, payload)  # torch.load keeps tuples
    path = craft(trained, tmp_path, lambda stored: _set(stored, place, payload))
    with pytest.raises(UnsafeCheckpointError, match=r"'builtins\.print' is not allowed") as error:
        load_from_checkpoint(path)
    inner = {dict: ".hooks[0]", tuple: "[1]"}.get(type(payload), "") if place.endswith("rnn.cell") else ""
    where = place.removeprefix("config.") + inner + "._target_"
    assert f"config '{where}'" in str(error.value) and str(path) in str(error.value)
    assert "PWNED" not in capsys.readouterr().out


@pytest.mark.parametrize("target", ["os.system", "posix.system", "seqforge.checkpoint.os.system",
                                    "seqforge.data.base.os.system", "subprocess.getoutput"])
def test_os_system_is_refused_and_nothing_runs(target: str, trained: dict[str, Any], tmp_path: Path) -> None:
    """Refused by the allowlist before Hydra's own blocklist (1.3.8 also stops these) is reached."""
    marker = tmp_path / "system_ran"
    payload = {"_target_": target, "_args_": [f"touch {marker}"]}
    path = craft(trained, tmp_path, lambda stored: _set(stored, "config.model.net", payload))
    with pytest.raises(UnsafeCheckpointError, match=rf"config 'model\.net\._target_'.*{re.escape(target)}"):
        load_from_checkpoint(path)
    assert not marker.exists()


def test_builtins_open_cannot_truncate_a_file(trained: dict[str, Any], tmp_path: Path) -> None:
    """Hydra's own blocklist stops os.system, not open(path, "w"): the allowlist does."""
    victim = tmp_path / "notes.txt"
    victim.write_text("keep me")
    payload = {"_target_": "builtins.open", "_args_": [str(victim), "w"]}
    path = craft(trained, tmp_path, lambda stored: _set(stored, "config.model.net.rnn.cell", payload))
    with pytest.raises(UnsafeCheckpointError, match=r"'model\.net\.rnn\.cell\._target_'.*'builtins\.open'"):
        load_from_checkpoint(path)
    assert victim.read_text() == "keep me"


def test_a_seqforge_function_is_refused(trained: dict[str, Any], tmp_path: Path) -> None:
    """Under the seqforge prefix, only classes: a function such as write_atomic could write any file."""
    marker = tmp_path / "written"
    payload = {"_target_": "seqforge.data.base.write_atomic", "path": str(marker), "text": "x"}
    path = craft(trained, tmp_path, lambda stored: _set(stored, "config.data", payload))
    with pytest.raises(UnsafeCheckpointError, match=r"'data\._target_'.*write_atomic' is a function, not a class"):
        load_from_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(("place", "value"), [
    ("config.model.net.rnn.hidden_size", "${oc.create:{_target_: os.system, _args_: ['touch MARKER']}}"),
    ("config.model.net._target_", "${oc.decode:'os.system'}"),
    ("config.data.path", "${oc.env:HOME}"),
])
def test_interpolations_are_refused(place: str, value: str, trained: dict[str, Any], tmp_path: Path) -> None:
    """``oc.create`` builds a node with a ``_target_`` at instantiation time, after any walk of the data."""
    marker = tmp_path / "resolver_ran"
    path = craft(trained, tmp_path, lambda stored: _set(stored, place, value.replace("MARKER", str(marker))))
    with pytest.raises(UnsafeCheckpointError, match=r"holds an interpolation") as error:
        load_from_checkpoint(path)
    assert f"config '{place.removeprefix('config.')}'" in str(error.value)
    assert not marker.exists()


def test_private_parts_of_a_target_are_refused(trained: dict[str, Any], tmp_path: Path) -> None:
    payload = {"_target_": "seqforge.__builtins__.exec", "_args_": ["print('PWNED')"]}
    path = craft(trained, tmp_path, lambda stored: _set(stored, "config.data", payload))
    with pytest.raises(UnsafeCheckpointError, match=r"'data\._target_'.*private or dunder"):
        load_from_checkpoint(path)


def _write_module(folder: Path, name: str, marker: Path) -> None:
    (folder / f"{name}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).touch()  # the side effect of importing this module\n"
        "from seqforge.models import SequenceClassifier\n\n\n"
        "class MyClassifier(SequenceClassifier):\n"
        "    pass\n"
    )


def test_a_module_outside_the_project_is_not_imported_unless_allowed(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    _write_module(tmp_path, "user_cells_a", marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_cells_a", raising=False)
    path = craft(trained, tmp_path, lambda stored: _set(stored, "config.model.net._target_",
                                                        "user_cells_a.MyClassifier"))
    with pytest.raises(UnsafeCheckpointError, match=r"'model\.net\._target_'.*'user_cells_a\.MyClassifier' is not "
                                                    r"allowed.*it was not imported.*allow="):
        load_from_checkpoint(path)
    assert not marker.exists() and "user_cells_a" not in sys.modules
    with pytest.raises(UnsafeCheckpointError, match="not allowed"):  # a prefix is matched at a dot
        load_from_checkpoint(path, allow=("user_cell",))
    assert not marker.exists()

    task = load_from_checkpoint(path, allow=("user_cells_a.",))
    assert marker.exists() and type(task.net).__name__ == "MyClassifier"
    reference = load_from_checkpoint(trained["path"])
    x, lengths = torch.randn(2, 5, 12), torch.tensor([5, 3])
    assert torch.equal(task.net(x, lengths), reference.net(x, lengths))
    monkeypatch.delitem(sys.modules, "user_cells_a", raising=False)


def test_allow_requires_the_class_to_be_defined_under_the_prefix(trained: dict[str, Any], tmp_path: Path) -> None:
    """Allowing a package does not allow what it merely imports (``os`` inside it)."""
    marker = tmp_path / "system_ran"
    payload = {"_target_": "seqforge.checkpoint.os.system", "_args_": [f"touch {marker}"]}
    path = craft(trained, tmp_path, lambda stored: _set(stored, "config.data", payload))
    with pytest.raises(UnsafeCheckpointError, match="not a class"):
        load_from_checkpoint(path, allow=("seqforge.checkpoint.os.",))
    assert not marker.exists()


@pytest.mark.parametrize("overrides", [[f"+experiment={name}"] for name in EXPERIMENTS] + [["trainer=ddp_cpu"]])
def test_everything_the_shipped_configs_name_is_allowed(overrides: list[str]) -> None:
    """The allowlist covers every target of every experiment (model, data, trainer, callbacks, logger)."""
    cfg = compose_config("train", [*overrides, "logger=many_loggers", "debug=profiler"])
    for group in ("model", "data", "trainer", "callbacks", "logger"):
        check_stored_config(OmegaConf.to_container(cfg[group], resolve=True), group)


def test_values_that_are_not_plain_data_are_refused(trained: dict[str, Any], tmp_path: Path) -> None:
    path = craft(trained, tmp_path, lambda stored: _set(stored, "config.data.name", {"a", "b"}))
    with pytest.raises(UnsafeCheckpointError, match=r"config 'data.name': a set value; a checkpoint stores plain"):
        load_from_checkpoint(path)


def test_every_target_in_configs_is_allowed() -> None:
    """Every ``_target_`` written in configs/ (but Hydra's own sweeper nodes, never stored) is on the allowlist."""
    targets = {line.split("_target_:", 1)[1].split("#")[0].strip()
               for path in CONFIG_DIR.rglob("*.yaml") if not {"hydra", "hparams_search"} & set(path.parts)
               for line in path.read_text().splitlines() if "_target_:" in line}
    assert "lightning.pytorch.trainer.Trainer" in targets
    for target in sorted(targets):
        check_stored_config({"_target_": target}, "configs")


def test_allow_entries_are_checked() -> None:
    for bad in ("", "...", "my pkg.", "mypkg.*"):
        with pytest.raises(ValueError, match="allow: expected dotted module or class names"):
            check_stored_config({}, "model", allow=(bad,))


def test_eval_and_predict_take_allow_targets(trained: dict[str, Any], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported"
    _write_module(tmp_path, "user_cells_b", marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_cells_b", raising=False)
    path = craft(trained, tmp_path, lambda stored: _set(stored, "config.model.net._target_",
                                                        "user_cells_b.MyClassifier"))
    series = ";".join(",".join(["0.5"] * 12) for _ in range(6))
    predict_args = [f"ckpt_path={path}", f"input='{series}'"]
    with pytest.raises(UnsafeCheckpointError, match="user_cells_b.MyClassifier"):
        predict_from_config(compose_config("predict", predict_args))
    eval_args = [f"ckpt_path={path}", "trainer.limit_test_batches=1", "trainer.accelerator=cpu", "~logger"]
    with pytest.raises(UnsafeCheckpointError, match="user_cells_b.MyClassifier"):
        evaluate(compose_config("eval", eval_args, tmp_path / "eval"))
    assert not marker.exists()

    (label,) = predict_from_config(compose_config("predict", [*predict_args, "allow_targets=[user_cells_b.]"]))
    assert marker.exists() and label in trained["checkpoint"]["seqforge"]["datamodule_state"]["classes"]
    metrics = evaluate(compose_config("eval", [*eval_args, "allow_targets=[user_cells_b.]"], tmp_path / "eval"))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    monkeypatch.delitem(sys.modules, "user_cells_b", raising=False)


def test_a_checkpoint_with_the_flat_recurrent_keys_is_refused_saying_what_moved(trained: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    """Checkpoints written before ``model.net.rnn`` held ``model.net.cell``, ``hidden_size`` ... flat."""

    def flatten(stored: dict[str, Any]) -> None:
        net = stored["config"]["model"]["net"]
        rnn = net.pop("rnn")
        net.update(cell=rnn["cell"], hidden_size=rnn["hidden_size"], rnn_options=None)

    with pytest.raises(ValueError, match=r"before models took one recurrent spec.*\['cell', 'hidden_size', "
                                         r"'rnn_options'\].*model\.net\.rnn"):
        load_from_checkpoint(craft(trained, tmp_path, flatten))

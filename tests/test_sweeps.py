"""Sweeps through the real script: grid (basic and joblib launchers) and Optuna sweeps with failed jobs,
real SIGTERM/Ctrl-C sent to the sweep process at a real point of a job, and resumed Optuna studies;
``trials.csv`` accounts for every job each time."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_train import QUIET, REPO, run_script

from seqforge.utils.sweep import ERROR_FILE, PRUNED_FILE, grid_jobs, write_summary

TRAIN = str(REPO / "scripts" / "train.py")
OPTUNA_ARGS = [TRAIN, "+experiment=parity_gru", "hparams_search=ucr_optuna", "debug=fdr", *QUIET,
               "model.net.pooling=choice(last,avg)"]


def read_trials(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def only_sweep_dir(root: Path) -> Path:
    (sweep_dir,) = (root / "logs" / "parity_gru" / "multiruns").iterdir()
    return sweep_dir


def test_multirun_with_two_values_runs_two_jobs(tmp_path: Path) -> None:
    result = run_script([TRAIN, "-m", "+experiment=parity_gru", "debug=fdr", *QUIET, "seed=1,2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    assert sorted(p.parent.name for p in sweep_dir.glob("*/metrics.json")) == ["0", "1"]
    for job in ("0", "1"):
        assert (sweep_dir / job / "checkpoints" / "last.ckpt").is_file()
        assert list((sweep_dir / job / "tensorboard").glob("events.out.tfevents.*"))
    rows = read_trials(sweep_dir)
    assert [row["status"] for row in rows] == ["completed", "completed"]
    assert "seed=1" in rows[0]["overrides"] and "seed=2" in rows[1]["overrides"]
    assert all(float(row["test/acc"]) >= 0 for row in rows)


def test_grid_jobs_are_the_basic_sweepers_jobs_in_order_also_for_glob_sweeps() -> None:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None

        def jobs(*overrides: str) -> list[list[str]] | None:
            config = hydra.compose_config("train", list(overrides), run_mode=RunMode.MULTIRUN)
            return grid_jobs(config)

        assert jobs("seed=1,2", "trainer=glob(ddp*)") == [["seed=1", "trainer=ddp"], ["seed=1", "trainer=ddp_cpu"],
                                                          ["seed=2", "trainer=ddp"], ["seed=2", "trainer=ddp_cpu"]]
        assert jobs("seed=3") == [["seed=3"]]
        assert jobs("hparams_search=optuna") is None  # Optuna's trials are not known up front


def test_summary_status_of_each_way_a_job_can_end(tmp_path: Path) -> None:
    """Job folders as train() and the callback leave them; job 4 of the grid never started."""
    planned = [[f"seed={i}"] for i in range(5)]
    for job, files in {
        "0": {"metrics.json": {"val/acc": 0.5, "status": "completed", "monitor": "val/acc"}},
        "1": {ERROR_FILE: "ValueError: bad pooling (cause: KeyError: 'avg')\n\nTraceback ..."},
        "2": {"metrics.json": {"val/acc": 0.25, "status": "test failed: SIGTERMException"}},
        "3": {},
    }.items():
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(planned[int(job)]))
        for name, content in files.items():
            (tmp_path / job / name).write_text(content if isinstance(content, str) else json.dumps(content))
    rows = read_trials(write_summary(tmp_path, planned).parent)
    assert [(r["job"], r["status"], r["error"], r["overrides"], r["val/acc"]) for r in rows] == [
        ("0", "completed", "", "seed=0", "0.5"),
        ("1", "failed", "ValueError: bad pooling (cause: KeyError: 'avg')", "seed=1", ""),
        ("2", "interrupted", "test failed: SIGTERMException", "seed=2", "0.25"),
        ("3", "interrupted", "", "seed=3", ""),
        ("4", "not run", "", "seed=4", ""),
    ]


@pytest.mark.parametrize("launcher", ["basic", "parallel"])
def test_grid_sweep_with_a_failing_job_runs_the_others_records_it_and_exits_non_zero(
    tmp_path: Path, launcher: str
) -> None:
    """``pooling=avg`` is not a pooling: job 1 of three fails, jobs 0 and 2 still run."""
    args = [TRAIN, "-m", "+experiment=parity_gru", "debug=fdr", *QUIET, "model.net.pooling=last,avg,mean",
            f"hydra/launcher={launcher}"]
    result = run_script(args, tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    rows = read_trials(sweep_dir)
    assert [(row["job"], row["status"]) for row in rows] == [("0", "completed"), ("1", "failed"), ("2", "completed")]
    failed = rows[1]
    assert "pooling=avg" in failed["overrides"] and failed["test/acc"] == ""
    assert failed["error"].startswith("ConfigError: config 'model'") and "pooling must be one of" in failed["error"]
    assert "Traceback (most recent call last)" in (sweep_dir / "1" / ERROR_FILE).read_text()
    assert all(float(rows[i]["test/acc"]) >= 0 for i in (0, 2))


def start_script(args: list[str], cwd: Path) -> subprocess.Popen:
    """``run_script``'s process, started in the background (its output to files in ``cwd``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "SEQFORGE_LOG_DIR": str(cwd / "logs"), "OMP_NUM_THREADS": "1"}
    with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:
        return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=out, stderr=err)


def wait_for(pattern: str, root: Path, process: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        if process.poll() is not None:
            stderr = (root / "stderr.txt").read_text()[-3000:]
            raise AssertionError(f"exited {process.returncode} before {pattern}: {stderr}")
        time.sleep(0.2)
    raise AssertionError(f"no {pattern} under {root} after {timeout} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_in_job_0_stops_the_sweep_writes_its_summary_and_exits_128_plus_signal(
    tmp_path: Path, signum: int
) -> None:
    """A scheduler's SIGTERM (or Ctrl-C) once job 0 saved its first epoch: jobs 1 and 2 must not start."""
    args = [TRAIN, "-m", "+experiment=parity_gru", *QUIET, "seed=1,2,3", "trainer.max_epochs=200",
            "callbacks.early_stopping=null", "data.num_train=256"]
    process = start_script(args, tmp_path)
    try:
        wait_for("logs/parity_gru/multiruns/*/0/checkpoints/last.ckpt", tmp_path, process)
        process.send_signal(signum)
        returncode = process.wait(timeout=120)
    finally:
        process.kill()
    sweep_dir = only_sweep_dir(tmp_path)
    rows = read_trials(sweep_dir)
    assert [(row["job"], row["status"]) for row in rows] == [("0", "interrupted"), ("1", "not run"), ("2", "not run")]
    assert all(f"seed={i + 1}" in row["overrides"].split() for i, row in enumerate(rows))
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0"]  # no later job started
    assert (sweep_dir / "0" / "checkpoints" / "on_exception.ckpt").is_file()  # resumable: ckpt_path=last
    assert not (sweep_dir / "0" / "metrics.json").exists()
    assert returncode == 128 + signum, (tmp_path / "stderr.txt").read_text()[-3000:]


def test_sigterm_before_job_0_trains_stops_the_sweep_as_well(tmp_path: Path) -> None:
    """SIGTERM while job 0 still generates its data (no Lightning handler yet): still a clean stop."""
    args = [TRAIN, "-m", "+experiment=parity_gru", *QUIET, "seed=1,2,3", "data.num_train=300000"]
    process = start_script(args, tmp_path)
    try:
        wait_for("logs/parity_gru/multiruns/*/0/config.yaml", tmp_path, process)  # train() has begun
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=120)
    finally:
        process.kill()
    assert returncode == 143, (tmp_path / "stderr.txt").read_text()[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    rows = read_trials(sweep_dir)
    assert [(row["job"], row["status"]) for row in rows] == [("0", "interrupted"), ("1", "not run"), ("2", "not run")]
    assert not (sweep_dir / "0" / "checkpoints").exists()  # it never trained


def test_sigterm_to_a_parallel_sweep_stops_its_workers_writes_its_summary_and_exits_143(tmp_path: Path) -> None:
    """The main process of a joblib sweep only waits; a scheduler's SIGTERM must still stop the workers."""
    args = [TRAIN, "-m", "+experiment=parity_gru", *QUIET, "seed=1,2,3", "trainer.max_epochs=200",
            "callbacks.early_stopping=null", "data.num_train=256", "hydra/launcher=parallel"]
    process = start_script(args, tmp_path)
    try:
        for job in ("0", "1"):  # both workers are training
            wait_for(f"logs/parity_gru/multiruns/*/{job}/checkpoints/last.ckpt", tmp_path, process)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=120)
    finally:
        process.kill()
    assert returncode == 143, (tmp_path / "stderr.txt").read_text()[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    rows = read_trials(sweep_dir)
    assert [(row["job"], row["status"]) for row in rows] == [
        ("0", "interrupted"), ("1", "interrupted"), ("2", "not run")]
    written = {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("*") if p.is_file()}
    time.sleep(10)  # an epoch takes a second or two here: a worker still training would have saved again
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("*") if p.is_file()} == written


@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """Three seeded TPE trials; ``pooling=avg`` is not a pooling, so the trials that draw it fail."""
    root = tmp_path_factory.mktemp("optuna")
    return root, run_script([*OPTUNA_ARGS, "hydra.sweeper.n_trials=3"], root)


def test_optuna_sweep_records_every_trial_and_survives_a_failed_one(optuna_sweep) -> None:
    root, result = optuna_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(root)
    rows = read_trials(sweep_dir)
    assert len(rows) == 3
    statuses = sorted(row["status"] for row in rows)
    assert statuses[0] == "completed" and statuses[-1] == "failed"
    assert all(("pooling=avg" in row["overrides"]) == (row["status"] == "failed") for row in rows)
    assert all("pooling must be one of" in row["error"] for row in rows if row["status"] == "failed")
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    completed = [float(row["val/acc_best"]) for row in rows if row["status"] == "completed"]
    assert best["best_value"] == pytest.approx(max(completed))
    assert best["best_params"]["model.net.pooling"] == "last"


def test_optuna_sweep_resumes_from_its_storage_file(optuna_sweep) -> None:
    import optuna

    root, _ = optuna_sweep
    sweep_dir = only_sweep_dir(root)
    url = f"sqlite:///{sweep_dir}/optuna.db"
    study = optuna.load_study(study_name="parity_gru", storage=url)
    assert sorted(t.state.name for t in study.trials).count("FAIL") >= 1 and len(study.trials) == 3
    # the same command (same search space) with the old sweep folder: one more trial joins the study
    result = run_script([*OPTUNA_ARGS, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={sweep_dir}"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name="parity_gru", storage=url).trials
    assert len(trials) == 4
    # a new configuration: optuna's own seeded TPE sampler would start its stream again and repeat trial 0
    assert trials[3].params not in [t.params for t in trials[:3]]
    assert len(read_trials(sweep_dir)) == 4


@pytest.mark.slow  # about 70 s under load; the fast suite has the resume above and tests/test_optuna_sampler.py
def test_optuna_sweep_of_three_trials_resumed_to_six_has_six_distinct_parameter_sets(tmp_path: Path) -> None:
    """Before the trial-seeded sampler, the resumed trials 3-5 repeated trials 0-2 (seeded TPE, 8 startup)."""
    import optuna

    args = [TRAIN, "+experiment=parity_gru", "hparams_search=ucr_optuna", *QUIET, "hydra.sweeper.n_trials=3",
            "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "callbacks.early_stopping=null"]
    first = run_script(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    resumed = run_script([*args, f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = optuna.load_study(study_name="parity_gru", storage=f"sqlite:///{sweep_dir}/optuna.db").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6
    rows = read_trials(sweep_dir)
    assert [row["status"] for row in rows] == ["completed"] * 6 and len({row["overrides"] for row in rows}) == 6


@pytest.mark.slow  # an interrupted and a resumed Optuna sweep: 40 to 90 s depending on load
def test_sigterm_in_an_optuna_trial_stops_the_study_and_a_resume_goes_on_with_new_trials(tmp_path: Path) -> None:
    import optuna

    args = [TRAIN, "+experiment=parity_gru", "hparams_search=ucr_optuna", *QUIET, "data.num_train=256",
            "callbacks.early_stopping=null", "model.net.pooling=choice(last,mean)"]
    process = start_script([*args, "hydra.sweeper.n_trials=3", "trainer.max_epochs=200"], tmp_path)
    try:
        wait_for("logs/parity_gru/multiruns/*/*_0/checkpoints/last.ckpt", tmp_path, process)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=120)
    finally:
        process.kill()
    assert returncode == 143, (tmp_path / "stderr.txt").read_text()[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    assert [row["status"] for row in read_trials(sweep_dir)] == ["interrupted"]  # trials 1 and 2 never asked
    url = f"sqlite:///{sweep_dir}/optuna.db"
    assert [t.state.name for t in optuna.load_study(study_name="parity_gru", storage=url).trials] == ["RUNNING"]

    resumed = run_script([*args, "hydra.sweeper.n_trials=2", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep_dir}"],
                         tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = optuna.load_study(study_name="parity_gru", storage=url).trials
    assert [t.state.name for t in trials] == ["RUNNING", "COMPLETE", "COMPLETE"]
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 3
    assert sorted(row["status"] for row in read_trials(sweep_dir)) == ["completed", "completed", "interrupted"]


def test_summary_lists_a_pruned_trial_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=0"]))
    (tmp_path / "0" / PRUNED_FILE).write_text("TrialPruned: trial 0 pruned after epoch 1: val/acc=0.5\n")
    rows = read_trials(write_summary(tmp_path).parent)
    assert [(r["job"], r["status"], r["error"]) for r in rows] == [
        ("0", "pruned", "TrialPruned: trial 0 pruned after epoch 1: val/acc=0.5")]


def test_search_space_maps_hydra_sweeps_to_optuna_distributions_and_keeps_the_fixed_overrides() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from seqforge.utils.optuna_sweep import search_space

    params = {"lr": "tag(log, interval(0.001, 0.1))", "width": "choice(32, 64)", "layers": "int(interval(1, 4))",
              "k": "range(1, 10, 3)", "p": "range(0.1, 0.35, 0.1)", "dropout": 0.5}
    space, fixed = search_space(params, ["width=choice(16,'a b')", "+experiment=parity_gru", "seed=3"])
    p = space.pop("p")
    assert isinstance(p, FloatDistribution) and (p.low, p.high, p.step) == (0.1, 0.3, 0.1)
    assert space == {"lr": FloatDistribution(0.001, 0.1, log=True), "width": CategoricalDistribution((16, "a b")),
                     "layers": IntDistribution(1, 4), "k": IntDistribution(1, 7, step=3)}
    assert fixed == ["dropout=0.5", "+experiment=parity_gru", "seed=3"]  # the command line replaced params' width


@pytest.mark.parametrize(("expression", "message"), [
    ("glob(*)", "Glob is not supported"),
    ("choice([1,2],3)", r"choices must be None, bool, int, float or str, got \[\[1, 2\]\]"),
    ("tag(log, range(1, 10, 3))", "step"),
    ("range(5, 1)", "is empty"),
])
def test_search_space_refuses_what_optuna_cannot_draw_naming_the_key(expression: str, message: str) -> None:
    from seqforge.utils.optuna_sweep import search_space

    with pytest.raises(ValueError, match=rf"search space 'model.net.rnn.cell': .*{message}"):
        search_space({"model.net.rnn.cell": expression}, [])


def test_drawn_values_become_overrides_that_parse_back_to_the_same_values() -> None:
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from seqforge.utils.optuna_sweep import search_space, trial_overrides

    space, fixed = search_space({"name": "choice('a b', 'x=y', \"it's\")", "lr": "interval(0.1, 0.2)"}, ["seed=1"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        trial = study.ask(space)
        overrides = trial_overrides(trial, fixed)
        parsed = {o.get_key_element(): o.value() for o in OverridesParser.create().parse_overrides(overrides)}
        assert parsed == {"seed": 1, **trial.params}


@pytest.mark.parametrize(("setting", "message"), [
    ({"direction": "max"}, r"hydra.sweeper.direction: expected one of \('minimize', 'maximize'\), got 'max'"),
    ({"n_trials": 0}, "hydra.sweeper.n_trials: expected an int >= 1, got 0"),
    ({"n_jobs": 1.5}, "hydra.sweeper.n_jobs: expected an int >= 1, got 1.5"),
    ({"max_failure_rate": 2}, r"hydra.sweeper.max_failure_rate: expected a number in \[0, 1\], got 2"),
])
def test_bad_sweeper_settings_are_refused_by_name_before_any_trial(setting: dict, message: str) -> None:
    from omegaconf import OmegaConf

    from seqforge.utils.optuna_sweep import run_study

    settings = {"direction": "maximize", "study_name": None, "storage": None, "n_trials": 1, "n_jobs": 1,
                "max_failure_rate": 0.0, "sampler": None, "params": {"lr": "interval(0.1, 0.2)"}, "plots": False,
                **setting}
    with pytest.raises(ValueError, match=message):
        run_study(None, OmegaConf.create({"hydra": {"sweep": {"dir": "unused"}}}), [], **settings)


def test_optuna_sweep_saves_its_results_and_plots(optuna_sweep) -> None:
    root, result = optuna_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(root)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    statuses = [row["status"] for row in read_trials(sweep_dir)]
    assert best["trials"] == {"COMPLETE": statuses.count("completed"), "FAIL": statuses.count("failed")}
    assert best["direction"] == "maximize" and best["study_name"] == "parity_gru"
    for name in ("optimization_history.png", "param_importances.png"):
        data = (sweep_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, name


TINY_FIT = ["callbacks.early_stopping=null", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1"]


def test_pruner_stops_trials_from_their_validation_metric_and_the_study_records_them_pruned(tmp_path: Path) -> None:
    """Real pruning through ``-m hparams_search=optuna``: a threshold no accuracy reaches prunes every trial
    that validates past its warm-up epoch (max_epochs=3); the 1-epoch trials complete."""
    import optuna

    pruner = "callbacks.optuna_pruning.pruner"
    args = [TRAIN, "-m", "+experiment=parity_gru", "hparams_search=optuna", *QUIET, *TINY_FIT,
            "hydra.sweeper.n_trials=4", "trainer.max_epochs=choice(1,3)",
            f"{pruner}._target_=optuna.pruners.ThresholdPruner", f"~{pruner}.n_startup_trials", f"+{pruner}.lower=2.0",
            f"{pruner}.n_warmup_steps=1"]
    result = run_script(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    trials = optuna.load_study(study_name="parity_gru", storage=f"sqlite:///{sweep_dir}/optuna.db").trials
    epochs = [t.params["trainer.max_epochs"] for t in trials]
    assert sorted(set(epochs)) == [1, 3]  # both kinds drawn (the sampler is seeded)
    for trial in trials:
        if trial.params["trainer.max_epochs"] == 3:
            assert trial.state.name == "PRUNED" and sorted(trial.intermediate_values) == [0, 1]
        else:
            assert trial.state.name == "COMPLETE" and sorted(trial.intermediate_values) == [0]
    rows = {row["job"].rsplit("_", 1)[1]: row for row in read_trials(sweep_dir)}
    for trial in trials:
        row = rows[str(trial.number)]  # job num = trial number
        assert row["status"] == {"PRUNED": "pruned", "COMPLETE": "completed"}[trial.state.name]
        if trial.state.name == "PRUNED":
            assert row["error"].startswith(f"TrialPruned: trial {trial.number} pruned after epoch 1: val/acc=")
            assert row["test/acc"] == ""  # a pruned trial skips its test stage
        else:
            assert float(row["test/acc"]) >= 0


def test_a_sweep_direction_against_the_monitors_mode_fails_its_trials_naming_both(tmp_path: Path) -> None:
    args = [TRAIN, "-m", "+experiment=parity_gru", "hparams_search=optuna", "debug=fdr", *QUIET,
            "hydra.sweeper.n_trials=1", "hydra.sweeper.direction=minimize"]
    result = run_script(args, tmp_path)
    assert result.returncode == 1 and "no trial of study 'parity_gru' completed" in result.stderr, result.stderr[-3000:]
    (row,) = read_trials(only_sweep_dir(tmp_path))
    assert row["status"] == "failed"
    assert "the study 'parity_gru' is to minimize, but the monitor val/acc has mode 'max'" in row["error"]


def test_hydra_discovers_the_sweeper_plugin_without_importing_optuna_or_torch() -> None:
    """Hydra imports every plugin module at its scan: ours must not pull in the sweep extra or torch."""
    code = ("import sys; from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper; "
            "print([f'{c.__module__}.{c.__name__}' for c in Plugins.instance().discover(Sweeper)]); "
            "print(sorted({'optuna', 'torch', 'seqforge'} & set(sys.modules)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    plugins, imported = result.stdout.splitlines()
    assert "'hydra_plugins.seqforge_optuna_sweeper.optuna_sweeper.OptunaSweeper'" in plugins
    assert imported == "[]"


@pytest.mark.slow  # joblib starts worker processes: about a minute under load
def test_optuna_sweep_through_the_joblib_launcher_reports_from_the_workers_and_names_jobs_by_trial(
    tmp_path: Path,
) -> None:
    import optuna

    args = [TRAIN, "-m", "+experiment=parity_gru", "hparams_search=optuna", *QUIET, *TINY_FIT, "trainer.max_epochs=2",
            "hydra/launcher=parallel", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4"]
    result = run_script(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    trials = optuna.load_study(study_name="parity_gru", storage=f"sqlite:///{sweep_dir}/optuna.db").trials
    assert [(t.state.name, sorted(t.intermediate_values)) for t in trials] == [("COMPLETE", [0, 1])] * 4
    rows = read_trials(sweep_dir)
    assert sorted(row["job"].rsplit("_", 1)[1] for row in rows) == ["0", "1", "2", "3"]
    assert [row["status"] for row in rows] == ["completed"] * 4

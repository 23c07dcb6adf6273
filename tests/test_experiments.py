"""deqlib.experiments: the runner on tiny data, its results format, and resuming."""

import csv
import json

import pytest

from deqlib import experiments

TINY = dict(dataset="digits", train_size=120, test_size=60, epochs=2, batch_size=32, progress=False)


def test_runner_writes_one_record_per_run_with_provenance(tmp_path):
    records = experiments.run_experiment(models=["delm", "linear", "deep2"], losses=["square"], seeds=[0, 1],
                                         out=tmp_path, command="pytest", **TINY)
    assert len(records) == 6
    files = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert files[0] == "square__deep2__seed0.json" and len(files) == 6
    record = json.loads((tmp_path / "runs" / "square__delm__seed1.json").read_text())
    for key in ("dataset", "model", "loss", "seed", "lr", "epochs", "device", "date", "command", "history"):
        assert key in record, key
    assert record["command"] == "pytest" and len(record["history"]) == 3
    first = record["history"][0]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "S_norm", "sigma_min_U_sq", "U_norm"} <= set(first)
    assert 0 < first["S_norm"] < 0.8 and first["sigma_min_U_sq"] >= 1 and first["U_norm"] >= 1
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert len(rows) == 6 and (tmp_path / "summary.png").stat().st_size > 0


def test_linear_model_starts_from_the_delm_function(tmp_path):
    records = experiments.run_experiment(models=["delm", "linear"], losses=["square"], seeds=[3], out=tmp_path,
                                         **TINY)
    by_model = {r["model"]: r["history"][0] for r in records}
    assert by_model["delm"]["train_loss"] == pytest.approx(by_model["linear"]["train_loss"], rel=1e-5)


def test_interrupted_run_resumes_without_redoing_finished_runs(tmp_path):
    experiments.run_experiment(models=["delm", "linear"], losses=["square"], seeds=[0], out=tmp_path, **TINY)
    kept = tmp_path / "runs" / "square__delm__seed0.json"
    lost = tmp_path / "runs" / "square__linear__seed0.json"
    kept_text = kept.read_text()
    lost.unlink()                                    # as if the run was interrupted before it
    (tmp_path / "runs" / "square__linear__seed0.tmp").write_text("{half a file")
    records = experiments.run_experiment(models=["delm", "linear"], losses=["square"], seeds=[0],
                                         out=tmp_path, **TINY)
    assert kept.read_text() == kept_text             # not recomputed
    assert lost.exists() and len(records) == 2


def test_low_rank_initialisation_starts_near_gamma(tmp_path):
    records = experiments.run_experiment(models=["delm_low_rank"], losses=["square"], seeds=[0], out=tmp_path,
                                         **TINY)
    assert records[0]["history"][0]["S_norm"] == pytest.approx(0.8, abs=0.01)


def test_command_line(tmp_path, capsys):
    experiments.main(["--dataset", "digits", "--models", "linear", "--losses", "cross_entropy", "--seeds", "0",
                      "--epochs", "1", "--train-size", "80", "--test-size", "40", "--out", str(tmp_path),
                      "--no-progress"])
    assert "1 runs in" in capsys.readouterr().out
    record = json.loads((tmp_path / "runs" / "cross_entropy__linear__seed0.json").read_text())
    assert record["command"].startswith("python -m deqlib.experiments --dataset digits")


def test_tuning_picks_a_learning_rate_from_the_grid(tmp_path, capsys):
    experiments.main(["--dataset", "digits", "--models", "linear", "--losses", "square", "--seeds", "0",
                      "--epochs", "1", "--train-size", "80", "--test-size", "40", "--out", str(tmp_path),
                      "--tune", "--lr-grid", "0.01", "0.05", "--no-progress"])
    best = json.loads((tmp_path / "tuned" / "learning_rates.json").read_text())
    assert best["square__linear"] in (0.01, 0.05)


def test_unknown_model_or_loss_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        experiments.run_experiment(models=["resnet"], out=tmp_path, **TINY)
    with pytest.raises(ValueError, match="unknown loss"):
        experiments.run_experiment(losses=["hinge"], out=tmp_path, **TINY)

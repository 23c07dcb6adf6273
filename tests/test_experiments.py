"""deqlib.experiments: runs keyed by all their settings (a change is never answered with stale
runs), corrupt files named and rerun, tuning, full-batch GD from the same W₀, the tables, and
figures drawn on their own Figure. All on a few of the embedded digits."""

import csv
import json
import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from deqlib import data, experiments
from deqlib.experiments import CorruptRunWarning, reproduce

ROOT = Path(__file__).resolve().parent.parent

TINY = dict(dataset="digits", train_size=120, test_size=60, epochs=2, batch_size=32,
            progress=False)


def _run(tmp_path, **change):
    options = {**TINY, "models": ["linear"], "losses": ["square"], "seeds": [0], "out": tmp_path,
               "summary": False, **change}
    return experiments.run_experiment(**options)


def test_runner_writes_one_record_per_run_with_provenance(tmp_path):
    records = experiments.run_experiment(models=["delm", "linear", "deep2"], losses=["square"],
                                         seeds=[0, 1], out=tmp_path, command="pytest", **TINY)
    assert len(records) == 6
    files = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert len(files) == 6 and files[0].startswith("square__deep2__seed0__")
    record = next(r for r in records if r["model"] == "delm" and r["seed"] == 1)
    stored = json.loads(next((tmp_path / "runs").glob(f"square__delm__seed1__{record['key']}"
                                                      ".json")).read_text())
    assert stored == record
    for key in ("dataset", "model", "init", "loss", "seed", "lr", "epochs", "batch_size",
                "gamma", "delta", "train_size", "test_size", "data_seed", "width", "dtype",
                "device", "date", "command", "wall_time_s", "torch", "history", "key"):
        assert key in record, key
    assert record["command"] == "pytest" and len(record["history"]) == 3
    first = record["history"][0]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "S_norm", "s_min_U_sq",
            "U_norm"} <= set(first)
    assert 0 < first["S_norm"] < 0.8 and first["s_min_U_sq"] >= 1 and first["U_norm"] >= 1
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert len(rows) == 6 and (tmp_path / "summary.png").stat().st_size > 0


def test_linear_model_starts_from_the_delm_function(tmp_path):
    records = experiments.run_experiment(models=["delm", "linear"], losses=["square"], seeds=[3],
                                         out=tmp_path, summary=False, **TINY)
    by_model = {r["model"]: r["history"][0]["train_loss"] for r in records}
    assert by_model["delm"] == pytest.approx(by_model["linear"], rel=1e-5), by_model
    low = {name: experiments.make_model(name, 64, 10, seed=3).end_to_end().detach()
           for name in ("delm_low_rank", "linear_low_rank", "linear")}
    assert torch.allclose(low["linear_low_rank"], low["delm_low_rank"], rtol=1e-5, atol=1e-7)
    assert not torch.allclose(low["linear_low_rank"], low["linear"], atol=1e-3)


def test_every_setting_is_in_the_key():
    base = dict(dataset="digits", model="delm", loss="square", seed=0, lr=0.05, epochs=2,
                batch_size=32, train_size=120, test_size=60, data_seed=0, gamma=0.8,
                delta=1e-6, width=None)
    key = experiments.run_key(experiments.run_settings(**base))
    changes = dict(dataset="mnist10k", model="delm_low_rank", loss="cross_entropy", seed=1,
                   lr=0.03, epochs=3, batch_size=None, train_size=100, test_size=None,
                   data_seed=1, gamma=0.5, delta=1e-5, width=32)
    for name, value in changes.items():
        other = experiments.run_key(experiments.run_settings(**{**base, name: value}))
        assert other != key, f"changing {name} to {value!r} kept the key {key}"


@pytest.mark.parametrize("change", [dict(epochs=3), dict(lr=0.02), dict(batch_size=64),
                                    dict(train_size=100), dict(test_size=50),
                                    dict(models=["deep2"], width=16)])
def test_a_changed_setting_runs_again_never_returns_the_old_run(tmp_path, change):
    base = dict(models=["deep2"]) if "width" in change else {}
    old = _run(tmp_path, **base)[0]
    new = _run(tmp_path, **change)[0]
    assert new["key"] != old["key"]
    for name, value in change.items():
        if name != "models":
            assert new[name] == value, (name, new[name], value)
    assert len(new["history"]) == new["epochs"] + 1
    assert new["train_examples"] == (change.get("train_size") or 120)
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2     # the old run is kept


def test_delm_constants_are_in_the_key(tmp_path):
    old = _run(tmp_path, models=["delm"])[0]
    new = _run(tmp_path, models=["delm"], gamma=0.5)[0]
    assert new["gamma"] == 0.5 and new["key"] != old["key"]
    assert new["history"][0]["S_norm"] < 0.5 < old["history"][0]["S_norm"] + 0.5


def test_a_finished_run_is_reused_not_retrained(tmp_path, monkeypatch):
    first = _run(tmp_path)[0]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(experiments.runner, "fit", no_training)
    assert _run(tmp_path)[0] == first


def test_a_file_for_other_settings_under_the_name_is_rerun(tmp_path):
    first = _run(tmp_path)[0]
    path = next((tmp_path / "runs").glob("*.json"))
    edited = {**first, "lr": 0.5}                     # hand-edited, or an old format
    path.write_text(json.dumps(edited))
    with pytest.warns(CorruptRunWarning, match=f"{path.name} was written for other settings "
                                               r"\(lr=0.5, now 0.05\)"):
        again = _run(tmp_path)[0]
    assert again["lr"] == 0.05 and json.loads(path.read_text())["lr"] == 0.05


def test_corrupt_and_partial_files_are_named_rerun_and_the_rest_resume(tmp_path):
    records = _run(tmp_path, seeds=[0, 1, 2])
    paths = {r["seed"]: next((tmp_path / "runs").glob(f"*seed{r['seed']}__{r['key']}.json"))
             for r in records}
    kept = paths[0].read_text()
    paths[1].write_text('{"dataset": "digits", "hist')                       # cut off
    partial = {**records[2], "history": records[2]["history"][:1]}          # one row of three
    paths[2].write_text(json.dumps(partial))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _run(tmp_path, seeds=[0, 1, 2])
    messages = [str(w.message) for w in caught if w.category is CorruptRunWarning]
    assert len(messages) == 2, messages
    # the warning points at the line that called the runner, not into deqlib
    assert {w.filename for w in caught if w.category is CorruptRunWarning} == {__file__}
    assert paths[1].name in messages[0] and "cannot be read (JSONDecodeError" in messages[0]
    assert paths[2].name in messages[1]
    assert "is partial: 1 history rows for 2 epochs" in messages[1]
    assert paths[0].read_text() == kept                                     # not recomputed
    assert [len(r["history"]) for r in again] == [3, 3, 3]
    assert all(json.loads(p.read_text())["history"] for p in paths.values())


def test_load_runs_filters_and_skips_unreadable_files(tmp_path):
    _run(tmp_path, models=["linear", "delm"], seeds=[0, 1])
    (tmp_path / "runs" / "broken.json").write_text("[1, 2")
    with pytest.warns(CorruptRunWarning, match="broken.json cannot be read"):
        runs = experiments.load_runs(tmp_path, model="delm")
    assert sorted(r["seed"] for r in runs) == [0, 1] and {r["model"] for r in runs} == {"delm"}


def test_history_difference_measures_the_losses_relatively_and_the_accuracy_in_points():
    rows = [{"train_loss": 2.0, "test_loss": 1.0, "test_acc": 0.5, "S_norm": 0.1}] * 2
    assert reproduce.history_difference(rows, rows) == {"relative": 0.0, "test_acc": 0.0}
    moved = [rows[0], {**rows[1], "test_loss": 1.001, "test_acc": 0.52}]
    d = reproduce.history_difference(moved, rows)
    assert d["relative"] == pytest.approx(1e-3) and d["test_acc"] == pytest.approx(0.02)
    assert reproduce.history_difference(rows[:1], rows)["relative"] == float("inf")
    no_spectrum = [{k: v for k, v in r.items() if k != "S_norm"} for r in rows]
    assert reproduce.history_difference(no_spectrum, rows)["relative"] == float("inf")


def test_every_code_version_of_the_stored_mnist10k_runs_was_reproduced_and_still_is():
    """The stored runs come from several commits (some +dirty): a run of each was trained again
    by scripts/reproduce_mnist10k.py, and the training path still computes what it did then."""
    stored = ROOT / "book" / "results" / "mnist10k"
    rep = json.loads((stored / "reproduced.json").read_text())
    codes = {r["code"] for part in ("same_lr", "tuned")
             for r in experiments.load_runs(stored / part)}
    missing = codes - {r["code"] for r in rep["runs"]}
    assert not missing, (f"stored mnist10k runs from code versions {sorted(missing)} were never "
                         "reproduced: run scripts/reproduce_mnist10k.py and commit its output")
    for r in rep["runs"]:
        assert r["relative"] <= 1e-4 and r["test_acc"] <= 1e-3, r
    if torch.get_default_dtype() != torch.float32:
        pytest.skip("the fingerprint was taken in float32")
    now, then = reproduce.training_fingerprint(), rep["fingerprint"]
    assert now.keys() == then.keys()
    for name in then:
        for new, old in zip(now[name], then[name], strict=True):
            # losses and ‖S_t‖₂ to a relative 1e-4; the accuracy (3rd) to one test image in 100
            close = [abs(a - b) <= (0.011 if k == 2 else 1e-4 * abs(b))
                     for k, (a, b) in enumerate(zip(new, old, strict=True))]
            assert all(close), (
                f"{name}: the training path computes {new}, not {old} as when the stored "
                f"mnist10k runs were reproduced (code {rep['reproduced_by']}): the stored runs "
                "may no longer be what the code produces. Re-run scripts/reproduce_mnist10k.py "
                "(it needs mnist10k) and commit book/results/mnist10k/reproduced.json, or "
                "regenerate the runs")


def test_a_diverged_run_is_stored_as_such_and_resumed(tmp_path):
    record = _run(tmp_path, lr=80.0, epochs=30)[0]
    assert record["diverged"] and "lower the learning rate" in record["error"]
    assert record["history"] == []
    assert _run(tmp_path, lr=80.0, epochs=30)[0] == record
    rows = experiments.summary_table([record])
    assert rows[0]["diverged"] == 1 and np.isnan(rows[0]["test_acc"])


def test_tuning_picks_the_lowest_mean_training_loss_and_reuses_those_runs(tmp_path, monkeypatch):
    options = {k: v for k, v in TINY.items() if k != "progress"}
    result = experiments.tune_learning_rates(lr_grid=[0.002, 0.02, 80.0], models=["linear"],
                                             losses=["square"], seeds=[0, 1], out=tmp_path,
                                             **{**options, "epochs": 3})
    scores = result["scores"]["square/linear"]
    assert scores["80"] == float("inf")                   # diverged: never chosen
    assert scores["0.02"] < scores["0.002"], scores      # a larger stable step gets further
    runs = {(r["lr"], r["seed"]): r["history"][-1]["train_loss"] for r in result["runs"]
            if not r["diverged"]}
    assert scores["0.02"] == pytest.approx((runs[0.02, 0] + runs[0.02, 1]) / 2)
    assert result["chosen"]["square/linear"] == 0.02
    stored = json.loads((tmp_path / "learning_rates.json").read_text())
    assert stored["chosen"] == result["chosen"] and stored["seeds"] == [0, 1]
    monkeypatch.setattr(experiments.runner, "fit", lambda *a, **k: pytest.fail("retrained"))
    experiments.run_experiment(models=["linear"], losses=["square"], seeds=[0, 1],
                               lr=result["chosen"], out=tmp_path, **{**TINY, "epochs": 3})


def test_learning_rates_by_loss_and_model(tmp_path):
    records = _run(tmp_path, models=["linear", "deep2"],
                   lr={"square": 0.02, "square/deep2": 0.03})
    assert [r["lr"] for r in records] == [0.02, 0.03]
    with pytest.raises(ValueError, match="no learning rate for loss='square', model='linear'"):
        _run(tmp_path, lr={"cross_entropy": 0.1})


def test_gd_gap_starts_both_models_at_the_same_function(tmp_path, monkeypatch):
    common = dict(dataset="digits", train_size=200, steps=30, lr=0.05, record_every=10,
                  progress=False)
    records = experiments.run_gd_gaps(tmp_path, losses=["square"], **common)
    assert [r["init"] for r in records] == ["gaussian", "low_rank"]
    for r in records:
        assert len(r["delm_loss"]) == len(r["linear_loss"]) == 31
        assert r["S_step"] == [0, 10, 20, 30]
        assert r["delm_loss"][0] == pytest.approx(r["linear_loss"][0], rel=1e-5)
        assert r["delm_loss"][-1] < r["delm_loss"][0]
        assert r["linear_loss"][-1] < r["linear_loss"][0]
        assert r["optimum"] <= min(r["delm_loss"] + r["linear_loss"]) + 1e-6
    low = records[1]
    assert low["S_norm"][0] == pytest.approx(0.8, abs=0.02), low["S_norm"]
    monkeypatch.setattr(experiments.gd_gap, "gd_loss_gap", lambda **k: pytest.fail("recomputed"))
    assert experiments.run_gd_gaps(tmp_path, losses=["square"], **common) == records


def test_gd_gap_rejects_bad_settings():
    with pytest.raises(ValueError, match="init must be one of 'gaussian', 'low_rank'"):
        experiments.gd_loss_gap(dataset="digits", init="orthogonal")
    with pytest.raises(ValueError, match="steps must be an integer >= 1; got steps=0"):
        experiments.gd_loss_gap(dataset="digits", steps=0)
    with pytest.raises(ValueError, match="lr must be a positive finite number .*; got lr=-1"):
        experiments.gd_loss_gap(dataset="digits", lr=-1)
    with pytest.raises(TypeError, match="steps must be an integer; got steps=3.0"):
        experiments.gd_loss_gap(dataset="digits", steps=3.0)
    with pytest.raises(TypeError, match="lr must be a positive finite number .* of type str"):
        experiments.gd_loss_gap(dataset="digits", lr="0.1")


def test_gd_gap_takes_the_steps_of_sgd_on_the_modules():
    """gd_loss_gap runs theory.gradient_descent with eta = lr/n; it used to run torch's SGD on
    the DELM and linear modules with the mean loss. Both, in float64, to rounding."""
    from deqlib import LinearModel
    from deqlib.train import loss_fn

    previous = torch.tensor(0.0).dtype
    torch.set_default_dtype(torch.float64)
    try:
        for loss, lr in (("square", 0.05), ("cross_entropy", 0.3)):
            with warnings.catch_warnings():
                warnings.simplefilter("error")       # stable steps: no warning
                r = experiments.gd_loss_gap(dataset="digits", train_size=60, steps=6, lr=lr,
                                            loss=loss, record_every=3, seed=2, device="cpu")
            digits = data.load("digits", train_size=60, dtype=torch.float64)
            delm = experiments.make_model("delm", 64, 10, seed=2)
            linear = LinearModel.from_matrix(delm.end_to_end().detach())
            criterion = loss_fn(loss, num_classes=10)
            for name, model in (("delm", delm), ("linear", linear)):
                opt, curve = torch.optim.SGD(model.parameters(), lr=lr), []
                for step in range(7):
                    opt.zero_grad()
                    value = criterion(model(digits.X_train), digits.y_train)
                    curve.append(value.item())
                    if step < 6:
                        value.backward()
                        opt.step()
                assert r[f"{name}_loss"] == pytest.approx(curve, rel=1e-10, abs=0), (loss, name)
            assert r["S_step"] == [0, 3, 6]
            assert r["S_norm"][0] == pytest.approx(experiments.delm_spectra(
                experiments.make_model("delm", 64, 10, seed=2))["S_norm"], rel=1e-12)
    finally:
        torch.set_default_dtype(previous)
    with pytest.warns(RuntimeWarning) as caught:
        experiments.gd_loss_gap(dataset="digits", train_size=60, steps=2, lr=0.3, device="cpu")
    said = " | ".join(str(w.message) for w in caught)
    assert "full-batch GD on the linear model with lr=0.3 (eta = lr/n = 0.005" in said, said
    assert "stability limit" in said, said
    assert {w.filename for w in caught} == {__file__}          # at the caller's line


def _fake(model, loss, seed, accs, losses_, s_norms=None, gamma=0.8):
    rows = [{"epoch": i, "train_loss": tl, "train_acc": 0.5, "test_loss": tl, "test_acc": a,
             "time": 0.5 * i, **({"S_norm": s_norms[i]} if s_norms else {})}
            for i, (a, tl) in enumerate(zip(accs, losses_))]
    return {"dataset": "fake", "model": model, "loss": loss, "seed": seed, "lr": 0.1,
            "epochs": len(rows) - 1, "gamma": gamma, "diverged": False, "history": rows}


def test_summary_table_gives_the_numbers():
    records = [_fake("delm", "square", s, [0.1, a], [1.0, tl], [0.08, sT])
               for s, a, tl, sT in ((0, 0.80, 0.30, 0.1), (1, 0.82, 0.32, 0.2),
                                    (2, 0.84, 0.34, 0.3))]
    records += [_fake("linear", "square", s, [0.1, a], [1.0, 0.5]) for s, a in
                ((0, 0.70, ), (1, 0.71), (2, 0.72))]
    rows = {r["model"]: r for r in experiments.summary_table(records)}
    assert rows["delm"]["test_acc"] == pytest.approx(0.82)
    assert rows["delm"]["test_acc_std"] == pytest.approx(0.02)          # sample std, n - 1
    assert rows["delm"]["train_loss"] == pytest.approx(0.32)
    assert rows["delm"]["S0"] == pytest.approx(0.08) and rows["delm"]["ST"] == pytest.approx(0.2)
    assert rows["linear"]["S0"] is None and rows["delm"]["epoch_time_s"] == pytest.approx(0.5)
    text = experiments.summary_text(records).splitlines()
    assert "82.0 ± 2.0" in text[1] and "0.0800 → 0.2000" in text[1] and "71.0 ± 1.0" in text[2]


def test_figures_are_drawn_on_their_own_figure_without_global_state(tmp_path):
    pyplot_before = "matplotlib.pyplot" in sys.modules
    # raw values: reading rcParams["backend"] (or get_backend()) would itself import pyplot
    rc = {k: dict.__getitem__(matplotlib.rcParams, k) for k in matplotlib.rcParams.keys()}
    records = [_fake(m, loss, s, [0.1, 0.5, 0.7], [1.0, 0.6, 0.4], [0.08, 0.09, 0.1])
               for m in ("delm", "linear") for loss in ("square", "cross_entropy")
               for s in (0, 1)]
    fig = experiments.plot_curves(records)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]                  # one mean line a model
    assert all(len(ax.collections) == 2 for ax in fig.axes)              # one seed band a model
    fig = experiments.plot_S_norm(records)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 2 + 1   # two losses, and γ
    fig = experiments.plot_S_norm(records, relative=True)                # drift, in per cent
    drift = [line.get_ydata() for line in fig.axes[0].lines[:2]]
    assert np.allclose(drift, [[0, 12.5, 25]] * 2) and fig.axes[0].get_yscale() == "linear"
    gap = {"loss": "square", "init": "gaussian", "lr": 0.1, "step": [0, 1, 2],
           "delm_loss": [1.0, 0.5, 0.3], "linear_loss": [1.0, 0.6, 0.4], "optimum": 0.1}
    fig = experiments.plot_gd_gap([gap])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    experiments.write_summary(records, tmp_path)
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"
    changed = [k for k, v in rc.items() if dict.__getitem__(matplotlib.rcParams, k) is not v
               and dict.__getitem__(matplotlib.rcParams, k) != v]
    assert not changed, f"global rcParams changed: {changed}"
    if not pyplot_before:
        assert "matplotlib.pyplot" not in sys.modules, "a plot helper imported pyplot"


def _write_idx(folder, n):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        for name, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                         for d in arr.shape)
            (folder / name).write_bytes(head + arr.tobytes())


def test_full_datasets_want_a_gpu_unless_told(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="wants a GPU.*allow_cpu=True"):
        experiments.run_full_datasets(tmp_path, root=tmp_path)


def test_full_datasets_run_and_resume_from_files_on_disk(tmp_path, monkeypatch):
    _write_idx(tmp_path / "data" / "MNIST" / "raw", 30)
    monkeypatch.setattr(data, "_download", lambda *a: pytest.fail("downloaded"))
    options = dict(datasets=["mnist"], allow_cpu=True, root=tmp_path / "data", models=["linear"],
                   losses=["square"], seeds=[0], epochs=1, lr=0.01, batch_size=10,
                   progress=False, device="cpu")
    first = experiments.run_full_datasets(tmp_path / "out", **options)
    assert len(first["mnist"]) == 1 and (tmp_path / "out" / "mnist" / "runs").is_dir()
    monkeypatch.setattr(experiments.runner, "fit", lambda *a, **k: pytest.fail("retrained"))
    assert experiments.run_full_datasets(tmp_path / "out", **options) == first
    with pytest.raises(ValueError, match=r"datasets\[0\] must be one of 'mnist', .*'digits'"):
        experiments.run_full_datasets(tmp_path, datasets=["digits"], allow_cpu=True)


def test_command_line_runs_and_the_whole_comparison(tmp_path, capsys):
    experiments.main(["run", "--dataset", "digits", "--models", "linear", "--losses",
                      "cross_entropy", "--seeds", "0", "--epochs", "1", "--train-size", "80",
                      "--test-size", "40", "--out", str(tmp_path / "one"), "--no-progress"])
    assert "1 runs in" in capsys.readouterr().out
    record = json.loads(next((tmp_path / "one" / "runs").glob("*.json")).read_text())
    assert record["command"].startswith("python -m deqlib.experiments run --dataset digits")
    experiments.main(["--dataset", "digits", "--models", "linear", "delm", "--losses", "square",
                      "--seeds", "0", "1", "--epochs", "1", "--train-size", "80",
                      "--test-size", "40", "--lr", "square=0.05",
                      "--lr-grid", "square=0.01:0.05", "--gd-steps", "3",
                      "--out", str(tmp_path / "all"), "--no-progress"])
    summary = json.loads((tmp_path / "all" / "comparison.json").read_text())
    assert set(summary["tuned_lr"]) == {"square/linear", "square/delm"}
    assert summary["same_lr"] == {"square": 0.05}
    keys = {json.loads(p.read_text())["key"] for p in (tmp_path / "all").glob("**/*.json")
            if p.parent.name in ("runs", "gd_gap")}
    # same lr: 4 runs; tuning adds lr 0.01 on both seeds (its lr 0.05 runs are the same-lr
    # ones, reused); 2 GD runs
    assert summary["distinct_runs"] == len(keys) == 4 + 4 + 2
    assert len(list((tmp_path / "all" / "same_lr" / "runs").glob("*.json"))) == 4
    assert len(list((tmp_path / "all" / "gd_gap").glob("gd_*.json"))) == 2
    assert "tuned learning rates" in capsys.readouterr().out


def test_unknown_model_or_loss_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"models\[0\] must be one of 'delm', .*got models\[0\]"
                                         "='resnet'"):
        experiments.run_experiment(models=["resnet"], out=tmp_path, **TINY)
    with pytest.raises(ValueError, match=r"losses\[0\] must be one of .*'hinge'"):
        experiments.run_experiment(losses=["hinge"], out=tmp_path, **TINY)


# ----------------------------------------------------------------------------- the store's fixes


def test_concurrent_writes_of_one_run_file_never_collide(tmp_path):
    """Each write goes through its own temporary file: with one shared '<run>.json.tmp' name,
    16 threads writing the same record lost hundreds of writes to FileNotFoundError."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "square__linear__seed0__abc.json"
    records = [{"writer": k, "history": list(range(200))} for k in range(16)]

    def write(record):
        for _ in range(30):
            experiments.store._write_atomic(path, record)

    with ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(write, r) for r in records]:
            future.result()                                    # re-raises a failed write
    assert json.loads(path.read_text()) in records             # whole: one writer's record
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "run.json"
    experiments.store._write_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        experiments.store._write_atomic(path, {"a": {1, 2}})   # a set: not JSON
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_the_key_records_the_dtype_the_run_trained_in(tmp_path):
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        wide = _run(tmp_path)[0]
    finally:
        torch.set_default_dtype(before)
    assert wide["dtype"] == "float64"
    narrow = _run(tmp_path)[0]                       # a float32 call: not answered by the f64 run
    assert narrow["dtype"] == "float32" and narrow["key"] != wide["key"]
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2
    assert narrow["history"][-1]["train_loss"] != wide["history"][-1]["train_loss"]
    settings = dict(dataset="digits", model="linear", loss="square", seed=0, lr=0.05, epochs=2,
                    batch_size=32)
    assert experiments.run_settings(**settings)["dtype"] == "float32"    # the default now
    assert experiments.run_settings(**settings, dtype=torch.float64)["dtype"] == "float64"
    with pytest.raises(ValueError, match="dtype must be a floating torch dtype"):
        experiments.run_settings(**settings, dtype="int64")


def _history_with(record, **row):
    history = [dict(r) for r in record["history"]]
    history[1].update(row)
    return {**record, "history": history}


# (name, how the stored record or text is spoiled, words the warning must hold)
SPOILED = [
    ("nan-loss", lambda r: json.dumps(_history_with(r, train_loss=float("nan"))),
     "train_loss=nan, not a finite number"),
    ("inf-acc", lambda r: json.dumps(_history_with(r, test_acc=float("inf"))),
     "test_acc=inf, not a finite number"),
    ("bool-acc", lambda r: json.dumps(_history_with(r, test_acc=True)),
     "test_acc=True, not a finite number"),
    ("missing-column", lambda r: json.dumps({**r, "history": [
        {k: v for k, v in row.items() if k != "test_loss"} for row in r["history"]]}),
     "without ['test_loss']"),
    ("row-not-object", lambda r: json.dumps({**r, "history": [1, 2, 3]}), "that is a int"),
    ("diverged-str", lambda r: json.dumps({**r, "diverged": "no"}), "diverged='no'"),
    ("epochs-true", lambda r: json.dumps({**r, "epochs": True}), "epochs=True, now 2"),
    ("epochs-float", lambda r: json.dumps({**r, "epochs": 2.0}), "epochs=2.0, now 2"),
    ("lr-string", lambda r: json.dumps({**r, "lr": "0.05"}), "lr='0.05', now 0.05"),
    ("key-wrong", lambda r: json.dumps({**r, "key": "0" * 12}), "not the hash of its settings"),
    ("deep-nesting", lambda r: "[" * 100_000, "cannot be read (RecursionError"),
    ("huge-int", lambda r: json.dumps(r).replace('"epochs": 2', '"epochs": ' + "9" * 5000),
     "cannot be read (ValueError"),
    ("big-int", lambda r: json.dumps(r).replace('"epochs": 2', '"epochs": ' + "9" * 4000),
     "was written for other settings (epochs=999"),
    ("empty-object", lambda r: "{}", "was written for other settings"),
    ("invalid-json", lambda r: '{"dataset": ', "cannot be read (JSONDecodeError"),
    ("not-utf8", lambda r: b"\xff\xfe{}", "cannot be read (UnicodeDecodeError"),
    ("folder", None, "is a folder, not a run file"),
]


def _spoil(path, record, spoil):
    if spoil is None:
        path.unlink()
        path.mkdir()
        return
    text = spoil(record)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.mark.parametrize("name, spoil, words", SPOILED, ids=[s[0] for s in SPOILED])
def test_a_malformed_run_file_is_named_and_rerun_never_reused_or_crashing(tmp_path, name, spoil,
                                                                         words):
    first = _run(tmp_path)[0]
    path = next((tmp_path / "runs").glob("*.json"))
    _spoil(path, first, spoil)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _run(tmp_path)[0]
    messages = [str(w.message) for w in caught if w.category is CorruptRunWarning]
    assert len(messages) == 1 and path.name in messages[0] and words in messages[0], messages
    assert "running it again" in messages[0]
    assert {w.filename for w in caught if w.category is CorruptRunWarning} == {__file__}
    assert again["history"] == first["history"] or again["history"][-1]["train_loss"] == \
        pytest.approx(first["history"][-1]["train_loss"])           # retrained, same result
    if spoil is None:
        assert path.is_dir() and "not stored until the folder is removed" in messages[0]
    else:
        assert json.loads(path.read_text()) == again                 # the rerun replaced it


@pytest.mark.parametrize("name, spoil, words", SPOILED, ids=[s[0] for s in SPOILED])
def test_load_runs_skips_a_malformed_file_by_name(tmp_path, name, spoil, words):
    good = _run(tmp_path)[0]
    bad = tmp_path / "runs" / "square__linear__seed0__spoiled.json"
    bad.write_text(json.dumps(good))
    _spoil(bad, good, spoil)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = experiments.load_runs(tmp_path)
        rows = experiments.summary_table(runs)                   # a {} file once broke this
    messages = [str(w.message) for w in caught if w.category is CorruptRunWarning]
    assert len(messages) == 1 and bad.name in messages[0] and "skipped" in messages[0], messages
    assert {w.filename for w in caught if w.category is CorruptRunWarning} == {__file__}
    assert runs == [good] and rows[0]["seeds"] == 1


def test_a_stored_gd_record_with_nan_is_recomputed(tmp_path):
    common = dict(dataset="digits", train_size=100, steps=np.int64(4), lr=0.05,
                  record_every=2, progress=False, losses=["square"], inits=["gaussian"])
    first = experiments.run_gd_gaps(tmp_path, **common)[0]
    assert first["steps"] == 4 and first["S_step"] == [0, 2, 4]
    path = next(tmp_path.glob("gd_*.json"))
    path.write_text(json.dumps({**first, "delm_loss": [float("nan")] * 5}))
    with pytest.warns(CorruptRunWarning, match=f"{path.name} has nan in delm_loss"):
        again = experiments.run_gd_gaps(tmp_path, **common)[0]
    assert again["delm_loss"] == pytest.approx(first["delm_loss"])


def test_the_warning_points_at_the_caller_of_tuning(tmp_path):
    options = {k: v for k, v in TINY.items() if k != "progress"}
    first = _run(tmp_path)[0]
    path = next((tmp_path / "runs").glob("*.json"))
    path.write_text(json.dumps({**first, "history": []}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiments.tune_learning_rates(lr_grid=[0.05], models=["linear"], losses=["square"],
                                        seeds=[0], out=tmp_path, **options)
    assert [w.filename for w in caught if w.category is CorruptRunWarning] == [__file__]


def test_one_string_is_one_model_and_a_string_of_seeds_is_refused(tmp_path):
    # models='linear' was iterated letter by letter ("unknown model 'l'")
    one = experiments.run_experiment(models="linear", losses=np.str_("square"), seeds=0,
                                     out=tmp_path, **{**TINY, "summary": False})
    assert [(r["model"], r["loss"], r["seed"]) for r in one] == [("linear", "square", 0)]
    with pytest.raises(TypeError, match="seeds must be an integer or a list of integers"):
        experiments.run_experiment(seeds="01", out=tmp_path, **TINY)     # ran seeds 0 and 1
    with pytest.raises(TypeError, match=r"seeds\[1\] must be an integer; got seeds\[1\]=1.5"):
        experiments.run_experiment(seeds=[0, 1.5], out=tmp_path, **TINY)
    with pytest.raises(TypeError, match="epochs must be an integer; got epochs=2.0"):
        experiments.run_experiment(out=tmp_path, **{**TINY, "epochs": 2.0})


def test_a_model_whose_runs_all_diverged_is_named_in_the_legend():
    records = [_fake("linear", "square", s, [0.1, 0.5], [1.0, 0.6]) for s in (0, 1)]
    records += [{**_fake("deep2", "square", s, [0.1], [1.0]), "diverged": True, "history": []}
                for s in (0, 1)]
    fig = experiments.plot_curves(records)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["linear, same W₀ (2 seeds)", "deep linear, depth 2, all 2 diverged"], texts


def test_run_full_datasets_and_plot_curves_check_their_choices(tmp_path):
    with pytest.raises(ValueError, match=r"datasets\[0\] must be one of 'mnist', .*'imagenet'"):
        experiments.run_full_datasets(tmp_path, datasets=["imagenet"], allow_cpu=True)
    with pytest.raises(TypeError, match="spread must be one of 'range', 'std'"):
        experiments.plot_curves([], spread=None)

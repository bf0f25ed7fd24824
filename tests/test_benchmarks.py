"""The benchmark scripts' command lines (their figures are printed, never asserted)."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import load_benchmark as load


@pytest.mark.parametrize("name", ["gemm", "gil", "speed", "memory", "accuracy", "layers_vs_torch", "optimizer_step", "winograd", "conv_backward", "input_dtypes", "pooling", "ceiling", "threads_vs_processes", "pool_order", "latency", "products", "streaming"])
def test_help_describes_the_script_and_runs_nothing(name, capsys):
    module = load(name)
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and f"benchmarks/{name}.py" in out


def test_speed_without_pytorch_says_so_in_one_line(monkeypatch, capsys):
    speed = load("speed")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torch" else find_spec(n, *a))
    launched = []

    def run(cmd, **kwargs):  # the skcnn worker, without training anything
        launched.append(cmd[cmd.index("--worker") + 1])
        result = {"framework": "skcnn", "data": "synthetic", "train_images_per_s": 1, "infer_images_per_s": 1,
                  "epoch_seconds_median": 1.0, "peak_rss_mib": 1, "test_accuracy": 0.1, "layers": []}  # fmt: skip
        return subprocess.CompletedProcess(cmd, 0, json.dumps(result), "")

    monkeypatch.setattr(speed.subprocess, "run", run)
    speed.main(["--torch", "--rounds", "1"])
    err = capsys.readouterr().err.splitlines()
    assert launched == ["skcnn"]
    assert [line for line in err if "PyTorch" in line] == [
        "PyTorch is not installed: no PyTorch row (pip install torch==2.13.0 for the comparison)"
    ]
    assert not any("Traceback" in line for line in err)


def test_accuracy_budget_run_saves_and_scores_the_saved_model(tmp_path, capsys):
    from sklearn.datasets import load_digits

    accuracy = load("accuracy")
    X, y = load_digits(return_X_y=True)
    X = X.reshape(-1, 8, 8).astype("float32")
    data = (X[:120], X[1500:1600], y[:120], y[1500:1600])
    out = tmp_path / "best.npz"
    result = accuracy.run("resnet-tricks", accuracy.CONFIGS["resnet-tricks"], data, seed=1, out=out, minutes=1e-6)
    # the minutes are the fit's time budget: a tiny one trains one batch (of 100 of the 120 images)
    assert result["params"]["max_time"] == pytest.approx(6e-5)
    assert result["params"]["max_iter"] == accuracy.EPOCHS_UNDER_MINUTES
    assert result["epochs"] == 1 and result["epochs_done"] == round(100 / 120, 2)
    assert "max_time=6e-05 s used up" in capsys.readouterr().err
    # the figure that counts is the saved file's model's, and it predicts as the trained one did
    assert result["saved_file_test_accuracy"] == result["test_accuracy"]
    from skcnn import CNNClassifier

    loaded = CNNClassifier.from_params_file(out)
    assert loaded.architecture == "resnet" and loaded.ema_decay == 0.999
    # fashion-best is the estimator's recipe of that name: one definition
    from skcnn.estimator import RECIPES

    assert accuracy.CONFIGS["fashion-best"] == RECIPES["fashion-best"]
    # fashion-best predicts with test-time flips and shifts: its saved file does too
    best = accuracy.run("fashion-best", accuracy.CONFIGS["fashion-best"], data, max_epochs=1, out=tmp_path / "b.npz")
    loaded_best = CNNClassifier.from_params_file(tmp_path / "b.npz")
    assert (loaded_best.test_time_flips, loaded_best.test_time_shifts) == (True, 1)
    from skcnn.persistence import load_network

    recorded = load_network(tmp_path / "b.npz").extra["metadata"]["params"]  # how it was trained
    assert recorded["solver"] == "nesterov" and recorded["weight_decay"] == 5e-4 and recorded["max_iter"] == 1
    assert best["saved_file_test_accuracy"] == best["test_accuracy"]
    # --flips reports each test-time setting, and leaves the model's own
    model = CNNClassifier.from_params_file(tmp_path / "b.npz")
    report = accuracy.test_time_report(model, data[1], data[3], best["test_accuracy"])
    assert (model.test_time_flips, model.test_time_shifts) == (True, 1)
    for key, flips, shifts in [("without_flips", False, 1), ("one_pass", False, 0), ("with_flips", True, 1)]:
        clf = CNNClassifier.from_params_file(tmp_path / "b.npz", test_time_flips=flips, test_time_shifts=shifts)
        assert report["test_accuracy_" + key] == round(float(np.mean(clf.predict(data[1]) == data[3])), 4)


def test_accuracy_flips_average_each_image_with_its_mirror_image(monkeypatch, capsys):
    from sklearn.datasets import load_digits

    accuracy = load("accuracy")
    X, y = load_digits(return_X_y=True)
    X = X.reshape(-1, 8, 8).astype("float32")
    mirrored = np.concatenate([X[1500:1600, :, :4], X[1500:1600, :, 3::-1]], axis=2)  # left-right symmetric
    data = (X[:300], mirrored, y[:300], y[1500:1600])
    monkeypatch.setattr(accuracy, "load_fashion_mnist", lambda shape: data)
    accuracy.main(["--config", "origin-5", "--dataset", "fashion-mnist", "--max-epochs", "2", "--flips", "--json"])
    result = json.loads(capsys.readouterr().out)["results"][0]
    # a mirror image of a symmetric image is itself: flips change nothing
    assert result["test_accuracy_with_flips"] == result["test_accuracy"] == result["test_accuracy_without_flips"]
    assert result["test_accuracy_one_pass"] == result["test_accuracy"]  # origin-5 has no test-time shifts


def test_test_time_scores_saved_files_under_each_setting(tmp_path, monkeypatch, capsys):
    from sklearn.datasets import load_digits

    from skcnn import CNNClassifier

    accuracy = load("accuracy")
    X, y = load_digits(return_X_y=True)
    X = X.reshape(-1, 8, 8).astype("float32")
    data = (X[:300], X[1500:1700], y[:300], y[1500:1700])
    monkeypatch.setattr(accuracy, "load_fashion_mnist", lambda shape: data)
    files = []
    for seed in (0, 1):
        clf = CNNClassifier(max_iter=3, random_state=seed, test_time_flips=True).fit(data[0], data[2])
        files.append(str(tmp_path / f"m{seed}.npz"))
        clf.save_params(files[-1])
    accuracy.main(["--test-time", *files, "--dataset", "fashion-mnist"])
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines()]
    for path, line in zip(files, table[2:4]):
        assert line[0].endswith(path[-28:]) and line[1] == "flips"  # the file's own setting
        for (flips, shifts), shown in zip(accuracy.TEST_TIME_SETTINGS, line[2:]):
            clf = CNNClassifier.from_params_file(path, test_time_flips=flips, test_time_shifts=shifts)
            assert float(shown) == round(float(np.mean(clf.predict(data[1]) == data[3])), 4)
    assert len({line[2:][i] for line in table[2:4] for i in range(5)}) > 1  # the settings differ
    assert table[4][0] == "mean"
    notes = tmp_path / "notes.md"
    notes.write_text("not a model")
    monkeypatch.setattr(accuracy, "load_fashion_mnist", lambda shape: pytest.fail("refused after loading data"))
    for argv, message in [
        (["--test-time", "nofile.npz", "--dataset", "fashion-mnist"], "no such file: nofile.npz"),
        (["--test-time", files[0]], "give the one --dataset"),
        (["--test-time", files[0], "--dataset", "fashion-mnist", "--config", "origin-5"], "cannot be combined with --config"),
        (["--test-time", files[0], "--dataset", "fashion-mnist", "--out", "x.npz"], "cannot be combined with --out"),
        (["--test-time", files[0], "--dataset", "fashion-mnist", "--seed", "3"], "cannot be combined with --seed"),
        (["--test-time", files[0], str(notes), "--dataset", "fashion-mnist"], "not a readable skcnn parameter file"),
    ]:
        with pytest.raises(SystemExit):
            accuracy.main(argv)
        assert message in capsys.readouterr().err


def test_accuracy_exits_with_an_error_when_a_data_set_asked_for_is_unavailable(monkeypatch, capsys):
    from sklearn.datasets import load_digits

    from skcnn.datasets import DatasetUnavailableError

    accuracy = load("accuracy")
    X, y = load_digits(return_X_y=True)
    data = (X[:200].reshape(-1, 8, 8), X[1500:1600].reshape(-1, 8, 8), y[:200], y[1500:1600])

    def offline(shape):
        raise DatasetUnavailableError("OpenML cannot be reached")

    monkeypatch.setattr(accuracy, "load_mnist", offline)
    monkeypatch.setattr(accuracy, "load_fashion_mnist", lambda shape: data)
    argv = ["--config", "origin-5", "--max-epochs", "1"]
    with pytest.raises(SystemExit) as info:  # named and missing: a failure, not a quiet success
        accuracy.main(argv + ["--dataset", "mnist"])
    assert info.value.code == "not measured: mnist (unavailable here, see above)"
    assert "mnist: not measured: OpenML cannot be reached" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # the --json document is printed first, then the failure
        accuracy.main(argv + ["--dataset", "fashion-mnist", "--dataset", "mnist", "--json"])
    assert "mnist" in info.value.code
    assert [r["dataset"] for r in json.loads(capsys.readouterr().out)["results"]] == ["fashion-mnist"]
    accuracy.main(argv)  # both by default: the one available is measured, the run succeeds
    out = capsys.readouterr().out
    assert "fashion-mnist  origin-5" in out and "\nmnist " not in out
    monkeypatch.setattr(accuracy, "load_fashion_mnist", offline)
    with pytest.raises(SystemExit) as info:  # none of the default ones: a failure
        accuracy.main(argv)
    assert info.value.code == "not measured: fashion-mnist, mnist (unavailable here, see above)"


def test_accuracy_refuses_out_with_several_configs_before_training(capsys):
    accuracy = load("accuracy")
    with pytest.raises(SystemExit):
        accuracy.main(["--out", "x.npz", "--dataset", "fashion-mnist"])
    assert "--out saves one model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.main(["--ablation", "--dataset", "fashion-mnist"])
    assert "--ablation needs --max-epochs" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--n-train", "0"], "--n-train must be >= 1"),
        (["--n-train", "-100"], "--n-train must be >= 1"),
        (["--max-epochs", "0"], "--max-epochs must be >= 1"),
        (["--minutes", "nan"], "--minutes must be a finite number > 0"),
        (["--minutes", "inf"], "--minutes must be a finite number > 0"),
        (["--minutes", "0"], "--minutes must be a finite number > 0"),
        (["--ablation", "--max-epochs", "1", "--config", "fashion-best"], "cannot be combined with --config"),
        (["--ablation", "--max-epochs", "1", "--json", "--minutes", "5"], "cannot be combined with --minutes, --json"),
    ],
)
def test_accuracy_refuses_bad_arguments_before_loading_data(argv, message, monkeypatch, capsys):
    accuracy = load("accuracy")
    monkeypatch.setattr(accuracy, "load_fashion_mnist", lambda **kw: pytest.fail("loaded data"))
    with pytest.raises(SystemExit):
        accuracy.main(argv + ["--dataset", "fashion-mnist"])
    assert message in capsys.readouterr().err


def test_accuracy_refuses_a_folder_as_out_before_training(tmp_path, monkeypatch, capsys):
    accuracy = load("accuracy")
    monkeypatch.setattr(accuracy, "load_fashion_mnist", lambda **kw: pytest.fail("loaded data"))
    with pytest.raises(SystemExit):
        accuracy.main(["--config", "origin-5", "--dataset", "fashion-mnist", "--out", str(tmp_path)])
    assert "is a folder; give a file name" in capsys.readouterr().err


@pytest.mark.parametrize("n_train,noted", [(600, True), (2000, False)])
def test_speed_says_when_float64_input_stays_float64(n_train, noted, monkeypatch, capsys):
    speed = load("speed")

    def run(cmd, **kwargs):  # a worker's report, without training anything
        dtype = cmd[cmd.index("--dtype") + 1] if "--dtype" in cmd else "float32"
        result = {"framework": "skcnn", "data": "synthetic", "train_images_per_s": 1, "infer_images_per_s": 1,
                  "epoch_seconds_median": 1.0, "peak_rss_mib": 1, "test_accuracy": 0.1, "layers": [], "dtype": dtype}  # fmt: skip
        return subprocess.CompletedProcess(cmd, 0, json.dumps(result), "")

    monkeypatch.setattr(speed.subprocess, "run", run)
    speed.main(["--dtype", "float32,float64", "--rounds", "1", "--n-train", str(n_train)])
    out = capsys.readouterr().out
    # 2,000 images of 28x28 are 1,568,000 values: above dtype="auto"'s million, so float32
    assert ("float64 input then trains and predicts in float64" in out) is noted


@pytest.mark.parametrize("config", ["fashion-best", "resnet-tricks"])
def test_ablation_changes_one_thing_a_row_on_one_budget(config, monkeypatch, capsys):
    accuracy = load("accuracy")
    trained = []

    def run(name, params, data, seed=0, flips=False):  # records what would be trained
        trained.append((name, params))
        acc = 0.9 - 0.01 * len(trained)
        return {"config": name, "train_seconds": 1.0, "test_accuracy": acc,
                "test_accuracy_with_flips": acc + 0.002, "test_accuracy_without_flips": acc,
                "test_accuracy_one_pass": acc - 0.001}  # fmt: skip

    monkeypatch.setattr(accuracy, "run", run)
    data = (None, None, np.zeros(100), None)
    accuracy.ablation(config, data, max_epochs=2, seed=0)
    compared, changes = accuracy.ABLATIONS[config]
    assert [name for name, _ in trained] == [config, *compared, *changes]
    assert all(params["max_iter"] == 2 for _, params in trained)
    full = dict(accuracy.CONFIGS[config], max_iter=2)
    for name, params in trained[1 + len(compared) :]:
        differing = {k for k in set(full) | set(params) if full.get(k) != params.get(k)}
        assert differing == set(changes[name]), name  # exactly the row's change
    out = capsys.readouterr().out
    assert f"{'+0.0100':>24}" in out and f"{config} minus row" in out


def test_ceiling_counts_the_gradient_products_of_the_origin_network(capsys):
    ceiling = load("ceiling")
    forward, training = ceiling.work_per_image("origin")
    # the origin network's products, by hand (a multiply-add counts as 2): conv 1->16 and
    # 16->32 (3x3, at 28x28 and 14x14), dense 1568->100 and 100->10
    conv1, conv2 = 2 * 28 * 28 * 16 * 9, 2 * 14 * 14 * 32 * 9 * 16
    dense1, dense2 = 2 * 7 * 7 * 32 * 100, 2 * 100 * 10
    assert conv1 + conv2 + dense1 + dense2 < forward < 1.1 * (conv1 + conv2 + dense1 + dense2)
    # training adds the kernel gradient of each, and the input gradient of all but the first
    assert training - forward == conv1 + 2 * (conv2 + dense1 + dense2)
    ceiling.main(["--architecture", "origin", "--size", "64", "--rounds", "2", "--threads", "3"])
    out = capsys.readouterr().out
    peak, on_three = map(float, re.search(r"peak: ([0-9.]+) GFLOPS on one thread .*, ([0-9.]+) on 3", out).groups())
    assert abs(on_three - 3 * peak) <= 0.25  # both printed to 0.1
    bound = int(out.splitlines()[-1].split()[-2].replace(",", ""))
    assert abs(bound - on_three * 1e9 / forward) <= 0.001 * bound  # as printed, rounded


def test_threads_vs_processes_times_every_worker_of_each_way():
    module = load("threads_vs_processes")
    # as a script: its worker processes (spawned) import it by path, as users run it
    script = Path(module.__file__)
    done = subprocess.run([sys.executable, str(script), "--steps", "2", "--warm-up", "0"],
                          capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
    rows = done.stdout.splitlines()[1:]
    assert [row.split("  ")[1].strip() for row in rows] == [name for name, _, _ in module.WAYS]
    for row, (_, processes, threads) in zip(rows, module.WAYS):
        times = re.search(r"\s{2,}([0-9., ]+) ms", row).group(1).split(",")
        assert len(times) == processes * threads and all(float(t) > 0 for t in times)
    assert rows[0].split("ms")[1].split()[0] == "1.00x"  # alone, against itself


def test_pool_order_compares_fits_with_and_without_it(monkeypatch, capsys):
    from sklearn.datasets import load_digits

    module = load("pool_order")
    X, y = load_digits(return_X_y=True)
    X = X.reshape(-1, 1, 8, 8).astype("float32") / 16  # 8x8 -> pools read 8x8 and 4x4 convolutions
    monkeypatch.setattr(module, "load_data", lambda n, source: (X[:n], X[1500:], y[:n], y[1500:], "digits"))
    module.main(["--n-train", "200", "--rounds", "2"])
    out = capsys.readouterr().out.splitlines()
    turns = [line.split(":")[0].strip() for line in out[1:5]]
    assert turns == ["pool order", "usual order", "usual order", "pool order"]  # each pair's first alternates
    assert re.fullmatch(r"pool order / usual order: train [0-9.]+x, predict [0-9.]+x", out[-1])
    # the planner is the network's own again afterwards
    from skcnn import network

    assert network._set_pool_order is module.PLANNED


def test_latency_times_each_size_and_splits_skcnn_s_call(capsys):
    module = load("latency")
    module.main(["--sizes", "1,3", "--rounds", "3"])
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out[2:4]]
    assert [row[0] for row in rows] == ["1", "3"]
    for row in rows:
        skcnn_ms, parts = float(row[1]), [float(v) for v in row[-3:]]
        assert skcnn_ms > 0 and all(p > 0 for p in parts)


def test_products_counts_the_time_in_matrix_products_and_restores_numpy():
    import skcnn.functions
    import skcnn.layers

    module = load("products")
    X = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
    w = np.ones((3, 3, 3, 2), dtype=np.float32)
    with module.ProductTimer([skcnn.functions, skcnn.layers]) as timer:
        out = skcnn.functions.conv2d(X, w, pad=1)  # its products go through the timed np.matmul
        assert timer.seconds() > 0
        assert skcnn.functions.np.pi == np.pi  # the rest of numpy as before
    np.testing.assert_allclose(out, skcnn.functions.conv2d(X, w, pad=1))
    assert skcnn.functions.np is np and skcnn.layers.np is np


def test_products_prints_a_share_between_none_and_all(capsys):
    module = load("products")
    module.main(["--architecture", "origin", "--n-train", "100", "--n-test", "50", "--rounds", "1", "--no-torch"])
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out if line.split()[:1] in (["training"], ["predict"])}
    assert set(rows) == {"training", "predict"}
    for row in rows.values():
        speed, share, bound = float(row[1].replace(",", "")), float(row[2].rstrip("%")), float(row[3].replace(",", ""))
        assert 0 < share <= 100 and speed > 0
        assert bound >= speed * 0.99  # products alone never take longer than the whole


def test_streaming_times_each_input_type_and_says_what_it_computes_in(capsys):
    module = load("streaming")
    module.main(["--n-train", "40", "--batch", "20", "--rounds", "1", "--no-torch"])
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out if line.split()[:1] in (["float32"], ["float64"], ["uint8"])}
    assert set(rows) == {"float32", "float64", "uint8"}
    # a stream of float64 batches computes in float32, as float32 and uint8 batches do
    assert {row[1] for row in rows.values()} == {"float32"}
    assert all(float(row[2].replace(",", "")) > 0 for row in rows.values())

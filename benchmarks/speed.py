"""Training and inference speed of skcnn's default network, side by side.

    python benchmarks/speed.py                  # skcnn alone
    python benchmarks/speed.py --torch          # and PyTorch (CPU), same network, same threads
    python benchmarks/speed.py --textbook       # and the textbook NumPy baseline
    python benchmarks/speed.py --torch --native-blas   # with OPENBLAS_CORETYPE unset for the runs
    python benchmarks/speed.py --json
    python benchmarks/speed.py --torch --rounds 1 --seed 1   # other initial weights and shuffling

Each framework runs in a fresh child process (so peak RSS is its own), on the
same data: Fashion-MNIST when Debian's dataset-fashion-mnist is installed,
else synthetic MNIST-shaped images. Training: --epochs full epochs over
--n-train images, batches of 100, Adam 1e-3, timed per epoch (median
reported). Inference: predict_proba over the 10,000 test images, --repeats
times (median); PyTorch in chunks of 64, 128 and 512 images, and its fastest
is reported. The frameworks take turns, --rounds times, and the table shows
each one's median over its rounds: on a shared, noisy machine a ratio is only
worth something when both sides were measured side by side. Both cores:
skcnn's own two threads; PyTorch with torch.set_num_threads(2). The textbook baseline is slow, so it trains on
--textbook-n images only (its images/s is what counts).
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load_data(n_train, source):
    from skcnn.datasets import DEBIAN_FASHION_MNIST, load_idx_dataset

    if source in ("auto", "fashion") and (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        X_train, X_test, y_train, y_test = load_idx_dataset(DEBIAN_FASHION_MNIST, shape="images")
        name = "Fashion-MNIST"
    else:
        rng = np.random.default_rng(0)
        X_train = rng.random((60000, 1, 28, 28), dtype=np.float32)
        X_test = rng.random((10000, 1, 28, 28), dtype=np.float32)
        y_train, y_test = rng.integers(0, 10, 60000), rng.integers(0, 10, 10000)
        name = "synthetic"
    return X_train[:n_train], X_test, y_train[:n_train], y_test, name


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def layer_breakdown(net, x, y, steps=10):
    """Median forward/backward milliseconds per layer over a batch, on one
    thread with single-threaded BLAS: how each training thread runs."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        return _layer_breakdown(net, x, y, steps)


def _layer_breakdown(net, x, y, steps):
    times = {i: ([], []) for i in range(len(net.layers))}
    for _ in range(steps + 1):
        h = x.transpose(0, 2, 3, 1)
        for i, layer in enumerate(net.layers):
            t = time.perf_counter()
            h = layer.forward(h, training=True)
            times[i][0].append(time.perf_counter() - t)
        net.loss_layer.forward(h, y)
        g = net.loss_layer.backward()
        for i in reversed(range(len(net.layers))):
            t = time.perf_counter()
            g = net.layers[i].backward(g)
            times[i][1].append(time.perf_counter() - t)
            if g is None:
                break
    rows = []
    for i, layer in enumerate(net.layers):
        f, b = times[i]
        rows.append({
            "layer": repr(layer),
            "forward_ms": round(1000 * float(np.median(f[1:])), 3),
            "backward_ms": round(1000 * float(np.median(b[1:])), 3) if b else 0.0,
        })  # fmt: skip
    return rows


def run_skcnn(args):
    from skcnn import CNNClassifier

    X_train, X_test, y_train, y_test, name = load_data(args.n_train, args.data)
    clf = CNNClassifier(max_iter=1, batch_size=100, random_state=args.seed, warm_start=True)
    epoch_times = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        clf.fit(X_train, y_train)  # warm start: one more epoch
        epoch_times.append(time.perf_counter() - start)
    infer = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        clf.predict_proba(X_test)
        infer.append(time.perf_counter() - start)
    result = summary("skcnn", name, X_train, X_test, epoch_times, infer, clf.score(X_test, y_test))
    result["layers"] = layer_breakdown(clf.network_, X_train[:50], y_train[:50])  # one micro-batch
    clf.network_.clear_cache()
    return result


#: Chunk sizes tried for PyTorch's inference; the fastest one is reported.
TORCH_INFER_CHUNKS = (64, 128, 512)


def run_torch(args):
    import torch
    from torch import nn

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    X_train, X_test, y_train, y_test, name = load_data(args.n_train, args.data)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10),
    )  # fmt: skip
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(X_train), torch.from_numpy(y_train.astype(np.int64))
    gen = torch.Generator().manual_seed(args.seed)
    epoch_times = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(yt), generator=gen)
        for s in range(0, len(yt), 100):
            idx = order[s : s + 100]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        epoch_times.append(time.perf_counter() - start)
    model.eval()
    xtest = torch.from_numpy(X_test)
    # PyTorch gets its fastest chunk size: its speed varies with it (and most at 512)
    timings = {}
    with torch.no_grad():
        for chunk in TORCH_INFER_CHUNKS:
            timings[chunk] = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = torch.cat([model(xtest[s : s + chunk]).softmax(1) for s in range(0, len(xtest), chunk)])
                timings[chunk].append(time.perf_counter() - start)
    best = min(timings.values(), key=np.median)
    accuracy = float((out.argmax(1).numpy() == y_test).mean())
    return summary(f"PyTorch {torch.__version__}", name, X_train, X_test, epoch_times, best, accuracy)


def run_textbook(args):
    sys.path.insert(0, str(HERE))
    from textbook import TextbookCNN

    X_train, X_test, y_train, y_test, name = load_data(args.textbook_n, args.data)
    X_train, X_test = X_train.astype(np.float64), X_test.astype(np.float64)
    net = TextbookCNN(np.random.default_rng(0))
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    order = rng.permutation(len(y_train))
    for s in range(0, len(y_train), 100):
        idx = order[s : s + 100]
        net.train_step(X_train[idx], y_train[idx])
    epoch = time.perf_counter() - start
    start = time.perf_counter()
    out = np.concatenate([net.predict(X_test[s : s + 512]) for s in range(0, 2000, 512)])
    infer = time.perf_counter() - start
    accuracy = float((out.argmax(1) == y_test[: len(out)]).mean())
    result = summary("textbook NumPy", name, X_train, X_test[: len(out)], [epoch], [infer], accuracy)
    result["note"] = f"one epoch of {len(y_train)} images; inference on {len(out)} images"
    return result


def summary(framework, data, X_train, X_test, epoch_times, infer_times, accuracy):
    from threadpoolctl import threadpool_info

    blas = [f"{i['internal_api']} {i.get('architecture')} x{i['num_threads']}" for i in threadpool_info()]
    return {
        "framework": framework,
        "data": data,
        "epochs": len(epoch_times),
        "epoch_seconds_median": round(float(np.median(epoch_times)), 3),
        "train_images_per_s": round(len(X_train) / float(np.median(epoch_times))),
        "infer_images_per_s": round(len(X_test) / float(np.median(infer_times))),
        "test_accuracy": round(float(accuracy), 4),
        "peak_rss_mib": round(peak_rss_mib()),
        "blas": blas,
    }


WORKERS = {"skcnn": run_skcnn, "torch": run_torch, "textbook": run_textbook}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch", action="store_true", help="also run PyTorch (if installed)")
    parser.add_argument("--textbook", action="store_true", help="also run the textbook NumPy CNN")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="turns each framework takes")
    parser.add_argument("--n-train", type=int, default=60000)
    parser.add_argument("--textbook-n", type=int, default=3000)
    parser.add_argument("--data", choices=["auto", "fashion", "synthetic"], default="auto")
    parser.add_argument("--native-blas", action="store_true",
                        help="unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for the runs")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the shuffling")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return

    env = dict(os.environ)
    if args.native_blas:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    passthrough = ["--epochs", str(args.epochs), "--repeats", str(args.repeats), "--n-train",
                   str(args.n_train), "--textbook-n", str(args.textbook_n), "--data", args.data,
                   "--seed", str(args.seed)]  # fmt: skip
    if args.torch and importlib.util.find_spec("torch") is None:
        print("PyTorch is not installed: no PyTorch row (pip install torch==2.13.0 for the comparison)",
              file=sys.stderr)  # fmt: skip
        args.torch = False
    names = ["skcnn"] + (["torch"] if args.torch else []) + (["textbook"] if args.textbook else [])
    runs = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", name, *passthrough],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            if proc.returncode != 0:
                print(f"{name} failed:\n{proc.stderr}", file=sys.stderr)
                continue
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    results = []
    for name in names:
        if not runs[name]:
            continue
        merged = dict(runs[name][0])
        for key in ("train_images_per_s", "infer_images_per_s", "epoch_seconds_median"):
            merged[key] = type(merged[key])(np.median([r[key] for r in runs[name]]))
        merged["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs[name])
        merged["rounds"] = [
            {k: r[k] for k in ("train_images_per_s", "infer_images_per_s")} for r in runs[name]
        ]
        results.append(merged)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, OPENBLAS_CORETYPE="
        f"{env.get('OPENBLAS_CORETYPE', '(unset)')}",
        "results": results,
    }
    base = next((r for r in results if r["framework"].startswith("PyTorch")), None)
    textbook = next((r for r in results if r["framework"] == "textbook NumPy"), None)
    ours = results[0] if results and results[0]["framework"] == "skcnn" else None
    if ours and base:
        report["skcnn_vs_pytorch"] = {
            "train": round(ours["train_images_per_s"] / base["train_images_per_s"], 2),
            "infer": round(ours["infer_images_per_s"] / base["infer_images_per_s"], 2),
            "peak_rss": round(ours["peak_rss_mib"] / base["peak_rss_mib"], 2),
        }
    if ours and textbook:
        report["skcnn_vs_textbook"] = {
            "train": round(ours["train_images_per_s"] / textbook["train_images_per_s"], 1),
            "infer": round(ours["infer_images_per_s"] / textbook["infer_images_per_s"], 1),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(report["machine"])
    print(f"{'framework':16} {'data':14} {'train img/s':>11} {'infer img/s':>11} {'test acc':>8} {'peak RSS MiB':>12}")
    for r in results:
        print(f"{r['framework']:16} {r['data']:14} {r['train_images_per_s']:11d} {r['infer_images_per_s']:11d} "
              f"{r['test_accuracy']:8.4f} {r['peak_rss_mib']:12d}")  # fmt: skip
    for key in ("skcnn_vs_pytorch", "skcnn_vs_textbook"):
        if key in report:
            print(f"{key}: " + ", ".join(f"{k} {v}x" for k, v in report[key].items()))
    print("each round (train img/s, infer img/s):")
    for r in results:
        print(f"  {r['framework']:16} " + "  ".join(
            f"{x['train_images_per_s']:6d} {x['infer_images_per_s']:6d}" for x in r["rounds"]))  # fmt: skip
    if ours:
        print("\nskcnn per layer, one micro-batch of 50 as each training thread runs it, alone (ms):")
        for row in ours["layers"]:
            print(f"  {row['layer'][:44]:44} forward {row['forward_ms']:7.3f}  backward {row['backward_ms']:7.3f}")


if __name__ == "__main__":
    main()

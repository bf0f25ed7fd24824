"""Training and inference speed of skcnn, side by side with PyTorch.

    python benchmarks/speed.py                  # skcnn alone
    python benchmarks/speed.py --torch --architecture deep      # the "deep" preset, both
    python benchmarks/speed.py --dtype float32,float64,uint8    # the input dtypes users pass
    python benchmarks/speed.py --torch --threads 1,2,4,8,16     # a thread-scaling table
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
worth something when both sides were measured side by side. Threads: each
count in --threads (default 2), skcnn through SKCNN_NUM_THREADS, PyTorch
through torch.set_num_threads. --dtype gives skcnn its input as float32
(what skcnn.datasets returns), float64 (what X / 255.0 gives) or uint8 (raw
pixels); PyTorch always gets float32. The textbook baseline is slow, so it
trains on --textbook-n images only (its images/s is what counts).
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


def as_dtype(X, dtype):
    """Images in [0, 1] (float32) as a user would hold them in ``dtype``."""
    if dtype == "uint8":
        return np.rint(X * 255).astype(np.uint8)  # the raw pixels (the loader divided them by 255)
    return X.astype(dtype)


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
    X_train, X_test = as_dtype(X_train, args.dtype), as_dtype(X_test, args.dtype)
    clf = CNNClassifier(
        architecture=args.architecture, max_iter=1, batch_size=100, random_state=args.seed, warm_start=True
    )
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
    result["computed_in"] = clf.network_.dtype.name
    result["layers"] = layer_breakdown(clf.network_, X_train[:50], y_train[:50])  # one micro-batch
    clf.network_.clear_cache()
    return result


def torch_model(architecture):
    """The same network as skcnn's preset, in PyTorch (He-initialised)."""
    from torch import nn

    if architecture == "origin":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10),
        )  # fmt: skip

    def conv(c_in, c_out):  # no bias before batch norm, as in skcnn's preset
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *conv(1, 32), *conv(32, 32), nn.MaxPool2d(2),
        *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(256, 10),
    )  # fmt: skip


def torch_train_pass(model, X, y, batch=100):
    """Seconds PyTorch takes for one pass of its usual training loop (zero_grad,
    forward, backward, Adam's step) over ``X`` (N, 784 or 1x28x28) in order,
    ``batch`` images a step; a fresh Adam each call."""
    import torch

    xt, yt = torch.from_numpy(X.reshape(-1, 1, 28, 28)), torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    for s in range(0, len(yt), batch):
        opt.zero_grad()
        loss_fn(model(xt[s : s + batch]), yt[s : s + batch]).backward()
        opt.step()
    return time.perf_counter() - start


#: Chunk sizes tried for PyTorch's inference; the fastest one is reported.
TORCH_INFER_CHUNKS = (64, 128, 512)


def run_torch(args):
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    X_train, X_test, y_train, y_test, name = load_data(args.n_train, args.data)
    model = torch_model(args.architecture)
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
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


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, e.g. 1,2,4; got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1; got {text!r}")
    return values


DTYPES = ("float32", "float64", "uint8")


def _dtype_list(text):
    values = text.split(",")
    bad = [v for v in values if v not in DTYPES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown dtype {bad[0]!r}; choose from {', '.join(DTYPES)}")
    return values


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch", action="store_true", help="also run PyTorch (if installed)")
    parser.add_argument("--textbook", action="store_true", help="also run the textbook NumPy CNN")
    parser.add_argument("--architecture", choices=["origin", "deep"], default="origin",
                        help="skcnn's preset, and the same network in PyTorch")  # fmt: skip
    parser.add_argument("--dtype", type=_dtype_list, default=["float32"],
                        help="skcnn's input dtype(s), comma-separated: float32, float64, uint8")  # fmt: skip
    parser.add_argument("--threads", type=_int_list, default=[2],
                        help="thread count(s), comma-separated, e.g. 1,2,4 (a scaling table)")  # fmt: skip
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
        args.dtype, args.threads = args.dtype[0], args.threads[0]
        print(json.dumps(WORKERS[args.worker](args)))
        return

    env = dict(os.environ)
    # the workers measure this checkout's skcnn, not whichever one is installed (a script's
    # own folder, benchmarks/, comes first on sys.path, so the checkout is not found otherwise)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), env.get("PYTHONPATH")) if p)
    if args.native_blas:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    passthrough = ["--epochs", str(args.epochs), "--repeats", str(args.repeats), "--n-train",
                   str(args.n_train), "--textbook-n", str(args.textbook_n), "--data", args.data,
                   "--seed", str(args.seed), "--architecture", args.architecture]  # fmt: skip
    if args.torch and importlib.util.find_spec("torch") is None:
        print("PyTorch is not installed: no PyTorch row (pip install torch==2.13.0 for the comparison)",
              file=sys.stderr)  # fmt: skip
        args.torch = False
    # one row per (framework, dtype, threads); they take turns, round after round
    rows = []
    for threads in args.threads:
        rows += [("skcnn", dtype, threads) for dtype in args.dtype]
        rows += [("torch", "float32", threads)] if args.torch else []
    rows += [("textbook", "float64", 1)] if args.textbook else []
    runs = {row: [] for row in rows}
    for k in range(args.rounds):
        for row in rows[k % len(rows) :] + rows[: k % len(rows)]:  # who goes first rotates
            worker, dtype, threads = row
            print(f"running {worker} ({dtype}, {threads} threads) ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", worker, "--dtype", dtype, "--threads", str(threads),
                 *passthrough],
                env={**env, "SKCNN_NUM_THREADS": str(threads)}, capture_output=True, text=True,
            )  # fmt: skip
            if proc.returncode != 0:
                print(f"{worker} failed:\n{proc.stderr}", file=sys.stderr)
                continue
            runs[row].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    results = []
    for (worker, dtype, threads), done in runs.items():
        if not done:
            continue
        merged = dict(done[0], worker=worker, dtype=dtype, threads=threads)
        for key in ("train_images_per_s", "infer_images_per_s", "epoch_seconds_median"):
            merged[key] = type(merged[key])(np.median([r[key] for r in done]))
        merged["peak_rss_mib"] = max(r["peak_rss_mib"] for r in done)
        merged["rounds"] = [{k: r[k] for k in ("train_images_per_s", "infer_images_per_s")} for r in done]
        results.append(merged)
    data_names = sorted({r["data"] for r in results})
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, OPENBLAS_CORETYPE="
        f"{env.get('OPENBLAS_CORETYPE', '(unset)')}, architecture {args.architecture}, "
        f"data {' and '.join(data_names)} ({min(args.n_train, 60000):,} training images)",
        "results": results,
    }

    def find(worker, dtype, threads):
        key = (worker, dtype, threads)
        return next((r for r in results if (r["worker"], r["dtype"], r["threads"]) == key), None)

    def ratio(a, b):
        return {
            "train": round(a["train_images_per_s"] / b["train_images_per_s"], 2),
            "infer": round(a["infer_images_per_s"] / b["infer_images_per_s"], 2),
        }

    ratios = {}
    for r in results:
        if r["worker"] != "skcnn":
            continue
        label = f"skcnn {r['dtype']}, {r['threads']} threads"
        base = find("torch", "float32", r["threads"])
        if base:
            rss = round(r["peak_rss_mib"] / base["peak_rss_mib"], 2)
            ratios[f"{label} vs PyTorch"] = {**ratio(r, base), "peak_rss": rss}
        f32 = find("skcnn", "float32", r["threads"])
        if f32 and r["dtype"] != "float32":
            ratios[f"{label} vs float32 input"] = ratio(r, f32)
        textbook = find("textbook", "float64", 1)
        if textbook:
            ratios[f"{label} vs textbook"] = ratio(r, textbook)
    report["ratios"] = ratios
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(report["machine"])
    print(f"{'framework':16} {'input':8} {'threads':>7} {'train img/s':>11} {'infer img/s':>11} {'test acc':>8} "
          f"{'peak RSS MiB':>12}")  # fmt: skip
    for r in results:
        print(f"{r['framework'][:16]:16} {r['dtype']:8} {r['threads']:7d} {r['train_images_per_s']:11d} "
              f"{r['infer_images_per_s']:11d} {r['test_accuracy']:8.4f} {r['peak_rss_mib']:12d}")  # fmt: skip
    for key, value in ratios.items():
        print(f"{key}: " + ", ".join(f"{k} {v}x" for k, v in value.items()))
    from skcnn.estimator import AUTO_FLOAT64_MAX_VALUES

    values = args.n_train * 28 * 28  # load_data's images are 28x28, one channel
    if "float64" in args.dtype and values <= AUTO_FLOAT64_MAX_VALUES:
        print(f"note: {args.n_train:,} training images are {values:,} values, not above "
              f"dtype='auto''s {AUTO_FLOAT64_MAX_VALUES:,}: float64 input then trains and predicts in float64 "
              "(exact, about half float32's speed); use more images to time the float32 path")  # fmt: skip
    print("each round (train img/s, infer img/s):")
    for r in results:
        print(f"  {r['framework'][:16]:16} {r['dtype']:8} {r['threads']:2d} " + "  ".join(
            f"{x['train_images_per_s']:6d} {x['infer_images_per_s']:6d}" for x in r["rounds"]))  # fmt: skip
    ours = next((r for r in results if r["worker"] == "skcnn"), None)
    if ours:
        print("\nskcnn per layer, one micro-batch of 50 as each training thread runs it, alone (ms):")
        for row in ours["layers"]:
            print(f"  {row['layer'][:44]:44} forward {row['forward_ms']:7.3f}  backward {row['backward_ms']:7.3f}")


if __name__ == "__main__":
    main()

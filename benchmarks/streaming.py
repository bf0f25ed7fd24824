"""Training by ``partial_fit`` on batches (scikit-learn's online learning),
with float32, float64 and uint8 batches, against PyTorch's training loop.

    python benchmarks/streaming.py
    python benchmarks/streaming.py --n-train 10000 --rounds 5 --architecture deep

speed.py times ``fit``, which sees all the data at once. A user who streams
data calls ``partial_fit`` once a batch, so every call pays its own input
checks and set-up, and the first call alone decides the dtype the network
computes in. Here a fresh estimator takes ``--n-train`` images (Fashion-MNIST
when installed, else synthetic images) in batches of ``--batch`` by
``partial_fit`` -- as float32, as float64 (``X / 255.0``) and as uint8
pixels -- and PyTorch (when installed) trains the same network with its
usual loop (``zero_grad``, forward, ``backward``, Adam's ``step``) on the same
batches; the row "(fit)" is one epoch of skcnn's ``fit`` on the same
float32 batches, the steps without the per-call costs. All take turns,
round after round (the three input types in a rotating order), on
skcnn's thread count. Medians of ``--rounds``, in
images per second.
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def stream_skcnn(X, y, architecture, batch):
    from skcnn import CNNClassifier

    clf = CNNClassifier(architecture=architecture, random_state=0, shuffle=False)
    classes = np.unique(y)
    start = time.perf_counter()
    for s in range(0, len(X), batch):
        clf.partial_fit(X[s : s + batch], y[s : s + batch], classes=classes)
    return len(X) / (time.perf_counter() - start), clf.network_.dtype


def fit_skcnn(X, y, architecture, batch):
    """One epoch of ``fit`` on the same images in the same order: the steps
    without ``partial_fit``'s per-call costs."""
    from skcnn import CNNClassifier

    clf = CNNClassifier(architecture=architecture, random_state=0, shuffle=False, max_iter=1, batch_size=batch)
    start = time.perf_counter()
    clf.fit(X, y)
    return len(X) / (time.perf_counter() - start)


def stream_torch(X, y, architecture, batch):
    import torch
    from speed import torch_model, torch_train_pass

    torch.manual_seed(0)
    return len(X) / torch_train_pass(torch_model(architecture), X, y, batch)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="origin", choices=["origin", "deep"])
    parser.add_argument("--n-train", type=int, default=20000, help="images streamed a round")
    parser.add_argument("--batch", type=int, default=100, help="images a partial_fit call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    args = parser.parse_args(argv)
    if args.n_train < args.batch or args.batch < 2 or args.rounds < 1:
        parser.error("need --n-train >= --batch >= 2 and --rounds >= 1")

    from speed import as_dtype, load_data

    from skcnn.parallel import n_threads

    X, _, y, _, data = load_data(args.n_train, "auto")
    inputs = {name: as_dtype(X, name) for name in ("float32", "float64", "uint8")}
    torch_ok = False
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("(PyTorch is not installed: skcnn's rows only)")
        else:
            torch.set_num_threads(n_threads())
            torch_ok = True
    speeds = {name: [] for name in inputs}
    speeds["fit"], speeds["PyTorch"] = [], []
    dtypes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InputRangeWarning etc. are not what is timed
        names = list(inputs)
        for r in range(args.rounds):
            for name in names[r % 3 :] + names[: r % 3]:  # each input type goes first in turn
                speed, dtypes[name] = stream_skcnn(inputs[name], y, args.architecture, args.batch)
                speeds[name].append(speed)
            speeds["fit"].append(fit_skcnn(inputs["float32"], y, args.architecture, args.batch))
            if torch_ok:
                speeds["PyTorch"].append(stream_torch(inputs["float32"], y, args.architecture, args.batch))
                time.sleep(1.0)  # PyTorch's OpenMP threads spin for a while after its loop: not on skcnn's time
    print(f"{args.architecture} network, {data}, {args.n_train} images in batches of {args.batch}, "
          f"{n_threads()} threads, medians of {args.rounds} rounds")
    float32 = statistics.median(speeds["float32"])
    torch_speed = statistics.median(speeds["PyTorch"]) if speeds["PyTorch"] else None
    print(f"{'input':>10} {'computes in':>12} {'images/s':>10} {'vs float32':>11} {'vs PyTorch':>11}")
    for name in inputs:
        median = statistics.median(speeds[name])
        vs_torch = f"{median / torch_speed:10.2f}x" if torch_speed else f"{'':>11}"
        print(f"{name:>10} {str(dtypes[name]):>12} {median:10,.0f} {median / float32:10.2f}x {vs_torch}")
    fit = statistics.median(speeds["fit"])
    vs_torch = f"{fit / torch_speed:10.2f}x" if torch_speed else ""
    print(f"{'(fit)':>10} {'float32':>12} {fit:10,.0f} {fit / float32:10.2f}x {vs_torch}")
    if torch_speed:
        print(f"{'PyTorch':>10} {'float32':>12} {torch_speed:10,.0f}")


if __name__ == "__main__":
    main()

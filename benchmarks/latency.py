"""Prediction latency on a few images: skcnn's predict_proba against PyTorch.

    python benchmarks/latency.py
    python benchmarks/latency.py --architecture deep --sizes 1,10,100 --rounds 300

speed.py measures throughput (10,000 images). A user scoring one picture,
or a service scoring a handful, sees the fixed cost of a call instead. This
script times ``CNNClassifier.predict_proba`` on 1, 10 and 100 images (a
model fitted for one epoch on 300 random images: only the weights' shapes
matter) and, when PyTorch is installed, the same network's forward pass and
softmax under ``torch.no_grad()`` (a bare module: no input checks), both on
skcnn's thread count (the cores; SKCNN_NUM_THREADS sets it), taking turns a
block of 20 calls at a time; medians in milliseconds. The parts of skcnn's
call take their turns in the same loop: validating the input
(``_validate_input``), holding BLAS to one thread (``worker_pool``, which
every prediction enters so that results do not depend on the thread count)
and the network's forward pass alone on one thread (the call itself cuts
more than one image into two chunks, one a thread).
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


#: Calls in a row before the next framework's (or part's) turn. Call by call,
#: PyTorch's OpenMP threads, still spinning after its call, slowed skcnn's
#: next one (its BLAS hold took up to 2.4 ms instead of 0.2).
BLOCK = 20


def _ms(fn):
    """Milliseconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="origin", choices=["origin", "deep"])
    parser.add_argument("--sizes", default="1,10,100", help="images per call, comma-separated")
    parser.add_argument("--rounds", type=int, default=500,
                        help="calls per size and framework, rounded up to blocks of 20 (median reported)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    from sklearn.exceptions import ConvergenceWarning

    from skcnn import CNNClassifier
    from skcnn.parallel import n_threads, single_threaded_blas, worker_pool

    rng = np.random.default_rng(0)
    X = rng.random((max(300, max(sizes)), 1, 28, 28), dtype=np.float32)
    y = np.arange(len(X)) % 10
    clf = CNNClassifier(architecture=args.architecture, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X[:300], y[:300])
    net = clf._prediction_network()

    torch_forward = None
    try:
        import torch
        from speed import torch_model
    except ImportError:
        print("PyTorch is not installed: skcnn alone (pip install torch==2.13.0 for the comparison)", file=sys.stderr)
    else:
        torch.set_num_threads(n_threads())
        model = torch_model(args.architecture).eval()
        X_torch = torch.from_numpy(X)

        def torch_forward(n):
            with torch.no_grad():
                return model(X_torch[:n]).softmax(1).numpy()

    def held():
        with worker_pool():
            pass

    def network_alone(validated):
        with single_threaded_blas():  # entered and left outside the timed part
            return _ms(lambda: net.forward(validated))

    n_calls = -(-args.rounds // BLOCK) * BLOCK  # whole blocks
    print(f"{args.architecture} network, ms per call, {n_threads()} threads each, medians of {n_calls} calls")
    header = f"{'images':>6}  {'skcnn predict_proba':>19}  {'PyTorch forward':>15}  {'ratio':>6}"
    print(header + f"  {'validation':>10}  {'BLAS hold':>9}  {'network, one thread':>19}")
    for n in sizes:
        x = X[:n]
        validated = clf._validate_input(x, reset=False)
        calls = {
            "skcnn": lambda: clf.predict_proba(x),
            "torch": None if torch_forward is None else (lambda: torch_forward(n)),
            "validation": lambda: clf._validate_input(x, reset=False),
            "hold": held,
        }
        times = {name: [] for name, call in calls.items() if call is not None}
        times["network"] = []
        for _ in range(0, n_calls, BLOCK):  # taking turns a block of calls at a time
            for name, call in calls.items():
                if call is not None:
                    times[name] += [_ms(call) for _ in range(BLOCK)]
            times["network"] += [network_alone(validated) for _ in range(BLOCK)]
        ms = {name: statistics.median(v) for name, v in times.items()}
        theirs = ms.get("torch", float("nan"))
        print(f"{n:>6}  {ms['skcnn']:19.3f}  {theirs:15.3f}  {theirs / ms['skcnn']:5.2f}x  "
              f"{ms['validation']:10.3f}  {ms['hold']:9.3f}  {ms['network']:19.3f}")  # fmt: skip
    print("ratio: PyTorch's time / skcnn's (above 1: skcnn is faster)")


if __name__ == "__main__":
    main()

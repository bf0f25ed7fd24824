"""Train on more images than one process holds: dask-ml's Incremental on a Dask cluster.

    pip install "skcnn[distributed]" dask-ml
    python examples/incremental_dask.py                              # a LocalCluster here
    python examples/incremental_dask.py --scheduler tcp://host:8786 --data-dir /shared/blocks

The training images are written to disk as blocks of .npy files and read by
the workers, a block at a time: this process never holds them. dask-ml's
``Incremental`` calls ``CNNClassifier.partial_fit`` once per block (one epoch
over the block's images, in batches of 100), passing the model from block to
block; ``ParallelPostFit`` then predicts every block of the test images where
it lies. (On a remote cluster, ``--data-dir`` must be a folder every worker
can read.)

dask-ml's wrappers address blocks of 2-D arrays, so the images
``(n, C, H, W)`` go in as rows of pixels, ``images.reshape(n, -1)``, which
keeps each block where it is; ``input_shape=(C, H, W)`` tells the classifier
how to read the rows.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from skcnn import CNNClassifier
from skcnn.datasets import DEBIAN_FASHION_MNIST, load_digits_images, load_idx_dataset


def load_images():
    """Fashion-MNIST where installed, else scikit-learn's 8x8 digits (and say so)."""
    if DEBIAN_FASHION_MNIST.is_dir():
        return "Fashion-MNIST", load_idx_dataset(DEBIAN_FASHION_MNIST, shape="images")
    print(f"Fashion-MNIST is not installed in {DEBIAN_FASHION_MNIST}: using scikit-learn's digits")
    return "digits", load_digits_images(shape="images")


def lazy_blocks(folder, images, n_blocks):
    """Write ``images`` as ``n_blocks`` .npy files and return a Dask array that
    reads them back block by block, where the work runs."""
    import dask
    import dask.array as da

    blocks = []
    for i, block in enumerate(np.array_split(images, n_blocks)):
        path = Path(folder) / f"block{i}.npy"
        np.save(path, block)
        blocks.append(da.from_delayed(dask.delayed(np.load)(path), block.shape, block.dtype))
    return da.concatenate(blocks)


def main(argv=None):
    import dask.array as da
    from dask.distributed import Client, LocalCluster
    from dask_ml.wrappers import Incremental, ParallelPostFit

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", help="address of a running Dask scheduler")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--data-dir", help="folder for the blocks (default: a temporary one)")
    args = parser.parse_args(argv)

    name, (X_train, X_test, y_train, y_test) = load_images()
    X_train, y_train = X_train[: args.n_train], y_train[: args.n_train]
    X_test, y_test = X_test[: args.n_test], y_test[: args.n_test]
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None,
        )  # fmt: skip
        client = Client(cluster)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            images = lazy_blocks(args.data_dir or tmp, X_train, args.blocks)  # (n, C, H, W), lazy
            X = images.reshape(len(images), -1)  # rows of pixels, block by block
            y = da.from_array(y_train, chunks=(X.chunks[0],))
            model = Incremental(CNNClassifier(input_shape=X_train.shape[1:], random_state=0), random_state=0)
            start = time.perf_counter()
            model.fit(X, y, classes=np.unique(y_train))
            clf = model.estimator_
            print(f"{name}: one pass over {len(X_train)} images in {args.blocks} blocks on "
                  f"{len(client.scheduler_info()['workers'])} workers in "
                  f"{time.perf_counter() - start:.1f} s ({clf.n_iter_} partial_fit calls)")  # fmt: skip

        test = da.from_array(X_test, chunks=(max(1, len(X_test) // 4), *X_test.shape[1:]))
        predicted = ParallelPostFit(clf).predict(test.reshape(len(test), -1)).compute()
        print(f"test accuracy: {np.mean(predicted == y_test):.4f}")
        print(f"ParallelPostFit's predictions equal predict's: {np.array_equal(predicted, clf.predict(X_test))}")
    finally:
        client.close()
        if not args.scheduler:
            cluster.close()


if __name__ == "__main__":
    main()

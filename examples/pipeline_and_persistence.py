"""A CNN in a scikit-learn Pipeline, saved two ways.

* ``joblib.dump`` keeps the whole pipeline, optimizer state included (to go on
  training). It is a pickle: load it only from sources you trust.
* ``save_params`` writes only the network (an .npz of arrays and JSON) and is
  loaded without pickle: safe to share and to load from anywhere.

    python examples/pipeline_and_persistence.py
"""

import argparse
import tempfile
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from skcnn import CNNClassifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    pipe = make_pipeline(MinMaxScaler(), CNNClassifier(max_iter=args.epochs, random_state=0))
    pipe.fit(X_train, y_train)
    print(f"pipeline test accuracy: {pipe.score(X_test, y_test):.4f}")

    folder = Path(tempfile.mkdtemp())
    joblib.dump(pipe, folder / "pipeline.joblib")
    restored = joblib.load(folder / "pipeline.joblib")  # trusted source only
    same = np.array_equal(restored.predict_proba(X_test), pipe.predict_proba(X_test))
    print(f"joblib round trip gives identical probabilities: {same}")

    cnn = pipe[-1]
    cnn.save_params(folder / "cnn.npz")
    loaded = CNNClassifier.from_params_file(folder / "cnn.npz")  # never unpickles
    scaled = pipe[0].transform(X_test)
    same = np.array_equal(loaded.predict_proba(scaled), cnn.predict_proba(scaled))
    print(f"parameter file round trip gives identical probabilities: {same}")


if __name__ == "__main__":
    main()

"""Atrium quickstart training script: a classifier for the iris flowers.

Trains scikit-learn's logistic regression on the iris data set that ships with scikit-learn
(no download), and writes the fitted model to the run's outputs folder, `ATRIUM_OUTPUT_DIR`,
as `model.pkl` (joblib), with its test accuracy in `metrics.json`. Registered as a Model, the
outputs folder is what a deployment's scoring script loads.

Run it anywhere: `ATRIUM_OUTPUT_DIR=/tmp/out python train.py`.
"""

import json
import os
import pathlib

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


def main() -> None:
    outputs = pathlib.Path(os.environ.get("ATRIUM_OUTPUT_DIR", "outputs"))
    outputs.mkdir(parents=True, exist_ok=True)

    features, labels = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, random_state=0, stratify=labels
    )
    model = LogisticRegression(max_iter=int(os.environ.get("MAX_ITER", "200")))
    model.fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test))

    joblib.dump(model, outputs / "model.pkl")
    (outputs / "metrics.json").write_text(json.dumps({"accuracy": accuracy}) + "\n")
    run = os.environ.get("ATRIUM_RUN_NAME", "local")
    print(f"run {run}: test accuracy {accuracy:.3f}; model written to {outputs / 'model.pkl'}")


if __name__ == "__main__":
    main()

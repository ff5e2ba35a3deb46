"""Scoring script of the quickstart endpoint: the Azure ML scoring-script contract.

The Azure ML inference HTTP server (azureml-inference-server-http) calls `init()` once when it
starts, with the registered model's files under the folder in `AZUREML_MODEL_DIR`, and `run()`
for every POST to /score with the request body.

Request:  {"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}   (iris measurements, in cm)
Response: {"predictions": ["setosa", "virginica"]}
"""

import json
import os

import joblib
from azureml_inference_server_http.api.aml_response import AMLResponse

MODEL_SUFFIXES = (".joblib", ".pkl")
# The quickstart's train.py fits on scikit-learn's class indices; answers name the species.
IRIS_SPECIES = ("setosa", "versicolor", "virginica")

model = None


def find_model_file(model_dir):
    """The first model file under `model_dir`: the registered path may be the file itself or a
    folder holding it (Azure ML keeps its name under AZUREML_MODEL_DIR)."""
    for root, dirs, files in os.walk(model_dir, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(MODEL_SUFFIXES):
                return os.path.join(root, name)
    raise FileNotFoundError(f"no {' or '.join(MODEL_SUFFIXES)} file under {model_dir}")


def init():
    global model
    path = find_model_file(os.environ["AZUREML_MODEL_DIR"])
    model = joblib.load(path)
    # The server logs what the script prints (logger azmlinfsrv.print).
    print(f"loaded model from {path}")


def run(raw_data):
    try:
        rows = json.loads(raw_data)["data"]
    except (ValueError, KeyError, TypeError) as e:
        message = {"error": f'expected a JSON body {{"data": [[...], ...]}}: {e}'}
        return AMLResponse(message, 400, json_str=True)
    return {"predictions": [species(p) for p in model.predict(rows)]}


def species(label):
    """A species name for a class index (a model trained on names answers names already)."""
    value = label.item() if hasattr(label, "item") else label
    if isinstance(value, int) and 0 <= value < len(IRIS_SPECIES):
        return IRIS_SPECIES[value]
    return value

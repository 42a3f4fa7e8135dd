"""A machine-learning model behind a web server (needs `pip install flask scikit-learn`).

The course notes' second deployment: a model trained once, at import, then
asked for predictions by every request.

    POST /predict       {"pixels": [64 numbers, 0-16]} -> {"digit": 3, "probabilities": [...]}
    GET  /health        {"status": "ok", "pid": ..., "accuracy": ...}
    GET  /sample?i=N    one image of the test set, as /predict wants it, with its label
    GET  /work/numpy?n=N    N matrix products in numpy (C code that releases the GIL)
    GET  /work/python?n=N   the same arithmetic in pure Python (holds the GIL)

    stage4-uwsgi-socket --http 127.0.0.1:5000 --module apps.model_app:app --processes 4 --socket /tmp/model.sock
"""

import os

# One thread per numpy operation: the server's threads and processes are
# the only parallelism, so what the /work routes measure is the GIL, not
# OpenBLAS's own thread pool. (Must be set before numpy is imported.)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


# ANCHOR: train
def train():
    """The digits data set ships inside scikit-learn (1797 8x8 images, no
    download); a logistic regression learns it in a second."""
    started = time.perf_counter()
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=0
    )
    model = LogisticRegression(max_iter=2000)
    model.fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test))
    return model, x_test, y_test, accuracy, time.perf_counter() - started


MODEL, X_TEST, Y_TEST, ACCURACY, TRAIN_SECONDS = train()
# ANCHOR_END: train

# A matrix for the /work routes: 2 MB of float64, like a model's weights.
WEIGHTS = np.random.default_rng(0).standard_normal((512, 512))

app = Flask(__name__)


@app.get("/health")
def health():
    return jsonify(status="ok", pid=os.getpid(), accuracy=ACCURACY, trained_in=TRAIN_SECONDS)


# ANCHOR: predict
@app.post("/predict")
def predict():
    data = request.get_json(silent=True) or {}
    pixels = data.get("pixels")
    if not isinstance(pixels, list) or len(pixels) != 64:
        return jsonify(error="send {\"pixels\": [64 numbers, 0-16]}"), 400
    try:
        x = np.asarray(pixels, dtype=np.float64).reshape(1, 64)
    except (TypeError, ValueError):
        return jsonify(error="pixels must be numbers"), 400
    probabilities = MODEL.predict_proba(x)[0]
    return jsonify(
        digit=int(np.argmax(probabilities)),
        probabilities=[round(float(p), 4) for p in probabilities],
    )
# ANCHOR_END: predict


@app.get("/sample")
def sample():
    i = request.args.get("i", 0, type=int) % len(X_TEST)
    return jsonify(pixels=[int(v) for v in X_TEST[i]], label=int(Y_TEST[i]))


# ANCHOR: work
@app.get("/work/numpy")
def work_numpy():
    """n products of a 512x512 matrix with a 512x64 one: the multiplication
    runs in C (BLAS) with the GIL released."""
    n = request.args.get("n", 20, type=int)
    v = WEIGHTS[:, :64]
    for _ in range(n):
        v = np.tanh(WEIGHTS @ v)
    return jsonify(n=n, checksum=float(v.sum()))


@app.get("/work/python")
def work_python():
    """The same kind of arithmetic (multiply-adds) in pure Python bytecode:
    the GIL is held throughout."""
    n = request.args.get("n", 20, type=int)
    row = WEIGHTS[0, :64].tolist()
    total = 0.0
    for _ in range(n * 330):
        for a in row:
            total += a * a
    return jsonify(n=n, checksum=total)
# ANCHOR_END: work

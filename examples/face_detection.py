"""The lecture's running example is a cat detector: a yes/no classifier of images. Its stand-in here
is real and offline: scikit-image's ``lfw_subset`` (200 grayscale 25×25 images; the first 100 are
faces, the other 100 are not). Trained and scored with stratified k-fold cross-validation (the set
is small), beside a baseline that looks at mean brightness alone (faces are brighter here: 0.45
against 0.30 on average), so that each score means what it seems to:

    baseline        mean brightness, threshold fitted on the training folds
    logistic        the textbook's logistic regression: one sigmoid unit on the 625 pixels
    one hidden      the textbook's 1-hidden-layer network: 625-16-1, tanh then sigmoid
    small CNN       conv 3×3×8 – max-pool – conv 3×3×16 – max-pool – 1 sigmoid, on (25, 25, 1) images

    python examples/face_detection.py [--epochs 60] [--folds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import toolkit
from toolkit import SGD, Adam, Conv2D, Dense, Flatten, MaxPool2D, Sequential


def load_faces() -> tuple[np.ndarray, np.ndarray]:
    """(images (200, 25, 25, 1) in [0, 1], labels 1 = face)."""
    from skimage.data import lfw_subset

    images = lfw_subset().astype(np.float32)[..., None]
    return images, (np.arange(len(images)) < 100).astype(np.int64)


def logistic(seed: int) -> Sequential:
    model = Sequential([Dense(1, activation="sigmoid")], input_dim=625, seed=seed)
    model.compile(loss="binary_crossentropy", optimizer=SGD(lr=0.05), metrics=["accuracy"])
    return model


def one_hidden(seed: int) -> Sequential:
    model = Sequential([Dense(16, activation="tanh"), Dense(1, activation="sigmoid")], input_dim=625, seed=seed)
    model.compile(loss="binary_crossentropy", optimizer=SGD(lr=0.05, momentum=0.9), metrics=["accuracy"])
    return model


def small_cnn(seed: int) -> Sequential:
    model = Sequential([Conv2D(8, 3, activation="relu"), MaxPool2D(2), Conv2D(16, 3, activation="relu"), MaxPool2D(2),
                        Flatten(), Dense(1, activation="sigmoid")], input_shape=(25, 25, 1), seed=seed)
    model.compile(loss="binary_crossentropy", optimizer=Adam(lr=1e-3), metrics=["accuracy"])
    return model


def brightness_baseline(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray) -> np.ndarray:
    """Faces when the mean brightness is above the threshold that best splits the training folds."""
    train, test = train_images.mean(axis=(1, 2, 3)), test_images.mean(axis=(1, 2, 3))
    candidates = np.sort(train)
    scores = [np.mean((train > t) == train_labels) for t in candidates]
    return (test > candidates[int(np.argmax(scores))]).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60, help="epochs per fold (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=5, help="stratified folds (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=0, help="fit's verbosity (default: %(default)s)")
    args = parser.parse_args()
    from sklearn.model_selection import StratifiedKFold

    images, labels = load_faces()
    print(f"backend: {toolkit.get_backend().name}; {len(images)} images 25×25 ({labels.sum()} faces), "
          f"{args.folds}-fold stratified cross-validation, {args.epochs} epochs per fold")
    scores: dict[str, list[float]] = {"baseline (brightness)": [], "logistic regression": [], "one hidden layer": [],
                                      "small CNN": []}
    started = time.perf_counter()
    folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=0).split(images, labels)
    for fold, (train, test) in enumerate(folds):
        guess = brightness_baseline(images[train], labels[train], images[test])
        scores["baseline (brightness)"].append(float(np.mean(guess == labels[test])))
        mean, std = images[train].mean(), images[train].std()  # standardised with the training folds only
        flat = ((images - mean) / std).reshape(len(images), -1)
        for name, build, x in (("logistic regression", logistic, flat), ("one hidden layer", one_hidden, flat),
                               ("small CNN", small_cnn, (images - mean) / std)):
            model = build(seed=fold)
            model.fit(x[train], labels[train], epochs=args.epochs, batch_size=16, verbose=args.verbose, seed=fold)
            scores[name].append(model.evaluate(x[test], labels[test])["accuracy"])
    for name, values in scores.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name:<22} test accuracy {statistics.mean(values):.3f} ± {spread:.3f}")
    print(f"({time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    main()

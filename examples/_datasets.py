"""Shared by the examples (not one itself): real data sets that scikit-learn ships (no download), split and
standardised on the host."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

LOADERS = {"digits": load_digits, "breast_cancer": load_breast_cancer, "diabetes": load_diabetes}


PIXEL_MAX = 16.0  # the digits images are 8×8 intensities in 0..16


def load(name: str, test_size: float = 0.2, seed: int = 42, target=None, scale_x: bool = True):
    """(x_train, x_test, y_train, y_test) as float64 NumPy arrays (labels as given or mapped by ``target``).

    Features are standardised with the training split's statistics; the digits' pixels are
    instead divided by their maximum, 16, which keeps the images' geometry.
    """
    x, y = LOADERS[name](return_X_y=True)
    if name == "digits":
        x, scale_x = x / PIXEL_MAX, False
    if target is not None:
        y = target(y)
    stratify = y if name != "diabetes" else None
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=stratify)
    if scale_x:
        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    return x_train.astype(np.float64), x_test.astype(np.float64), y_train, y_test

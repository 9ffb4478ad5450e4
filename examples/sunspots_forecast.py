"""Forecasting yearly sunspot numbers (1700–2008, the series statsmodels ships) one year ahead with an LSTM.

    pip install -e ".[examples]"
    TOOLKIT_BACKEND=numba python examples/sunspots_forecast.py
    python examples/sunspots_forecast.py --seeds 0 1 2 3 4

Windows of the previous 20 years predict the next one. The model trains on the years up to 1969
(standardised with their mean and standard deviation) and forecasts 1970–2008, each year from the
true previous 20. Its RMSE is reported beside two baselines on the same years: persistence (next
year = this year) and an AR(9) model fitted by statsmodels on the same training years. Writes a PNG
of the forecasts against the truth.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import numpy as np

import toolkit
from toolkit import LSTM, Adam, Dense, Sequential

WINDOW, LAST_TRAINING_YEAR = 20, 1969


def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """(years, sunspot numbers) of statsmodels' yearly series, 1700–2008."""
    import statsmodels.api as sm

    data = sm.datasets.sunspots.load_pandas().data
    return data["YEAR"].to_numpy().astype(int), data["SUNACTIVITY"].to_numpy().astype(np.float64)


def windows(series: np.ndarray, targets: range) -> tuple[np.ndarray, np.ndarray]:
    """x[i] = the WINDOW values before index targets[i] (as (WINDOW, 1) sequences), y[i] = its value."""
    x = np.stack([series[t - WINDOW : t] for t in targets])[..., None]
    return x, series[list(targets)][:, None]


def baselines(series: np.ndarray, split: int) -> dict[str, np.ndarray]:
    """One-step forecasts of the test years by persistence and by AR(9) fitted on the training years."""
    from statsmodels.tsa.ar_model import AutoReg

    fitted = AutoReg(series[:split], lags=9).fit()
    intercept, coefficients = fitted.params[0], fitted.params[1:]
    ar = np.array([intercept + coefficients @ series[t - 9 : t][::-1] for t in range(split, len(series))])
    return {"persistence": series[split - 1 : -1], "AR(9)": ar}


def build(seed: int) -> Sequential:
    model = Sequential([LSTM(32, input_shape=(WINDOW, 1)), Dense(1)], seed=seed)
    model.compile(loss="mse", optimizer=Adam(lr=3e-3))
    return model


def forecast(seed: int, series: np.ndarray, split: int, epochs: int, verbose: int) -> np.ndarray:
    """Train on the windows ending before ``split``; forecast every later year from the true history."""
    mean, std = series[:split].mean(), series[:split].std()
    scaled = (series - mean) / std
    x_train, y_train = windows(scaled, range(WINDOW, split))
    x_test, _ = windows(scaled, range(split, len(series)))
    model = build(seed)
    model.fit(x_train, y_train, epochs=epochs, batch_size=16, seed=seed, verbose=verbose)
    return np.asarray(model.backend.to_host(model.predict(x_test)))[:, 0] * std + mean


def rmse(prediction: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((prediction - truth) ** 2)))


def plot(years: np.ndarray, truth: np.ndarray, forecasts: dict[str, np.ndarray], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 3.5))
    axis.plot(years, truth, "k-", label="observed", linewidth=2)
    for name, values in forecasts.items():
        axis.plot(years, values, label=name, alpha=0.8)
    axis.set_xlabel("year")
    axis.set_ylabel("sunspot number")
    axis.set_title("One-year-ahead forecasts, 1970–2008")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=150, help="training epochs (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to train (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=0, help="0 silent, 1 progress bar (default: %(default)s)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "output",
                        help="folder for the PNG (default: %(default)s)")
    args = parser.parse_args()

    years, series = load_sunspots()
    split = int(np.searchsorted(years, LAST_TRAINING_YEAR, side="right"))
    truth = series[split:]
    print(f"backend: {toolkit.get_backend().name}; {len(years)} years, training on {years[0]}–{years[split - 1]}, "
          f"forecasting {years[split]}–{years[-1]}")
    reference = baselines(series, split)
    for name, values in reference.items():
        print(f"{name:<12} RMSE {rmse(values, truth):6.2f}")
    started, scores, first = time.perf_counter(), [], None
    for seed in args.seeds:
        predicted = forecast(seed, series, split, args.epochs, args.verbose)
        first = predicted if first is None else first
        scores.append(rmse(predicted, truth))
        print(f"LSTM(32) seed {seed}: RMSE {scores[-1]:6.2f}")
    spread = f" ± {statistics.stdev(scores):.2f} over {len(scores)} seeds" if len(scores) > 1 else ""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "sunspots_forecast.png"
    plot(years[split:], truth, {"LSTM(32)": first, "AR(9)": reference["AR(9)"]}, path)
    print(f"LSTM(32) RMSE {statistics.mean(scores):.2f}{spread}; {time.perf_counter() - started:.1f}s; wrote {path}")


if __name__ == "__main__":
    main()

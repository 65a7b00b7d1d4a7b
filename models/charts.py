"""Forecast fan charts as PNG, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAX_SERIES_PER_CHART = 4


def fan_chart(
    path: Path,
    title: str,
    contexts: Sequence[dict],
    actuals: Sequence[np.ndarray],
    forecasts: Sequence[dict],
    series_ids: Sequence[str],
    history: int = 72,
) -> Path:
    """Draw history, actuals, the mean and the 10-90% band of up to four series into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(MAX_SERIES_PER_CHART, len(contexts))
    figure, axes = plt.subplots(count, 1, figsize=(8, 2.2 * count), squeeze=False)
    for row in range(count):
        axis = axes[row][0]
        past = np.asarray(contexts[row]["target"], dtype=float)[-history:]
        steps = len(forecasts[row]["mean"])
        past_x = np.arange(-past.size, 0)
        future_x = np.arange(steps)
        axis.plot(past_x, past, color="0.3", linewidth=1, label="history")
        axis.plot(future_x, actuals[row], color="black", linewidth=1.2, label="actual")
        axis.plot(future_x, forecasts[row]["mean"], color="tab:blue", label="mean")
        quantiles = forecasts[row]["quantiles"]
        if "0.1" in quantiles and "0.9" in quantiles:
            axis.fill_between(
                future_x,
                quantiles["0.1"],
                quantiles["0.9"],
                color="tab:blue",
                alpha=0.25,
                label="10-90%",
            )
        axis.set_title(str(series_ids[row]), fontsize=9)
        axis.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, loc="upper left")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path

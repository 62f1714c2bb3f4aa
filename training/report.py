"""Evaluation report of the ranking models and baselines, written to one directory.

`write_report` writes:
- report.md: title, a comparison table (model, test AUC, PR-AUC, logloss, NE, calibration, GAUC, rows) with
  models first and baselines (names starting with "baseline") after, each group in the caller's order,
  then the caller's notes as bullet points, then the plots below embedded;
- roc.png, pr.png: ROC and precision-recall curves of every entry of `curves`;
- calibration.png: reliability diagram (equal-frequency bins: mean prediction vs observed rate, and the diagonal);
- learning_curves.png: loss and AUC per epoch, train solid and validation dashed, one colour per model.
`format_table` gives the same comparison as fixed-width text for a terminal. Every file is written atomically.
"""

from __future__ import annotations

import io
import numbers
import os
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display; must precede the pyplot import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from training.metrics import calibration_curve, pr_points, roc_points  # noqa: E402

COLUMNS = [  # (header, key in a binary_metrics dict)
    ("model", None),
    ("test AUC", "auc"),
    ("PR-AUC", "pr_auc"),
    ("logloss", "logloss"),
    ("NE", "normalized_entropy"),
    ("calibration", "calibration"),
    ("GAUC", "gauc"),
    ("rows", "rows"),
]
BASELINE_PREFIX = "baseline"
CALIBRATION_BINS = 10
LEARNING_CURVE_METRICS = [("loss", "loss"), ("auc", "AUC")]  # (history key, subplot title)


def format_value(value: Any) -> str:
    """4 decimals for floats, plain integers, "-" for None or NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4f}"
    return str(value)


def ordered_names(results: dict[str, dict]) -> list[str]:
    """Models first, then baselines; the caller's order inside each group."""
    models = [name for name in results if not name.startswith(BASELINE_PREFIX)]
    return models + [name for name in results if name.startswith(BASELINE_PREFIX)]


def _table_rows(results: dict[str, dict]) -> list[list[str]]:
    return [
        [name] + [format_value(results[name].get(key)) for _, key in COLUMNS[1:]] for name in ordered_names(results)
    ]


def format_table(results: dict[str, dict]) -> str:
    """Comparison table as fixed-width text: names left-aligned, numbers right-aligned."""
    headers = [header for header, _ in COLUMNS]
    rows = _table_rows(results)
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first] + [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])])

    return "\n".join([line(headers), "  ".join("-" * width for width in widths)] + [line(row) for row in rows])


def markdown_table(results: dict[str, dict]) -> str:
    headers = [header for header, _ in COLUMNS]
    rows = [[row[0].replace("|", "\\|")] + row[1:] for row in _table_rows(results)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file next to `path`, then rename over it."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; a report is meant to be read by others
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _save_figure(fig: plt.Figure, path: Path) -> None:
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    _atomic_write_bytes(path, buffer.getvalue())


def _plottable(curves: dict[str, dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(labels, predictions) of the curves having both classes; the others cannot be drawn."""
    arrays = {name: (np.asarray(c["labels"]), np.asarray(c["predictions"])) for name, c in curves.items()}
    return {name: (y, p) for name, (y, p) in arrays.items() if len(y) and 0 < np.mean(y == 1) < 1}


def _finish_axes(ax: plt.Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)


def plot_roc(curves: dict[str, dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 6))
    for name, (labels, predictions) in _plottable(curves).items():
        ax.plot(*roc_points(labels, predictions), label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    _finish_axes(ax, "false positive rate", "true positive rate", "ROC")
    _save_figure(fig, path)


def plot_pr(curves: dict[str, dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 6))
    for name, (labels, predictions) in _plottable(curves).items():
        ax.plot(*pr_points(labels, predictions), label=name)
    _finish_axes(ax, "recall", "precision", "Precision-recall")
    _save_figure(fig, path)


def plot_calibration(curves: dict[str, dict], path: Path) -> None:
    """Reliability diagram; axes end just above the largest value so that small CTRs stay readable."""
    fig, ax = plt.subplots(figsize=(6, 6))
    upper = 0.0
    for name, (labels, predictions) in _plottable(curves).items():
        mean_prediction, observed_rate, _ = calibration_curve(labels, predictions, bins=CALIBRATION_BINS)
        ax.plot(mean_prediction, observed_rate, marker="o", label=name)
        upper = max(upper, mean_prediction.max(), observed_rate.max())
    upper = min(1.0, upper * 1.05) if upper > 0 else 1.0
    ax.plot([0, upper], [0, upper], color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, upper)
    ax.set_ylim(0, upper)
    _finish_axes(ax, "mean prediction (bin)", "observed positive rate (bin)", "Calibration")
    _save_figure(fig, path)


def plot_learning_curves(histories: dict[str, dict], path: Path) -> None:
    """One subplot per metric (loss, AUC): train solid, validation dashed, one colour per model."""
    fig, axes = plt.subplots(1, len(LEARNING_CURVE_METRICS), figsize=(12, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title) in zip(axes, LEARNING_CURVE_METRICS):
        for index, (name, history) in enumerate(histories.items()):
            color = colors[index % len(colors)]
            for prefix, style, suffix in (("", "-", "train"), ("val_", "--", "val")):
                values = history.get(prefix + key)
                if values:
                    epochs = np.arange(1, len(values) + 1)
                    ax.plot(epochs, values, linestyle=style, color=color, label=f"{name} {suffix}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _finish_axes(ax, "epoch", title, title)
    _save_figure(fig, path)


def markdown_report(results: dict[str, dict], notes: list[str], title: str, images: dict[str, str]) -> str:
    parts = [f"# {title}", "## Model comparison", markdown_table(results)]
    if notes:
        parts += ["## Notes", "\n".join(f"- {note}" for note in notes)]
    parts += ["## Plots", "\n\n".join(f"![{alt}]({file})" for alt, file in images.items())]
    return "\n\n".join(parts) + "\n"


def write_report(out_dir: Path, results: dict, curves: dict, histories: dict, notes: list[str], title: str) -> Path:
    """Write report.md and its four PNGs into `out_dir` (created if needed); returns the report.md path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_roc(curves, out_dir / "roc.png")
    plot_pr(curves, out_dir / "pr.png")
    plot_calibration(curves, out_dir / "calibration.png")
    plot_learning_curves(histories, out_dir / "learning_curves.png")
    images = {
        "ROC": "roc.png",
        "PR": "pr.png",
        "Calibration": "calibration.png",
        "Learning curves": "learning_curves.png",
    }
    report_path = out_dir / "report.md"
    _atomic_write_bytes(report_path, markdown_report(results, notes, title, images).encode("utf-8"))
    return report_path

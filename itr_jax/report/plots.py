"""PNG plots of a sweep: metric vs swept hyperparameter, and training curves.

matplotlib with the non-interactive Agg backend, so it works headless.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from itr_jax.report.aggregate import Group  # noqa: E402


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _x_positions(values: Sequence[Any]) -> tuple[list[float], list[str] | None, bool]:
  """Numeric values as they are (log scale if they span >= 20x), else categories."""
  if values and all(_is_number(v) for v in values):
    positive = all(v > 0 for v in values)
    log = positive and max(values) / min(values) >= 20
    return [float(v) for v in values], None, log
  labels = [str(v) for v in values]
  return list(range(len(labels))), labels, False


# Axis labels of swept fields: the paper's symbols first.
PARAM_LABELS = {
    "loss.weight": "λ (loss.weight)", "loss.tau": "τ (loss.tau)",
    "loss.margin": "margin α (loss.margin)", "train.batch_size": "batch size B",
    "train.warmup_epochs": "warm-up epochs", "loss.idcg": "ideal DCG",
    "loss.t2i_relevance": "t2i relevance rows", "model.pooling": "image pooling",
}


def metric_unit(metric: str) -> str:
  """The y-axis unit of a metric name.

  >>> metric_unit("i2t_r5"), metric_unit("rsum"), metric_unit("true_ndcg_t2i")
  ('%', '% (sum of 6 recalls)', '')
  """
  if metric == "rsum":
    return "% (sum of 6 recalls)"
  if "_r" in metric and metric.rsplit("_r", 1)[-1].isdigit():
    return "%"
  return ""


def metric_limits(groups: Sequence[Group], metrics: Sequence[str]) -> dict[str, tuple]:
  """{metric: (low, high)} covering mean ± std of every group, 5% padded.

  Passing the same limits to every plot of a report keeps a metric's y-range
  identical across plots.
  """
  limits = {}
  for metric in metrics:
    lows, highs = [], []
    for g in groups:
      mean, std = g.mean.get(metric), g.std.get(metric)
      if mean is None or not math.isfinite(mean):
        continue
      std = std if std is not None and math.isfinite(std) else 0.0
      lows.append(mean - std)
      highs.append(mean + std)
    if lows:
      pad = 0.05 * max(max(highs) - min(lows), 1e-6)
      limits[metric] = (min(lows) - pad, max(highs) + pad)
  return limits


def metric_vs_param(groups: Sequence[Group], param: str, metrics: Sequence[str],
                    path: str, *, title: str = "",
                    labels: Mapping[str, str] | None = None,
                    limits: Mapping[str, tuple] | None = None,
                    columns: int = 4) -> str:
  """One panel per metric: mean ± std (error bars) against `param`.

  Numeric settings are drawn as lines (log x if they span >= 20x), discrete
  ones (strings, booleans) as bars. Groups that differ in other fields than
  `param` are separate lines / bars, labelled by those fields. `limits`
  ({metric: (low, high)}, see `metric_limits`) fixes y-ranges.
  """
  labels, limits = labels or {}, limits or {}
  others = sorted({k for g in groups for k in g.setting if k != param})
  lines: dict[str, list[Group]] = {}
  for g in groups:
    key = ", ".join(f"{k}={g.setting.get(k)}" for k in others)
    lines.setdefault(key, []).append(g)
  columns = min(columns, len(metrics))
  rows = -(-len(metrics) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.9 * rows),
                           squeeze=False)
  for ax in axes.flat[len(metrics):]:
    ax.set_visible(False)
  for ax, metric in zip(axes.flat, metrics):
    for i, (key, gs) in enumerate(lines.items()):
      gs = sorted(gs, key=lambda g: (str(type(g.setting.get(param))), g.setting.get(param)))
      xs, ticks, log = _x_positions([g.setting.get(param) for g in gs])
      means = [g.mean[metric] for g in gs]
      stds = [0.0 if not math.isfinite(g.std[metric]) else g.std[metric] for g in gs]
      if ticks is None:
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=key or None)
        if log:
          ax.set_xscale("log")
      else:
        width = 0.8 / len(lines)
        offset = (i - (len(lines) - 1) / 2) * width
        ax.bar([x + offset for x in xs], means, width, yerr=stds, capsize=3,
               label=key or None)
        ax.set_xticks(xs, ticks)
    if metric in limits:
      ax.set_ylim(*limits[metric])
    ax.set_xlabel(PARAM_LABELS.get(param, param))
    unit = metric_unit(metric)
    ax.set_ylabel(labels.get(metric, metric) + (f" ({unit})" if unit else ""), fontsize=8)
    ax.set_title(labels.get(metric, metric), fontsize=10)
    ax.grid(alpha=0.3)
  if any(lines):
    axes.flat[len(metrics) - 1].legend(fontsize=7)
  return _save(fig, path, title=title, dpi=110)


def _save(fig, path: str, *, dpi: int, title: str = "") -> str:
  """Titles (if any), lays out, writes and closes `fig`; returns `path`."""
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def _series(records: Sequence[Mapping], key: str) -> tuple[list[int], list[float]]:
  pts = [(r["step"], r[key]) for r in records if _is_number(r.get(key))]
  return [p[0] for p in pts], [p[1] for p in pts]


def training_curves(train: Sequence[Mapping], dev: Sequence[Mapping], path: str, *,
                    title: str = "") -> str:
  """Three panels: loss parts; smooth vs hard batch NDCG; dev RSUM (and true NDCG)."""
  fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.4))
  for key in ("loss", "pairwise", "listwise"):
    a.plot(*_series(train, key), label=key)
  a.set_title("loss parts (train)", fontsize=10)
  for key, style in (("ndcg_i2t", "-"), ("ndcg_t2i", "-"),
                     ("hard_ndcg_i2t", "--"), ("hard_ndcg_t2i", "--")):
    b.plot(*_series(train, key), style, label=key)
  b.set_title("smooth (—) vs hard (--) NDCG, batch", fontsize=10)
  c.plot(*_series(dev, "rsum"), "o-", color="k", label="dev RSUM")
  c.set_title("dev RSUM", fontsize=10)
  if any(_is_number(r.get("true_ndcg_i2t")) for r in dev):
    c2 = c.twinx()
    for key in ("true_ndcg_i2t", "true_ndcg_t2i"):
      c2.plot(*_series(dev, key), ".--", label=key)
    c2.set_ylabel("true NDCG")
    c2.legend(fontsize=7, loc="lower right")
  for ax in (a, b, c):
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left" if ax is c else "best")
  return _save(fig, path, title=title, dpi=90)


def dev_curves(runs: Sequence[tuple[str, str, Sequence[Mapping]]], path: str,
               metric: str = "rsum", *, title: str = "") -> str:
  """Dev `metric` against step, one line per (name, group, dev records) run.

  Runs of one group (same setting, different seeds) share a colour.
  """
  fig, ax = plt.subplots(figsize=(6.5, 4))
  colours, styles = {}, {}
  for name, group, dev in runs:
    colour = colours.setdefault(group, f"C{len(colours) % 10}")
    style = ("-", "--", ":", "-.")[styles.get(group, 0) % 4]
    styles[group] = styles.get(group, 0) + 1
    ax.plot(*_series(dev, metric), style, marker=".", color=colour, label=name)
  ax.set_xlabel("step")
  ax.set_ylabel(f"dev {metric}")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  if title:
    ax.set_title(title, fontsize=10)
  return _save(fig, path, dpi=100)

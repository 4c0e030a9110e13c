"""PNG plots of a sweep: metric vs swept hyperparameter, and training curves.

matplotlib with the non-interactive Agg backend, so it works headless.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from itr_jax.metrics.ndcg import split_ndcg_key  # noqa: E402
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


def determined_by(settings: Sequence[Mapping[str, Any]], field: str, by: str) -> bool:
  """True when each value of `by` comes with one value of `field` in `settings`.

  >>> determined_by([{"m": "a", "d": 1}, {"m": "b", "d": 2}, {"m": "b", "d": 2}], "d", "m")
  True
  """
  seen = {}
  for s in settings:
    if seen.setdefault(repr(s.get(by)), repr(s.get(field))) != repr(s.get(field)):
      return False
  return True


def distinguishing_fields(settings: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[str]:
  """The fewest of `fields` (most distinct values first) whose values tell
  `settings` apart as well as all of `fields` do: legend labels stay short
  when fields co-vary (a backbone sets its model name, sizes and optimizer).

  >>> distinguishing_fields([{"m": "a", "d": 1}, {"m": "b", "d": 2}, {"m": "c", "d": 2}],
  ...                       ["d", "m"])
  ['m']
  """
  def key(s, chosen):
    return tuple(repr(s.get(f)) for f in chosen)
  target = len({key(s, fields) for s in settings})
  ranked = sorted(fields, key=lambda f: -len({repr(s.get(f)) for s in settings}))
  chosen = []
  for field in ranked:
    if len({key(s, chosen) for s in settings}) == target:
      break
    if len({key(s, chosen + [field]) for s in settings}) > len({key(s, chosen) for s in settings}):
      chosen.append(field)
  return sorted(chosen, key=list(fields).index)


def metric_vs_param(groups: Sequence[Group], param: str, metrics: Sequence[str],
                    path: str, *, title: str = "",
                    labels: Mapping[str, str] | None = None,
                    limits: Mapping[str, tuple] | None = None,
                    columns: int = 4) -> str:
  """One panel per metric: mean ± std (error bars) against `param`.

  Numeric settings are drawn as lines (log x if they span >= 20x), discrete
  ones (strings, booleans) as bars, one tick per value shared by all
  groups. Groups that differ in other fields than `param` are separate
  lines / bars, labelled by the fewest fields that tell them apart (one
  legend below the panels). `limits` ({metric: (low, high)}, see
  `metric_limits`) fixes y-ranges.
  """
  labels, limits = labels or {}, limits or {}
  settings = [g.setting for g in groups]
  # Fields the swept value determines (a backbone's sizes) are not separate lines.
  others = sorted(k for k in {k for s in settings for k in s}
                  if k != param and not determined_by(settings, k, param))
  others = distinguishing_fields(settings, others)
  lines: dict[str, list[Group]] = {}
  for g in groups:
    key = ", ".join(f"{k}={g.setting.get(k)}" for k in others)
    lines.setdefault(key, []).append(g)
  values = sorted({repr(g.setting.get(param)): g.setting.get(param) for g in groups}.values(),
                  key=lambda v: (str(type(v)), v if _is_number(v) else str(v)))
  _, categories, _ = _x_positions(values)
  columns = min(columns, len(metrics))
  rows = -(-len(metrics) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.2 * rows),
                           squeeze=False)
  for ax in axes.flat[len(metrics):]:
    ax.set_visible(False)
  for ax, metric in zip(axes.flat, metrics):
    for i, (key, gs) in enumerate(lines.items()):
      gs = sorted(gs, key=lambda g: values.index(g.setting.get(param)))
      means = [g.mean[metric] for g in gs]
      stds = [0.0 if not math.isfinite(g.std[metric]) else g.std[metric] for g in gs]
      if categories is None:
        xs, _, log = _x_positions([g.setting.get(param) for g in gs])
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=key or None,
                    color=f"C{i % 10}")
        if log:
          ax.set_xscale("log")
      else:
        # Every value has one tick for all groups; a group's bar sits at its value's.
        xs = [values.index(g.setting.get(param)) for g in gs]
        width = 0.8 / len(lines)
        offset = (i - (len(lines) - 1) / 2) * width
        ax.bar([x + offset for x in xs], means, width, yerr=stds, capsize=3,
               label=key or None, color=f"C{i % 10}")
    if categories is not None:
      ax.set_xticks(range(len(categories)), categories,
                    rotation=30 if max(len(c) for c in categories) > 6 else 0,
                    ha="right" if max(len(c) for c in categories) > 6 else "center")
    if metric in limits:
      ax.set_ylim(*limits[metric])
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_xlabel(PARAM_LABELS.get(param, param), fontsize=8)
    unit = metric_unit(metric)
    ax.set_ylabel(labels.get(metric, metric) + (f" ({unit})" if unit else ""), fontsize=8)
    ax.set_title(labels.get(metric, metric), fontsize=10)
    ax.grid(alpha=0.3)
  if any(lines):
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(names), 2), fontsize=8)
  return _save(fig, path, title=title, dpi=110)


def _save(fig, path: str, *, dpi: int, title: str = "") -> str:
  """Titles (if any), lays out, writes and closes `fig`; returns `path`."""
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  # "tight": legends placed outside the axes are part of the image.
  fig.savefig(path, dpi=dpi, bbox_inches="tight")
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
  # Ground-truth NDCG keys, with the cutoff eval.ndcg_k when one is set.
  true_keys = sorted({k for r in dev for k in r if _is_number(r[k]) and
                      split_ndcg_key(k)[0] in ("true_ndcg_i2t", "true_ndcg_t2i")})
  if true_keys:
    c2 = c.twinx()
    for key in true_keys:
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
  ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
  if title:
    ax.set_title(title, fontsize=10)
  return _save(fig, path, dpi=100)

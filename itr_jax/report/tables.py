"""Markdown and CSV tables of grouped run metrics ("mean ± std" cells).

>>> from itr_jax.report.aggregate import Group
>>> g = Group({"loss.weight": 0.5}, 3, {"rsum": 250.0}, {"rsum": 1.5}, {"rsum": 3})
>>> print(markdown_table([g], ["loss.weight"], ["rsum"]))
| loss.weight | n | rsum |
|---|---|---|
| 0.5 | 3 | 250.00 ± 1.50 |
"""
from __future__ import annotations

import csv
import io
import math
from typing import Any, Mapping, Sequence

from itr_jax.report.aggregate import Group


def format_cell(mean: float, std: float, digits: int = 2) -> str:
  """'12.34 ± 0.56'; just the mean when std is NaN (one run); '–' when missing."""
  if not math.isfinite(mean):
    return "–"
  if not math.isfinite(std):
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _digits(metric: str) -> int:
  # NDCG lives in [0, 1]: more digits; recalls and RSUM are percentages.
  return 4 if "ndcg" in metric else 2


def _value(v: Any) -> str:
  return "" if v is None else str(v)


def markdown_table(groups: Sequence[Group], fields: Sequence[str],
                   metrics: Sequence[str], headers: Mapping[str, str] | None = None, *,
                   names: bool = False) -> str:
  """One row per group: (with `names`, its runs' names,) swept fields, n, then
  'mean ± std' per metric."""
  headers = headers or {}
  cols = [*(["run"] if names else []), *fields, "n", *(headers.get(m, m) for m in metrics)]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for g in groups:
    cells = ([", ".join(g.members)] if names else []) + [
        _value(g.setting.get(f)) for f in fields] + [str(g.n)]
    cells += [format_cell(g.mean[m], g.std[m], _digits(m)) for m in metrics]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def status_table(rows: Sequence[tuple[str, str]]) -> str:
  """A Markdown table of (run, status) rows; '|' in a cell is escaped.

  >>> print(status_table([("a", "finished: trained 8 of 8 steps")]))
  | run | status |
  |---|---|
  | a | finished: trained 8 of 8 steps |
  """
  def cell(text: str) -> str:
    return text.replace("|", "\\|")
  lines = ["| run | status |", "|---|---|"]
  lines += [f"| {cell(name)} | {cell(status)} |" for name, status in rows]
  return "\n".join(lines)


def summary_csv(groups: Sequence[Group], fields: Sequence[str],
                metrics: Sequence[str]) -> str:
  """Columns: fields, n, then <metric>_mean and <metric>_std per metric."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow([*fields, "n", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
  for g in groups:
    writer.writerow([_value(g.setting.get(f)) for f in fields] + [g.n] +
                    [x for m in metrics for x in (g.mean[m], g.std[m])])
  return out.getvalue()


def runs_csv(rows: Sequence[tuple[str, Mapping[str, Any], Mapping[str, float]]],
             fields: Sequence[str], metrics: Sequence[str]) -> str:
  """One row per run: name, override values, metrics (empty when missing)."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["run", *fields, *metrics])
  for name, overrides, values in rows:
    writer.writerow([name, *(_value(overrides.get(f)) for f in fields),
                     *(values.get(m, "") for m in metrics)])
  return out.getvalue()

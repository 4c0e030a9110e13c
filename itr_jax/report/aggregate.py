"""Mean and standard deviation of run metrics over seeds.

Runs are grouped by their overrides minus the seed field; each group gets,
for every metric, the mean and the sample standard deviation (ddof = 1; NaN
for a single run) over the runs that have the metric.

>>> rows = [({"loss.weight": 0.5, "seed": s}, {"rsum": v}) for s, v in [(0, 1.0), (1, 3.0)]]
>>> g, = group_runs(rows, ["rsum"])
>>> g.setting, g.n, g.mean["rsum"], g.std["rsum"]
({'loss.weight': 0.5}, 2, 2.0, 1.4142135623730951)
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

SEED_FIELDS = ("seed",)


@dataclasses.dataclass
class Group:
  setting: dict[str, Any]  # the overrides shared by the group (seed removed)
  n: int  # runs in the group that have any of the metrics
  mean: dict[str, float]
  std: dict[str, float]
  count: dict[str, int]  # runs that had each metric
  members: list[str] = dataclasses.field(default_factory=list)


def summarize(values: Sequence[float]) -> tuple[float, float]:
  """(mean, sample std) of the finite values; std is NaN for fewer than 2."""
  v = np.asarray([x for x in values if isinstance(x, (int, float)) and math.isfinite(x)],
                 np.float64)
  if v.size == 0:
    return math.nan, math.nan
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def group_runs(rows: Sequence[tuple[Mapping[str, Any], Mapping[str, float]]],
               metrics: Sequence[str], *, seed_fields: Sequence[str] = SEED_FIELDS,
               names: Sequence[str] | None = None) -> list[Group]:
  """Groups (overrides, metrics) rows by overrides without seeds, in first-seen order."""
  groups: dict[str, list[int]] = {}
  settings = {}
  for i, (overrides, _) in enumerate(rows):
    setting = {k: v for k, v in overrides.items() if k not in seed_fields}
    key = json.dumps(setting, sort_keys=True, default=repr)
    groups.setdefault(key, []).append(i)
    settings[key] = setting
  result = []
  for key, idx in groups.items():
    mean, std, count = {}, {}, {}
    for m in metrics:
      values = [rows[i][1][m] for i in idx if m in rows[i][1]]
      mean[m], std[m] = summarize(values)
      count[m] = len(values)
    n = sum(1 for i in idx if any(m in rows[i][1] for m in metrics))
    result.append(Group(settings[key], n, mean, std, count,
                        [names[i] for i in idx] if names else []))
  return result


def swept_fields(groups: Sequence[Group]) -> list[str]:
  """Fields whose value differs between groups, in first-seen order."""
  fields = []
  for g in groups:
    fields.extend(k for k in g.setting if k not in fields)
  return [f for f in fields
          if len({json.dumps(g.setting.get(f), default=repr) for g in groups}) > 1
          or len(groups) == 1]

"""Sweep declarations: lists of override dicts, built like big_vision's `get_hyper`.

A sweep is a list of members; each member is a dict of dotted config fields
to values, e.g. ``{"loss.weight": 0.5, "seed": 1}``. These helpers build such
lists:

* ``sweep(name, values)``: one member per value.
* ``fixed(name, value)``: a single member (the same value for everyone).
* ``product(lists)``: every combination, the first list varying slowest.
* ``zipit(lists)``: members side by side (all lists of equal length).
* ``chain(lists)``: the lists one after another (e.g. a grid plus extra runs).

>>> product([sweep("loss.weight", [0.0, 1.0]), sweep("seed", [0, 1])])
[{'loss.weight': 0.0, 'seed': 0}, {'loss.weight': 0.0, 'seed': 1}, {'loss.weight': 1.0, 'seed': 0}, {'loss.weight': 1.0, 'seed': 1}]
>>> zipit([sweep("loss.weight", [0.0, 1.0]), sweep("loss.tau", [0.1, 0.01])])
[{'loss.weight': 0.0, 'loss.tau': 0.1}, {'loss.weight': 1.0, 'loss.tau': 0.01}]

A leading ``config.`` in a name (big_vision spelling) is dropped.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Sequence

Member = dict[str, Any]


def _field(name: str) -> str:
  if not isinstance(name, str) or not name.strip("."):
    raise ValueError(f"name must be a dotted config field such as 'loss.tau', "
                     f"got {name!r}")
  return name[len("config."):] if name.startswith("config.") else name


def sweep(name: str, values: Iterable[Any]) -> list[Member]:
  """One member per value of config field `name`."""
  values = list(values)
  if not values:
    raise ValueError(f"values for {name!r} is empty; give at least one value")
  key = _field(name)
  return [{key: v} for v in values]


def fixed(name: str, value: Any) -> list[Member]:
  """A single member setting `name` to `value` (combine with `product`)."""
  return [{_field(name): value}]


def _merge(members: Sequence[Member]) -> Member:
  merged: Member = {}
  for member in members:
    clash = set(merged) & set(member)
    if clash:
      raise ValueError(f"fields {sorted(clash)} are set by more than one of the "
                       "combined lists; each field may come from one list only")
    merged.update(member)
  return merged


def product(lists: Sequence[Sequence[Member]]) -> list[Member]:
  """Every combination of one member from each list (the first varies slowest)."""
  return [_merge(combo) for combo in itertools.product(*lists)]


def zipit(lists: Sequence[Sequence[Member]]) -> list[Member]:
  """The i-th members of all lists merged; the lists must have equal length."""
  lengths = sorted({len(l) for l in lists})
  if len(lengths) > 1:
    raise ValueError(f"zipit needs lists of equal length, got lengths "
                     f"{[len(l) for l in lists]}; use product for a grid")
  return [_merge(combo) for combo in zip(*lists)]


def chain(lists: Sequence[Sequence[Member]]) -> list[Member]:
  """The members of all lists, one list after another."""
  return [dict(m) for l in lists for m in l]


def seeds(arg: str | int | None, default: int = 3) -> list[Member]:
  """`sweep("seed", range(n))`, n = int(arg) if given (a sweep file's ":arg").

  >>> seeds("2")
  [{'seed': 0}, {'seed': 1}]
  """
  n = default if arg in (None, "") else int(arg)
  if n < 1:
    raise ValueError(f"number of seeds must be >= 1, got {arg!r}")
  return sweep("seed", range(n))

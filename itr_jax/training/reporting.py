"""Where training metrics go: TensorBoard (via clu), `metrics.jsonl`, the console.

Without clu and TensorFlow installed, metrics go to `metrics.jsonl` and the
console only (a warning says so once).

Only process 0 writes; other processes get a writer that drops everything, so
multi-host runs do not produce duplicate logs. The workdir may be on gs://:
TensorBoard writes there natively (TensorFlow's file system), and
metrics.jsonl is appended through `itr_jax.filesystem`, which on GCS
re-uploads the object each time (a few KB; one record per log step).
"""
from __future__ import annotations

import json
import logging
import math
import time
from typing import Mapping

import jax

from itr_jax import filesystem as fs
from itr_jax import optional
from itr_jax.training import workdir as workdir_lib

MAX_METRICS_BYTES = 1 << 30  # ~300 bytes a record: millions of logged steps

class MetricsLog:
  """Writes scalar metrics to TensorBoard and appends them to metrics.jsonl."""

  def __init__(self, workdir: str):
    self.is_main = jax.process_index() == 0
    self.path = fs.join(workdir, "metrics.jsonl")
    self._writer = _tensorboard_writer(fs.join(workdir, "tensorboard"),
                                       just_logging=not self.is_main)

  def write(self, step: int, kind: str, metrics: Mapping[str, float], *,
            jsonl: bool = True) -> None:
    """Records `metrics` (plain floats) at `step`; kind is "train", "dev", ...

    `jsonl=False`: TensorBoard only (e.g. test results, kept in eval_*.json).
    """
    if not self.is_main:
      return
    scalars = {f"{kind}/{k}": float(v) for k, v in metrics.items()}
    self._writer.write_scalars(step, scalars)
    if not jsonl:
      return
    record = {"step": int(step), "kind": kind, "time": time.time()}
    record.update({k: _json_number(v) for k, v in metrics.items()})
    with fs.open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def write_hparams(self, config) -> None:
    """The config's fields as TensorBoard hparams, so the HParams dashboard
    compares runs (e.g. the members of a sweep) by their settings."""
    if not self.is_main:
      return
    flat = workdir_lib.flatten(config.to_dict() if hasattr(config, "to_dict") else config)
    self._writer.write_hparams(
        {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()})

  def close(self) -> None:
    self._writer.flush()
    self._writer.close()


class _NoWriter:
  """Stands in for clu's writer when clu is absent: metrics.jsonl only."""

  def write_scalars(self, step, scalars):
    del step, scalars

  write_hparams = flush = close = lambda self, *args: None


_warned_no_tensorboard = False


def _tensorboard_writer(directory: str, just_logging: bool):
  """clu's default writer (TensorBoard on process 0), or `_NoWriter` with a
  warning when clu or TensorFlow is not installed."""
  global _warned_no_tensorboard
  if not (optional.available("clu.metric_writers") and optional.available("tensorflow")):
    if not _warned_no_tensorboard:
      logging.warning("TensorBoard logs are not written: they need clu and "
                      "tensorflow (pip install clu tensorboard tensorflow-cpu); "
                      "metrics still go to metrics.jsonl.")
      _warned_no_tensorboard = True
    return _NoWriter()
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  return metric_writers.create_default_writer(
      directory, just_logging=just_logging, asynchronous=False)


def _json_number(value) -> float | str:
  value = float(value)
  return value if math.isfinite(value) else str(value)


def read_metrics(workdir: str) -> list[dict]:
  """All records of a run's metrics.jsonl (an empty list if there is none).

  Lines that do not parse (a record cut short by a kill) are skipped.
  """
  path = fs.join(workdir, "metrics.jsonl")
  if not fs.exists(path):
    return []
  records = []
  for line in fs.read_text(path, MAX_METRICS_BYTES, what="metrics log").split("\n"):
    try:
      records.append(json.loads(line))
    except (ValueError, RecursionError):
      pass  # blank, or the last line of a run killed while writing it
  return records


def truncate_after(workdir: str, step: int) -> None:
  """Drops records logged after `step` (all of them for step 0).

  A run killed after its last checkpoint logged steps it will now redo;
  dropping them keeps metrics.jsonl one record per step and kind, and
  TensorBoard one point per step (`truncate_tensorboard`).
  """
  truncate_tensorboard(workdir, step)
  path = fs.join(workdir, "metrics.jsonl")
  if jax.process_index() != 0 or not fs.exists(path):
    return
  records = read_metrics(workdir)
  kept = [r for r in records if step and r["step"] <= step]
  if len(kept) == len(records):
    return
  fs.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def truncate_tensorboard(workdir: str, step: int) -> None:
  """Drops TensorBoard events after `step` (all scalars for step 0).

  A resumed run logs those steps again into a new event file; without this,
  TensorBoard would show two overlapping curves. Event files are TFRecords of
  `Event` protos: each is rewritten without the later events (atomically),
  keeping a partly written last record of a killed run out as well.
  """
  directory = fs.join(workdir, "tensorboard")
  if (jax.process_index() != 0 or not fs.isdir(directory)
      or not optional.available("tensorflow")):
    return  # without TensorFlow no events were written since (`_NoWriter`)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for name in sorted(fs.listdir(directory)):
    path = fs.join(directory, name)
    if "tfevents" not in name or not fs.isfile(path):
      continue
    kept, dropped = [], False
    try:
      for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        event = tf.compat.v1.Event.FromString(raw)
        if event.HasField("summary") and (not step or event.step > step):
          dropped = True
        else:
          kept.append(raw)
    except tf.errors.DataLossError:
      dropped = True  # a record cut short by a kill
    if not dropped:
      continue
    tmp = path + ".tmp"
    with tf.io.TFRecordWriter(tmp) as writer:
      for raw in kept:
        writer.write(raw)
    fs.replace(tmp, path)


def format_metrics(metrics: Mapping[str, float], keys=None) -> str:
  keys = keys or list(metrics)
  return " ".join(f"{k}={float(metrics[k]):.4g}" for k in keys if k in metrics)

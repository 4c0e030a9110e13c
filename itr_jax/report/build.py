"""Writes a sweep's report: Markdown, CSV tables and PNG plots.

  write_report("workdirs/sweeps/loss_terms")

produces in `<sweep_dir>/report/` (or `out_dir`):

* `report.md`: test-split table (best-by-dev-RSUM checkpoint, from each run's
  `eval_test.json`) and best-dev table, "mean ± std" over seeds (a folder
  of runs that is not a sweep: with a column of the runs' names), each run's
  status (finished or how far it got; why it has no checkpoints), plot links;
* `summary_test.csv`, `summary_dev.csv` (mean and std columns per metric) and
  `runs.csv` (one row per run, `test_*` and `dev_*` columns);
* `plots/<field>.png` (metric vs each swept field), `plots/dev_rsum.png`
  (dev RSUM over training, every run) and `plots/curves/<run>.png` (loss
  parts, smooth vs hard NDCG, dev RSUM per run).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Sequence

from itr_jax import filesystem as fs
from itr_jax.metrics.ndcg import split_ndcg_key
from itr_jax.report import aggregate
from itr_jax.report import collect
from itr_jax.report import plots
from itr_jax.report import tables
from itr_jax.sweeps import members as members_lib
from itr_jax.training import workdir as workdir_lib

METRICS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum",
           "rsc_ndcg_i2t", "rsc_ndcg_t2i", "true_ndcg_i2t", "true_ndcg_t2i")
HEADERS = {"i2t_r1": "i2t R@1", "i2t_r5": "i2t R@5", "i2t_r10": "i2t R@10",
           "t2i_r1": "t2i R@1", "t2i_r5": "t2i R@5", "t2i_r10": "t2i R@10",
           "rsum": "RSUM", "rsc_ndcg_i2t": "NDCG-RSC i2t", "rsc_ndcg_t2i": "NDCG-RSC t2i",
           "true_ndcg_i2t": "NDCG-true i2t", "true_ndcg_t2i": "NDCG-true t2i"}
PLOT_METRICS = ("rsum", "i2t_r1", "t2i_r1", "i2t_r5", "t2i_r5", "rsc_ndcg_i2t",
                "rsc_ndcg_t2i", "true_ndcg_i2t", "true_ndcg_t2i")


def _present(metrics: Sequence[str], dicts) -> list[str]:
  """The keys of `dicts` that are `metrics`, NDCG ones with or without a
  cutoff (`rsc_ndcg@10_i2t` is `rsc_ndcg_i2t` at 10), in `metrics` order.

  >>> _present(["rsum", "rsc_ndcg_i2t"], [{"rsc_ndcg@10_i2t": 0.5, "rsum": 1}, None])
  ['rsum', 'rsc_ndcg@10_i2t']
  """
  found = {k for d in dicts if d for k in d}
  by_metric = {}
  for key in found:
    metric, k = split_ndcg_key(key)
    by_metric.setdefault(metric, []).append((k or 0, key))
  return [key for m in metrics for _, key in sorted(by_metric.get(m, []))]


def _headers(keys: Sequence[str]) -> dict[str, str]:
  """Column titles of `keys`: HEADERS, with an NDCG key's cutoff ("NDCG@10-RSC i2t")."""
  headers = {}
  for key in keys:
    metric, k = split_ndcg_key(key)
    title = HEADERS.get(metric, metric)
    headers[key] = title.replace("NDCG", f"NDCG@{k}", 1) if k else title
  return headers


def _dataset(runs) -> str:
  """The runs' dataset for plot titles: data.name and the data folder's name."""
  names = set()
  for r in runs:
    try:
      data = workdir_lib.read_config_json(fs.join(r.workdir, workdir_lib.CONFIG_FILE))
      data = data.get("data", {}) if isinstance(data.get("data"), dict) else {}
    except (*fs.errors(r.workdir), ValueError):
      continue
    folder = data.get("data_dir") or ""
    folder = fs.basename(folder.rstrip("/")) if folder else "?"
    names.add(f"{data.get('name', '?')} ({folder})")
  return " / ".join(sorted(names)) or "dataset unknown"


def _plotted_with(settings, field: str, swept) -> str | None:
  """The swept field that determines `field` and has more values (or as many
  and comes first), whose plot shows `field`'s too; None if there is none.

  >>> settings = [{"name": "a", "dim": 1}, {"name": "b", "dim": 1}, {"name": "c", "dim": 2}]
  >>> _plotted_with(settings, "dim", ["name", "dim"]), _plotted_with(settings, "name", ["name", "dim"])
  ('name', None)
  """
  def count(f):
    return len({repr(s.get(f)) for s in settings})
  for other in swept:
    if other == field or not plots.determined_by(settings, field, other):
      continue
    if count(other) > count(field) or (count(other) == count(field)
                                      and swept.index(other) < swept.index(field)):
      return other
  return None


def _write(path: str, text: str) -> str:
  with open(path, "w") as f:
    f.write(text)
  return path


def write_report(sweep_dir: str, out_dir: str | None = None,
                 metrics: Sequence[str] = METRICS, *, curves: bool = True) -> dict[str, str]:
  """Writes the report files; returns {what: path}. Raises if there are no runs.

  On a gs:// `out_dir` (by default `<sweep_dir>/report`) the files are made
  in a local temporary folder, then copied there (matplotlib writes files).
  """
  runs = collect.collect_runs(sweep_dir)
  if not runs:
    raise ValueError(f"no runs (sub-directories with config.json) in {sweep_dir!r}")
  out_dir = out_dir or fs.join(sweep_dir, "report")
  if fs.is_remote(out_dir):
    with tempfile.TemporaryDirectory() as local:
      paths = _write_report(runs, sweep_dir, local, metrics, curves)
      for rel in fs.walk_files(local):
        fs.makedirs(fs.dirname(fs.join(out_dir, rel)))
        fs.copy(os.path.join(local, rel), fs.join(out_dir, rel))
    return {k: fs.join(out_dir, os.path.relpath(v, local)) for k, v in paths.items()}
  return _write_report(runs, sweep_dir, out_dir, metrics, curves)


def _write_report(runs, sweep_dir: str, out_dir: str, metrics: Sequence[str],
                  curves: bool) -> dict[str, str]:
  plot_dir = os.path.join(out_dir, "plots")
  os.makedirs(os.path.join(plot_dir, "curves"), exist_ok=True)
  names = [r.name for r in runs]
  sources = {"test": [r.test or {} for r in runs],
             "dev": [r.best_dev or {} for r in runs]}
  paths, groups = {}, {}
  manifest = members_lib.read_manifest(sweep_dir) or {}
  md = [f"# {'Sweep report' if manifest else 'Report of the runs in'}: {sweep_dir}", ""]
  if manifest:
    md.append(f"Config `{manifest.get('config')}`, common overrides "
              f"`{json.dumps(manifest.get('common_overrides', {}))}`.")
  done = sum(r.done for r in runs)
  md += [f"{len(runs)} run{'s' * (len(runs) != 1)} ({done} finished). Cells are mean ± sample std over "
         "seeds (n runs); a single run shows its value.", ""]
  for split, values in sources.items():
    present = _present(metrics, values)
    if not present:
      continue
    rows = [(r.overrides, v) for r, v in zip(runs, values)]
    groups[split] = aggregate.group_runs(rows, present, names=names)
    fields = aggregate.swept_fields(groups[split])
    title = ("Test split, best-by-dev-RSUM checkpoint" if split == "test"
             else "Dev split, best epoch by RSUM")
    md += [f"## {title}", "",
           tables.markdown_table(groups[split], fields, present, _headers(present),
                                 names=not manifest), ""]
    paths[f"summary_{split}"] = _write(
        os.path.join(out_dir, f"summary_{split}.csv"),
        tables.summary_csv(groups[split], fields, present))
  md += ["## Runs", "", tables.status_table([(r.name, r.status) for r in runs]), ""]
  run_fields = sorted({k for r in runs for k in r.overrides})
  run_metrics = [f"{s}_{m}" for s in sources for m in _present(metrics, sources[s])]
  run_rows = [(r.name, r.overrides,
               {f"{s}_{m}": v for s in sources for m, v in sources[s][i].items()})
              for i, r in enumerate(runs)]
  paths["runs"] = _write(os.path.join(out_dir, "runs.csv"),
                         tables.runs_csv(run_rows, run_fields, run_metrics))

  md += ["## Plots", ""]
  split = "test" if "test" in groups else "dev"
  if split in groups:
    plot_metrics = _present(PLOT_METRICS, [groups[split][0].mean])
    limits = plots.metric_limits(groups[split], plot_metrics)
    sizes = sorted({g.n for g in groups[split]})
    n = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    swept = aggregate.swept_fields(groups[split])
    settings = [g.setting for g in groups[split]]
    follows = {f: _plotted_with(settings, f, swept) for f in swept}
    dataset = _dataset(runs)  # reads each run's config once, not once per plot
    for field in swept:
      if len(groups[split]) < 2:
        break
      if follows[field]:
        root = follows[field]
        while follows.get(root):  # the plotted field at the end of the chain
          root = follows[root]
        md.append(f"`{field}` varies with `{root}`: see that plot.")
        continue
      path = plots.metric_vs_param(groups[split], field, plot_metrics,
                                   os.path.join(plot_dir, f"{field}.png"),
                                   title=f"{dataset}, {split} split: mean ± std "
                                         f"over n = {n} runs per setting",
                                   labels=_headers(plot_metrics), limits=limits)
      paths[f"plot_{field}"] = path
      md.append(f"![{field}]({os.path.relpath(path, out_dir)})")
  seedless = [json.dumps({k: v for k, v in r.overrides.items()
                          if k not in aggregate.SEED_FIELDS}, sort_keys=True, default=repr)
              for r in runs]
  # Legend labels: the fewest fields that tell the runs apart (member names
  # list every override and do not fit).
  settings = [r.overrides for r in runs]
  shown = plots.distinguishing_fields(settings, sorted({k for s in settings for k in s}))
  labels = [", ".join(f"{k}={r.overrides.get(k)}" for k in shown) or r.name for r in runs]
  path = plots.dev_curves([(label, g, r.dev) for r, g, label in zip(runs, seedless, labels)],
                          os.path.join(plot_dir, "dev_rsum.png"), title="dev RSUM")
  paths["plot_dev_rsum"] = path
  md += [f"![dev RSUM]({os.path.relpath(path, out_dir)})", "", "Training curves per run:", ""]
  if curves:
    for r in runs:
      path = plots.training_curves(r.train, r.dev,
                                   os.path.join(plot_dir, "curves", f"{r.name}.png"),
                                   title=r.name)
      md.append(f"- [{r.name}]({os.path.relpath(path, out_dir)})")
  paths["markdown"] = _write(os.path.join(out_dir, "report.md"), "\n".join(md) + "\n")
  return paths

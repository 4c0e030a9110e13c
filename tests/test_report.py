"""Reports: collecting runs, mean ± std over seeds, tables, plots, examples page.

Sweep directories are faked (config.json, metrics.jsonl, eval_test.json), so
every expected number is known by construction.
"""
import csv
import doctest
import importlib
import io
import json
import math
import os
import re

import numpy as np
import pytest

from itr_jax import sweeps
from itr_jax.data import precomputed
from itr_jax.data import synthetic_scenes
from itr_jax.report import aggregate
from itr_jax.report import build
from itr_jax.report import collect
from itr_jax.report import examples
from itr_jax.report import tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fake_run(workdir, config, dev_rsums, test=None, done=True):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  records = []
  for i, rsum in enumerate(dev_rsums):
    step = 10 * (i + 1)
    records.append({"step": step, "kind": "train", "loss": 1.0 / step, "pairwise": 0.5,
                    "listwise": 0.2, "ndcg_i2t": 0.8, "ndcg_t2i": 0.7,
                    "hard_ndcg_i2t": 0.9, "hard_ndcg_t2i": 0.85})
    records.append({"step": step, "kind": "dev", "rsum": rsum, "i2t_r1": rsum / 6,
                    "true_ndcg_i2t": rsum / 1000})
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.write("\n".join(json.dumps(r) for r in records) + "\n")
  if test is not None:
    with open(os.path.join(workdir, "eval_test.json"), "w") as f:
      json.dump({"checkpoint_step": 10, "split": "test", "full": test}, f)
  if done:
    open(os.path.join(workdir, sweeps.DONE_FILE), "w").close()


# (weight, seed) -> test RSUM and true NDCG i2t
TEST = {(0.0, 0): (100.0, 0.5), (0.0, 1): (110.0, 0.7),
        (0.5, 0): (120.0, 0.6), (0.5, 1): (126.0, 0.6), (0.5, 2): (129.0, 0.9)}


@pytest.fixture
def sweep_dir(tmp_path):
  d = str(tmp_path / "sweep")
  overrides = [{"loss.weight": w, "seed": s} for w, s in TEST]
  members = sweeps.expand(d, overrides)
  sweeps.write_manifest(d, "cfg.py", {}, members)
  for m, ((w, s), (rsum, ndcg)) in zip(members, TEST.items()):
    config = {"seed": s, "loss": {"weight": w, "tau": 0.01}}
    _fake_run(m.workdir, config, [rsum - 30, rsum - 5, rsum - 10],
              {"rsum": rsum, "true_ndcg_i2t": ndcg, "i2t_r1": rsum / 10})
  return d


# --- aggregate / tables ----------------------------------------------------

def test_summarize_matches_numpy():
  values = [1.0, 2.5, 7.0]
  mean, std = aggregate.summarize(values)
  assert mean == pytest.approx(np.mean(values))
  assert std == pytest.approx(np.std(values, ddof=1))
  assert aggregate.summarize([3.0]) == (3.0, pytest.approx(math.nan, nan_ok=True))
  assert all(math.isnan(x) for x in aggregate.summarize([]))
  assert aggregate.summarize([1.0, float("nan"), 3.0])[0] == 2.0  # non-finite dropped


def test_group_runs_ignores_seed_and_keeps_order():
  rows = [({"w": 1, "seed": 0}, {"m": 1.0}), ({"w": 0, "seed": 0}, {"m": 5.0}),
          ({"w": 1, "seed": 1}, {"m": 3.0}), ({"w": 0, "seed": 1}, {})]
  groups = aggregate.group_runs(rows, ["m"], names=["a", "b", "c", "d"])
  assert [g.setting for g in groups] == [{"w": 1}, {"w": 0}]
  assert (groups[0].n, groups[0].mean["m"], groups[0].std["m"]) == (2, 2.0, pytest.approx(2 ** 0.5))
  assert (groups[1].n, groups[1].count["m"], groups[1].mean["m"]) == (1, 1, 5.0)
  assert groups[0].members == ["a", "c"]
  assert aggregate.swept_fields(groups) == ["w"]


def test_markdown_and_csv_tables():
  g = aggregate.Group({"w": 0.5}, 2, {"rsum": 1.0, "true_ndcg_i2t": 0.5},
                      {"rsum": 0.5, "true_ndcg_i2t": math.nan}, {})
  md = tables.markdown_table([g], ["w"], ["rsum", "true_ndcg_i2t"], {"rsum": "RSUM"})
  assert md.splitlines() == ["| w | n | RSUM | true_ndcg_i2t |", "|---|---|---|---|",
                             "| 0.5 | 2 | 1.00 ± 0.50 | 0.5000 |"]
  rows = list(csv.reader(io.StringIO(tables.summary_csv([g], ["w"], ["rsum"]))))
  assert rows == [["w", "n", "rsum_mean", "rsum_std"], ["0.5", "2", "1.0", "0.5"]]
  assert tables.format_cell(math.nan, math.nan) == "–"


# --- collect / build -------------------------------------------------------

def test_collect_runs(sweep_dir):
  runs = collect.collect_runs(sweep_dir)
  assert [r.overrides for r in runs] == [{"loss.weight": w, "seed": s} for w, s in TEST]
  r = runs[0]
  assert r.done and r.test["rsum"] == 100.0
  assert r.best_dev["rsum"] == 95.0 and r.best_dev["step"] == 20  # max, not last
  assert r.final_dev["rsum"] == 90.0
  assert len(r.train) == 3


def test_collect_without_manifest_uses_differing_config_fields(sweep_dir):
  os.remove(os.path.join(sweep_dir, sweeps.members.SWEEP_FILE))
  runs = collect.collect_runs(sweep_dir)
  assert {json.dumps(r.overrides, sort_keys=True) for r in runs} == {
      json.dumps({"loss.weight": w, "seed": s}, sort_keys=True) for w, s in TEST}
  with pytest.raises(ValueError, match="not a directory"):
    collect.collect_runs(os.path.join(sweep_dir, "nope"))


def test_write_report(sweep_dir):
  paths = build.write_report(sweep_dir)
  with open(paths["markdown"]) as f:
    md = f.read()
  # weight 0.5: RSUM 120, 126, 129 -> mean 125, std 4.58; true NDCG 0.6, 0.6, 0.9.
  assert "| 0.5 | 3 | 12.50 ± 0.46 | 125.00 ± 4.58 | 0.7000 ± 0.1732 |" in md
  assert "| 0.0 | 2 | 10.50 ± 0.71 | 105.00 ± 7.07 | 0.6000 ± 0.1414 |" in md
  # Dev table: best epoch = the middle one (rsum - 5).
  assert "| 0.5 | 3 | 20.00 ± 0.76 | 120.00 ± 4.58 | 0.1200 ± 0.0046 |" in md
  with open(paths["summary_test"]) as f:
    rows = list(csv.DictReader(f))
  assert float(rows[1]["rsum_mean"]) == pytest.approx(125.0)
  assert float(rows[1]["rsum_std"]) == pytest.approx(np.std([120, 126, 129], ddof=1))
  with open(paths["runs"]) as f:
    runs = list(csv.DictReader(f))
  assert len(runs) == 5 and float(runs[0]["test_rsum"]) == 100.0
  for key in ("plot_loss.weight", "plot_dev_rsum"):
    with open(paths[key], "rb") as f:
      assert f.read(8) == PNG_MAGIC, key
  curves = os.listdir(os.path.join(sweep_dir, "report", "plots", "curves"))
  assert len(curves) == 5


def test_plot_limits_units_bars_and_titles(sweep_dir, tmp_path, monkeypatch):
  from itr_jax.report import plots  # pylint: disable=import-outside-toplevel
  g = lambda setting, mean, std: aggregate.Group(setting, 2, mean, std, {})
  groups = [g({"model.pooling": "max"}, {"rsum": 100.0, "i2t_r1": 10.0},
              {"rsum": 10.0, "i2t_r1": float("nan")}),
            g({"model.pooling": "gpo"}, {"rsum": 140.0, "i2t_r1": 20.0},
              {"rsum": 0.0, "i2t_r1": 1.0})]
  limits = plots.metric_limits(groups, ["rsum", "i2t_r1"])
  # rsum spans 90 .. 140 (mean ± std), padded by 5% of 50.
  assert limits["rsum"] == pytest.approx((87.5, 142.5))
  assert limits["i2t_r1"] == pytest.approx((10.0 - 0.55, 21.0 + 0.55))
  calls = {"bar": 0, "errorbar": 0}
  import matplotlib.axes  # pylint: disable=import-outside-toplevel
  for name in calls:
    original = getattr(matplotlib.axes.Axes, name)
    def counted(self, *a, _name=name, _original=original, **k):
      calls[_name] += 1
      return _original(self, *a, **k)
    monkeypatch.setattr(matplotlib.axes.Axes, name, counted)
  plots.metric_vs_param(groups, "model.pooling", ["rsum", "i2t_r1"],
                        str(tmp_path / "p.png"), limits=limits)
  assert calls["bar"] == 2  # discrete setting: bars (one per panel)
  before = dict(calls)
  numeric = [g({"loss.tau": t}, {"rsum": r}, {"rsum": 1.0}) for t, r in ((0.01, 5.0), (0.1, 6.0))]
  plots.metric_vs_param(numeric, "loss.tau", ["rsum"], str(tmp_path / "q.png"))
  # numeric: a line with error bars, no bars
  assert calls["bar"] == before["bar"] and calls["errorbar"] == before["errorbar"] + 1
  runs = collect.collect_runs(sweep_dir)
  assert build._dataset(runs) == "? (?)"  # the fake configs name no data
  assert plots.PARAM_LABELS["loss.tau"].startswith("τ")


def test_write_report_rejects_an_empty_dir(tmp_path):
  with pytest.raises(ValueError, match="no runs"):
    build.write_report(str(tmp_path))


# --- examples page ---------------------------------------------------------

def test_retrieval_examples_by_hand():
  # 2 images x 2 captions each; caption 3 belongs to image 1.
  sims = np.array([[0.1, 0.9, 0.8, 0.2],
                   [0.3, 0.7, 0.1, 0.6]])
  rel = np.array([[1.0, 1.0, 0.5, 0.0],
                  [0.0, 0.5, 1.0, 1.0]])
  i2t, t2i = examples.retrieval_examples(
      sims, {"true": rel}, captions_per_image=2, image_queries=[1],
      caption_queries=[2], k=3)
  q = i2t[0]
  assert [h.index for h in q.hits] == [1, 3, 0]
  assert [h.match for h in q.hits] == [False, True, False]
  assert [h.grades["true"] for h in q.hits] == [0.5, 1.0, 0.0]
  assert q.gt_rank == 2
  # NDCG@3: DCG = (2^.5-1)/1 + 1/log2(3) + 0; IDCG = 1 + 1/log2(3) + (2^.5-1)/2.
  dcg = (2 ** 0.5 - 1) + 1 / np.log2(3)
  idcg = 1 + 1 / np.log2(3) + (2 ** 0.5 - 1) / 2
  assert q.ndcg["true"] == pytest.approx(dcg / idcg)
  q = t2i[0]  # caption 2 (image 1's): image 0 scores 0.8, image 1 0.1
  assert [h.index for h in q.hits] == [0, 1] and q.gt_rank == 2
  assert [h.grades["true"] for h in q.hits] == [0.5, 1.0]
  with pytest.raises(ValueError, match="captions_per_image"):
    examples.retrieval_examples(sims, {}, captions_per_image=3, image_queries=[0],
                                caption_queries=[0])


def test_render_html_escapes_and_highlights():
  sims = np.array([[0.9, 0.1], [0.2, 0.8]])
  i2t, t2i = examples.retrieval_examples(sims, {"rsc": np.eye(2)}, captions_per_image=1,
                                         image_queries=[0, 1], caption_queries=[1], k=2)
  page = examples.render_html(i2t, t2i, captions=["a <b>", "c & d"],
                              image_labels=["img 0", "img 1"], captions_per_image=1,
                              title="T")
  assert "a &lt;b&gt;" in page and "c &amp; d" in page and "<b>" not in page.split("</style>")[1].replace("<b>Query:</b>", "")
  assert page.count('<tr class="match">') == 3  # each query's own item is first
  assert page.count("<table>") == 3
  assert "rsc relevance" in page


def test_scene_descriptions_match_generated_scenes(tmp_path):
  d = synthetic_scenes.generate(str(tmp_path / "scenes"), num_train=6, num_dev=3,
                                num_test=4, regions=8, feature_dim=8, emb_dim=8,
                                caption_encoder="tfidf")
  got = examples.scene_descriptions(d, "test", 4)
  scenes = synthetic_scenes.generate_split(0, 2, 4, regions=8, feature_dim=8).scenes
  assert got == [examples.describe_scene(s) for s in scenes]
  for text, scene in zip(got, scenes):
    for o in scene.objects:
      assert synthetic_scenes.CLASSES[o.cls][0] in text
    assert text.endswith(scene.setting)
  assert examples.scene_descriptions(d, "test", 5) is None  # more rows than scenes
  assert examples.scene_descriptions(str(tmp_path), "test", 1) is None  # not synthetic


def test_describe_scene_by_hand():
  dog = synthetic_scenes.Object(0, {"size": "small", "colour": "red"})
  car = synthetic_scenes.Object(6, {"colour": "blue", "material": "metal", "size": "large"})
  scene = synthetic_scenes.Scene([dog, car], [(0, "next to", 1)], "park")
  assert examples.describe_scene(scene) == (
      "small red dog; large blue metal car | dog next to car | park")


def test_examples_page_of_a_trained_run(tiny_run):
  _, workdir, _, _ = tiny_run
  path = examples.write_examples_page(workdir, num_queries=3, k=5,
                                      out=os.path.join(workdir, "ex.html"))
  with open(path, encoding="utf-8") as f:
    page = f.read()
  # the split's metrics, then one table per query
  assert page.count("<table>") == 1 + 6 and page.count("Query:") == 6
  assert page.count("<tr class=") == 30  # 6 queries x top 5
  assert "true relevance" in page and "rsc relevance" in page
  assert re.search(r"image \d+: \w+", page)  # scene descriptions, not bare ids


def _reference_ndcg_at_k(scores, rel, k):
  out = []
  for s, r in zip(np.asarray(scores, np.float64), np.asarray(rel, np.float64)):
    order = np.argsort(-s, kind="stable")[:k]
    dcg = sum((2 ** r[j] - 1) / np.log2(i + 2) for i, j in enumerate(order))
    ideal = sum((2 ** g - 1) / np.log2(i + 2) for i, g in enumerate(sorted(r, reverse=True)[:k]))
    out.append(dcg / ideal)
  return np.array(out)


def test_worst_queries_are_the_lowest_ndcg():
  rng = np.random.default_rng(3)
  sims = rng.normal(size=(6, 12))
  rel = rng.uniform(size=(6, 12))
  images, captions = examples.select_queries(sims, {"rsc": rel, "true": rel ** 2},
                                             captions_per_image=2, num_queries=3, k=4,
                                             mode="worst")
  assert images == np.argsort(_reference_ndcg_at_k(sims, rel ** 2, 4))[:3].tolist()
  assert captions == np.argsort(_reference_ndcg_at_k(sims.T, (rel ** 2).T, 4))[:3].tolist()
  random_images, _ = examples.select_queries(sims, {}, captions_per_image=2, num_queries=3,
                                             k=4, seed=1)
  assert len(set(random_images)) == 3
  with pytest.raises(ValueError, match="mode"):
    examples.select_queries(sims, {}, captions_per_image=2, num_queries=3, k=4, mode="best")


def test_worst_examples_page_has_the_split_metrics(tiny_run):
  _, workdir, _, _ = tiny_run
  path = examples.write_examples_page(workdir, num_queries=3, k=4, mode="worst")
  assert path.endswith("examples_test_worst.html")
  with open(path, encoding="utf-8") as f:
    page = f.read()
  assert "<th>rsum</th>" in page and "worst queries by NDCG@4" in page
  assert page.count("its captions") >= 3 + 3 * 4  # image queries + retrieved images


def test_examples_page_with_image_ids_and_thumbnails(tiny_run, tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  config, workdir, _, data_dir = tiny_run
  split = precomputed.load_split(data_dir, config.data.test_split)
  n, per = split.num_images, split.captions_per_image
  ids_file = tmp_path / "test_ids.txt"  # the community's layout: an id per caption
  ids_file.write_text("".join(f"{5000 + i}\n" * per for i in range(n)))
  images = tmp_path / "images"
  images.mkdir()
  for i in range(1, n):  # image 0 has no file: shown as missing, not a failure
    Image.new("RGB", (320, 200), (i * 7 % 256, 40, 90)).save(images / f"COCO_{5000 + i:08d}.png")
  path = examples.write_examples_page(
      workdir, num_queries=3, k=4, mode="worst", out=str(tmp_path / "ex.html"),
      image_ids=str(ids_file), image_dir=str(images), image_pattern="COCO_{id:08d}.png")
  page = open(path, encoding="utf-8").read()
  shown = [int(m) for m in re.findall(r"image (\d+) \(id (?:\d+)\)", page)]
  assert shown and all(f"image {r} (id {5000 + r})" in page for r in shown)
  thumbs = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
  assert thumbs
  import base64  # pylint: disable=import-outside-toplevel
  assert max(Image.open(io.BytesIO(base64.b64decode(thumbs[0]))).size) == 160
  assert ("no thumbnail" in page) == (0 in shown)
  # The .npz of itr-coco-ids, and an ids file of another split.
  np.savez(tmp_path / "ids.npz", image_ids=np.arange(n) + 7, caption_ids=np.arange(n * per))
  assert examples.read_image_ids(str(tmp_path / "ids.npz"), n, per)[:2] == [7, 8]
  ids_file.write_text("1\n2\n")
  with pytest.raises(ValueError, match="has 2 ids, but the split has"):
    examples.read_image_ids(str(ids_file), n, per)
  with pytest.raises(ValueError, match="image_pattern"):
    examples.image_thumbnails(str(images), "{name}.jpg", None, [0])


@pytest.mark.parametrize("name", ["aggregate", "tables", "examples", "plots", "build", "collect"])
def test_docstring_examples(name):
  module = importlib.import_module(f"itr_jax.report.{name}")
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0, name


def test_categorical_plot_with_co_varying_fields(tmp_path, monkeypatch):
  """A backbones-like sweep: model.name with fields it sets (dim), crossed
  with loss.weight. Each name has its own tick with its label, both weights'
  bars beside it; the legend names only loss.weight and lies in the image;
  `dim` gets no plot of its own."""
  from itr_jax.report import plots  # pylint: disable=import-outside-toplevel
  g = lambda setting, rsum: aggregate.Group(setting, 1, {"rsum": rsum}, {"rsum": 0.0}, {})
  groups = [g({"model.name": name, "model.dim": dim, "loss.weight": w}, 100 + i)
            for i, (name, dim, w) in enumerate(
                [(n, d, w) for n, d in (("sgr", 64), ("saf", 64), ("vse", 256))
                 for w in (0.0, 0.5)])]
  figures = []
  real_save = plots._save
  monkeypatch.setattr(plots, "_save", lambda fig, path, **k: figures.append(fig) or
                      real_save(fig, path, **k))
  plots.metric_vs_param(groups, "model.name", ["rsum"], str(tmp_path / "p.png"))
  (fig,) = figures
  ax = fig.axes[0]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["saf", "sgr", "vse"]
  centres = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)
  assert len(centres) == 6
  for tick, pair in enumerate(zip(centres[::2], centres[1::2])):
    assert all(abs(c - tick) < 0.5 for c in pair), centres
  (legend,) = fig.legends
  assert [t.get_text() for t in legend.get_texts()] == ["loss.weight=0.0", "loss.weight=0.5"]
  settings = [x.setting for x in groups]
  assert build._plotted_with(settings, "model.dim", list(settings[0])) == "model.name"
  assert build._plotted_with(settings, "model.name", list(settings[0])) is None


# --- plain workdirs, run status, NDCG cutoffs ------------------------------

def _trained(workdir, config, steps, steps_per_epoch, test=None):
  """A fake trainer workdir: config.json, train/dev records at each epoch's
  end and at `steps` (the trainer logs its last step)."""
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for step in sorted({*range(steps_per_epoch, steps + 1, steps_per_epoch), steps}):
      f.write(json.dumps({"step": step, "kind": "train", "loss": 1.0,
                          "epoch": step / steps_per_epoch}) + "\n")
      f.write(json.dumps({"step": step, "kind": "dev", "rsum": float(step)}) + "\n")
  if test is not None:
    with open(os.path.join(workdir, "eval_test.json"), "w") as f:
      json.dump({"checkpoint_step": steps, "split": "test", "full": test}, f)


def test_report_of_plain_workdirs_names_runs_and_their_status(tmp_path):
  """Not a sweep: the tables have a run column; runs that trained every
  epoch (or train.max_steps), and imported checkpoints, are finished; a
  population member says why it has no checkpoints."""
  from itr_jax.training import integrity  # pylint: disable=import-outside-toplevel
  from itr_jax.training import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  folder = str(tmp_path / "runs")
  config = lambda tau, max_steps=0: {"loss": {"tau": tau},
                                     "train": {"num_epochs": 3, "max_steps": max_steps}}
  _trained(os.path.join(folder, "full"), config(0.1), 21, 7, {"rsum": 300.0})
  _trained(os.path.join(folder, "capped"), config(0.2, max_steps=10), 10, 7, {"rsum": 310.0})
  _trained(os.path.join(folder, "stopped"), config(0.3), 14, 7, {"rsum": 250.0})
  imported = os.path.join(folder, "imported")
  os.makedirs(os.path.join(imported, "checkpoints", "5"))
  with open(os.path.join(imported, "config.json"), "w") as f:
    json.dump(config(0.4), f)
  integrity.write_record(os.path.join(imported, "checkpoints", "5"),
                         {"imported_from": "/ckpt/model_best.pth.tar"})
  with open(os.path.join(folder, "full", workdir_lib.NO_CHECKPOINTS_FILE), "w") as f:
    f.write("it was trained in a population sweep.")
  runs = {r.name: r for r in collect.collect_runs(folder)}
  assert {n: r.done for n, r in runs.items()} == {
      "full": True, "capped": True, "stopped": False, "imported": True}
  assert runs["stopped"].status == "unfinished: trained 14 of 21 steps"
  assert runs["capped"].status == "finished: trained 10 of 10 steps"
  assert "imported from /ckpt/model_best.pth.tar" in runs["imported"].status
  assert runs["full"].status.endswith(
      "no checkpoints: it was trained in a population sweep.")
  with open(build.write_report(folder, curves=False)["markdown"]) as f:
    md = f.read()
  assert "4 runs (3 finished)" in md
  assert "| run | loss.tau | train.max_steps | n | RSUM |" in md
  assert "| full | 0.1 | 0 | 1 | 300.00 |" in md
  assert "| stopped | unfinished: trained 14 of 21 steps |" in md


def test_ndcg_keys_carry_their_cutoff_from_evaluation_to_report(tmp_path):
  """Evaluation with eval.ndcg_k = 2 writes rsc_ndcg@2_i2t (NDCG@2, checked
  against metrics.ndcg); without a cutoff the keys stay as they were; the
  report reads both forms and names the cutoff."""
  from itr_jax import metrics  # pylint: disable=import-outside-toplevel
  from itr_jax.evaluation import evaluate  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  sims, relevance = rng.standard_normal((3, 6)), rng.random((3, 6))
  full = evaluate.sims_report(sims, captions_per_image=2, rsc_relevance=relevance)
  cut = evaluate.sims_report(sims, captions_per_image=2, rsc_relevance=relevance, ndcg_k=2)
  assert {"rsc_ndcg_i2t", "rsc_ndcg_t2i"} <= set(full) and "rsc_ndcg@2_i2t" not in full
  assert {"rsc_ndcg@2_i2t", "rsc_ndcg@2_t2i"} <= set(cut) and "rsc_ndcg_i2t" not in cut
  assert cut["rsc_ndcg@2_i2t"] == pytest.approx(metrics.ndcg(sims, relevance, k=2))
  folder = str(tmp_path / "runs")
  config = lambda seed: {"seed": seed, "train": {"num_epochs": 1}}
  _trained(os.path.join(folder, "a"), config(0), 2, 2, cut)
  _trained(os.path.join(folder, "b"), config(1), 2, 2, full)
  paths = build.write_report(folder, curves=False)
  with open(paths["markdown"]) as f:
    md = f.read()
  assert "NDCG@2-RSC i2t" in md and "| NDCG-RSC i2t |" in md
  with open(paths["summary_test"]) as f:
    row, = csv.DictReader(f)
  assert float(row["rsc_ndcg@2_i2t_mean"]) == pytest.approx(cut["rsc_ndcg@2_i2t"])
  assert float(row["rsc_ndcg_i2t_mean"]) == pytest.approx(full["rsc_ndcg_i2t"])

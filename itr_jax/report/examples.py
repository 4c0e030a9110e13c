r"""A page of retrieval examples for a trained run (HTML, one self-contained file).

  python -m itr_jax.report.examples workdirs/demo [--split test] [--num_queries 8] \
      [--k 10] [--checkpoint best] [--mode random|worst] \
      [--image_ids FILE] [--image_dir DIR --image_pattern '{id}.jpg'] \
      [--out workdirs/demo/examples_test.html]

For sample queries in both directions (image -> captions, caption -> images)
the page lists the top-k results with their score, relevance grade and
whether each is a ground-truth match (the caption belongs to the image), plus
the query's NDCG@k. The grade is the true relevance where the dataset knows it
(synthetic scenes) and the RSC relevance otherwise; both are shown when both
exist. Images are shown as their scene description on synthetic scenes (the
scenes are regenerated from the dataset's manifest: the files hold only
features) and as "image <row>" otherwise, with the image's id when
--image_ids names them (a text file, one id per image or per caption as the
community's `{split}_ids.txt`, or the .npz of `itr-coco-ids`), and a
thumbnail (embedded in the page) when --image_dir holds the image files
(`--image_pattern`, e.g. 'COCO_val2014_{id:012d}.jpg' or '{id}.jpg'; `{row}`
is the image's row); a dataset of raw images (the pixel demo, image files,
image records) shows its own images without --image_dir. Retrieved images list their own captions. The split's metrics head the page. --mode=worst shows the failure
cases instead of a random sample: the queries with the lowest NDCG@k.
"""
from __future__ import annotations

import dataclasses
import functools
import html
import os
import string
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from itr_jax import filesystem as fs
from itr_jax import metrics
from itr_jax.data import image_sources
from itr_jax.data import synthetic_scenes



@dataclasses.dataclass
class Hit:
  index: int  # caption (i2t) or image (t2i) row
  score: float
  grades: dict[str, float]  # relevance source ("true", "rsc") -> grade
  match: bool  # ground-truth pair


@dataclasses.dataclass
class Query:
  index: int  # image (i2t) or caption (t2i) row
  hits: list[Hit]
  ndcg: dict[str, float]  # relevance source -> NDCG@k of this query
  gt_rank: int  # 1-based rank of the first ground-truth match (full ranking)


def describe_scene(scene: synthetic_scenes.Scene) -> str:
  """'small red dog; large blue metal car | dog next to car | park'."""
  names = [synthetic_scenes.CLASSES[o.cls][0] for o in scene.objects]
  objects = []
  for o, name in zip(scene.objects, names):
    attrs = [o.attrs[k] for k in ("size", "colour", "material") if k in o.attrs]
    objects.append(" ".join(attrs + [name]))
  relations = [f"{names[a]} {rel} {names[b]}" for a, rel, b in scene.relations]
  return " | ".join(["; ".join(objects)] + (["; ".join(relations)] if relations else [])
                    + [scene.setting])


def scene_descriptions(data_dir: str, split: str, num_images: int) -> list[str] | None:
  """Descriptions of the first `num_images` scenes of a synthetic split (region
  features or rendered pixels), else None."""
  from itr_jax.data import synthetic_pixels  # pylint: disable=import-outside-toplevel
  if os.path.exists(os.path.join(data_dir, synthetic_pixels.MANIFEST)):
    scenes = synthetic_pixels.scenes_of(data_dir, split, num_images)
    return None if scenes is None else [describe_scene(s) for s in scenes]
  path = os.path.join(data_dir, synthetic_scenes.MANIFEST)
  if not os.path.exists(path) or split not in synthetic_scenes.SPLITS:
    return None
  try:
    manifest = synthetic_scenes.read_manifest(path)
    if manifest.get("generator") != "itr_jax.data.synthetic_scenes":
      return None
    scenes = synthetic_scenes.first_scenes(manifest.get("params"), split, num_images)
  except ValueError:
    return None  # a damaged manifest: the page goes without scene descriptions
  return None if scenes is None else [describe_scene(s) for s in scenes]


def _queries(scores: np.ndarray, relevance: dict[str, np.ndarray], is_match: np.ndarray,
             rows: Sequence[int], k: int) -> list[Query]:
  """Top-k lists of `rows` of `scores` [Q, M] (relevance/is_match aligned with it)."""
  top = metrics.top_k_indices(scores[rows], k)
  full = metrics.top_k_indices(scores[rows])
  ndcg = {name: metrics.ndcg_per_row(scores[rows], rel[rows], k=k)
          for name, rel in relevance.items()}
  result = []
  for q, row in enumerate(rows):
    hits = [Hit(int(j), float(scores[row, j]),
                {name: float(rel[row, j]) for name, rel in relevance.items()},
                bool(is_match[row, j])) for j in top[q]]
    first = int(np.flatnonzero(is_match[row, full[q]])[0]) + 1
    result.append(Query(int(row), hits, {n: float(v[q]) for n, v in ndcg.items()}, first))
  return result


def retrieval_examples(sims: np.ndarray, relevance: dict[str, np.ndarray], *,
                       captions_per_image: int, image_queries: Sequence[int],
                       caption_queries: Sequence[int], k: int = 10
                       ) -> tuple[list[Query], list[Query]]:
  """(image->caption queries, caption->image queries) from sims [N_images, N_captions].

  `relevance` maps a source name to an [N_images, N_captions] grade matrix
  (the same matrix serves both directions: grade of caption c for image i).

  >>> sims = np.array([[0.9, 0.1, 0.5, 0.2], [0.2, 0.3, 0.8, 0.7]])
  >>> i2t, t2i = retrieval_examples(sims, {}, captions_per_image=2,
  ...                               image_queries=[0], caption_queries=[3], k=2)
  >>> [(h.index, h.match) for h in i2t[0].hits], i2t[0].gt_rank
  ([(0, True), (2, False)], 1)
  >>> [(h.index, h.match) for h in t2i[0].hits]
  [(1, True), (0, False)]
  """
  num_images, num_captions = sims.shape
  if num_captions != num_images * captions_per_image:
    raise ValueError(f"sims has {num_captions} columns, expected num_images * "
                     f"captions_per_image = {num_images * captions_per_image}")
  match = np.arange(num_captions)[None, :] // captions_per_image == \
      np.arange(num_images)[:, None]
  i2t = _queries(sims, relevance, match, list(image_queries), k)
  t2i = _queries(sims.T, {n: r.T for n, r in relevance.items()}, match.T,
                 list(caption_queries), k)
  return i2t, t2i


MODES = ("random", "worst")


def select_queries(sims: np.ndarray, relevance: dict[str, np.ndarray], *,
                   captions_per_image: int, num_queries: int, k: int, mode: str = "random",
                   seed: int = 0) -> tuple[list[int], list[int]]:
  """(image rows, caption columns) to show: a random sample, or the failures.

  "worst": the queries with the lowest NDCG@k (true relevance if the split
  has it, else RSC); without relevance, those whose first ground-truth match
  ranks lowest. Ties keep the lower index first.

  >>> sims = np.array([[0.9, 0.1, 0.5, 0.2], [0.2, 0.3, 0.8, 0.7]])
  >>> select_queries(sims, {}, captions_per_image=2, num_queries=1, k=2, mode="worst")
  ([0], [1])
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  n_img, n_cap = sims.shape
  if mode == "random":
    rng = np.random.default_rng(seed)
    return (sorted(rng.choice(n_img, min(num_queries, n_img), replace=False).tolist()),
            sorted(rng.choice(n_cap, min(num_queries, n_cap), replace=False).tolist()))
  source = "true" if "true" in relevance else "rsc" if "rsc" in relevance else None
  if source is not None:
    # Lower NDCG = worse: sort ascending.
    i2t_bad = metrics.ndcg_per_row(sims, relevance[source], k=k)
    t2i_bad = metrics.ndcg_per_row(sims.T, relevance[source].T, k=k)
  else:
    i2t_bad = -metrics.i2t_ranks(sims, captions_per_image=captions_per_image)
    t2i_bad = -metrics.t2i_ranks(sims, captions_per_image=captions_per_image)
  return (np.argsort(i2t_bad, kind="stable")[:num_queries].tolist(),
          np.argsort(t2i_bad, kind="stable")[:num_queries].tolist())


def read_image_ids(path: str, num_images: int, captions_per_image: int) -> list:
  """The split's image ids, one per image row, from `path`.

  A .npz (from `itr-coco-ids`) holds `image_ids`; a text file holds one id per
  line, per image or per caption (the community's `{split}_ids.txt` repeats
  an image's id for each of its captions). Ids that are integers become ints.
  """
  if path.endswith(".npz"):
    arrays = fs.read_npz(path, 64 << 20, what="image id file")
    if "image_ids" not in arrays:
      raise ValueError(f"{path} has no 'image_ids' array (made by itr-coco-ids?)")
    ids = arrays["image_ids"].tolist()
  else:
    text = fs.read_text(path, image_sources.MAX_LIST_BYTES, what="image id list")
    ids = [line.strip() for line in text.split("\n") if line.strip()]
    ids = [int(i) if i.lstrip("-").isdigit() else i for i in ids]
  if len(ids) == num_images * captions_per_image and captions_per_image > 1:
    ids = ids[::captions_per_image]
  if len(ids) != num_images:
    raise ValueError(
        f"{path} has {len(ids)} ids, but the split has {num_images} images "
        f"({num_images * captions_per_image} captions): pass the ids file of this split")
  return ids


def thumbnail_html(path: str, size: int = 160, *, read=None) -> str:
  """An <img> with the image at `path` scaled to fit `size` px, embedded as
  base64 JPEG (the page stays one file); a note if it cannot be read.

  `read`: returns the image's bytes (an image source's ``read(i)``) instead
  of opening `path`, which then only names it.
  """
  import base64  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    if read is None:
      data = fs.read_bounded(path, image_sources.MAX_IMAGE_BYTES, what="image")
    else:
      data = read()
    with Image.open(io.BytesIO(data)) as image:
      if image.width * image.height > image_sources.MAX_PIXELS:
        raise ValueError(f"{image.width}x{image.height} pixels, over the "
                         f"{image_sources.MAX_PIXELS}-pixel limit")
      image = image.convert("RGB")
      # Small renders (the pixel demo) are enlarged, pixels kept sharp.
      scale = size / max(image.size)
      image = image.resize((max(1, round(image.width * scale)),
                            max(1, round(image.height * scale))),
                           Image.Resampling.NEAREST if scale > 1
                           else Image.Resampling.LANCZOS)
      buffer = io.BytesIO()
      image.save(buffer, format="JPEG", quality=85)
  except Exception as e:  # pylint: disable=broad-except  (Pillow raises many types on bad bytes)
    return f'<div class="missing">no thumbnail of {html.escape(path)}: {html.escape(str(e))}</div>'
  data = base64.b64encode(buffer.getvalue()).decode("ascii")
  return f'<div><img class="thumb" src="data:image/jpeg;base64,{data}"></div>'


def check_image_pattern(pattern: str) -> None:
  """Raises ValueError unless `pattern` uses only the fields {id} and {row}
  (with format specs such as {id:012d}), no attributes, indexes or conversions,
  which `str.format` would otherwise evaluate.

  >>> check_image_pattern("COCO_val2014_{id:012d}.jpg")
  >>> check_image_pattern("{id.__class__}.jpg")
  Traceback (most recent call last):
  ...
  ValueError: --image_pattern '{id.__class__}.jpg' may use only the fields {id} and {row} (with a format spec such as {id:012d}), not 'id.__class__'.
  """
  try:
    fields = list(string.Formatter().parse(pattern))
  except ValueError as e:
    raise ValueError(f"--image_pattern {pattern!r} is not a valid pattern ({e}).") from None
  for _, field, spec, conversion in fields:
    if field is None:
      continue
    if field not in ("id", "row") or conversion or "{" in (spec or ""):
      raise ValueError(f"--image_pattern {pattern!r} may use only the fields {{id}} and "
                       "{row} (with a format spec such as {id:012d}), not "
                       f"{field + ('!' + conversion if conversion else '')!r}.")


def inside(folder: str, name: str) -> str | None:
  """`folder`/`name` if `name` stays inside `folder` (no absolute path, no '..',
  no URL; locally also not through a symlink out of it), else None."""
  parts = name.replace("\\", "/").split("/")
  if not name or name.startswith(("/", "~")) or "://" in name or ".." in parts:
    return None
  path = fs.join(folder, name)
  if not fs.is_remote(folder):
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
      return None
  return path


def image_thumbnails(image_dir: str, pattern: str, ids: Sequence | None,
                     rows: Sequence[int]) -> dict[int, str]:
  """Thumbnail HTML of the image `rows` (only those the page shows); an id
  that names a file outside `image_dir` gets a note, not that file."""
  check_image_pattern(pattern)
  thumbs = {}
  for row in rows:
    image_id = ids[row] if ids is not None else row
    try:
      name = pattern.format(id=image_id, row=row)
    except (KeyError, ValueError, IndexError) as e:
      raise ValueError(f"--image_pattern {pattern!r} does not fit image id "
                       f"{image_id!r} ({e}); use {{id}} and/or {{row}}") from e
    path = inside(image_dir, name)
    if path is None:
      logging.warning("image %d: %r is not a file inside --image_dir; no thumbnail.", row, name)
      thumbs[row] = (f'<div class="missing">no thumbnail: {html.escape(name)} is outside '
                     "the image folder</div>")
    else:
      thumbs[row] = thumbnail_html(path)
  return thumbs


_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 70em; }
table { border-collapse: collapse; margin-bottom: 1.5em; width: 100%; }
td, th { border: 1px solid #ccc; padding: 2px 6px; font-size: 90%; text-align: left; }
tr.match { background: #e3f6e3; }
.q { background: #f3f3f8; padding: 0.4em; margin-top: 1.2em; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
img.thumb { max-height: 160px; margin: 0.3em 0; }
.missing { color: #a33; font-size: 80%; }
"""


def _grade_cells(grades: dict[str, float]) -> str:
  return "".join(f'<td class="num">{g:.2f}</td>' for g in grades.values())


def _section(title: str, queries: Sequence[Query], query_text, hit_text,
             sources: Sequence[str], query_extra=None, hit_extra=None) -> list[str]:
  out = [f"<h2>{html.escape(title)}</h2>"]
  for q in queries:
    ndcg = ", ".join(f"NDCG@{len(q.hits)} ({n}) = {v:.3f}" for n, v in q.ndcg.items())
    out.append(f'<div class="q"><b>Query:</b> {html.escape(query_text(q.index))}<br>'
               f"first ground-truth match at rank {q.gt_rank}"
               + (f"; {ndcg}" if ndcg else "") + "</div>")
    if query_extra:
      out.append(query_extra(q.index))
    head = "".join(f"<th>{html.escape(s)} relevance</th>" for s in sources)
    out.append(f"<table><tr><th>rank</th><th>result</th><th>score</th>{head}"
               "<th>GT match</th></tr>")
    for rank, h in enumerate(q.hits, 1):
      out.append(f'<tr class="{"match" if h.match else ""}"><td class="num">{rank}</td>'
                 f"<td>{html.escape(hit_text(h.index))}"
                 f"{hit_extra(h.index) if hit_extra else ''}</td>"
                 f'<td class="num">{h.score:.3f}</td>{_grade_cells(h.grades)}'
                 f"<td>{'✓' if h.match else ''}</td></tr>")
    out.append("</table>")
  return out


def render_html(i2t: Sequence[Query], t2i: Sequence[Query], *, captions: Sequence[str],
                image_labels: Sequence[str], captions_per_image: int,
                title: str, summary: str = "",
                split_metrics: dict[str, float] | None = None,
                thumbnails: dict[int, str] | None = None) -> str:
  """The whole page; ground-truth matches are highlighted.

  `split_metrics` (e.g. `evaluate.retrieval_report` of the split) is shown as
  a table at the top; retrieved images list their own captions, after their
  `thumbnails` (image row -> HTML) where given.
  """
  thumbnails = thumbnails or {}
  sources = list(i2t[0].ndcg) if i2t else list(t2i[0].ndcg) if t2i else []

  def own_captions(i):
    lines = captions[i * captions_per_image:(i + 1) * captions_per_image]
    return (thumbnails.get(i, "") + "<details><summary>its captions</summary><ul>" +
            "".join(f"<li>{html.escape(c)}</li>" for c in lines) + "</ul></details>")

  body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(summary)}</p>" if summary else "",
          "<p>Relevance grades in [0, 1]: <i>true</i> = fraction of the caption's "
          "content true of the image (synthetic scenes); <i>rsc</i> = relevance "
          "from caption sentence embeddings (what S-NDCG trains on). Green rows "
          "are ground-truth pairs.</p>"]
  if split_metrics:
    body.append("<table><tr>" + "".join(f"<th>{html.escape(k)}</th>" for k in split_metrics)
                + "</tr><tr>" + "".join(f'<td class="num">{v:.4g}</td>'
                                        for v in split_metrics.values()) + "</tr></table>")
  body += _section("Image → text", i2t, lambda i: image_labels[i],
                   lambda j: captions[j], sources, own_captions)
  body += _section("Text → image", t2i, lambda j: captions[j],
                   lambda i: image_labels[i], sources, hit_extra=own_captions)
  return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
          f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
          + "\n".join(body) + "</body></html>\n")


def write_examples_page(workdir: str, split: str | None = None, *, num_queries: int = 8,
                        k: int = 10, seed: int = 0, checkpoint: str = "best",
                        out: str | None = None, mode: str = "random",
                        image_ids: str | None = None, image_dir: str | None = None,
                        image_pattern: str = "{id}.jpg") -> str:
  """Encodes `split` with the run's checkpoint and writes the page; returns its path.

  `image_ids` / `image_dir` / `image_pattern`: see the module docstring.
  """
  # Imported here: these pull in the model and checkpoint stack.
  from itr_jax.evaluation import evaluate
  from itr_jax.evaluation import runs

  if num_queries < 1 or k < 1:
    raise ValueError(f"num_queries and k must be >= 1, got {num_queries}, {k}")
  if image_dir:
    check_image_pattern(image_pattern)  # before the model is loaded
  run = runs.load_run(workdir, split, checkpoint)
  config, split, data, step, directory = (run.config, run.split_name, run.split,
                                          run.step, run.data_dir)
  sims = np.asarray(evaluate.split_similarity(run.model, run.params, data, run.vocab,
                                              config), np.float64)
  relevance = {}
  if data.true_relevance is not None:
    relevance["true"] = np.asarray(data.true_relevance)
  rsc = evaluate.split_relevance(data)
  if rsc is not None:
    relevance["rsc"] = rsc
  n_img, n_cap = sims.shape
  image_queries, caption_queries = select_queries(
      sims, relevance, captions_per_image=data.captions_per_image,
      num_queries=num_queries, k=k, mode=mode, seed=seed)
  split_metrics = evaluate.sims_report(
      sims, captions_per_image=data.captions_per_image,
      rsc_relevance=relevance.get("rsc"), true_relevance=relevance.get("true"))
  split_metrics = {key: v for key, v in split_metrics.items()
                   if not key.endswith(("medr", "meanr"))}
  i2t, t2i = retrieval_examples(sims, relevance, captions_per_image=data.captions_per_image,
                                image_queries=image_queries,
                                caption_queries=caption_queries, k=k)
  ids = (read_image_ids(image_ids, n_img, data.captions_per_image)
         if image_ids else None)
  labels = scene_descriptions(directory, split, n_img)
  labels = [f"image {i}" + (f" (id {ids[i]})" if ids is not None else "")
            + (f": {labels[i]}" if labels else "") for i in range(n_img)]
  thumbnails = None
  shown = sorted(set(image_queries) | {h.index for q in t2i for h in q.hits})
  if image_dir:
    thumbnails = image_thumbnails(image_dir, image_pattern, ids, shown)
  elif image_sources.is_image_source(run.stored_images):  # a dataset of raw images
    thumbnails = {i: thumbnail_html(run.stored_images.name(i),
                                    read=functools.partial(run.stored_images.read, i))
                  for i in shown}
  page = render_html(i2t, t2i, captions=data.captions, image_labels=labels,
                     captions_per_image=data.captions_per_image,
                     title=f"Retrieval examples: {workdir} ({split}, step {step})",
                     summary=f"{n_img} images, {n_cap} captions; loss.weight="
                             f"{config.loss.weight}, loss.tau={config.loss.tau}, "
                             f"seed={config.seed}. " + (
                                 f"{num_queries} random queries (seed {seed})"
                                 if mode == "random" else
                                 f"the {num_queries} worst queries by NDCG@{k}")
                             + f" per direction, top {k}.",
                     split_metrics=split_metrics, thumbnails=thumbnails)
  out = out or fs.join(workdir, f"examples_{split}{'_worst' if mode == 'worst' else ''}.html")
  with fs.open(out, "w", encoding="utf-8") as f:
    f.write(page)
  return out


def _define_flags() -> dict:
  """The command's flags. Defined only when run as a command: this module is
  also a library, imported beside other commands that define --split."""
  return {
      "workdir": flags.DEFINE_string("workdir", None, "The run's workdir (or give it "
                                     "as the positional argument)."),
      "split": flags.DEFINE_string("split", None, "Default: config.data.test_split."),
      "num_queries": flags.DEFINE_integer("num_queries", 8, "Queries per direction."),
      "k": flags.DEFINE_integer("k", 10, "Results per query."),
      "seed": flags.DEFINE_integer("seed", 0, "Which queries are sampled (random mode)."),
      "checkpoint": flags.DEFINE_string("checkpoint", "best", "best, latest or a step."),
      "out": flags.DEFINE_string("out", None, "Default <workdir>/examples_<split>.html."),
      "mode": flags.DEFINE_enum("mode", "random", list(MODES),
                                "random queries, or the worst by NDCG@k (failure cases)."),
      "image_ids": flags.DEFINE_string(
          "image_ids", None, "Image ids of the split: a text file (one per image or "
          "per caption, e.g. {split}_ids.txt) or the .npz of itr-coco-ids."),
      "image_dir": flags.DEFINE_string(
          "image_dir", None, "Folder of the image files: the page shows thumbnails."),
      "image_pattern": flags.DEFINE_string(
          "image_pattern", "{id}.jpg", "File name of an image in --image_dir, from "
          "its {id} (--image_ids) or {row}, e.g. COCO_val2014_{id:012d}.jpg."),
  }


def run():
  """Console-script entry point: python -m itr_jax.report.examples WORKDIR [flags]."""
  from itr_jax import cli  # pylint: disable=import-outside-toplevel
  values = _define_flags()

  def main(argv):
    workdirs = argv[1:] + ([values["workdir"].value] if values["workdir"].value else [])
    if len(workdirs) != 1:
      raise app.UsageError("Pass one run: itr-examples --workdir=WORKDIR (or WORKDIR) "
                           "[--split=test] [--num_queries=8] [--k=10] [--mode=worst]")
    print(write_examples_page(workdirs[0], values["split"].value,
                              num_queries=values["num_queries"].value, k=values["k"].value,
                              seed=values["seed"].value, checkpoint=values["checkpoint"].value,
                              out=values["out"].value, mode=values["mode"].value,
                              image_ids=values["image_ids"].value,
                              image_dir=values["image_dir"].value,
                              image_pattern=values["image_pattern"].value))

  cli.run(main, positional=True)


if __name__ == "__main__":
  run()

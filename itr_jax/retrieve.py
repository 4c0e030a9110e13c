r"""Retrieve with a trained run: the top-k images for a text, or captions for an image.

  python -m itr_jax.retrieve --workdir=workdirs/demo --query="a red dog on a sofa" [--k=10]
  python -m itr_jax.retrieve --workdir=workdirs/demo --image=17 [--k=10]

Text -> image: the query is tokenized like the training captions and
encoded by the run's text tower; every image of the split (default
config.data.test_split) is ranked by the model's score (cosine similarity
for two-tower models; SGR/SAF score each image-query pair with their
cross-attention networks). Each hit shows its
image id (its row in {split}_ims.npy), the score and its ground-truth
captions. Image -> text (--image=ROW): every caption of the split is ranked
for that image; each hit shows the caption, the image it describes and
whether that is the query image. --query may be repeated; --queries_file
reads one query per line. --json prints the results as JSON instead of text.
--data_dir, --checkpoint and --split as in itr_jax.evaluate.

The split's encodings are computed once per checkpoint and data folder and
cached in <workdir>/cache/ (two-tower models; config.data.embedding_cache
moves or disables it), so later queries start at once.
"""
from __future__ import annotations

import hashlib
import json

from absl import app
from absl import flags

from itr_jax import cli
from itr_jax import filesystem as fs

evaluate = cli.lazy_import("itr_jax.evaluation.evaluate")
retrieval = cli.lazy_import("itr_jax.evaluation.retrieval")
runs = cli.lazy_import("itr_jax.evaluation.runs")

MAX_QUERIES_BYTES = 64 << 20

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by itr_jax.train.")
_QUERY = flags.DEFINE_multi_string("query", [], "Text query (text -> image); repeatable.")
_QUERIES_FILE = flags.DEFINE_string("queries_file", None,
                                    "A text file of queries, one per line (blank lines skipped).")
_JSON = flags.DEFINE_bool("json", False, "Print the results as one JSON object.")
_IMAGE = flags.DEFINE_integer("image", None, "Image row of the split (image -> text).")
_K = flags.DEFINE_integer("k", 10, "Results per query.")
_SPLIT = flags.DEFINE_string("split", None, "Split to search (default: config.data.test_split).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Another copy of the run's dataset.")
flags.mark_flags_as_required(["workdir"])


def read_queries(queries, queries_file: str | None) -> list[str]:
  """The queries of --query and --queries_file; an empty one is an error."""
  queries = list(queries)
  if queries_file:
    text = fs.read_text(queries_file, MAX_QUERIES_BYTES, what="--queries_file")
    queries += [line.strip() for line in text.split("\n") if line.strip()]
    if not queries:
      raise ValueError(f"--queries_file={queries_file!r} holds no query (one per line).")
  if any(not q.strip() for q in queries):
    raise ValueError("--query is empty: pass a text to search for, e.g. "
                     "--query=\"a dog on a sofa\".")
  return queries


def split_encodings(run, workdir: str):
  """(image_repr, caption_repr) of the run's split; for two-tower models cached
  in <workdir>/cache/ (`embedding_cache`: keyed by the checkpoint's parameters,
  the data folder, split and captions, checked on reading)."""
  import functools  # pylint: disable=import-outside-toplevel
  from itr_jax.evaluation import embedding_cache  # pylint: disable=import-outside-toplevel
  from itr_jax.models import scorer  # pylint: disable=import-outside-toplevel
  cache = embedding_cache.eval_cache_dir(run.config, workdir)
  if not scorer.is_two_tower(run.model) or cache is None:
    return evaluate.encode_eval_split(run.model, run.params, run.split, run.vocab,
                                      run.config, progress=True)
  split = run.split
  captions = hashlib.sha256("\n".join(split.captions).encode("utf-8")).hexdigest()
  key = embedding_cache.cache_key(
      run.params, {"eval_max_len": evaluate.eval_max_len(run.config, run.vocab,
                                                         split.captions)},
      {"data_dir": run.data_dir, "split": run.split_name, "num_images": split.num_images,
       "captions_sha256": captions})
  both = functools.cache(lambda: evaluate.encode_eval_split(
      run.model, run.params, split, run.vocab, run.config, progress=True,
      cache_dir=cache))
  image_emb, _ = embedding_cache.cached_array(cache, f"{run.split_name}_retrieval_images",
                                              key, lambda: both()[0])
  caption_emb, _ = embedding_cache.cached_array(
      cache, f"{run.split_name}_retrieval_captions", key, lambda: both()[1])
  return image_emb, caption_emb


def main(argv):
  queries = read_queries(_QUERY.value, _QUERIES_FILE.value)
  if not queries and _IMAGE.value is None:
    raise app.UsageError("Pass --query=TEXT or --queries_file=FILE (text -> image) "
                         "and/or --image=ROW (image -> text).")
  if _K.value < 1:
    raise app.UsageError(f"--k must be >= 1, got {_K.value}.")
  run = runs.load_run(_WORKDIR.value, _SPLIT.value, _CHECKPOINT.value,
                      data_dir=_DATA_DIR.value)
  image_repr, caption_repr = split_encodings(run, _WORKDIR.value)
  header = {"workdir": _WORKDIR.value, "checkpoint_step": run.step, "split": run.split_name,
            "num_images": run.split.num_images, "num_captions": run.split.num_captions}
  text = [] if queries else None
  image = None
  if queries:
    text = retrieval.text_to_image(run, image_repr, queries, _K.value)
  if _IMAGE.value is not None:
    image = retrieval.image_to_text(run, image_repr, caption_repr, _IMAGE.value, _K.value)
  if _JSON.value:
    print(json.dumps({**header, "text_to_image": text, "image_to_text": image}, indent=1))
    return
  print(f"{_WORKDIR.value}: checkpoint step {run.step}, split {run.split_name!r} "
        f"({run.split.num_images} images, {run.split.num_captions} captions)")
  for result in text or []:
    print(retrieval.format_text_to_image(result))
  if image is not None:
    print(retrieval.format_image_to_text(image))


def run():
  """Console-script entry point."""
  cli.run(main)


if __name__ == "__main__":
  run()

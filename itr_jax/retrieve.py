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
whether that is the query image. --query may be repeated. --data_dir,
--checkpoint and --split as in itr_jax.evaluate.
"""
from __future__ import annotations

from absl import app
from absl import flags
from absl import logging

from itr_jax import cli

evaluate = cli.lazy_import("itr_jax.evaluation.evaluate")
retrieval = cli.lazy_import("itr_jax.evaluation.retrieval")
runs = cli.lazy_import("itr_jax.evaluation.runs")

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by itr_jax.train.")
_QUERY = flags.DEFINE_multi_string("query", [], "Text query (text -> image); repeatable.")
_IMAGE = flags.DEFINE_integer("image", None, "Image row of the split (image -> text).")
_K = flags.DEFINE_integer("k", 10, "Results per query.")
_SPLIT = flags.DEFINE_string("split", None, "Split to search (default: config.data.test_split).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Another copy of the run's dataset.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _QUERY.value and _IMAGE.value is None:
    raise app.UsageError("Pass --query=TEXT (text -> image) and/or --image=ROW (image -> text).")
  if _K.value < 1:
    raise app.UsageError(f"--k must be >= 1, got {_K.value}.")
  logging.set_verbosity(logging.WARNING)
  run = runs.load_run(_WORKDIR.value, _SPLIT.value, _CHECKPOINT.value,
                      data_dir=_DATA_DIR.value)
  image_repr, caption_repr = evaluate.encode_eval_split(
      run.model, run.params, run.split, run.vocab, run.config, progress=True)
  print(f"{_WORKDIR.value}: checkpoint step {run.step}, split {run.split_name!r} "
        f"({run.split.num_images} images, {run.split.num_captions} captions)")
  if _QUERY.value:
    for result in retrieval.text_to_image(run, image_repr, list(_QUERY.value), _K.value):
      print(retrieval.format_text_to_image(result))
  if _IMAGE.value is not None:
    print(retrieval.format_image_to_text(retrieval.image_to_text(
        run, image_repr, caption_repr, _IMAGE.value, _K.value)))


def run():
  """Console-script entry point."""
  cli.run(main)


if __name__ == "__main__":
  run()

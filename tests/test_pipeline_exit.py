"""A process that stops reading an input pipeline early must still exit.

Before the fix, a script that imported JAX and abandoned a
`pipeline.train_batches` iterator hung at interpreter exit (tf.data's
in-flight `numpy_function` calls waiting for the GIL of the finalising
thread). A real process, as a user's script would be.
"""
import os
import subprocess
import sys

from itr_jax.data import pipeline
from itr_jax.data import precomputed
from itr_jax.data import testing as data_testing
from itr_jax.data import vocab as vocab_lib

_SCRIPT = """
import sys
import jax  # part of the reproduction: without JAX loaded it did not hang
from itr_jax.data import pipeline, precomputed, testing, vocab
d = sys.argv[1]
testing.write_random_split(d, "train", num_images=200, regions=36, feature_dim=256)
split = precomputed.load_split(d, "train")
batches = pipeline.train_batches(split, vocab.Vocabulary.build(split.captions),
                                 batch_size=64, seed=0, max_len=16)
next(batches)
images = pipeline.eval_image_batches(split, batch_size=16)
next(images)
print("stopped early", flush=True)
"""


def test_script_that_stops_iterating_early_exits(tmp_path):
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)],
                        capture_output=True, text=True, timeout=300,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "stopped early" in proc.stdout


def test_close_ends_the_iterator(tmp_path):
  d = str(tmp_path)
  data_testing.write_random_split(d, "train", num_images=4)
  split = precomputed.load_split(d, "train")
  batches = pipeline.train_batches(split, vocab_lib.Vocabulary.build(split.captions),
                                   batch_size=4, seed=0, max_len=8)
  assert next(batches)["tokens"].shape == (4, 8)
  batches.close()
  assert list(batches) == []

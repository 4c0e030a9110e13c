"""Config fields that are file paths, made absolute when a run starts.

A run records its config in `<workdir>/config.json`; a relative data path in
it would later be read against whatever directory `itr_jax.evaluate` (or a
resumed run) starts in, and could silently point at another dataset or, for
synthetic scenes, generate a new one there. So paths are resolved against the
directory the run starts in and stored absolute. URLs (gs://...) are kept
as they are.
"""
from __future__ import annotations

from itr_jax import filesystem as fs

# Dotted config fields holding a path ('' = unset, left as is).
PATH_FIELDS = ("data.data_dir", "data.vocab_path", "data.caption_emb_path",
               "data.tfds_data_dir", "data.local_cache_dir", "model.bert_path",
               "train.init_from")


def resolve_config_paths(config) -> None:
  """Makes every `PATH_FIELDS` field of `config` (ConfigDict or dict) absolute
  (`filesystem.absolute`: '' and URLs stay), in place.

  >>> config = {"data": {"data_dir": "/data/f30k", "vocab_path": ""},
  ...           "train": {"init_from": "gs://bucket/run"}}
  >>> resolve_config_paths(config); config["train"]["init_from"]
  'gs://bucket/run'
  """
  for field in PATH_FIELDS:
    *parents, leaf = field.split(".")
    node = config
    for key in parents:
      node = node.get(key) if hasattr(node, "get") else None
      if node is None:
        break
    if node is not None and isinstance(node.get(leaf), str):
      node[leaf] = fs.absolute(node[leaf])

"""Damaged, foreign and corrupted checkpoint entries: only they are set aside.

Unit level, on a tiny train state (milliseconds per checkpoint); the trainer
and evaluate paths over the same machinery are in test_reliability.py.
"""
import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from itr_jax.training import checkpointing
from itr_jax.training import integrity


def _state(value, step=0):
  return train_state.TrainState.create(
      apply_fn=None, params={"w": jnp.full((3,), value)},
      tx=optax.adam(1e-3)).replace(step=step)


ABSTRACT = jax.eval_shape(lambda: _state(0.0))


def _three_checkpoints(workdir, keep=3):
  ckpt = checkpointing.Checkpoints(workdir, keep=keep)
  for step in (1, 2, 3):
    ckpt.save(step, _state(float(step), step),
              metrics={"rsum": 10.0 * step} if step == 2 else None)
  ckpt.close()
  return os.path.join(workdir, "checkpoints")


def _restore_latest(workdir, keep=3):
  ckpt = checkpointing.Checkpoints(workdir, keep=keep)
  step, state = ckpt.restore_latest(ABSTRACT)
  steps = ckpt.all_steps()
  ckpt.close()
  return step, state, steps


def _set_aside(workdir):
  d = os.path.join(workdir, checkpointing.CORRUPTED_DIR)
  return sorted(n.split("-")[0] for n in os.listdir(d)) if os.path.isdir(d) else []


def test_every_saved_step_has_a_verifying_integrity_record(tmp_path):
  directory = _three_checkpoints(str(tmp_path))
  for step in ("1", "2", "3"):
    record = integrity.read_record(os.path.join(directory, step))
    assert len(record["files"]) >= 5  # orbax metadata, array data, manifest
    assert integrity.verify(os.path.join(directory, step)) is None
  assert checkpointing.inspect_step(os.path.join(directory, "3")) == ("verified", None)


@pytest.mark.parametrize("flip_in", ["array", "metadata", "metrics", "record"])
def test_one_flipped_byte_sets_the_step_aside_and_the_previous_is_used(
    tmp_path, caplog, flip_in):
  workdir = str(tmp_path)
  directory = _three_checkpoints(workdir)
  step_dir = os.path.join(directory, "3" if flip_in != "metrics" else "2")
  files = integrity.list_files(step_dir)
  name = {"array": next(f for f in files if "/d/" in f),
          "metadata": "_CHECKPOINT_METADATA",
          "metrics": os.path.join("metrics", "metrics"),
          "record": integrity.RECORD_FILE}[flip_in]
  path = os.path.join(step_dir, name)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x01  # one bit: a silent restore before integrity records
  open(path, "wb").write(bytes(data))
  with caplog.at_level(logging.WARNING):
    step, state, steps = _restore_latest(workdir)
  if flip_in == "metrics":  # the best step (2) was damaged, latest still fine
    assert step == 3 and steps == [1, 3]
  else:
    assert step == 2 and float(state.params["w"][0]) == 2.0 and steps == [1, 2]
  damaged = os.path.basename(step_dir)
  assert f"Checkpoint step {damaged}" in caplog.text and "damaged" in caplog.text
  assert _set_aside(workdir) == [damaged]  # kept for inspection, not deleted


def test_foreign_and_partial_entries_never_cost_intact_checkpoints(tmp_path, caplog):
  workdir = str(tmp_path)
  directory = _three_checkpoints(workdir)
  os.makedirs(os.path.join(directory, "7"))  # empty stray step directory
  partial = os.path.join(directory, "5")  # a partly copied step
  shutil.copytree(os.path.join(directory, "3"), partial)
  os.remove(os.path.join(partial, "default", "_METADATA"))
  os.remove(os.path.join(partial, integrity.RECORD_FILE))
  with open(os.path.join(directory, "9"), "w") as f:  # a file named like a step
    f.write("not a checkpoint")
  with open(os.path.join(directory, "notes.txt"), "w") as f:  # a stray file
    f.write("hello")
  leftover = os.path.join(directory, "4.orbax-checkpoint-tmp-1796122594")
  shutil.copytree(os.path.join(directory, "1"), leftover)  # a save cut by a kill
  with caplog.at_level(logging.WARNING):
    step, state, steps = _restore_latest(workdir)
  assert step == 3 and float(state.params["w"][0]) == 3.0
  assert steps == [1, 2, 3]
  assert _set_aside(workdir) == ["5", "7", "9"]
  assert os.path.exists(os.path.join(directory, "notes.txt"))  # not ours to move
  assert not os.path.exists(leftover)  # never restorable: removed
  # Opening again finds nothing more to set aside: no loop of retries.
  assert _restore_latest(workdir)[0] == 3 and _set_aside(workdir) == ["5", "7", "9"]


def test_a_step_without_a_record_is_not_trusted_and_the_previous_is_used(tmp_path, caplog):
  """Killed between save and record, or a copy that dropped the record: even
  intact-looking bytes cannot be checked, so the newest verified step is used."""
  workdir = str(tmp_path)
  directory = _three_checkpoints(workdir)
  step_dir = os.path.join(directory, "3")
  os.remove(os.path.join(step_dir, integrity.RECORD_FILE))
  with caplog.at_level(logging.WARNING):
    step, _, steps = _restore_latest(workdir)
  assert step == 2 and steps == [1, 2] and "not trusted" in caplog.text
  assert integrity.ACCEPT_COMMAND in caplog.text  # how to accept it
  assert _set_aside(workdir) == ["3"]


def test_a_kill_between_the_first_save_and_its_record_starts_over(tmp_path, caplog):
  workdir = str(tmp_path)
  ckpt = checkpointing.Checkpoints(workdir, keep=3)
  ckpt.save(1, _state(1.0, 1))
  ckpt.close()
  os.remove(os.path.join(workdir, "checkpoints", "1", integrity.RECORD_FILE))
  with caplog.at_level(logging.WARNING):
    step, _, steps = _restore_latest(workdir)
  assert step is None and steps == [] and "not trusted" in caplog.text
  assert _set_aside(workdir) == ["1"]  # kept for inspection


def test_a_record_that_does_not_cover_every_file_is_not_trusted(tmp_path):
  workdir = str(tmp_path)
  directory = _three_checkpoints(workdir)
  with open(os.path.join(directory, "3", "default", "extra_file"), "w") as f:
    f.write("not recorded")
  assert "not covered by its integrity record" in integrity.verify(os.path.join(directory, "3"))
  assert _restore_latest(workdir)[0] == 2 and _set_aside(workdir) == ["3"]


def test_unrecorded_steps_of_an_older_version_are_refused_until_accepted(tmp_path, capsys):
  workdir = str(tmp_path)
  directory = _three_checkpoints(workdir)
  for step in ("1", "2", "3"):
    os.remove(os.path.join(directory, step, integrity.RECORD_FILE))
  os.remove(os.path.join(directory, checkpointing.RECORDS_MARKER))  # an itr_jax without records
  array = next(f for f in integrity.list_files(os.path.join(directory, "3")) if "/d/" in f)
  path = os.path.join(directory, "3", array)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x01  # undetectable without a record: must not be restored silently
  open(path, "wb").write(bytes(data))
  with pytest.raises(checkpointing.CheckpointRestoreError,
                     match=r"steps \[1, 2, 3\]\) have no integrity record.*--accept="):
    _restore_latest(workdir)
  assert sorted(os.listdir(directory)) == ["1", "2", "3"]  # nothing moved or deleted
  integrity.main([f"--accept={os.path.join(directory, '2')}"])
  assert "Recorded" in capsys.readouterr().out
  step, state, _ = _restore_latest(workdir)  # 2 is trusted now; 1 and 3 are set aside
  assert step == 2 and float(state.params["w"][0]) == 2.0 and _set_aside(workdir) == ["1", "3"]


def test_intact_checkpoint_of_another_model_is_an_error_not_discarded(tmp_path):
  workdir = str(tmp_path)
  _three_checkpoints(workdir)
  other = jax.eval_shape(lambda: train_state.TrainState.create(
      apply_fn=None, params={"v": jnp.zeros((5,))}, tx=optax.adam(1e-3)))
  ckpt = checkpointing.Checkpoints(workdir, keep=3)
  with pytest.raises(checkpointing.CheckpointRestoreError,
                     match=r"step 3 .* intact but does not fit"):
    ckpt.restore_latest(other)
  assert ckpt.all_steps() == [1, 2, 3] and _set_aside(workdir) == []
  ckpt.close()


def test_prune_removes_what_a_kill_after_the_last_save_left(tmp_path):
  workdir = str(tmp_path)
  ckpt = checkpointing.Checkpoints(workdir, keep=10)  # as if pruning never ran
  for step in range(1, 6):
    ckpt.save(step, _state(float(step), step),
              metrics={"rsum": 50.0} if step == 2 else None)
  ckpt.close()
  ckpt = checkpointing.Checkpoints(workdir, keep=2)
  ckpt.prune()
  assert ckpt.all_steps() == [2, 4, 5]  # latest two + the best by rsum
  ckpt.close()


def test_extra_round_trips_and_read_only_changes_nothing(tmp_path):
  workdir = str(tmp_path)
  ckpt = checkpointing.Checkpoints(workdir, keep=3)
  ckpt.save(4, _state(4.0, 4), extra={"pending_train_metrics": [{"loss": 0.5}]})
  ckpt.close()
  os.makedirs(os.path.join(workdir, "checkpoints", "8"))
  ro = checkpointing.Checkpoints(workdir, keep=3, read_only=True)
  assert ro.all_steps() == [4] and "incomplete" in ro.damaged[8]
  assert ro.extra(4) == {"pending_train_metrics": [{"loss": 0.5}]}
  ro.close()
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "8"))  # untouched
  assert not os.path.exists(os.path.join(workdir, checkpointing.CORRUPTED_DIR))


def test_best_step_is_tracked_by_orbax_and_skips_a_damaged_best(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  workdir = str(tmp_path)
  ckpt = checkpointing.Checkpoints(workdir, keep=5)
  for step, rsum in ((1, 30.0), (2, 50.0), (3, None), (4, 40.0)):
    ckpt.save(step, _state(float(step), step),
              metrics=None if rsum is None else {"rsum": rsum})
  assert ckpt.best_step() == 2 == ckpt.manager.best_step()
  assert ckpt.best_metrics() == {"rsum": 50.0}
  ckpt.close()
  with open(os.path.join(workdir, "checkpoints", "2", integrity.RECORD_FILE), "a") as f:
    f.write("x")  # the best checkpoint is damaged
  ro = checkpointing.Checkpoints(workdir, keep=5, read_only=True)
  assert 2 in ro.damaged and ro.best_step() == 4  # the best intact one
  ro.close()
  ckpt = checkpointing.Checkpoints(workdir, keep=5)  # sets step 2 aside
  assert "Checkpoint step 2" in caplog.text
  assert ckpt.best_step() == 4 and ckpt.all_steps() == [1, 3, 4]
  ckpt.close()
  # Orbax's "tracked_metric" warning for the metric-less step 3 was not shown.
  assert "tracked_metric" not in caplog.text


def _mount_tmpfs(path, size):
  os.makedirs(path, exist_ok=True)
  if os.system(f"mount -t tmpfs -o size={size} tmpfs {path} 2>/dev/null") != 0:
    pytest.skip("needs root to mount a small tmpfs (a real full disk)")


def test_disk_full_while_checkpointing_keeps_the_previous_one(tmp_path, caplog):
  """A real full file system: a 1 MiB tmpfs, and a state that no longer fits."""
  mnt = str(tmp_path / "small_disk")
  _mount_tmpfs(mnt, "1m")
  try:
    ckpt = checkpointing.Checkpoints(mnt, keep=3)
    ckpt.save(1, _state(1.0, 1))
    big = train_state.TrainState.create(
        apply_fn=None, params={"w": jnp.asarray(
            np.random.default_rng(0).standard_normal(400_000), jnp.float32)},
        tx=optax.sgd(1e-3))
    with pytest.raises(checkpointing.CheckpointWriteError,
                       match=r"disk is full: checkpoint step 2 .* MiB free, a "
                             r"checkpoint needs about 1\.5 MiB\); the previous "
                             r"checkpoint \(step 1\) is intact"):
      ckpt.save(2, big)
    # The one error above, not a traceback per thread that failed to write.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    ckpt.close()
    assert sorted(os.listdir(os.path.join(mnt, "checkpoints"))) == [
        "1", checkpointing.RECORDS_MARKER]
    step, state, _ = _restore_latest(mnt)
    assert step == 1 and float(state.params["w"][0]) == 1.0
  finally:
    os.system(f"umount {mnt}")


def test_an_old_step_that_cannot_be_deleted_keeps_the_new_one(tmp_path, caplog, monkeypatch):
  """Permissions or an immutable file on an old step: before, the save failed and the
  new, intact step was deleted and blamed, so the run never progressed."""
  from orbax.checkpoint._src.path import deleter  # pylint: disable=import-outside-toplevel
  real = deleter.StandardCheckpointDeleter.delete

  def refuse_step_1(self, step):
    if step == 1:
      raise PermissionError(1, "Operation not permitted")
    return real(self, step)

  monkeypatch.setattr(deleter.StandardCheckpointDeleter, "delete", refuse_step_1)
  ckpt = checkpointing.Checkpoints(str(tmp_path), keep=1)
  with caplog.at_level(logging.WARNING):
    for step in (1, 2, 3):
      ckpt.save(step, _state(float(step), step))
  assert ckpt.all_steps() == [1, 3]  # 1 could not go; 2 was pruned normally
  assert "Could not delete old checkpoint step 1" in caplog.text
  assert integrity.verify(os.path.join(ckpt.directory, "3")) is None
  ckpt.close()

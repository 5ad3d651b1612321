"""Checkpointer against real orbax on the local file system."""

import logging
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from amd_jax.checkpoint import Checkpointer

REPO = pathlib.Path(__file__).resolve().parents[1]


def _state(seed: int = 0):
  key = jax.random.key(seed)
  return {
      "params": {"w": jax.random.normal(key, (8, 4), jnp.float32),
                 "b": jnp.arange(4, dtype=jnp.float32) + seed},
      "step": jnp.asarray(seed, jnp.int32),
      "rng": jax.random.key_data(jax.random.fold_in(key, 1)),  # uint32[2]
  }


def _abstract(state, sharding=None):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=sharding or x.sharding), state)


def _assert_trees_equal(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert isinstance(g, jax.Array)
    assert g.dtype == w.dtype and g.shape == w.shape
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def _step_dirs(directory):
  return sorted(int(p.name) for p in pathlib.Path(directory).iterdir()
                if p.name.isdigit())


def test_round_trip(tmp_path):
  state, data = _state(3), {"epoch": 1, "next_index": 17, "seed": [1, 2]}
  ckpt = Checkpointer(tmp_path, save_every=2, async_save=False)
  assert ckpt.latest_step() is None
  assert ckpt.save(2, state, data)
  assert ckpt.latest_step() == 2
  ckpt.close()

  ckpt = Checkpointer(tmp_path, save_every=2)  # a fresh process would do this
  assert ckpt.latest_step() == 2
  got, got_data = ckpt.restore(2, _abstract(state))
  ckpt.close()
  _assert_trees_equal(got, state)
  assert got["rng"].dtype == jnp.uint32
  assert got_data == data


def test_restore_onto_target_mesh(tmp_path):
  state = _state(1)
  ckpt = Checkpointer(tmp_path, save_every=1, async_save=False)
  ckpt.save(1, state, {"i": 0})
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  target = NamedSharding(mesh, PartitionSpec())
  got, _ = ckpt.restore(1, _abstract(state, target))
  ckpt.close()
  _assert_trees_equal(got, state)
  for leaf in jax.tree.leaves(got):
    assert leaf.sharding == target


def test_should_save(tmp_path):
  ckpt = Checkpointer(tmp_path, save_every=5)
  assert [s for s in range(12) if ckpt.should_save(s)] == [5, 10]
  ckpt.close()


def test_save_skips_off_schedule_steps(tmp_path):
  ckpt = Checkpointer(tmp_path, save_every=5, async_save=False)
  assert not ckpt.save(0, _state(), {})
  assert not ckpt.save(3, _state(), {})
  assert ckpt.save(5, _state(), {})
  ckpt.close()
  assert _step_dirs(tmp_path) == [5]


def test_latest_step_and_keep(tmp_path):
  ckpt = Checkpointer(tmp_path, save_every=1, keep=2)
  for step in range(1, 5):
    assert ckpt.save(step, _state(step), {"step": step})
  ckpt.wait()
  assert ckpt.latest_step() == 4
  ckpt.close()
  assert _step_dirs(tmp_path) == [3, 4]
  ckpt = Checkpointer(tmp_path, save_every=1, keep=2)
  assert ckpt.latest_step() == 4
  got, data = ckpt.restore(3, _abstract(_state(3)))
  ckpt.close()
  _assert_trees_equal(got, _state(3))
  assert data == {"step": 3}


def test_forced_save(tmp_path):
  ckpt = Checkpointer(tmp_path, save_every=10)
  assert ckpt.save(10, _state(10), {"step": 10})
  assert ckpt.save(13, _state(13), {"step": 13}, force=True)
  # SIGTERM right after a scheduled save: nothing left to do, and no error.
  assert not ckpt.save(13, _state(13), {"step": 13}, force=True)
  ckpt.wait()
  assert ckpt.latest_step() == 13
  got, data = ckpt.restore(13, _abstract(_state(13)))
  ckpt.close()
  _assert_trees_equal(got, _state(13))
  assert data == {"step": 13}


def test_async_save_then_wait(tmp_path):
  state = {"big": jnp.ones((512, 1024), jnp.float32), **_state(2)}
  ckpt = Checkpointer(tmp_path, save_every=1, async_save=True)
  assert ckpt.save(1, _state(1), {"step": 1})
  ckpt.wait()
  assert ckpt.save(2, state, {"step": 2})
  # Step 2 is not reported before it is committed (renamed into place).
  assert ckpt.latest_step() == 1 or (tmp_path / "2").is_dir()
  ckpt.wait()
  assert ckpt.latest_step() == 2
  got, data = ckpt.restore(2, _abstract(state))
  ckpt.close()
  _assert_trees_equal(got, state)
  assert data == {"step": 2}


_KILLED_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import jax, jax.numpy as jnp
    from amd_jax.checkpoint import Checkpointer

    ckpt = Checkpointer(sys.argv[1], save_every=1, async_save=True)
    ckpt.save(1, {"x": jnp.arange(8, dtype=jnp.float32)}, {"step": 1})
    ckpt.wait()
    big = jax.random.uniform(jax.random.key(0), (4096, 4096))  # 64 MiB
    ckpt.save(2, {"x": big}, {"step": 2})
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_sigkill_during_save_keeps_previous_step(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(
                 [str(REPO), os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run(
      [sys.executable, "-c", _KILLED_DURING_SAVE, str(tmp_path)],
      env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
  assert proc.returncode == -9, proc.stderr

  ckpt = Checkpointer(tmp_path, save_every=1)
  step = ckpt.latest_step()
  assert step in (1, 2)
  abstract = {"x": jax.ShapeDtypeStruct(
      (8,) if step == 1 else (4096, 4096), jnp.float32,
      sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))}
  got, data = ckpt.restore(step, abstract)
  assert data == {"step": step}
  if step == 1:
    np.testing.assert_array_equal(np.asarray(got["x"]), np.arange(8))
    # The resumed run reaches step 2 again and must be able to save it.
    assert ckpt.save(2, {"x": jnp.ones(3)}, {"step": 2})
    ckpt.wait()
    assert ckpt.latest_step() == 2
  ckpt.close()


def test_trees_read_from_a_relative_path(tmp_path, monkeypatch):
  """`pretrained.load("runs/x")`, `teacher.init=runs/x`: orbax alone finds no metadata there."""
  from amd_jax import checkpoint
  checkpoint.save_tree(tmp_path / "tree", {"a": np.arange(3, dtype=np.float32)})
  monkeypatch.chdir(tmp_path)
  assert checkpoint.tree_shapes("tree")["a"].shape == (3,)
  np.testing.assert_array_equal(checkpoint.read_tree("tree")["a"], np.arange(3))


def test_a_checkpointer_on_a_relative_path_saves_and_restores(tmp_path, monkeypatch):
  """A relative --workdir: orbax alone refuses it ("Checkpoint path should be absolute")."""
  monkeypatch.chdir(tmp_path)
  state = _state(1)
  ckpt = Checkpointer("runs/x/checkpoints", save_every=1, async_save=False)
  assert ckpt.save(1, state, {})
  got, _ = ckpt.restore(1, _abstract(state))
  ckpt.close()
  _assert_trees_equal(got, state)


def test_reading_a_steps_state_warns_nothing(tmp_path, caplog):
  """orbax warns on every such read that the item has no _CHECKPOINT_METADATA: dropped."""
  from amd_jax import checkpoint
  ckpt = Checkpointer(tmp_path, save_every=1, async_save=False)
  assert ckpt.save(1, _state(), {})
  ckpt.close()
  with caplog.at_level(logging.WARNING):
    checkpoint.tree_shapes(tmp_path / "1" / "state")
    checkpoint.read_tree(tmp_path / "1" / "state")
  assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

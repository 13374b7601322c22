"""Orbax checkpoint round trip of a student TrainState plus JSON metadata."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxkd import parallel
from jaxkd.checkpoint import Checkpointer
from jaxkd.models import get_model
from jaxkd.train import TrainState, create_train_state


def _state(seed, steps=0):
  """A small MLP state with Adam moments, a step count and BN-like stats."""
  model = get_model("mlp", 3, hidden=(8,))
  tx = optax.adam(1e-2)
  state = create_train_state(model, jax.random.key(seed), (4, 4, 1), tx)
  rng = np.random.default_rng(seed)
  state = state.replace(batch_stats={
      "bn": {"mean": jnp.asarray(rng.normal(size=5), jnp.float32),
             "var": jnp.asarray(rng.random(5), jnp.float32)}})
  for _ in range(steps):  # make opt_state and step non-trivial
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.3, state.params)
    state = state.apply_gradients(grads=grads)
  return state


def _assert_trees_equal(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_state_and_meta(tmp_path):
  saved = _state(0, steps=3)
  meta = {"round": 2, "rng": [1, 2, 3], "records": [{"acc": 0.5, "q": 10}],
          "name": "entropy"}
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(2, jax.device_get(saved), meta)
  ckpt.close()

  # A fresh process would build a template from another init: restore must
  # overwrite every leaf with the saved values.
  template = _state(1)
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  assert ckpt.latest_step() == 2
  restored, got_meta = ckpt.restore(template)
  ckpt.close()
  assert isinstance(restored, TrainState)
  assert int(restored.step) == 3
  _assert_trees_equal(restored.params, saved.params)
  _assert_trees_equal(restored.opt_state, saved.opt_state)
  _assert_trees_equal(restored.batch_stats, saved.batch_stats)
  assert got_meta == meta
  # The restored state keeps training like the original.
  g = jax.tree.map(jnp.ones_like, saved.params)
  _assert_trees_equal(restored.apply_gradients(grads=g).params,
                      saved.apply_gradients(grads=g).params)


def test_latest_step_and_max_to_keep(tmp_path):
  ckpt = Checkpointer(str(tmp_path / "c"), max_to_keep=2)
  assert ckpt.latest_step() is None
  states = {s: _state(s) for s in (1, 4, 6)}
  for s, st in states.items():
    ckpt.save(s, jax.device_get(st), {"round": s})
    assert ckpt.latest_step() == s
  # Older step than latest, still kept.
  st, meta = ckpt.restore(_state(9), step=4)
  assert meta == {"round": 4}
  _assert_trees_equal(st.params, states[4].params)
  # Default is the latest.
  st, meta = ckpt.restore(_state(9))
  assert meta == {"round": 6}
  _assert_trees_equal(st.params, states[6].params)
  # Step 1 fell out of max_to_keep=2.
  with pytest.raises(Exception):
    ckpt.restore(_state(9), step=1)
  ckpt.close()


def test_restore_into_replicated_target(tmp_path):
  saved = _state(0, steps=1)
  ckpt = Checkpointer(str(tmp_path / "c"))
  ckpt.save(0, jax.device_get(saved), {})
  mesh = parallel.make_mesh()
  target = parallel.replicate(mesh, _state(2))
  restored, _ = ckpt.restore(target)
  ckpt.close()
  leaf = jax.tree.leaves(restored.params)[0]
  assert leaf.sharding.is_equivalent_to(parallel.replicated_sharding(mesh),
                                        leaf.ndim)
  _assert_trees_equal(restored.params, saved.params)


def test_restore_missing_checkpoint_raises(tmp_path):
  ckpt = Checkpointer(str(tmp_path / "never_written"))
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    ckpt.restore(_state(0))
  ckpt.close()


def test_has_checkpoint_and_corrupt_step_is_one_line(tmp_path):
  import os

  from jaxkd.checkpoint import has_checkpoint
  from jaxkd.validation import JaxkdError
  d = str(tmp_path / "c")
  assert not has_checkpoint(d) and not os.path.exists(d)  # creates nothing
  os.makedirs(os.path.join(d, "3.orbax-checkpoint-tmp-1"))
  assert not has_checkpoint(d)  # an unfinished save is not a checkpoint
  ckpt = Checkpointer(d, recovery="do X")
  ckpt.save(1, jax.device_get(_state(0)), {"round": 1})
  ckpt.close()
  assert has_checkpoint(d)
  for root, _, files in os.walk(os.path.join(d, "1")):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")
  ckpt = Checkpointer(d, recovery="do X")
  with pytest.raises(JaxkdError) as e:
    ckpt.restore(_state(1))
  ckpt.close()
  msg = str(e.value)
  assert "\n" not in msg and os.path.join(d, "1") in msg, msg
  assert msg.endswith("To recover, do X."), msg

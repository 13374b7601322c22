"""Learning Loss for active distillation (a loss-prediction module).

Yoo, Kweon. Learning Loss for Active Learning. CVPR 2019 (code:
github.com/Mephisto405/Learning-Loss-for-Active-Learning).

A small module reads the student's intermediate features and predicts the
student's loss on an input; it is trained jointly with the student, and a
round queries the candidates with the highest predicted loss.

Module (the paper's Figure 2): every stage's feature map is global-average
pooled, passed through FC(width = 128) + ReLU, the stage outputs are
concatenated and one FC gives the scalar predicted loss. The stages are the
student's `feats["maps"]` (LeNet-5: the two post-ReLU conv maps; CIFAR
models: each block group) followed, with `use_embedding` (default), by its
penultimate embedding (LeNet-5's fc2 output; a [B, D] vector needs no
pooling). A model without maps (MLP) uses the embedding alone.

Target loss. In distillation the student's loss on an example is its
per-example training loss against the teacher's paid answer: with the
default loop loss "kd" that is Hinton's T^2 KL(softmax(t / T) ||
softmax(s / T)) at the run's temperature (any registered loss works: it is
evaluated on each row alone).

Loss (the paper's Eq. 2-3, as its code): the batch is split into pairs
(i, B - 1 - i), i < B / 2 (first half against the reversed second half);
with target sign s = +1 if l_i > l_j else -1 (the code's
2 sign(max(l_i - l_j, 0)) - 1),

  L_loss = mean over pairs of max(0, margin - s (l^_i - l^_j)),

margin 1, and the joint objective is mean_b l_b + weight L_loss, weight
(lambda) 1. The targets l are constants (stop_gradient). After
`detach_fraction` of the training steps (the paper: epoch 120 of 200, 0.6)
the features are detached: L_loss trains only the module from then on, so
the student's last steps follow its own loss alone.

The student and the module are stepped by the same optax transformation
(the run's optimizer and schedule); its per-leaf state lives in the student
`TrainState` and in the strategy's checkpointed `extra` ({"params",
"opt_state"} of the module): for the per-leaf optimizers of
`train.OPTIMIZERS` (sgd, adamw) that is exactly one optimizer over the joint
(student, module) params, as the paper's two same-setting SGD optimizers
are. With `retrain` (the default) both restart from
their fixed inits every round, as the student alone does for the other
strategies; when fine-tuning both continue.

Selection: the top-k predicted loss among a uniform random subset of
`subset` = 10000 available candidates (the paper's SUBSET; all of them when
fewer are available).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxkd import parallel, train
from jaxkd.data import sources
from jaxkd.fields import setting
from jaxkd.models import apply_model
from jaxkd.selection.baselines import top_k_available
from jaxkd.selection.registry import (PoolQuery, Strategy,
                                      check_option_ranges, parse_options,
                                      register_strategy)
from jaxkd.validation import JaxkdError, check_finite, check_k, check_rank


@dataclasses.dataclass(frozen=True)
class LearningLossOptions:
  """Options of strategy `learning_loss`
  (`config.strategy_options.learning_loss`): Yoo & Kweon's settings (paper
  Sec. 4.1 and code: MARGIN 1, WEIGHT 1, detach at EPOCHL 120 of 200
  epochs, module width 128, SUBSET 10000)."""
  width: int = setting(128, "Width of the loss-prediction module's FC layer "
                       "per stage (an int >= 1).")
  margin: float = setting(1.0, "Margin of the pairwise ranking loss (>= 0).")
  weight: float = setting(1.0, "Weight (lambda, >= 0) of the ranking loss in "
                          "the joint objective.")
  detach_fraction: float = setting(0.6, "Fraction of the training steps "
                                   "after which the module's input features "
                                   "are detached from the student, in "
                                   "[0, 1].")
  subset: int = setting(10000, "Candidates drawn at random among the "
                        "available ones before taking the top predicted "
                        "loss (an int >= 1).")
  use_embedding: bool = setting(True, "Feed the student's penultimate "
                                "embedding to the module after its feature "
                                "maps.")

  def validate(self) -> "LearningLossOptions":
    check_option_ranges("learning_loss", self, counts=("width", "subset"),
                        nonnegative=("margin", "weight"))
    if not 0.0 <= self.detach_fraction <= 1.0:
      raise JaxkdError(f"learning_loss: detach_fraction must lie in [0, 1], "
                       f"got {self.detach_fraction!r}.")
    return dataclasses.replace(self, use_embedding=bool(self.use_embedding))


class LossPredictionModule(nn.Module):
  """Predicted loss [B] from a sequence of stage features, each [B, H, W, C]
  (global-average pooled) or [B, D]."""
  width: int = 128

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> jax.Array:
    hs = []
    for f in features:
      if f.ndim == 4:
        f = jnp.mean(f, axis=(1, 2))
      f = f.reshape((f.shape[0], -1))
      hs.append(nn.relu(nn.Dense(self.width)(f)))
    return nn.Dense(1)(jnp.concatenate(hs, axis=-1))[:, 0]


def student_stages(feats: Dict[str, Any], use_embedding: bool = True
                   ) -> Tuple[jax.Array, ...]:
  """The features the module reads: the model's maps (+ its embedding)."""
  maps = tuple(feats.get("maps", ()))
  if use_embedding or not maps:
    return maps + (feats["embedding"],)
  return maps


def ranking_loss(pred: jax.Array, target: jax.Array, mask=None,
                 margin: float = 1.0) -> jax.Array:
  """Yoo & Kweon's pair-wise margin ranking loss (see module doc).

  Args:
    pred: [B] predicted losses.
    target: [B] true losses (treated as constants).
    mask: [B] 1 for real rows, which must come first (padding at the end);
      pairs are (i, r - 1 - i), i < r // 2, over the r real rows.
    margin: the margin xi.

  Returns:
    Scalar mean hinge over the r // 2 pairs (0 when r < 2).
  """
  b = pred.shape[0]
  r = b if mask is None else jnp.sum(mask).astype(jnp.int32)
  i = jnp.arange(b)
  j = jnp.clip(r - 1 - i, 0, b - 1)
  valid = i < r // 2
  target = jax.lax.stop_gradient(target)
  sign = jnp.where(target - target[j] > 0, 1.0, -1.0)
  per = jnp.maximum(0.0, margin - sign * (pred - pred[j]))
  return jnp.sum(jnp.where(valid, per, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def per_example_loss(loss_fn, logits, targets, labels) -> jax.Array:
  """[B] loss of every row alone (loss_fn is a masked-mean batch loss)."""
  one = jnp.ones((1,), jnp.float32)
  return jax.vmap(lambda lo, t, y: loss_fn(lo[None], t[None], y[None], one))(
      logits, targets, labels)


def joint_objective(params, loss_params, batch_stats, batch: train.Batch,
                    gate, *, model: nn.Module,
                    module: LossPredictionModule, loss_fn,
                    weight: float = 1.0, margin: float = 1.0,
                    use_embedding: bool = True):
  """mean_b l_b + weight * ranking_loss(l^, l) on one (masked) batch.

  `gate` (scalar): 1 lets the ranking loss's gradient reach the student
  through the features, 0 detaches them (values are the same).

  Returns:
    (total, (new_batch_stats, metrics)) with metrics loss, target_loss,
    ranking_loss.
  """
  variables = {"params": params, "batch_stats": batch_stats}
  (logits, feats), new_stats = apply_model(model, variables, batch.images,
                                           train=True, return_features=True)
  student_loss = loss_fn(logits, batch.targets, batch.labels, batch.mask)
  per = per_example_loss(loss_fn, logits, batch.targets, batch.labels)
  stages = tuple(
      jax.lax.stop_gradient(f) + gate * (f - jax.lax.stop_gradient(f))
      for f in student_stages(feats, use_embedding))
  pred = module.apply(loss_params, stages)
  rank = ranking_loss(pred, per, batch.mask, margin)
  total = student_loss + weight * rank
  return total, (new_stats, {"loss": total, "target_loss": student_loss,
                             "ranking_loss": rank})


def joint_train_step(carry, batch: train.Batch, gate, *, model, module,
                     loss_fn, weight, margin, use_embedding):
  """One step of student and module with the student state's optimizer.

  carry: (student TrainState, module params, module opt_state).
  """
  state, lparams, lopt = carry
  (_, (new_stats, metrics)), (g_s, g_l) = jax.value_and_grad(
      joint_objective, argnums=(0, 1), has_aux=True)(
          state.params, lparams, state.batch_stats, batch, gate, model=model,
          module=module, loss_fn=loss_fn, weight=weight, margin=margin,
          use_embedding=use_embedding)
  state = state.apply_gradients(grads=g_s, batch_stats=new_stats)
  updates, lopt = state.tx.update(g_l, lopt, lparams)
  return (state, optax.apply_updates(lparams, updates), lopt), metrics


@functools.lru_cache(maxsize=None)
def _jitted_joint_step(model, module, loss_fn, mesh, weight, margin,
                       use_embedding):
  rep = parallel.replicated_sharding(mesh)
  dat = parallel.data_sharding(mesh)
  step = functools.partial(joint_train_step, model=model, module=module,
                           loss_fn=loss_fn, weight=weight, margin=margin,
                           use_embedding=use_embedding)
  return jax.jit(step, in_shardings=(rep, train.Batch(dat, dat, dat, dat),
                                     rep),
                 out_shardings=(rep, rep), donate_argnums=(0,))


def detach_gate(t: int, steps: int, detach_fraction: float) -> float:
  """1.0 before step int(detach_fraction * steps), 0.0 from it on."""
  return 1.0 if t < int(detach_fraction * steps) else 0.0


def joint_step_fn(model, module, loss_fn, mesh, *, steps: int,
                  detach_fraction: float, weight: float, margin: float,
                  use_embedding: bool):
  """A `train.fit` step function for the joint (student, module) carry."""
  step = _jitted_joint_step(model, module, loss_fn, mesh, float(weight),
                            float(margin), bool(use_embedding))

  def step_fn(carry, rows, t):
    images, targets, labels = rows
    x, tg, y, mask = parallel.shard_batch(mesh, images, targets, labels)
    gate = jnp.float32(detach_gate(t, steps, detach_fraction))
    return step(carry, train.Batch(x, tg, y, mask), gate)

  return step_fn


@functools.lru_cache(maxsize=None)
def _jitted_predicted_loss(model, module, mesh, use_embedding):
  dat = parallel.data_sharding(mesh)

  def fn(variables, lparams, x):
    (_, feats), _ = apply_model(model, variables, x, train=False,
                                return_features=True)
    return module.apply(lparams, student_stages(feats, use_embedding))

  return jax.jit(fn, in_shardings=(parallel.replicated_sharding(mesh),
                                   parallel.replicated_sharding(mesh), dat),
                 out_shardings=dat)


def predicted_loss(model: nn.Module, module: LossPredictionModule, variables,
                   loss_params, images, *, mesh=None, batch_size: int = 1024,
                   use_embedding: bool = True) -> np.ndarray:
  """Eval-mode predicted losses [N] of `images` [N, H, W, C]."""
  check_rank("images", images, 4)
  check_finite("images", images)
  mesh = mesh or parallel.make_mesh()
  fn = _jitted_predicted_loss(model, module, mesh, bool(use_embedding))
  variables = parallel.replicate(mesh, variables)
  loss_params = parallel.replicate(mesh, loss_params)
  out = []
  for start in range(0, len(images), batch_size):
    chunk = np.asarray(images[start:start + batch_size], np.float32)
    x, _ = parallel.shard_batch(mesh, chunk)
    out.append(np.asarray(fn(variables, loss_params, x))[:len(chunk)])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def candidate_subset(key: jax.Array, available, k: int,
                     subset: int = 10000) -> np.ndarray:
  """[n] bool: the candidates `learning_loss_select` ranks.

  All available points when at most `subset` are available; else the
  max(subset, k) available points of smallest `jax.random.uniform(key,
  (n,))` draw (ties: lowest index). O(n log n) time, O(n) memory.
  """
  available = np.array(available, bool)
  if available.sum() > subset:
    u = np.where(available,
                 np.asarray(jax.random.uniform(key, available.shape)), np.inf)
    keep = np.zeros_like(available)
    keep[np.argsort(u, kind="stable")[:max(subset, k)]] = True
    available = keep
  return available


def learning_loss_select(key: jax.Array, scores, available, k: int,
                         subset: int = 10000) -> np.ndarray:
  """Top-k `scores` among a uniform random subset of `subset` available
  points (all of them when at most `subset` are available); ties: lowest
  index. scores, available: [n]. Returns int32 [k], highest first.

  Only the scores of `candidate_subset(key, available, k, subset)` are
  read (the strategy computes no others). O(n log n) time.
  """
  check_rank("scores", scores, 1)
  check_finite("scores", scores)
  available = np.array(available, bool)
  if len(available) != len(scores):
    raise JaxkdError(f"scores has {len(scores)} rows but available has "
                     f"{len(available)}.")
  k = check_k(k, int(available.sum()), "unqueried pool points")
  keep = candidate_subset(key, available, k, subset)
  return np.asarray(top_k_available(jnp.asarray(scores, jnp.float32),
                                    jnp.asarray(keep), k))


def init_module(model: nn.Module, input_shape, module: LossPredictionModule,
                key: jax.Array, use_embedding: bool = True):
  """Module params for `model`'s stage shapes on inputs [H, W, C]."""
  return _module_init(model, tuple(input_shape), module,
                      bool(use_embedding))(key)


@functools.lru_cache(maxsize=None)
def _module_init(model, input_shape, module, use_embedding):
  """One compiled init per (model, input shape, module)."""
  x = jax.ShapeDtypeStruct((1,) + input_shape, jnp.float32)

  def feats(x):
    v = model.init(jax.random.key(0), x, train=False)
    return model.apply(v, x, train=False, return_features=True)[1]

  stages = [jnp.zeros(s.shape, s.dtype) for s in
            student_stages(jax.eval_shape(feats, x), use_embedding)]
  return jax.jit(lambda key: module.init(key, stages))


class LearningLossStrategy(Strategy):
  """`learning_loss`: Yoo & Kweon's loss-prediction module, trained jointly
  with the student (training hook); queries the top predicted loss.
  Options (config.strategy_options.learning_loss): `LearningLossOptions`."""
  needs = frozenset()
  description = ("Learning Loss: top-k loss predicted by a module trained "
                 "jointly with the student")
  options = LearningLossOptions

  def _setup(self, ctx):
    o = ctx.options or parse_options(self, ctx.settings.strategy_options)
    return (o, LossPredictionModule(o.width),
            train.student_optimizer(ctx.settings))

  def _fresh_extra(self, ctx, o, module, tx):
    key = jax.random.fold_in(jax.random.key(ctx.settings.seed), 7)
    params = init_module(ctx.student, ctx.input_shape, module, key,
                         o.use_embedding)
    return {"params": params, "opt_state": tx.init(params)}

  def init_extra(self, ctx):
    o, module, tx = self._setup(ctx)
    return self._fresh_extra(ctx, o, module, tx)

  def train(self, ctx, images, targets, *, seed, state, extra):
    o, module, tx = self._setup(ctx)
    s = ctx.settings
    if state is None:   # retrain: student and module from their fixed inits
      state = train.create_train_state(ctx.student, jax.random.key(s.seed),
                                       ctx.input_shape, tx)
      extra = self._fresh_extra(ctx, o, module, tx)
    mesh = ctx.mesh or parallel.make_mesh()
    step_fn = joint_step_fn(
        ctx.student, module, train.make_loss_fn(s.loss,
                                                temperature=s.temperature),
        mesh, steps=s.train_steps, detach_fraction=o.detach_fraction,
        weight=o.weight, margin=o.margin, use_embedding=o.use_embedding)
    carry = (state, extra["params"], extra["opt_state"])
    carry, _ = train.fit(ctx.student, carry, images, targets,
                         steps=s.train_steps, batch_size=s.batch_size,
                         seed=seed, step_fn=step_fn, mesh=mesh,
                         progress=ctx.progress, desc=f"r{ctx.round}")
    state, params, opt_state = carry
    return state, {"params": params, "opt_state": opt_state}

  def select(self, key, ctx, inputs, k, **options):
    """Top-k predicted loss of `candidate_subset`: only those candidates
    are run through the student and the module (O(subset) forwards, not
    O(n)); the picks are those of `learning_loss_select` on every
    candidate's score."""
    o = parse_options(self, options)
    available = np.asarray(inputs.available, bool)
    k = check_k(k, int(available.sum()), "unqueried pool points")
    keep = candidate_subset(key, available, k, o.subset)
    images = ctx.candidate_images
    rows = None
    if available.sum() > o.subset:  # a subset was drawn: score it alone
      rows = np.flatnonzero(keep)
      images = sources.take(images, rows)
    scores = predicted_loss(ctx.student, LossPredictionModule(o.width),
                            ctx.state.variables, ctx.extra["params"],
                            images, mesh=ctx.mesh,
                            use_embedding=o.use_embedding)
    if rows is not None:
      full = np.zeros(len(keep), np.float32)
      full[rows] = scores
      scores = full
    return PoolQuery(learning_loss_select(key, scores, available, k,
                                          subset=o.subset))


register_strategy("learning_loss", LearningLossStrategy)

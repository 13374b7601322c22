"""Discriminative Active Learning (DAL) on the student's embeddings.

Gissin, Shalev-Shwartz. Discriminative Active Learning. arXiv:1907.06347,
2019 (code: github.com/dsgissin/DiscriminativeActiveLearning).

A binary classifier learns to tell labelled (already paid) points from
unlabelled ones in the student's penultimate embedding; the points it is
most confident are unlabelled are the ones the labelled set represents
worst, and are queried. The query of k points is chosen in sub-batches:
after each sub-batch the chosen points count as labelled and the classifier
is retrained from scratch, so one batch does not pile up in one region.

As in the authors' `DiscriminativeRepresentationSampling` (the variant they
report best): 20 sub-batches; the unlabelled side of each fit is a uniform
random subset of at most 10 x |labelled| available points, redrawn for
every sub-batch, and the sub-batch is the top of that subset; the
classifier is an MLP with three hidden ReLU layers of width 256 (20 for
inputs narrower than 30), class-balanced cross-entropy, Adam, stopped once
its training accuracy reaches 0.98. Here the fit is full batch (the
authors' batch of 1024 is the whole set for our pool sizes); k points are
split into `sub_batches` near-equal parts (the authors' int(k / s)-sized
parts plus a remainder part would loop forever for k < s). `hidden=()`
with `solver="lbfgs"` is L2-regularised logistic regression solved to
convergence (the same optimum as scikit-learn's LogisticRegression with
C = 1 / (l2 n) and class_weight="balanced").

Labelled points are every pool point paid in earlier rounds: the initial
set L (embedded with the current student) and the candidates no longer
available.

Scale. A fit costs O(steps x rows x width^2) for rows = labelled +
unlabelled subset, whatever the pool size n; the rest of a sub-batch is
O(n log n) (the subset's random order). On pools of more than 8,192
points (labelled + candidates) the fit and the scoring run on those rows
alone (gathered, padded to a multiple of 2,048 rows with rows of neither
class, which the masked objective and accuracy ignore): the same
objective as the masked full-pool form kept for smaller pools, so no
[n, width] activations per step, and the stopping accuracy is read off
each Adam step's own forward pass (`discriminator_fit(one_forward=True)`).
`max_train` (default 8,192) caps the rows of each fit: above it both sides
are subsampled uniformly in proportion (labelled max(1, floor(cap x L /
(L + U))), unlabelled the rest, at least the sub-batch), an approximation
that bounds a query's cost at O(sub_batches x steps x max_train x width^2
+ sub_batches x n log n); below the cap (every fit of the authors' setting
up to ~740 labelled points at ratio 10) nothing changes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxkd.fields import setting
from jaxkd.selection.baselines import random_subset
from jaxkd.selection.registry import (PoolQuery, Strategy,
                                      check_option_ranges, parse_options,
                                      register_strategy)
from jaxkd.validation import (JaxkdError, check_features, check_finite,
                              check_k, check_rank, is_int)


@dataclasses.dataclass(frozen=True)
class DiscriminativeOptions:
  """Options of strategy `discriminative`
  (`config.strategy_options.discriminative`): the authors' defaults
  (query_methods.py / models.py, see the module docstring)."""
  sub_batches: int = setting(20, "Sub-batches a query is chosen in, the "
                             "discriminator refitted before each (an int "
                             ">= 1).")
  unlabelled_ratio: float = setting(10.0, "Unlabelled points per labelled "
                                    "one in each fit, drawn at random "
                                    "(>= 0; 0: every available point).")
  hidden: Optional[Tuple[int, ...]] = setting(
      None, "Hidden widths of the discriminator MLP ((): logistic "
      "regression); None: 3 x 256, or 3 x 20 for inputs narrower than 30.")
  solver: str = setting("adam", "Discriminator fit: 'adam' (full batch, "
                        "stopped at stop_accuracy) or 'lbfgs' (to "
                        "convergence).")
  steps: int = setting(500, "Iteration cap of each discriminator fit (an int "
                       ">= 1).")
  learning_rate: float = setting(3e-4, "Adam learning rate of the "
                                 "discriminator (> 0).")
  l2: float = setting(0.0, "L2 weight of the discriminator's parameters "
                      "(>= 0).")
  stop_accuracy: float = setting(0.98, "Adam stops once the discriminator's "
                                 "training accuracy reaches this.")
  max_train: Optional[int] = setting(
      8192, "Rows (labelled + unlabelled) of each discriminator fit; above "
      "it both sides are subsampled in proportion (an int >= 2; None: no "
      "cap).")

  def validate(self) -> "DiscriminativeOptions":
    check_option_ranges("discriminative", self,
                        counts=("sub_batches", "steps"),
                        nonnegative=("unlabelled_ratio", "l2"))
    if self.max_train is not None and (not is_int(self.max_train)
                                       or self.max_train < 2):
      raise JaxkdError(f"discriminative: max_train must be None or an int "
                       f">= 2, got {self.max_train!r}.")
    if not np.isfinite(self.learning_rate) or self.learning_rate <= 0:
      raise JaxkdError(f"discriminative: learning_rate must be > 0, got "
                       f"{self.learning_rate!r}.")
    if self.solver not in ("adam", "lbfgs"):
      raise JaxkdError(f"discriminative: solver must be 'adam' or 'lbfgs', "
                       f"got {self.solver!r}.")
    if self.hidden is None:
      return self
    hidden = tuple(self.hidden)
    if any(not is_int(h) or h < 1 for h in hidden):
      raise JaxkdError(f"discriminative: hidden must be positive ints, got "
                       f"{hidden!r}.")
    return dataclasses.replace(self, hidden=hidden)


class Discriminator(nn.Module):
  """MLP labelled-vs-unlabelled classifier: [n, D] -> logit [n] of the
  probability that a point is unlabelled (`hidden=()`: logistic)."""
  hidden: Sequence[int] = (256, 256, 256)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(1)(x)[:, 0]


def default_hidden(dim: int) -> Tuple[int, ...]:
  """The authors' width rule: 3 x 20 for inputs narrower than 30, else
  3 x 256."""
  return (20,) * 3 if dim < 30 else (256,) * 3


def discriminator_objective(params, module: Discriminator, x: jax.Array,
                            unlabelled: jax.Array, labelled: jax.Array,
                            l2: float = 0.0) -> jax.Array:
  """Class-balanced logistic loss plus 0.5 l2 ||kernels||^2.

  0.5 (mean over labelled rows of -log(1 - p) + mean over unlabelled rows
  of -log p), p = sigmoid(logit). Rows in neither mask are ignored.

  Args:
    x: [n, D] features; unlabelled, labelled: [n] bool, disjoint.
  """
  return _objective_of_logits(params, module.apply(params, x), unlabelled,
                              labelled, l2)


def _objective_of_logits(params, logits, unlabelled, labelled, l2):
  """`discriminator_objective` given the logits [n] of `params`."""
  y = unlabelled.astype(logits.dtype)
  per = optax.sigmoid_binary_cross_entropy(logits, y)
  nu = jnp.maximum(jnp.sum(unlabelled), 1)
  nl = jnp.maximum(jnp.sum(labelled), 1)
  data = 0.5 * (jnp.sum(jnp.where(unlabelled, per, 0.0)) / nu
                + jnp.sum(jnp.where(labelled, per, 0.0)) / nl)
  kernels = [p for path, p in jax.tree_util.tree_leaves_with_path(params)
             if "kernel" in jax.tree_util.keystr(path)]
  return data + 0.5 * l2 * sum(jnp.sum(k * k) for k in kernels)


@functools.partial(jax.jit, static_argnames=("hidden", "solver", "steps",
                                             "one_forward"))
def _fit(key, x, unlabelled, labelled, l2, learning_rate, stop_accuracy, *,
         hidden, solver, steps, one_forward=False):
  module = Discriminator(hidden)
  params = module.init(key, x[:1])
  fun = functools.partial(discriminator_objective, module=module, x=x,
                          unlabelled=unlabelled, labelled=labelled, l2=l2)
  active = unlabelled | labelled

  if solver == "lbfgs":
    tx = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def body(carry):
      params, state, i, _ = carry
      value, grad = value_and_grad(params, state=state)
      updates, state = tx.update(grad, state, params, value=value, grad=grad,
                                 value_fn=fun)
      params = optax.apply_updates(params, updates)
      return params, state, i + 1, optax.tree.norm(grad)

    def cond(carry):
      return (carry[2] < steps) & (carry[3] > 1e-7)
    init = (params, tx.init(params), jnp.zeros((), jnp.int32),
            jnp.asarray(jnp.inf, jnp.float32))
  elif not one_forward:
    tx = optax.adam(learning_rate)

    def accuracy(params):
      right = (module.apply(params, x) > 0) == unlabelled
      return jnp.sum(right & active) / jnp.maximum(jnp.sum(active), 1)

    def body(carry):
      params, state, i, _ = carry
      grad = jax.grad(fun)(params)
      updates, state = tx.update(grad, state, params)
      params = optax.apply_updates(params, updates)
      return params, state, i + 1, accuracy(params)

    def cond(carry):
      return (carry[2] < steps) & (carry[3] < stop_accuracy)

    init = (params, tx.init(params), jnp.zeros((), jnp.int32),
            jnp.asarray(accuracy(params), jnp.float32))
  else:
    # The same iterates and stopping step, the accuracy of the current
    # params read off the logits of that step's own forward pass (one
    # forward per step, not two; equal up to float rounding).
    tx = optax.adam(learning_rate)

    def loss_and_logits(params):
      logits = module.apply(params, x)
      return _objective_of_logits(params, logits, unlabelled, labelled,
                                  l2), logits

    def body(carry):
      params, state, i, _ = carry
      grad, logits = jax.grad(loss_and_logits, has_aux=True)(params)
      right = (logits > 0) == unlabelled
      acc = jnp.sum(right & active) / jnp.maximum(jnp.sum(active), 1)
      done = acc >= stop_accuracy
      updates, new_state = tx.update(grad, state, params)
      keep = lambda old, new: jnp.where(done, old, new)
      params = jax.tree.map(keep, params, optax.apply_updates(params,
                                                               updates))
      state = jax.tree.map(keep, state, new_state)
      return params, state, i + jnp.where(done, 0, 1), done

    def cond(carry):
      return (carry[2] < steps) & ~carry[3]

    init = (params, tx.init(params), jnp.zeros((), jnp.int32),
            jnp.zeros((), bool))
  params, _, iters, _ = jax.lax.while_loop(cond, body, init)
  return params, iters


def discriminator_fit(key: jax.Array, x, unlabelled, labelled, *,
                      hidden: Optional[Sequence[int]] = None,
                      solver: str = "adam", steps: int = 500,
                      learning_rate: float = 3e-4, l2: float = 0.0,
                      stop_accuracy: Optional[float] = 0.98,
                      one_forward: bool = False):
  """Trains a `Discriminator` from scratch on full batches.

  O(steps n width^2) time, O(n width) memory.

  Args:
    key: init key.
    x: [n, D] features.
    unlabelled, labelled: [n] bool, disjoint, each with at least one row.
    hidden: hidden widths (default: `default_hidden(D)`; () = logistic).
    solver: "adam" (stopped once the training accuracy reaches
      `stop_accuracy`, or after `steps`) or "lbfgs" (to convergence, at most
      `steps` iterations).
    one_forward: Adam only: read the stopping accuracy off each step's own
      forward pass instead of a second one (about a quarter less work; the
      same iterates and stop up to float rounding, so not bit for bit the
      default). Used on the gathered fits of large pools.

  Returns:
    (params, iterations run).
  """
  check_features("x", x, 2)
  check_finite("x", x)
  unlabelled, labelled = np.asarray(unlabelled, bool), np.asarray(labelled,
                                                                  bool)
  for name, m in (("unlabelled", unlabelled), ("labelled", labelled)):
    check_rank(name, m, 1)
    if len(m) != len(x):
      raise JaxkdError(f"{name} has {len(m)} rows but x has {len(x)}.")
    if not m.any():
      raise JaxkdError(f"the discriminator needs at least one {name} point.")
  if (unlabelled & labelled).any():
    raise JaxkdError("a point cannot be both labelled and unlabelled.")
  hidden = default_hidden(x.shape[1]) if hidden is None else tuple(hidden)
  params, iters = _fit(key, jnp.asarray(x, jnp.float32),
                       jnp.asarray(unlabelled), jnp.asarray(labelled),
                       float(l2), float(learning_rate),
                       2.0 if stop_accuracy is None else float(stop_accuracy),
                       hidden=tuple(int(h) for h in hidden), solver=solver,
                       steps=int(steps), one_forward=bool(one_forward))
  return params, int(iters)


@functools.partial(jax.jit, static_argnames=("hidden",))
def _scores(params, x, *, hidden):
  return Discriminator(hidden).apply(params, x)


def discriminator_scores(params, x, hidden: Sequence[int]) -> np.ndarray:
  """Logits [n] of P(unlabelled) of a fitted discriminator."""
  return np.asarray(_scores(params, jnp.asarray(x, jnp.float32),
                            hidden=tuple(hidden)))


def sub_batch_sizes(k: int, sub_batches: int) -> list[int]:
  """k split into min(sub_batches, k) near-equal parts, larger first."""
  s = min(sub_batches, k)
  return [k // s + (i < k % s) for i in range(s)]


# Pools (labelled + candidates) above this many rows fit and score on the
# gathered rows of each sub-batch; smaller ones on every row with masks.
_GATHER_ROWS = 1 << 13
# Gathered fits are padded to a multiple of this many rows (few shapes).
_PAD_ROWS = 2048


def _capped_sizes(n_lab: int, take: int, size: int,
                  max_train: Optional[int]) -> Tuple[int, int]:
  """(labelled rows, unlabelled rows) of one fit under the `max_train` cap."""
  if max_train is None or n_lab + take <= max_train:
    return n_lab, take
  lab = max(1, int(max_train * n_lab // (n_lab + take)))
  return lab, min(take, max(size, max_train - lab))


def _padded(x):
  """x [r, D] followed by zero rows up to a multiple of `_PAD_ROWS`."""
  pad = -len(x) % _PAD_ROWS
  return np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)])


def discriminative_select(key: jax.Array, labelled_features, features,
                          available, k: int, **options) -> np.ndarray:
  """DAL picks: k available rows of `features`, sub-batch by sub-batch.

  For each sub-batch of `sub_batch_sizes(k, sub_batches)`: the unlabelled
  side is a uniform random subset of min(max(size, unlabelled_ratio x
  |labelled|), |available|) available rows (`unlabelled_ratio=0`: every
  available row); a fresh discriminator is fitted (`discriminator_fit`)
  labelled = `labelled_features` plus every unavailable or already picked
  row vs that subset; the `size` subset rows of highest P(unlabelled) are
  picked (ties: lowest index), in that order, and become labelled. Above
  `max_train` rows per fit both sides are subsampled (see "Scale" in the
  module docstring: the unlabelled side keeps the first rows of the same
  random order, the labelled side is a `baselines.random_subset`).

  Cost per sub-batch: O(steps x r x width^2) for the fit on r <=
  max_train rows, O(n log n) for the random order; memory O(r width +
  n) on pools of more than 8,192 rows (gathered rows), O((m + n) width)
  below.

  Args:
    key: PRNG key (subsets and inits; fold_in by sub-batch).
    labelled_features: [m, D] embeddings of paid points outside `features`.
    features: [n, D] embeddings of the candidates.
    available: [n] bool, candidates not paid yet.
    k: number of picks.
    **options: `DiscriminativeOptions` fields (sub_batches,
      unlabelled_ratio, hidden, solver, steps, learning_rate, l2,
      stop_accuracy, max_train); missing ones at their defaults.

  Returns:
    int32 [k] positions in `features`, in the order picked.
  """
  o = parse_options(DiscriminativeOptions, options, name="discriminative")
  check_features("features", features, 2)
  check_finite("features", features)
  labelled_features = np.asarray(labelled_features, np.float32).reshape(
      -1, np.shape(features)[1])
  check_finite("labelled_features", labelled_features)
  available = np.array(available, bool)
  check_rank("available", available, 1)
  if len(available) != len(features):
    raise JaxkdError(f"available has {len(available)} rows but features has "
                     f"{len(features)}.")
  k = check_k(k, int(available.sum()), "unqueried pool points")
  m, n = len(labelled_features), len(features)
  if m + int((~available).sum()) == 0:
    raise JaxkdError("discriminative needs at least one paid (labelled) "
                     "point to tell the unlabelled ones from.")
  features = np.asarray(features)
  gather = m + n > _GATHER_ROWS
  if not gather:
    x = np.concatenate([labelled_features, features.astype(np.float32)])
  hidden = default_hidden(features.shape[1]) if o.hidden is None \
      else o.hidden
  fit_opts = dict(hidden=hidden, solver=o.solver, steps=o.steps,
                  learning_rate=o.learning_rate, l2=o.l2,
                  stop_accuracy=o.stop_accuracy)
  picks = []
  for s, size in enumerate(sub_batch_sizes(k, o.sub_batches)):
    k_sub, k_init = jax.random.split(jax.random.fold_in(key, s))
    n_lab = m + int((~available).sum())
    n_avail = int(available.sum())
    want = n_avail if o.unlabelled_ratio == 0 else int(
        o.unlabelled_ratio * n_lab)
    take = min(max(size, want), n_avail)
    n_lab_fit, take = _capped_sizes(n_lab, take, size, o.max_train)
    if take == n_avail:
      sample = available.copy()
    else:
      u = np.where(available, np.asarray(jax.random.uniform(k_sub, (n,))),
                   np.inf)
      sample = np.zeros(n, bool)
      sample[np.argsort(u, kind="stable")[:take]] = True
    lab = np.concatenate([np.ones(m, bool), ~available])
    if n_lab_fit < n_lab:
      lab = np.zeros_like(lab)
      lab[random_subset(jax.random.fold_in(k_sub, 1),
                        np.concatenate([np.ones(m, bool), ~available]),
                        n_lab_fit)] = True
    if gather or n_lab_fit < n_lab:
      unl_rows = np.flatnonzero(sample)
      lab_rows = np.flatnonzero(lab)
      ext, pool = lab_rows[lab_rows < m], lab_rows[lab_rows >= m] - m
      rows_x = np.concatenate([
          labelled_features[ext],
          np.asarray(features[pool], np.float32),
          np.asarray(features[unl_rows], np.float32)])
      n_l, n_u = len(ext) + len(pool), len(unl_rows)
      rows_x = _padded(rows_x)
      is_lab, is_unl = np.zeros((2, len(rows_x)), bool)
      is_lab[:n_l] = True
      is_unl[n_l:n_l + n_u] = True
      params, _ = discriminator_fit(k_init, rows_x, is_unl, is_lab,
                                    one_forward=True, **fit_opts)
      score = discriminator_scores(params, _padded(rows_x[n_l:n_l + n_u]),
                                   hidden)[:n_u]
      chosen = unl_rows[np.argsort(-score, kind="stable")[:size]]
    else:
      unl = np.concatenate([np.zeros(m, bool), sample])
      params, _ = discriminator_fit(k_init, x, unl, lab, **fit_opts)
      score = discriminator_scores(params, x[m:], hidden)
      score = np.where(sample, score, -np.inf)
      chosen = np.argsort(-score, kind="stable")[:size]
    picks.extend(chosen.tolist())
    available[chosen] = False
  return np.asarray(picks, np.int32)


class DiscriminativeStrategy(Strategy):
  """`discriminative`: DAL on the student's embeddings (see module doc).
  Options (config.strategy_options.discriminative):
  `DiscriminativeOptions`."""
  needs = frozenset({"embeddings"})
  description = ("Discriminative AL: labelled-vs-unlabelled classifier on "
                 "student embeddings, in sub-batches")
  options = DiscriminativeOptions

  def select(self, key, ctx, inputs, k, **options):
    paid = np.asarray(ctx.oracle.queried_indices(max_round=ctx.round - 1))
    outside = np.setdiff1d(paid, ctx.candidate_indices)
    if len(outside):
      _, labelled = ctx.predict(ctx.state.variables,
                                ctx.oracle.pool_images[outside],
                                return_embeddings=True)
    else:
      labelled = np.zeros((0, np.shape(inputs.embeddings)[1]), np.float32)
    return PoolQuery(discriminative_select(
        key, labelled, inputs.embeddings, inputs.available, k, **options))


register_strategy("discriminative", DiscriminativeStrategy)

"""UNIX: computation-efficient KD via uncertainty-aware mixup.

Per batch of N images, one jitted, data-parallel step does:

1. student forward in eval mode, no gradient -> per-image uncertainty
   (entropy by default; "confidence" = -max p; "margin" = -(p1 - p2));
2. sort descending (rank i = 0 is the most uncertain image);
3. draw a random permutation of the batch as mixing partners and one
   lam ~ Beta(alpha, alpha);
4. mix  x_i = (1 - c_i lam) x_sorted[i] + c_i lam x_partner[i]  with the
   correction factor  c_i = sigmoid(w (i + 1/2 - b) / N);
5. keep only the first k mixed images (the k most uncertain), run the teacher
   on them and the student forward + backward with the KD loss (T = 4),
   optionally plus ce_weight CE with the teacher's argmax as label (labels
   come only from the teacher on the mixed images) and an AT or SP term.

Choice of b. c_i < 1/2 exactly for the b most uncertain images (the half
offset puts the sigmoid's centre between ranks b - 1 and b), so uncertain
images get mild mixup and stay close to themselves, confident images are
mixed strongly. The default b = N / 2 is the authors' released setting
(b = 32 for N = 64, k = 48); with w = 1000 the factor is a hard step (no mixup
for the top b, full lam for ranks b..k-1), with w = 10 it is smooth. This is
the issue's `sigmoid(w (rank - b) / N)` with b shifted by one half.

Sorting and top-k are global over the batch even though the batch is sharded
over the ("data",) mesh: XLA gathers the [N] scores, sorts, and the k kept
images are re-sharded for the teacher and student passes. Batches that do not
divide the device count are zero-padded; padded rows get uncertainty -inf and
are excluded from the partner permutation, so they are never kept or mixed
in. k is padded up to a multiple of the device count with masked rows (they
carry no loss; BatchNorm batch statistics in train mode do see them, as in
`jaxkd.train`).

This module is the method's math: config, correction factor, mixing,
selection and the jitted step (uncertainty scores are shared with the pool
strategies in `jaxkd.scores`). Training goes through `jaxkd.train.fit`:
`unix_step_fn` is its step function and `unix_fit` the call; the passes each
step costs are counted in `jaxkd.cost` (`unix_step_counts`, `CostCounter`).

Student inputs. The student is trained on standardized images,
(x - mean) / std per channel over the train split (`standardized`), as the
paper's code normalizes CIFAR before both networks; the teacher sees the
images as given. On raw [0, 1] digits every first-layer pre-activation of a
ReLU student is w . x + b with x >= 0: the first steps sit on a plateau and
escape it abruptly near the end of warm-up, and the gradient spike of that
escape, carried on by momentum, pushes a channel's kernel and bias negative
for every input at once. A LeNet-5/2 has 3 such channels; with all of them
dead it stays at the uniform output. Centred inputs remove both.

Ablations of the paper are `UnixConfig` switches (`method_config` names them):
plain KD (all N, no student pass), Random+KD (random k of N, no mixup),
uncertainty without mixup, mixup without uncertainty (random order),
non-adaptive mixup (c = 1) and w in {1, 10, 1000}.

References:
  Xu, Liu, Loy. Computation-Efficient Knowledge Distillation via
  Uncertainty-Aware Mixup, arXiv:2012.09413 (Pattern Recognition 2023).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxkd import losses, parallel, train
from jaxkd.cost import CostCounter
from jaxkd.fields import setting
from jaxkd.cost import unix_step_counts as step_counts  # noqa: F401
from jaxkd.models import apply_model
from jaxkd.scores import SCORE_KINDS, uncertainty_scores  # noqa: F401
from jaxkd.train import TrainState
from jaxkd.validation import JaxkdError, check_finite, check_rank

ORDER_KINDS = SCORE_KINDS + ("random", "none")
FEATURE_LOSSES = ("at", "sp")
_DEFAULT_FEATURE_WEIGHT = {"at": 1000.0, "sp": 3000.0}


@dataclasses.dataclass(frozen=True)
class UnixConfig:
  """Hyperparameters of one UNIX step (hashable, static under jit); each
  field's meaning is declared with it."""
  k: int = setting(48, "Images kept per step (teacher forward, student "
                   "forward + backward).")
  uncertainty: str = setting(
      "entropy", "Ranking of the batch: entropy, confidence (-max p) or "
      "margin (-(p1 - p2)) need a student forward pass; random (a random "
      "order) and none (the given order) do not.")
  mixup: bool = setting(True, "Mix each kept image with a random partner.")
  adaptive: bool = setting(True, "Use the correction factor c_i; False sets "
                           "c = 1 (non-adaptive mixup).")
  w: float = setting(10.0, "Slope of the correction factor (> 0).")
  b: Optional[float] = setting(None, "Ranks below b get mild mixup "
                               "(c < 1/2); None = N / 2.")
  alpha: float = setting(1.0, "Beta(alpha, alpha) of the mixup weight lam "
                         "(> 0).")
  temperature: float = setting(4.0, "KD temperature T.")
  kd_weight: float = setting(1.0, "Weight of the T^2-scaled KD term.")
  ce_weight: float = setting(0.0, "Weight of CE on the teacher's argmax.")
  feature_loss: Optional[str] = setting(
      None, "None, 'at' (attention transfer on all matched maps) or 'sp' "
      "(similarity preserving on the last map).")
  feature_weight: Optional[float] = setting(
      None, "Weight of the feature term; None = 1000 (AT) or 3000 (SP), as "
      "in the paper.")

  @property
  def needs_student_pass(self) -> bool:
    return self.uncertainty in SCORE_KINDS

  @property
  def resolved_feature_weight(self) -> float:
    if self.feature_loss is None:
      return 0.0
    if self.feature_weight is None:
      return _DEFAULT_FEATURE_WEIGHT[self.feature_loss]
    return float(self.feature_weight)

  def validate(self, batch_size: Optional[int] = None) -> "UnixConfig":
    """Raises JaxkdError on a bad setting; `batch_size` is N."""
    if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)):
      raise JaxkdError(f"k must be an int, got {self.k!r}.")
    if self.k <= 0:
      raise JaxkdError(f"k must be positive, got {self.k}.")
    if batch_size is not None and self.k > batch_size:
      raise JaxkdError(
          f"k={self.k} is larger than the batch size N={batch_size}.")
    if self.uncertainty not in ORDER_KINDS:
      raise JaxkdError(f"Unknown uncertainty {self.uncertainty!r}; use one of "
                       f"{', '.join(ORDER_KINDS)}.")
    if not (self.w > 0 and math.isfinite(self.w)):
      raise JaxkdError(f"w must be > 0, got {self.w}.")
    if not (self.alpha > 0 and math.isfinite(self.alpha)):
      raise JaxkdError(f"alpha must be > 0, got {self.alpha}.")
    if self.b is not None and not math.isfinite(self.b):
      raise JaxkdError(f"b must be finite, got {self.b}.")
    if not self.temperature > 0:
      raise JaxkdError(f"temperature must be > 0, got {self.temperature}.")
    if self.kd_weight < 0 or self.ce_weight < 0:
      raise JaxkdError("kd_weight and ce_weight must be >= 0, got "
                       f"{self.kd_weight} and {self.ce_weight}.")
    if self.feature_loss is not None and self.feature_loss not in FEATURE_LOSSES:
      raise JaxkdError(f"Unknown feature_loss {self.feature_loss!r}; use None, "
                       "'at' or 'sp'.")
    if self.feature_weight is not None and self.feature_weight < 0:
      raise JaxkdError(
          f"feature_weight must be >= 0, got {self.feature_weight}.")
    return self


METHODS: Dict[str, Dict[str, Any]] = {
    "kd": dict(uncertainty="none", mixup=False),
    "random_kd": dict(uncertainty="random", mixup=False),
    "uncertainty": dict(uncertainty="entropy", mixup=False),
    "mixup": dict(uncertainty="random", mixup=True),
    "non_adaptive": dict(uncertainty="entropy", mixup=True, adaptive=False),
    "unix": dict(uncertainty="entropy", mixup=True),
}


def method_config(method: str, *, batch_size: int, k: int,
                  **overrides: Any) -> UnixConfig:
  """The paper's named settings. "kd" keeps all N (k is ignored).

  Args:
    method: one of `METHODS`: kd, random_kd, uncertainty (no mixup), mixup
      (no uncertainty), non_adaptive (c = 1), unix.
    batch_size: N.
    k: images kept per batch by the selective methods.
    **overrides: further `UnixConfig` fields (w, alpha, ce_weight, ...).
  """
  if method not in METHODS:
    raise JaxkdError(
        f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
  fields = dict(METHODS[method], k=batch_size if method == "kd" else k)
  fields.update(overrides)
  return UnixConfig(**fields).validate(batch_size)


# -------------------------------------------------------- student inputs ---


class Standardized(nn.Module):
  """`model` applied to (x - mean) / std, per channel (an affine map of the
  input, so mixing raw images equals mixing standardized ones). Variables
  are `model`'s, under "model"."""
  model: nn.Module
  mean: Tuple[float, ...] = (0.0,)
  std: Tuple[float, ...] = (1.0,)

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  def __call__(self, x, train: bool = False, return_features: bool = False):
    x = (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)
    return self.model(x, train=train, return_features=return_features)


def standardized(model: nn.Module, images: np.ndarray) -> Standardized:
  """`model` on inputs standardized with the per-channel mean and std of
  `images` [N, H, W, C] (a channel with std 0 is only centred)."""
  check_rank("images", images, 4)
  x = np.asarray(images, np.float64)
  mean = x.mean(axis=(0, 1, 2))
  std = x.std(axis=(0, 1, 2))
  std = np.where(std > 0, std, 1.0)
  return Standardized(model, tuple(float(v) for v in mean),
                      tuple(float(v) for v in std))


# ------------------------------------------------------------ pure parts ---


def correction_factor(num_ranks: int, batch_size: int, *, w: float,
                      b: Optional[float] = None) -> jax.Array:
  """c_i = sigmoid(w (i + 1/2 - b) / N) for ranks i = 0..num_ranks-1.

  Args:
    num_ranks: how many leading ranks to return (e.g. k).
    batch_size: N (the real batch size, padding excluded).
    w: slope (> 0); large w gives a step at b.
    b: number of most-uncertain ranks with c < 1/2; None means N / 2.

  Returns:
    [num_ranks] float32 in (0, 1), increasing in i.
  """
  b = batch_size / 2.0 if b is None else b
  i = jnp.arange(num_ranks, dtype=jnp.float32)
  return jax.nn.sigmoid(w * (i + 0.5 - b) / batch_size)


def mix_images(x_sorted: jax.Array, x_partner: jax.Array, lam: jax.Array,
               c: jax.Array) -> jax.Array:
  """x = (1 - c lam) x_sorted + c lam x_partner.

  Args:
    x_sorted: [K, H, W, C] images in uncertainty order.
    x_partner: [K, H, W, C] their mixing partners.
    lam: scalar mixing weight.
    c: [K] correction factors.
  """
  m = (c * lam).astype(x_sorted.dtype).reshape((-1,) + (1,) * (x_sorted.ndim - 1))
  return (1 - m) * x_sorted + m * x_partner


def select_and_mix(key: jax.Array, images: jax.Array, scores: jax.Array,
                   n: int, k_pad: int, config: UnixConfig):
  """Sort by uncertainty, pick partners, mix, keep the first k_pad.

  Args:
    key: PRNG key (partners, lam).
    images: [N_pad, H, W, C] batch; rows >= n are padding.
    scores: [N_pad] uncertainty (larger = kept first); padded rows ignored.
    n: number of real rows (static).
    k_pad: kept rows returned (>= config.k; rows >= k are masked).
    config: the step's `UnixConfig`.

  Returns:
    (mixed [k_pad, H, W, C], kept_mask [k_pad] float32, info) with info
    holding "selected" and "partners" (int32 [k_pad] batch indices), "lam"
    and "correction" [k_pad].
  """
  n_pad = images.shape[0]
  valid = jnp.arange(n_pad) < n
  key_perm, key_lam = jax.random.split(key)
  scores = jnp.where(valid, scores, -jnp.inf)
  order = jnp.argsort(-scores, stable=True)        # descending, padding last
  u = _pad_to(jax.random.uniform(key_perm, (n,)), n_pad, jnp.inf)
  partners = jnp.argsort(u, stable=True)           # real rows first, random
  selected, partners = order[:k_pad], partners[:k_pad]
  x_sel = images[selected]
  if config.mixup:
    lam = jax.random.beta(key_lam, config.alpha, config.alpha)
    if config.adaptive:
      c = correction_factor(k_pad, n, w=config.w, b=config.b)
    else:
      c = jnp.ones((k_pad,), jnp.float32)
    x = mix_images(x_sel, images[partners], lam, c)
  else:
    lam = jnp.zeros((), jnp.float32)
    c = jnp.zeros((k_pad,), jnp.float32)
    x = x_sel
  kept_mask = (jnp.arange(k_pad) < config.k).astype(jnp.float32)
  info = {"selected": selected.astype(jnp.int32),
          "partners": partners.astype(jnp.int32), "lam": lam, "correction": c}
  return x, kept_mask, info


def _pad_to(x: jax.Array, size: int, value) -> jax.Array:
  return jnp.pad(x, (0, size - x.shape[0]), constant_values=value)


def _order_scores(key, state: TrainState, images, n: int, *,
                  student: nn.Module, config: UnixConfig) -> jax.Array:
  n_pad = images.shape[0]
  if config.needs_student_pass:
    logits, _ = apply_model(student, state.variables, images, train=False)
    return uncertainty_scores(jax.lax.stop_gradient(logits), config.uncertainty)
  if config.uncertainty == "random":
    return _pad_to(jax.random.uniform(key, (n,)), n_pad, 0.0)
  return -jnp.arange(n_pad, dtype=jnp.float32)     # "none": keep the order


def _feature_loss(s_maps, t_maps, mask, kind):
  if kind == "at":
    return losses.attention_transfer_loss(s_maps, t_maps, mask=mask)
  return losses.similarity_preserving_loss(s_maps[-1:], t_maps[-1:], mask=mask)


def unix_step(state: TrainState, teacher_variables, images: jax.Array,
              key: jax.Array, *, student: nn.Module, teacher: nn.Module,
              config: UnixConfig, n: int, k_pad: int,
              kept_sharding=None) -> Tuple[TrainState, Dict[str, jax.Array]]:
  """One UNIX training step (pure; jit it, see `unix_train_step`).

  Args:
    state: student `TrainState`.
    teacher_variables: frozen teacher variables (no gradient).
    images: [N_pad, H, W, C] float32 batch; rows >= n are padding.
    key: PRNG key for the step.
    student, teacher: Flax modules.
    config: `UnixConfig`.
    n: real batch size N (static).
    k_pad: config.k rounded up to the device count (static).
    kept_sharding: optional sharding for the kept [k_pad] batch.

  Returns:
    (new_state, metrics) with metrics "loss", "kd", "agreement" (student
    argmax == teacher argmax on the kept images, before the update),
    "uncertainty_kept", "uncertainty_all" (entropy-based only) and the
    selection info of `select_and_mix`.
  """
  key_order, key_mix = jax.random.split(key)
  scores = _order_scores(key_order, state, images, n, student=student,
                         config=config)
  x, mask, info = select_and_mix(key_mix, images, scores, n, k_pad, config)
  if kept_sharding is not None:
    x = jax.lax.with_sharding_constraint(x, kept_sharding)
    mask = jax.lax.with_sharding_constraint(mask, kept_sharding)
  feats = config.feature_loss is not None
  t_out, _ = apply_model(teacher, teacher_variables, x, train=False,
                         return_features=feats)
  t_out = jax.lax.stop_gradient(t_out)
  t_logits, t_maps = (t_out[0], t_out[1]["maps"]) if feats else (t_out, None)
  t_labels = jnp.argmax(t_logits, axis=-1)

  def objective(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    out, new_stats = apply_model(student, variables, x, train=True,
                                 return_features=feats)
    s_logits = out[0] if feats else out
    kd = losses.kd_loss(s_logits, t_logits, config.temperature, mask)
    loss = config.kd_weight * kd
    if config.ce_weight:
      loss += config.ce_weight * losses.hard_cross_entropy(
          s_logits, t_labels, mask)
    if feats:
      loss += config.resolved_feature_weight * _feature_loss(
          out[1]["maps"], t_maps, mask, config.feature_loss)
    return loss, (s_logits, kd, new_stats)

  (loss, (s_logits, kd, new_stats)), grads = jax.value_and_grad(
      objective, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=new_stats)
  agree = (jnp.argmax(s_logits, -1) == t_labels) * mask
  metrics = dict(info, loss=loss, kd=kd,
                 agreement=jnp.sum(agree) / jnp.maximum(jnp.sum(mask), 1.0))
  if config.needs_student_pass:
    valid = jnp.arange(images.shape[0]) < n
    metrics["uncertainty_all"] = jnp.sum(jnp.where(valid, scores, 0.0)) / n
    metrics["uncertainty_kept"] = (
        jnp.sum(scores[info["selected"]] * mask) / jnp.sum(mask))
  return state, metrics


# ------------------------------------------------------------ jitted step ---


@functools.lru_cache(maxsize=None)
def _jitted_unix_step(student: nn.Module, teacher: nn.Module,
                      config: UnixConfig, mesh: Mesh, n: int, k_pad: int):
  rep = parallel.replicated_sharding(mesh)
  dat = parallel.data_sharding(mesh)
  fn = functools.partial(unix_step, student=student, teacher=teacher,
                         config=config, n=n, k_pad=k_pad, kept_sharding=dat)
  return jax.jit(fn, in_shardings=(rep, rep, dat, rep),
                 out_shardings=(rep, rep), donate_argnums=(0,))


def kept_padded(k: int, mesh: Mesh) -> int:
  """k rounded up to a multiple of the mesh's device count."""
  d = parallel.num_shards(mesh)
  return -(-k // d) * d


def check_feature_maps(student: nn.Module, student_variables,
                       teacher: nn.Module, teacher_variables,
                       input_shape, feature_loss: Optional[str]) -> None:
  """Raises JaxkdError if AT/SP cannot pair the two models' maps."""
  if feature_loss is None:
    return
  x = jax.ShapeDtypeStruct((2,) + tuple(input_shape), jnp.float32)

  def maps(model, variables):
    out = jax.eval_shape(lambda v, x: apply_model(
        model, v, x, return_features=True)[0], variables, x)
    return out[1]["maps"]

  s_maps, t_maps = maps(student, student_variables), maps(
      teacher, teacher_variables)
  if not s_maps or not t_maps:
    raise JaxkdError(f"{feature_loss.upper()} needs intermediate maps from "
                     "both models; one of them returns none.")
  if feature_loss == "at":
    s_sp = [m.shape[1:3] for m in s_maps]
    t_sp = [m.shape[1:3] for m in t_maps]
    if s_sp != t_sp:
      raise JaxkdError(f"AT needs matched maps: student spatial sizes {s_sp} "
                       f"vs teacher {t_sp}.")


def unix_train_step(state: TrainState, teacher_variables, images, key, *,
                    student: nn.Module, teacher: nn.Module, config: UnixConfig,
                    mesh: Optional[Mesh] = None):
  """Validates, pads and shards a batch of N images and runs `unix_step`.

  `state` and `teacher_variables` should already be replicated on `mesh`
  (`parallel.replicate`); `state` is donated.

  Args:
    state: student `TrainState`.
    teacher_variables: frozen teacher variables.
    images: [N, H, W, C] float32 batch (any N >= config.k).
    key: PRNG key.
    student, teacher: Flax modules.
    config: `UnixConfig`.
    mesh: ("data",) mesh; default all devices.

  Returns:
    (new_state, metrics), see `unix_step`.

  Raises:
    JaxkdError: bad config (k > N, k <= 0, w <= 0, alpha <= 0, unknown
      uncertainty) or images not rank 4 / not finite (NumPy batches; a
      batch already on the device is not read back to check it, which would
      stall every step on a host round trip: check such data once where it
      is made, as `train.fit` does).
  """
  check_rank("images", images, 4)
  if isinstance(images, np.ndarray):
    check_finite("images", images)
  config.validate(int(images.shape[0]))
  return _run_step(state, teacher_variables, images, key, student=student,
                   teacher=teacher, config=config,
                   mesh=mesh or parallel.make_mesh())


def _run_step(state, teacher_variables, images, key, *, student, teacher,
              config, mesh):
  """`unix_train_step` without the host-side checks (done at the boundary)."""
  n = int(images.shape[0])
  x, _ = parallel.shard_batch(mesh, images)
  step = _jitted_unix_step(student, teacher, config, mesh, n,
                           kept_padded(config.k, mesh))
  return step(state, teacher_variables, x, key)


def config_for_batch(config: UnixConfig, n: int, batch_size: int) -> UnixConfig:
  """Scales k (and a set b) to a partial batch of n < batch_size images."""
  if n == batch_size:
    return config
  k = max(1, min(n, int(math.ceil(config.k * n / batch_size))))
  b = None if config.b is None else config.b * n / batch_size
  return dataclasses.replace(config, k=k, b=b)


def unix_step_fn(student: nn.Module, teacher: nn.Module, teacher_variables,
                 config: UnixConfig, *, batch_size: int, seed: int,
                 mesh: Mesh, counter: Optional[CostCounter] = None):
  """A `jaxkd.train.fit` step function running UNIX steps.

  Step t uses the key fold_in(key(seed), t); a batch of n < batch_size
  images (N < batch_size) keeps ceil(k n / batch_size) of them
  (`config_for_batch`).
  `counter` (if given) is updated with each step's teacher/student passes.
  The inputs are checked once by `fit`, not per step.
  """
  key = jax.random.key(seed)
  teacher_variables = parallel.replicate(mesh, teacher_variables)

  def step_fn(state, rows, t):
    images = rows[0]
    n = len(images)
    cfg = config_for_batch(config, n, batch_size)
    state, metrics = _run_step(state, teacher_variables, images,
                               jax.random.fold_in(key, t), student=student,
                               teacher=teacher, config=cfg, mesh=mesh)
    if counter is not None:
      counter.add(n, *step_counts(n, cfg))
    return state, metrics

  return step_fn


def unix_fit(student: nn.Module, state: TrainState, teacher: nn.Module,
             teacher_variables, images: np.ndarray, *, epochs: int,
             batch_size: int, seed: int, config: UnixConfig,
             mesh: Optional[Mesh] = None,
             counter: Optional[CostCounter] = None,
             progress: bool = True, desc: str = "unix"):
  """Trains `state` for `epochs` passes over `images` with UNIX steps,
  through `jaxkd.train.fit`: ceil(epochs N / batch_size) steps on full
  batches of `batch_size` images from `train.batch_stream` (all N images,
  keeping ceil(k N / batch_size), when N < batch_size).

  Returns:
    (state, history) with history the mean loss per epoch.
  """
  check_rank("images", images, 4)
  config.validate(batch_size)
  if len(images) == 0:
    raise JaxkdError("unix_fit needs at least one training image.")
  mesh = mesh or parallel.make_mesh()
  check_feature_maps(student, state.variables, teacher, teacher_variables,
                     images.shape[1:], config.feature_loss)
  step_fn = unix_step_fn(student, teacher, teacher_variables, config,
                         batch_size=batch_size, seed=seed, mesh=mesh,
                         counter=counter)
  return train.fit(student, state, images, batch_size=batch_size, seed=seed,
                   step_fn=step_fn, epochs=epochs, mesh=mesh, desc=desc,
                   progress=progress)

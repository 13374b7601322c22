"""Student training: TrainState, optimizers, jitted data-parallel steps, fit.

Phases (as in big_vision's train.py): mesh -> state -> shard -> step -> loop.
The train step is one `jax.jit` over a ("data",) mesh: the batch is sharded on
its leading axis, the state replicated, and XLA inserts the gradient
all-reduce. Batches that do not divide the device count are zero-padded with
a mask: padded rows carry no loss or gradient. (BatchNorm batch statistics in
train mode do see the zero rows of a padded final batch; eval is exact.)

`fit` trains on in-memory NumPy arrays with a seeded shuffle and shows
progress with tqdm.
"""

from __future__ import annotations

import contextlib
import functools
from typing import (Any, Callable, Dict, Iterator, List, NamedTuple, Optional,
                    Sequence, Tuple)

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh

from jaxkd import losses, parallel
from jaxkd.models import apply_model, init_model
from jaxkd.registry import Registry
from jaxkd.data import sources
from jaxkd.validation import (JaxkdError, check_finite, check_positive,
                              check_rank)

LossFn = Callable[..., jax.Array]


class TrainState(train_state.TrainState):
  """Student state: step, params, opt_state, plus BatchNorm statistics."""
  batch_stats: Any = None

  @property
  def variables(self) -> Dict[str, Any]:
    v = {"params": self.params}
    if self.batch_stats:
      v["batch_stats"] = self.batch_stats
    return v


# ------------------------------------------------------------- optimizers ---


@functools.lru_cache(maxsize=64)
def make_optimizer(name: str = "sgd", learning_rate: float = 0.05, *,
                   momentum: float = 0.9, weight_decay: float = 0.0,
                   schedule: str = "cosine", total_steps: int = 1000,
                   warmup_steps: int = 0,
                   blocks: Tuple[float, ...] = (80, 60, 40, 20)
                   ) -> optax.GradientTransformation:
  """An optimizer of `OPTIMIZERS` ("sgd" with momentum, "adam" = AdamW, or
  an import path) with a constant, cosine, step (x 0.1 at 50% and 75% of
  `total_steps`) or blocks schedule: `total_steps` split in proportion to
  `blocks`, the rate divided by 10 after each block (Active Mixup's
  official student: 80, 60, 40, 20 epochs from 0.01).

  Cached: equal arguments return the same transformation object, so jitted
  steps that close over it are compiled once, not once per call.
  """
  check_positive("learning_rate", learning_rate)
  if schedule == "constant":
    lr = optax.constant_schedule(learning_rate)
  elif schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(
        0.0 if warmup_steps else learning_rate, learning_rate,
        warmup_steps, max(total_steps, warmup_steps + 1))
  elif schedule == "step":
    lr = optax.piecewise_constant_schedule(
        learning_rate, {int(total_steps * 0.5): 0.1, int(total_steps * 0.75): 0.1})
  elif schedule == "blocks":
    lr = optax.piecewise_constant_schedule(
        learning_rate, {b: 0.1 for b in block_boundaries(total_steps, blocks)})
  else:
    raise JaxkdError(f"Unknown schedule {schedule!r}; use constant, cosine, "
                     "step or blocks.")
  return OPTIMIZERS.get(name)(lr, momentum=momentum, weight_decay=weight_decay)


def block_boundaries(total_steps: int, blocks: Sequence[float]) -> List[int]:
  """Steps at which each block but the last ends: `total_steps` split in
  proportion to `blocks` (rounded; distinct, in (0, total_steps))."""
  w = np.cumsum(np.asarray(blocks, np.float64))
  ends = np.round(total_steps * w[:-1] / w[-1]).astype(int)
  return sorted({int(e) for e in ends if 0 < e < total_steps})


def random_crop(images: np.ndarray, padding: int,
                rng: np.random.Generator) -> np.ndarray:
  """Each image [H, W, C] of `images` [B, H, W, C] zero-padded by `padding`
  on every side and cut back to H x W at a uniform random offset (the
  official Active Mixup student's `RandomCrop(32, padding=4)`). O(B H W C).
  """
  if padding <= 0:
    return images
  b, h, w = images.shape[:3]
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding),
                           (0, 0)))
  dy = rng.integers(0, 2 * padding + 1, b)
  dx = rng.integers(0, 2 * padding + 1, b)
  rows = dy[:, None] + np.arange(h)[None]  # [B, H]
  cols = dx[:, None] + np.arange(w)[None]  # [B, W]
  return padded[np.arange(b)[:, None, None], rows[:, :, None],
                cols[:, None, :]]


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Each image of `images` [B, H, W, C] mirrored left-right with
  probability 1/2 (torchvision's `RandomHorizontalFlip`)."""
  flip = rng.random(len(images)) < 0.5
  out = images.copy()
  out[flip] = images[flip, :, ::-1]
  return out


def _sgd(lr, *, momentum, weight_decay):
  tx = optax.sgd(lr, momentum=momentum, nesterov=False)
  if weight_decay:
    tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
  return tx


def _adam(lr, *, momentum, weight_decay):
  del momentum
  return optax.adamw(lr, weight_decay=weight_decay)


# Optimizers by name: factory(lr_schedule, *, momentum, weight_decay) ->
# optax.GradientTransformation. Register more, or name one by import path.
OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("sgd", _sgd)
OPTIMIZERS.register("adam", _adam)


def student_optimizer(settings: Any, total_steps: Optional[int] = None
                      ) -> optax.GradientTransformation:
  """The round loop's student optimizer: `make_optimizer` with the
  settings' schedule (cosine unless set) over the round's training steps.

  Args:
    settings: any object with `optimizer` (a name in `OPTIMIZERS` or an
      import path), `learning_rate` (> 0) and `train_steps` (the schedule's
      length), e.g. a `jaxkd.loop.LoopSettings`; `schedule`, `lr_blocks`,
      `momentum` and `weight_decay` where it has them.
    total_steps: the schedule's length when not `train_steps` (a round
      trained for a number of epochs).

  Returns:
    The (cached) optax transformation.
  """
  return make_optimizer(
      settings.optimizer, settings.learning_rate,
      schedule=getattr(settings, "schedule", "cosine"),
      total_steps=total_steps or settings.train_steps,
      momentum=getattr(settings, "momentum", 0.9),
      weight_decay=getattr(settings, "weight_decay", 0.0),
      blocks=tuple(getattr(settings, "lr_blocks", (80, 60, 40, 20))))


def create_train_state(model: nn.Module, key: jax.Array, input_shape,
                       tx: optax.GradientTransformation) -> TrainState:
  """Initialises a student for inputs [H, W, C]."""
  variables = init_model(model, key, input_shape)
  return TrainState.create(apply_fn=model.apply, params=variables["params"],
                           tx=tx, batch_stats=variables.get("batch_stats", {}))


# ------------------------------------------------------------------ loss ---


@functools.lru_cache(maxsize=64)
def make_loss_fn(kind: str = "kd", *, temperature: float = 4.0,
                 kd_weight: float = 0.9, ce_weight: float = 0.1) -> LossFn:
  """Returns loss(logits, targets [B,C] teacher probs, labels [B], mask [B]).

  kind: a name in `losses.LOSSES`: "kd" (Hinton KD at `temperature`),
  "soft_ce" (cross-entropy with the teacher's probabilities), "hard_ce"
  (cross-entropy with `labels`), "mix" (ce_weight CE(labels) + kd_weight KD),
  or an import path 'pkg.mod:factory'. Cached like `make_optimizer`.
  """
  if kind in ("kd", "mix"):
    check_positive("temperature", temperature)
  return losses.LOSSES.get(kind)(temperature=temperature,
                                kd_weight=kd_weight, ce_weight=ce_weight)


# ------------------------------------------------------------------ steps ---


class Batch(NamedTuple):
  images: jax.Array   # [B, H, W, C]
  targets: jax.Array  # [B, C] teacher probabilities
  labels: jax.Array   # [B] int32 hard labels (teacher argmax or ground truth)
  mask: jax.Array     # [B] float32, 0 for padding rows


def train_step(state: TrainState, batch: Batch, *, model: nn.Module,
               loss_fn: LossFn):
  """One SGD step on the masked loss. Returns (state, metrics)."""

  def objective(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    logits, new_stats = apply_model(model, variables, batch.images, train=True)
    loss = loss_fn(logits, batch.targets, batch.labels, batch.mask)
    return loss, (logits, new_stats)

  (loss, (logits, new_stats)), grads = jax.value_and_grad(
      objective, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=new_stats)
  correct = (jnp.argmax(logits, -1) == batch.labels) * batch.mask
  metrics = {"loss": loss,
             "accuracy": jnp.sum(correct) / jnp.maximum(jnp.sum(batch.mask), 1)}
  return state, metrics


@functools.lru_cache(maxsize=None)
def _jitted_train_step(model: nn.Module, loss_fn: LossFn, mesh: Mesh):
  rep = parallel.replicated_sharding(mesh)
  dat = parallel.data_sharding(mesh)
  return jax.jit(functools.partial(train_step, model=model, loss_fn=loss_fn),
                 in_shardings=(rep, Batch(dat, dat, dat, dat)),
                 out_shardings=(rep, rep), donate_argnums=(0,))


def sharded_train_step(state: TrainState, images, targets, labels, *,
                       model: nn.Module, loss_fn: LossFn,
                       mesh: Optional[Mesh] = None):
  """Pads the batch to the device count, shards it and runs `train_step`.

  `state` must already be replicated on `mesh` (see `parallel.replicate`);
  it is donated. `targets` may be [B, C] probabilities or [B] integer
  labels (one-hot rows for `model.num_classes`, as in `fit`).
  """
  mesh = mesh or parallel.make_mesh()
  if np.ndim(targets) == 1:
    targets, labels = check_targets(targets, labels,
                                    getattr(model, "num_classes", None))
  images, targets, labels, mask = parallel.shard_batch(
      mesh, images, targets, labels)
  step = _jitted_train_step(model, loss_fn, mesh)
  return step(state, Batch(images, targets, labels, mask))


@functools.lru_cache(maxsize=None)
def _jitted_predict(model: nn.Module, mesh: Mesh, return_features: bool):
  dat = parallel.data_sharding(mesh)

  def predict(variables, x):
    out, _ = apply_model(model, variables, x, train=False,
                         return_features=return_features)
    if return_features:
      logits, feats = out
      return logits, feats["embedding"]
    return out

  return jax.jit(predict, in_shardings=(parallel.replicated_sharding(mesh), dat),
                 out_shardings=dat)


def predict(model: nn.Module, variables, images: np.ndarray, *,
            batch_size: int = 1024, mesh: Optional[Mesh] = None,
            return_embeddings: bool = False):
  """Eval-mode logits (and embeddings) for all images, in sharded batches
  (an image source is read by `jaxkd.data.sources.iter_batches`: Grain
  reader threads prefetch the next batches while the device works).

  Returns NumPy logits [N, C] (and embeddings [N, D] if requested).
  """
  check_rank("images", images, 4)
  check_finite("images", images)
  mesh = mesh or parallel.make_mesh()
  fn = _jitted_predict(model, mesh, return_embeddings)
  variables = parallel.replicate(mesh, variables)
  k = parallel.num_shards(mesh)
  batch_size = max(k, batch_size - batch_size % k)
  outs = []
  for chunk in sources.iter_batches(images, batch_size):
    n = len(chunk)
    x, _ = parallel.shard_batch(mesh, chunk)
    with _shape_errors(images):
      res = fn(variables, x)
    outs.append(jax.tree.map(lambda a: np.asarray(a)[:n], res))
  if not outs:
    raise JaxkdError("predict needs at least one image.")
  if return_embeddings:
    return (np.concatenate([o[0] for o in outs]),
            np.concatenate([o[1] for o in outs]))
  return np.concatenate(outs)


def accuracy(model: nn.Module, variables, images, labels, **kw) -> float:
  """Top-1 accuracy of `model` on (images, labels)."""
  logits = predict(model, variables, images, **kw)
  return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))


# ------------------------------------------------------------------- loop ---


def batch_stream(n: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
  """Endless index batches from a continuous stream of shuffled epochs.

  Epoch e is `rng.permutation(n)` of a NumPy RNG seeded with `seed`; the
  epochs are concatenated and cut into batches of `batch_size` rows, so a
  batch may span two epochs and every batch is full whenever
  n >= batch_size. When n < batch_size each batch is all n rows (one fresh
  permutation per batch). No short "last batch of the epoch" ever gets an
  optimizer step of its own.

  Yields:
    int64 [min(n, batch_size)] indices into range(n).
  """
  if n <= 0 or batch_size <= 0:
    raise JaxkdError(f"batch_stream needs n > 0 and batch_size > 0, got "
                     f"n={n}, batch_size={batch_size}.")
  rng = np.random.default_rng(seed)
  size = min(n, batch_size)
  buf = np.empty(0, np.int64)
  while True:
    while len(buf) < size:
      buf = np.concatenate([buf, rng.permutation(n)])
    yield buf[:size]
    buf = buf[size:]


def check_targets(targets: np.ndarray, labels: Optional[np.ndarray],
                  num_classes: Optional[int]) -> tuple:
  """Validates training targets; returns float32 targets [N, C] and int32
  labels [N].

  `targets` is either teacher probabilities [N, C] (rows >= 0 summing to 1)
  or integer class labels [N] (turned into one-hot rows; needs
  `num_classes`). `labels` defaults to the targets' argmax.
  """
  t = np.asarray(targets)
  if t.ndim == 1:  # integer labels instead of probabilities
    if labels is None:
      labels = t
    if not num_classes:
      raise JaxkdError("integer targets need a model with num_classes.")
    check_labels("targets", t, num_classes)
    t = np.eye(num_classes, dtype=np.float32)[t.astype(np.int64)]
  check_rank("targets", t, 2)
  check_finite("targets", t)
  t = t.astype(np.float32)
  if len(t) and (t.min() < -1e-6 or
                 np.abs(t.sum(-1) - 1).max() > 1e-3):
    raise JaxkdError("targets must be probability rows (>= 0, summing to 1) "
                     "or integer labels [N].")
  if labels is None:
    labels = np.argmax(t, -1)
  check_labels("labels", labels, t.shape[1])
  return t, np.asarray(labels, np.int32)


def check_labels(name: str, labels, num_classes: int) -> None:
  """Raise unless `labels` are integers in [0, num_classes)."""
  y = np.asarray(labels)
  if y.ndim != 1:
    raise JaxkdError(f"{name} must be 1-D, got shape {y.shape}.")
  if y.size and not np.issubdtype(y.dtype, np.integer):
    if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
      raise JaxkdError(f"{name} must be integers, got non-integer or NaN "
                       "values.")
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise JaxkdError(f"{name} must lie in [0, {num_classes}), got range "
                     f"[{y.min()}, {y.max()}].")


StepFn = Callable[[Any, tuple, int], tuple]


def standard_step_fn(model: nn.Module, loss_fn: LossFn, mesh: Mesh,
                     rows: int) -> StepFn:
  """The default `fit` step: pads the batch's rows up to a multiple of the
  device count with a mask, shards them over `mesh` and runs the jitted,
  donated `train_step` (every batch of `fit` has `rows` rows, so it
  compiles once)."""
  step = _jitted_train_step(model, loss_fn, mesh)
  sharding = parallel.data_sharding(mesh)
  k = parallel.num_shards(mesh)
  padded = -(-rows // k) * k
  # Every batch of `fit` has `rows` rows: its mask is made and placed once.
  full_mask = jax.device_put(
      (np.arange(padded) < rows).astype(np.float32), sharding)

  def step_fn(state, batch_rows, t):
    del t
    n = len(batch_rows[0])
    xb, tb, yb = (jax.device_put(_pad_rows(a, padded), sharding)
                  for a in batch_rows)
    mask = full_mask if n == rows else jax.device_put(
        (np.arange(padded) < n).astype(np.float32), sharding)
    return step(state, Batch(xb, tb, yb, mask))

  return step_fn


def fit(model: nn.Module, state: TrainState, images: np.ndarray,
        targets: Optional[np.ndarray] = None,
        labels: Optional[np.ndarray] = None, *, batch_size: int, seed: int,
        loss_fn: Optional[LossFn] = None, step_fn: Optional[StepFn] = None,
        epochs: Optional[int] = None, steps: Optional[int] = None,
        mesh: Optional[Mesh] = None, desc: str = "train",
        progress: bool = True,
        augment: Optional[Callable[[np.ndarray, int], np.ndarray]] = None,
        on_epoch: Optional[Callable[[Any, int], None]] = None):
  """Trains `state` on (images, targets, labels) for `epochs` or `steps`.

  Batches come from `batch_stream`: a continuous stream of seeded shuffled
  epochs, so every step sees `batch_size` real rows whenever
  N >= batch_size, and all N rows when N < batch_size. `epochs` means
  ceil(epochs N / batch_size) steps.

  The step is `standard_step_fn(model, loss_fn, ...)` (batches zero-padded,
  masked, only up to a multiple of the device count, so it compiles once),
  or any training mode's `step_fn(state, rows, t) -> (state, metrics)`
  where `rows` = (images, targets, labels) holds the batch's rows as NumPy
  arrays (targets and labels None when not given), t is the step number and
  metrics holds "loss". UNIX (`jaxkd.unix.unix_fit`) and strategies that own
  their training step (`jaxkd.selection.Strategy.train`) train this way.

  Args:
    images: [N, H, W, C] float inputs.
    targets: [N, C] teacher probabilities, or [N] integer labels; may be
      None with a `step_fn` that does not use them.
    labels: [N] int hard labels (default: argmax of targets).
    loss_fn / step_fn: exactly one of them.
    augment: `augment(batch_images, t) -> batch_images` applied on the host
      to every batch (t = step), e.g. a `random_crop`.
    on_epoch: called as `on_epoch(state, epoch)` after every run of
      ceil(N / batch_size) steps (epoch counts from 1).

  Returns:
    (state, history) where history lists the mean loss of each run of
    ceil(N / batch_size) steps (an epoch's worth).
  """
  if (loss_fn is None) == (step_fn is None):
    raise JaxkdError("fit needs exactly one of loss_fn or step_fn.")
  check_rank("images", images, 4)
  check_finite("images", images)
  n = len(images)
  if n == 0:
    raise JaxkdError("fit needs at least one training example.")
  if targets is not None:
    targets, labels = check_targets(targets, labels,
                                    getattr(model, "num_classes", None))
    if len(targets) != n:
      raise JaxkdError(f"{n} images but {len(targets)} targets.")
  elif step_fn is None:
    raise JaxkdError("fit with a loss_fn needs targets.")
  if labels is not None and len(labels) != n:
    raise JaxkdError(f"{n} images but {len(labels)} labels.")
  if (epochs is None) == (steps is None):
    raise JaxkdError("fit needs exactly one of epochs or steps.")
  for name, v in (("batch_size", batch_size), ("epochs", epochs),
                  ("steps", steps)):
    if v is not None and (isinstance(v, bool) or
                          not isinstance(v, (int, np.integer)) or v <= 0):
      raise JaxkdError(f"{name} must be a positive int, got {v!r}.")
  mesh = mesh or parallel.make_mesh()
  if step_fn is None:
    step_fn = standard_step_fn(model, loss_fn, mesh, min(n, batch_size))
  steps_per_epoch = -(-n // batch_size)
  total = steps if steps is not None else -(-epochs * n // batch_size)
  state = parallel.replicate(mesh, state)
  stream = batch_stream(n, batch_size, seed)
  history, epoch_losses = [], []
  bar = _progress(total, desc, progress)
  if not sources.is_source(images) or images.nbytes <= sources.MATERIALISE_LIMIT:
    images = np.asarray(images, np.float32)  # a small source: decoded once
  for t in range(total):
    idx = next(stream)
    rows = tuple(None if a is None else a[idx]
                 for a in (images, targets, labels))
    if augment is not None:
      rows = (np.asarray(augment(rows[0], t), np.float32),) + rows[1:]
    if t == 0:
      with _shape_errors(images):
        state, metrics = step_fn(state, rows, t)
    else:
      state, metrics = step_fn(state, rows, t)
    epoch_losses.append(metrics["loss"])
    bar.update(1)
    if (t + 1) % steps_per_epoch == 0 or t == total - 1:
      history.append(float(np.mean(jax.device_get(epoch_losses))))
      epoch_losses = []
      bar.set_postfix(loss=f"{history[-1]:.4f}")
      if on_epoch is not None:
        on_epoch(state, len(history))
  bar.close()
  return state, history


@contextlib.contextmanager
def _shape_errors(images):
  """Flax's parameter-shape error (images of another shape than the model
  was built for) as one line."""
  try:
    yield
  except flax.errors.ScopeParamShapeError as e:
    first = str(e).split(" (https")[0]
    raise JaxkdError(f"images of shape {tuple(images.shape[1:])} do not fit "
                     f"the model's parameters ({first}).") from None


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
  if len(a) == rows:
    return a
  return np.concatenate([a, np.zeros((rows - len(a),) + a.shape[1:], a.dtype)])


def _progress(total: int, desc: str, enabled: bool):
  from tqdm.auto import tqdm
  # disable=None: bars only on a terminal (never into a log file).
  return tqdm(total=total, desc=desc, disable=None if enabled else True,
              leave=False, dynamic_ncols=True, mininterval=0.5)

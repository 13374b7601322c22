"""The active distillation loop: select -> pay the teacher -> retrain -> eval.

Round 0 pays the teacher for the initial labelled set L; each later round a
strategy picks `per_round` unqueried pool points, the oracle answers them
(paying only for new ones) and the student is retrained (from scratch, as the
papers do, or fine-tuned) on every answer paid for so far.

Resumption: after every round the student state and the round records are
checkpointed with orbax; the ledger holds every paid answer with the round
that paid for it. A resumed run restores the last checkpointed round and
rebuilds the "available" mask from ledger rows of earlier rounds only, so the
re-run selection of an interrupted round picks the same points and gets them
from the ledger for free: no query is ever repeated.

References: Knowledge Distillation in Deep Networks under a Constrained Query
Budget; Active Mixup (Wang et al., CVPR 2020).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional

import flax.linen as nn
import jax
import numpy as np

from jaxkd import train
from jaxkd.checkpoint import Checkpointer
from jaxkd.selection import SelectionInputs, get_strategy
from jaxkd.teacher import TeacherOracle
from jaxkd.validation import JaxkdError, check_k


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """Hyperparameters of the active loop (no config reading below this)."""
  rounds: int = 5
  per_round: int = 50
  train_steps: int = 300
  batch_size: int = 64
  optimizer: str = "adam"
  learning_rate: float = 3e-3
  loss: str = "kd"
  temperature: float = 4.0
  retrain: bool = True
  seed: int = 0
  strategy_options: Dict[str, Any] = dataclasses.field(default_factory=dict)


def _fit_from_scratch(model, input_shape, settings: LoopSettings, images,
                      targets, labels, seed, mesh, loss, state=None,
                      progress=False, desc="student"):
  """`settings.train_steps` steps on the given data, from the run's fixed
  initialisation (key `settings.seed`; `seed` only shuffles), or from `state`
  when fine-tuning. Every round starting from the same init keeps the curve
  about the data, not about init luck. The optimizer and loss are cached
  objects, so every round reuses one compiled step."""
  tx = train.make_optimizer(settings.optimizer, settings.learning_rate,
                            schedule="cosine", total_steps=settings.train_steps)
  if state is None:
    state = train.create_train_state(model, jax.random.key(settings.seed),
                                     input_shape, tx)
  loss_fn = train.make_loss_fn(loss, temperature=settings.temperature)
  state, _ = train.fit(model, state, images, targets, labels,
                       steps=settings.train_steps,
                       batch_size=settings.batch_size, seed=seed,
                       loss_fn=loss_fn, mesh=mesh, progress=progress, desc=desc)
  return state


def run_active_loop(*, strategy: str, student: nn.Module,
                    oracle: TeacherOracle, initial_indices: np.ndarray,
                    candidate_indices: np.ndarray, test_images: np.ndarray,
                    test_labels: np.ndarray, teacher_accuracy: float,
                    settings: LoopSettings, workdir: str,
                    initial_labels: Optional[np.ndarray] = None,
                    mesh=None, progress: bool = True,
                    log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
  """Runs (or resumes) one strategy's active distillation; returns records.

  Args:
    strategy: a registered strategy name (`jaxkd.selection.strategy_names()`).
    student: the student Flax module.
    oracle: the teacher oracle over `oracle.pool_images` (L and U together).
    initial_indices: [|L|] oracle-pool indices paid for in round 0.
    candidate_indices: [|U|] oracle-pool indices the strategy chooses from.
    test_images, test_labels: held-out evaluation set.
    teacher_accuracy: the teacher's test accuracy (for the success rate).
    settings: LoopSettings.
    workdir: this run's directory (checkpoints/ and rounds.json live here).
    initial_labels: ground-truth labels of L if known: used to estimate the
      teacher's mistake rate (RAD) and to train M_S (gap_diversity).

  Returns:
    One dict per round: round, queries (paid so far), student_accuracy,
    teacher_accuracy, success_rate, wall_time (s), selected, unpaid_teacher_forwards.
  """
  strat = get_strategy(strategy)
  initial_indices = np.asarray(initial_indices, np.int64)
  candidate_indices = np.asarray(candidate_indices, np.int64)
  if settings.rounds < 0:
    raise JaxkdError(f"rounds must be >= 0, got {settings.rounds}.")
  if settings.rounds:
    check_k(settings.per_round, len(candidate_indices), "pool points")
  need = len(initial_indices) + settings.rounds * settings.per_round
  if need > oracle.budget:
    raise JaxkdError(
        f"{len(initial_indices)} initial + {settings.rounds} rounds x "
        f"{settings.per_round} = {need} queries exceed the budget of "
        f"{oracle.budget}.")
  if settings.rounds * settings.per_round > len(candidate_indices):
    raise JaxkdError(
        f"{settings.rounds} rounds x {settings.per_round} need more than the "
        f"{len(candidate_indices)} pool points.")
  pool = oracle.pool_images
  input_shape = pool.shape[1:]
  os.makedirs(workdir, exist_ok=True)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  state, records, start = _resume(ckpt, student, input_shape, settings, oracle,
                                  strategy, log)
  cache: Dict[str, Any] = {}
  for r in range(start, settings.rounds + 1):
    t0 = time.time()
    forwards_before = oracle.unpaid_forwards
    if r == 0:
      picked = initial_indices
    else:
      paid = oracle.queried_indices(max_round=r - 1)
      available = ~np.isin(candidate_indices, paid)
      inputs = _selection_inputs(strat.needs, student, state, oracle,
                                 candidate_indices, available, initial_indices,
                                 initial_labels, settings, cache, mesh)
      key = jax.random.fold_in(jax.random.key(settings.seed), r)
      local = np.asarray(strat.fn(key, inputs, settings.per_round,
                                  **settings.strategy_options))
      if len(np.unique(local)) != len(local) or not available[local].all():
        raise JaxkdError(f"strategy {strategy!r} returned repeated or already "
                         "queried points.")
      picked = candidate_indices[local]
    oracle.query(picked, round=r)
    rows = oracle.entries(kind="pool", max_round=r)
    idx = np.asarray([e["pool_index"] for e in rows])
    targets = np.stack([e["probs"] for e in rows])
    prev = None if settings.retrain else state
    state = _fit_from_scratch(
        student, input_shape, settings, pool[idx], targets,
        np.argmax(targets, -1), settings.seed + 1000 * r, mesh, settings.loss,
        state=prev, progress=progress, desc=f"{strategy} r{r}")
    _finish_round(
        r, state, records, ckpt, workdir, strategy, student, oracle,
        test_images, test_labels, teacher_accuracy, mesh, log, t0,
        selected=len(picked),
        unpaid_teacher_forwards=oracle.unpaid_forwards - forwards_before)
  ckpt.close()
  return records


def _resume(ckpt: Checkpointer, student, input_shape, settings, oracle,
            strategy, log):
  """Restores (state, records, first round to run) from the last checkpoint."""
  template = train.create_train_state(
      student, jax.random.key(settings.seed), input_shape,
      train.make_optimizer(settings.optimizer, settings.learning_rate,
                           schedule="cosine", total_steps=settings.train_steps))
  if ckpt.latest_step() is None:
    return None, [], 0
  state, meta = ckpt.restore(template)
  log(f"[{strategy}] resumed after round {meta['round']} "
      f"({oracle.spent} answers in the ledger)")
  return state, meta["records"], meta["round"] + 1


def _finish_round(r, state, records, ckpt, workdir, strategy, student, oracle,
                  test_images, test_labels, teacher_accuracy, mesh, log, t0,
                  **extra):
  """Evaluates, records, checkpoints (state + records) and logs one round."""
  acc = train.accuracy(student, state.variables, test_images, test_labels,
                       mesh=mesh)
  rec = dict(round=r, queries=int(oracle.spent), student_accuracy=acc,
             teacher_accuracy=float(teacher_accuracy),
             success_rate=acc / max(float(teacher_accuracy), 1e-12),
             wall_time=time.time() - t0, **{k: int(v) for k, v in extra.items()})
  records.append(rec)
  ckpt.save(r, jax.device_get(state), {"round": r, "records": records})
  with open(os.path.join(workdir, "rounds.json"), "w") as f:
    json.dump(records, f, indent=1)
  log(f"[{strategy}] round {r}: queries={rec['queries']} "
      f"student={acc:.4f} success={rec['success_rate']:.3f} "
      f"({rec['wall_time']:.1f}s)")


def _selection_inputs(needs, student, state, oracle, candidates, available,
                      initial_indices, initial_labels, settings, cache, mesh):
  """Computes only the SelectionInputs fields the strategy needs."""
  pool = oracle.pool_images[candidates]
  fields: Dict[str, Any] = {"available": available}
  if needs & {"probs", "logits", "embeddings"}:
    logits, emb = train.predict(student, state.variables, pool, mesh=mesh,
                                return_embeddings=True)
    fields.update(logits=logits, probs=np.asarray(jax.nn.softmax(logits)),
                  embeddings=emb)
  if "pixels" in needs:
    fields["pixels"] = pool.reshape(len(pool), -1)
  if "teacher_probs" in needs:
    if "teacher_probs" not in cache:  # the teacher is fixed: one pass.
      cache["teacher_probs"] = oracle.peek(pool)
    fields["teacher_probs"] = cache["teacher_probs"]
  if "baseline_probs" in needs:
    if "baseline" not in cache:  # M_S: the student on L alone, hard labels.
      labels = initial_labels
      answers = oracle.query(initial_indices)  # already paid in round 0
      if labels is None:
        labels = np.argmax(answers, -1)
      onehot = np.eye(answers.shape[1], dtype=np.float32)[labels]
      cache["baseline"] = _fit_from_scratch(
          student, pool.shape[1:], settings, oracle.pool_images[initial_indices],
          onehot, labels, settings.seed + 7, mesh, "hard_ce")
    logits = train.predict(student, cache["baseline"].variables, pool, mesh=mesh)
    fields["baseline_probs"] = np.asarray(jax.nn.softmax(logits))
  if "mistake_rate" in needs or "probs" in needs:
    fields["mistake_rate"] = estimate_mistake_rate(oracle, initial_indices,
                                                   initial_labels)
  return SelectionInputs(**fields)


def estimate_mistake_rate(oracle: TeacherOracle, initial_indices,
                          initial_labels=None) -> float:
  """Teacher error rate from what was paid for.

  With ground-truth labels of L: the teacher's disagreement with them on L.
  Without: one minus the teacher's mean confidence on every answer so far.
  """
  rows = oracle.entries(kind="pool")
  if not rows:
    return 0.0
  if initial_labels is not None:
    answers = oracle.query(initial_indices)  # paid in round 0: free here
    return float(np.mean(np.argmax(answers, -1) != np.asarray(initial_labels)))
  probs = np.stack([e["probs"] for e in rows])
  return float(1.0 - probs.max(-1).mean())


# ------------------------------------------------------------ Active Mixup ---


def _mixup_training_set(oracle: TeacherOracle, max_round: int):
  """Images and teacher answers of every ledger row up to `max_round`:
  real pool images and the mixup images x_ij(lam) rebuilt from (i, j, lam)."""
  rows = oracle.entries(max_round=max_round)
  pool = oracle.pool_images
  images, targets = [], []
  for e in rows:
    if e["kind"] == "pool":
      images.append(pool[e["pool_index"]])
    elif e["kind"] == "mixup":
      lam = np.float32(e["lam"])
      images.append(lam * pool[e["i"]] + (1 - lam) * pool[e["j"]])
    else:
      continue
    targets.append(e["probs"])
  return np.stack(images), np.stack(targets)


def _paid_pairs(oracle: TeacherOracle, max_round: int) -> np.ndarray:
  rows = oracle.entries(kind="mixup", max_round=max_round)
  return np.asarray([[e["i"], e["j"]] for e in rows], np.int64).reshape(-1, 2)


def random_pairs(key: jax.Array, n: int, k: int, lambdas: np.ndarray,
                 exclude: np.ndarray) -> tuple:
  """k distinct unqueried pairs i < j uniformly at random, each with a lambda
  drawn uniformly from the grid: the baseline Active Mixup compares with."""
  total = n * (n - 1) // 2
  taken = {(int(a), int(b)) for a, b in np.sort(exclude, axis=1)}
  check_k(k, total - len(taken), "unqueried pairs")
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
  pairs = []
  chosen = set(taken)
  while len(pairs) < k:
    i, j = rng.choice(n, 2, replace=False)
    p = (int(min(i, j)), int(max(i, j)))
    if p not in chosen:
      chosen.add(p)
      pairs.append(p)
  lams = rng.choice(np.asarray(lambdas), k)
  return np.asarray(pairs, np.int64), lams


def run_mixup_loop(*, selection: str, student: nn.Module,
                   oracle: TeacherOracle, test_images: np.ndarray,
                   test_labels: np.ndarray, teacher_accuracy: float,
                   settings: LoopSettings, workdir: str,
                   lambdas: Optional[np.ndarray] = None,
                   use_fast_path: bool = True, scan_batch_size: int = 4096,
                   name: Optional[str] = None, mesh=None, progress: bool = True,
                   log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
  """Algorithm 1 of Active Mixup (Wang et al., CVPR 2020), resumable.

  Round 0 pays for the teacher's answers on all n real images of
  `oracle.pool_images` and trains the initial student on them (soft labels).
  Each round t = 1..T then scans every unqueried pair (i, j) for its lowest
  student confidence over the lambda grid, pays for x_ij(lam*) of the
  `settings.per_round` least-confident pairs (selection="active"), or for as
  many random pairs with random grid lambdas (selection="random"), and trains
  a new student on everything paid for so far. The ledger stores (i, j, lam),
  so a resumed run rebuilds the images and never pays twice. `name` labels
  the records and log lines (default "mixup_<selection>").
  """
  from jaxkd.selection import mixup

  if selection not in ("active", "random"):
    raise JaxkdError(f"selection must be 'active' or 'random', got {selection!r}.")
  lambdas = mixup.default_lambdas() if lambdas is None else np.asarray(lambdas)
  pool = oracle.pool_images
  n = len(pool)
  need = n + settings.rounds * settings.per_round
  if need > oracle.budget:
    raise JaxkdError(f"{n} real images + {settings.rounds} rounds x "
                     f"{settings.per_round} mixup queries = {need} exceed the "
                     f"budget of {oracle.budget}.")
  name = name or f"mixup_{selection}"
  os.makedirs(workdir, exist_ok=True)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  state, records, start = _resume(ckpt, student, pool.shape[1:], settings,
                                  oracle, name, log)
  stem_fn = head_fn = None
  if use_fast_path and getattr(student, "has_linear_stem", False):
    stem_fn = lambda v, x: student.apply(v, x, method=student.stem)
    head_fn = lambda v, h: student.apply(v, h, method=student.head_from_stem)
  apply_fn = lambda v, x: student.apply(v, x)
  for r in range(start, settings.rounds + 1):
    t0 = time.time()
    if r == 0:
      oracle.query(np.arange(n), round=0)
    else:
      exclude = _paid_pairs(oracle, r - 1)
      key = jax.random.fold_in(jax.random.key(settings.seed), r)
      if selection == "active":
        pairs, lams, _ = mixup.select_pairs(
            apply_fn, state.variables, pool, settings.per_round, lambdas,
            exclude=exclude if len(exclude) else None,
            batch_size=scan_batch_size, stem_fn=stem_fn, head_fn=head_fn,
            mesh=mesh)
      else:
        pairs, lams = random_pairs(key, n, settings.per_round, lambdas, exclude)
      oracle.query_mixup(np.asarray(pairs), np.asarray(lams), round=r)
    images, targets = _mixup_training_set(oracle, r)
    state = _fit_from_scratch(
        student, pool.shape[1:], settings, images, targets,
        np.argmax(targets, -1), settings.seed + 1000 * r, mesh, settings.loss,
        state=None if settings.retrain else state, progress=progress,
        desc=f"{name} r{r}")
    _finish_round(r, state, records, ckpt, workdir, name, student, oracle,
                  test_images, test_labels, teacher_accuracy, mesh, log, t0,
                  train_size=len(images))
  ckpt.close()
  return records

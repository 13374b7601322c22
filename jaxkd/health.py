"""Health checks on trained students: a student at chance is a failed run.

A student that never left its initial near-uniform output (every ReLU of a
layer dead, a diverged step) predicts one class, so its test accuracy is
about the frequency of that class, 1 / num_classes on a balanced test set.
Averaged with trained seeds it silently drags the mean; `chance_warning`
names it instead.

Threshold: a run is flagged when accuracy < CHANCE_MARGIN / num_classes
(1.5 / C: 15% of 10 classes, 75% of 2). A constant prediction on a test set
whose largest class is at most 1.5 times the balanced share stays under it,
and a student that learned anything is far above it (digits students reach
~95%, the uniform one 10.6%).

A student also dies by divergence: when the learning rate is past what a
network without normalisation layers tolerates, the epoch loss climbs for
a few epochs and then one step leaves a whole layer's ReLUs dead (LeNet-5-
half distilled from a wide LeNet-5 on Fashion-MNIST at SGD lr 0.02: loss
4.30, 4.32, 5.82, then 27.03 and the uniform output's 33.17; every fc2 unit
dead). `divergence_warning` flags an epoch loss above DIVERGENCE_FACTOR
times the lowest loss before it, which that run crosses at epoch 5 of 10
(27.03 > 1.5 x 4.30) and the same student at lr 0.01 (loss 3.60 -> 3.85 at
the peak rate, then down to 1.66) does not.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from jaxkd.validation import JaxkdError

CHANCE_MARGIN = 1.5
DIVERGENCE_FACTOR = 1.5


def chance_warning(accuracy: float, num_classes: int,
                   name: str) -> Optional[str]:
  """A one-line warning if `accuracy` is within the margin of chance.

  Args:
    accuracy: test accuracy in [0, 1] of the trained student.
    num_classes: C >= 2; chance is 1 / C.
    name: what to name in the message (e.g. "random seed 3 round 2").

  Returns:
    None when accuracy >= CHANCE_MARGIN / C, else the warning line.

  Raises:
    JaxkdError: num_classes < 2, or accuracy not a number in [0, 1].

  Examples:
    >>> chance_warning(0.95, 10, "unix seed 0") is None
    True
    >>> print(chance_warning(0.106, 10, "kd seed 7"))
    kd seed 7: test accuracy 10.60% is at chance (1/10 = 10.00%; flagged below 15.00%): the student did not train (a stuck run, e.g. dead ReLUs or a diverged step), and it drags every mean it enters.
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or (
      num_classes < 2):
    raise JaxkdError(f"num_classes must be an int >= 2, got {num_classes!r}.")
  accuracy = float(accuracy)
  if not (math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
    raise JaxkdError(f"accuracy must lie in [0, 1], got {accuracy!r}.")
  threshold = CHANCE_MARGIN / num_classes
  if accuracy >= threshold:
    return None
  return (f"{name}: test accuracy {100 * accuracy:.2f}% is at chance "
          f"(1/{num_classes} = {100 / num_classes:.2f}%; flagged below "
          f"{100 * threshold:.2f}%): the student did not train (a stuck "
          "run, e.g. dead ReLUs or a diverged step), and it drags every "
          "mean it enters.")


def divergence_warning(losses: Sequence[float], name: str,
                       setting: str = "the learning rate"
                       ) -> Optional[str]:
  """A one-line warning if the training loss diverged.

  Args:
    losses: mean training loss per epoch (or any ordered checkpoints), E
      values; O(E).
    name: what to name in the message.
    setting: the setting to lower, named in the message.

  Returns:
    None unless some loss is not finite or exceeds DIVERGENCE_FACTOR times
    the lowest loss of the epochs before it; then the warning line naming
    the first such epoch (1-based).

  Examples:
    >>> divergence_warning([10.3, 4.3, 4.3, 3.9], "kd seed 0") is None
    True
    >>> print(divergence_warning([10.28, 4.30, 4.32, 5.82, 27.03, 33.18],
    ...                          "kd seed 0", "unix.lr"))
    kd seed 0: the training loss diverged (4.3 at epoch 2, 27.03 at epoch 5): the step size is past what this student tolerates; lower unix.lr.
  """
  values = [float(v) for v in losses]
  best, best_epoch = math.inf, 0
  for epoch, value in enumerate(values, start=1):
    if not math.isfinite(value) or (
        best_epoch and best > 0 and value > DIVERGENCE_FACTOR * best):
      low = f"{best:.4g} at epoch {best_epoch}, " if best_epoch else ""
      return (f"{name}: the training loss diverged ({low}{value:.4g} at "
              f"epoch {epoch}): the step size is past what this student "
              f"tolerates; lower {setting}.")
    if value < best:
      best, best_epoch = value, epoch
  return None

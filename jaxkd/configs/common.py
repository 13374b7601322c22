"""Shared config pieces and `parse_arg` for `file.py:arg` config strings."""

import ml_collections


def parse_arg(arg: str, **defaults):
  """Parses 'a=1,b=x' or a bare flag like 'runlocal' into a ConfigDict."""
  out = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    if "=" in part:
      k, v = part.split("=", 1)
      kind = type(defaults.get(k, ""))
      out[k] = (v.lower() in ("1", "true", "yes")) if kind is bool else kind(v)
    else:
      out[part] = True
  return out


def loop_config(**overrides) -> ml_collections.ConfigDict:
  """Student training per round (shared by every active experiment)."""
  c = ml_collections.ConfigDict(dict(
      train_steps=300, batch_size=64, optimizer="adam", learning_rate=3e-3,
      loss="kd", temperature=4.0, retrain=True))
  c.update(overrides)
  return c


def teacher_config(**overrides) -> ml_collections.ConfigDict:
  """Teacher training on the teacher-train split (hard labels, cosine)."""
  c = ml_collections.ConfigDict(dict(
      model="lenet5", epochs=30, batch_size=64, optimizer="adam",
      learning_rate=3e-3, seed=0))
  c.update(overrides)
  return c

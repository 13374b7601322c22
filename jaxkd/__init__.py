"""jaxkd: active knowledge distillation in JAX/Flax.

Choose which inputs to send to an expensive teacher, pay for each soft label
once, and distill a small student from what came back.
"""

__version__ = "0.1.0"
__all__ = ["BudgetExceededError", "JaxkdError", "__version__"]


def __getattr__(name):
  # Lazy, so that a light submodule (`jaxkd.image_decode`, imported by the
  # image-folder reader processes) does not import JAX with the package.
  if name in ("BudgetExceededError", "JaxkdError"):
    from jaxkd import validation  # pylint: disable=g-import-not-at-top
    return getattr(validation, name)
  raise AttributeError(f"module 'jaxkd' has no attribute {name!r}")

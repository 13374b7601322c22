"""jaxkd: active knowledge distillation in JAX/Flax.

Choose which inputs to send to an expensive teacher, pay for each soft label
once, and distill a small student from what came back.
"""

from jaxkd.validation import BudgetExceededError, JaxkdError

__version__ = "0.1.0"
__all__ = ["BudgetExceededError", "JaxkdError", "__version__"]

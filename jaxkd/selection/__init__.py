"""Active selection strategies (pure, jitted) and their registry."""

from jaxkd.selection.registry import (SelectionInputs, Strategy, get_strategy,
                                      register_strategy, strategy_names)

__all__ = ["SelectionInputs", "Strategy", "get_strategy", "register_strategy",
           "strategy_names"]

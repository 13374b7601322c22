"""Active selection strategies (pure, jitted), the round protocol and the
strategy registry (see `jaxkd.selection.registry`)."""

from jaxkd.selection.registry import (STRATEGIES, FunctionStrategy,
                                      MixupQuery, PoolQuery, SelectionInputs,
                                      Strategy, get_strategy,
                                      ledger_training_set, register_strategy,
                                      strategy_names)

__all__ = ["STRATEGIES", "FunctionStrategy", "MixupQuery", "PoolQuery",
           "SelectionInputs", "Strategy", "get_strategy",
           "ledger_training_set", "register_strategy", "strategy_names"]

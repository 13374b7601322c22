"""examples/custom_strategy.py runs a strategy defined outside jaxkd,
named by import path in a config, through the main loop."""

import importlib.util
import os
import sys

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "examples", "custom_strategy.py")


def test_custom_strategy_example_runs(tmp_path):
  spec = importlib.util.spec_from_file_location("_example", EXAMPLE)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  try:
    out = mod.main(str(tmp_path), tiny=True)
  finally:
    sys.modules.pop("custom_strategy", None)
  name = "custom_strategy:ClassBalancedEntropy"
  assert set(out["strategies"]) == {name, "entropy", "random"}
  recs = out["strategies"][name][0]
  assert [r["queries"] for r in recs] == [20, 25]
  assert os.path.exists(tmp_path / "custom_strategy_ClassBalancedEntropy"
                        / "seed0" / "ledger.sqlite")

"""Every strategy picks exactly what it picked before the round-protocol
refactor (fixture recorded by tests/picks_fixture.py from the old loops)."""

import json

import picks_fixture


def test_every_strategy_picks_as_recorded(tmp_path):
  with open(picks_fixture.FIXTURE) as f:
    want = json.load(f)
  got = picks_fixture.compute_picks(str(tmp_path))
  assert set(got) == set(want)
  for name in want:
    assert got[name] == want[name], f"{name} picks changed"

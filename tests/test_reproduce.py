"""experiments/reproduce.py: what it publishes from the runs on disk.

The reference is hand-built: rounds.json / seed<s>.json files written here
with known numbers, and the protocol's payments (initial + r x per_round)
computed from the config by hand.
"""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..",
                                "experiments"))
import protocols  # noqa: E402
import publish  # noqa: E402


def _active_part(tmp_path, name="main"):
  c = protocols.load_config("recon_fmnist.py")
  c = protocols.with_fields(c, strategies=("random", "admm"), seeds=(0, 1),
                            rounds=2, per_round=300)
  return protocols.Part(name, "active", c, str(tmp_path / name))


def _write_rounds(part, strategy, seed, accs, queries=None):
  d = os.path.join(part.workdir, strategy, f"seed{seed}")
  os.makedirs(d, exist_ok=True)
  q = queries or [500 + 300 * r for r in range(len(accs))]
  recs = [dict(round=r, queries=q[r], student_accuracy=a,
               teacher_accuracy=0.9, success_rate=a / 0.9, wall_time=1.0)
          for r, a in enumerate(accs)]
  with open(os.path.join(d, "rounds.json"), "w") as f:
    json.dump(recs, f)


def test_publish_marks_missing_runs_and_summarises_finished(tmp_path):
  part = _active_part(tmp_path)
  _write_rounds(part, "random", 0, [0.5, 0.6, 0.7])
  _write_rounds(part, "random", 1, [0.5, 0.7, 0.8])
  _write_rounds(part, "admm", 0, [0.5, 0.6])        # killed in round 2
  out = publish.publish("recon_fmnist", [part],
                          results_dir=str(tmp_path / "res"))
  assert out["complete"] is False
  assert out["missing"] == ["main/admm/seed0", "main/admm/seed1"]
  s = out["parts"]["main"]["summary"]["random"]
  assert s["queries"] == [500, 800, 1100] and s["seeds"] == [0, 1]
  assert s["accuracy"][2]["mean"] == pytest.approx(0.75)
  assert s["accuracy"][2]["std"] == pytest.approx(np.std([0.7, 0.8]))
  saved = json.loads((tmp_path / "res" / "recon_fmnist.json").read_text())
  assert saved["complete"] is False and (tmp_path / "res" /
                                         "recon_fmnist.png").exists()
  _write_rounds(part, "admm", 0, [0.5, 0.6, 0.7])
  _write_rounds(part, "admm", 1, [0.5, 0.6, 0.7])
  out = publish.publish("recon_fmnist", [part],
                          results_dir=str(tmp_path / "res"))
  assert out["complete"] is True and out["missing"] == []


def test_publish_refuses_records_that_paid_other_than_the_protocol(tmp_path):
  part = _active_part(tmp_path)
  _write_rounds(part, "random", 0, [0.5, 0.6, 0.7], queries=[500, 800, 1101])
  with pytest.raises(SystemExit, match="paid 1101 queries, the protocol "
                     "pays 1100"):
    publish.publish("recon_fmnist", [part],
                      results_dir=str(tmp_path / "res"))


def test_every_reproduction_builds_its_parts():
  for name, spec in protocols.REPRODUCTIONS.items():
    parts = spec["parts"]("runs")
    assert len({p.name for p in parts}) == len(parts), name
    for p in parts:
      assert p.kind in ("active", "unix", "teacher")


def test_readme_block_is_replaced_by_the_published_tables(tmp_path):
  part = _active_part(tmp_path)
  for s in ("random", "admm"):
    for seed in (0, 1):
      _write_rounds(part, s, seed, [0.5, 0.6, 0.7])
  out = publish.publish("recon_fmnist", [part],
                          results_dir=str(tmp_path / "res"))
  readme = tmp_path / "README.md"
  readme.write_text("intro\n<!-- reproduce:recon_fmnist -->\nold table\n"
                    "<!-- /reproduce:recon_fmnist -->\noutro\n")
  publish.update_readme("recon_fmnist", out, str(readme))
  text = readme.read_text()
  assert "old table" not in text and text.startswith("intro\n")
  assert text.endswith("<!-- /reproduce:recon_fmnist -->\noutro\n")
  assert "| random | 2 | 55.56 ± 0.00" in text   # 0.5 / 0.9

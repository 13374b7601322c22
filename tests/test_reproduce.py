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


# ------------------------------------- rad_noisy_teacher and unix_ratio ---


def _parts(name, runs="runs"):
  return {p.name: p for p in protocols.REPRODUCTIONS[name]["parts"](runs)}


def _validated(part):
  """settings.read of a part's config, its saved teacher (not trained
  yet) left out."""
  from jaxkd import settings
  return settings.read(protocols.with_fields(
      part.config, **{"teacher.checkpoint": ""}))


def test_rad_noisy_teacher_parts_share_l_u_and_test_across_teachers():
  parts = _parts("rad_noisy_teacher")
  assert list(parts) == ["t1000_teacher", "t5000_teacher", "t30000_teacher",
                         "t1000", "t5000", "t30000"]
  splits = set()
  for n in (1000, 5000, 30000):
    t, a = _validated(parts[f"t{n}_teacher"]), _validated(parts[f"t{n}"])
    assert parts[f"t{n}_teacher"].kind == "teacher"
    assert (t.split.teacher_train, t.split.initial, t.split.pool) == (n, 0, 0)
    assert t.teacher == a.teacher.__class__(**{
        **vars(a.teacher), "checkpoint": ""})   # one teacher recipe
    assert parts[f"t{n}"].config.teacher.checkpoint == os.path.join(
        parts[f"t{n}_teacher"].workdir, "teacher")
    assert a.strategies == ("random", "rad", "margin", "entropy", "coreset")
    assert a.seeds == (0, 1, 2, 3, 4) and a.rounds == 12
    assert (a.per_round, a.student, a.loop.loss) == (300, "lenet5_half",
                                                     "kd")
    # The student's split skips every teacher's images (the first 30,000
    # of the permutation) and fits in the 60,000 training images.
    s = a.split
    assert s.teacher_train == 30000 >= n and s.test == 0
    assert s.teacher_train + s.initial + s.pool == 35500 <= 60000
    assert s.initial + a.rounds * a.per_round <= s.initial + s.pool
    splits.add(s)
  assert len(splits) == 1


def test_unix_ratio_pair_has_flops_ratio_above_ten():
  import jax
  from jaxkd import cost, unix
  from jaxkd.models import get_model, init_model
  parts = _parts("unix_ratio")
  k48, k40 = _validated(parts["k48"]), _validated(parts["k40"])
  assert (k48.unix.k, k48.unix.methods) == (48, ("kd", "random_kd", "unix"))
  assert (k40.unix.k, k40.unix.methods) == (40, ("random_kd", "unix"))
  assert parts["k40"].config.teacher.checkpoint == os.path.join(
      parts["k48"].workdir, "teacher")
  assert protocols.REPRODUCTIONS["unix_ratio"]["kd_part"] == "k48"
  for s in (k48, k40):
    assert (s.dataset, s.unix.max_train, s.unix.batch_size) == (
        "fashion_mnist", 0, 64)
    assert s.seeds == (0, 1, 2) and s.unix.epochs == 10
  # As the job counts it: the student standardized, XLA's FLOPs.
  x = np.zeros((4, 28, 28, 1), np.float32)
  student = unix.standardized(get_model(k48.student, 10), x)
  teacher = get_model(k48.teacher.model, 10)
  key = jax.random.key(0)
  flops = cost.kd_cost(student, init_model(student, key, (28, 28, 1)),
                       teacher, init_model(teacher, key, (28, 28, 1)),
                       (28, 28, 1))
  assert 11.5 < flops.teacher_student_ratio < 13


def test_paper_numbers_of_unix_ratio_follow_the_papers_formula():
  # Every computation cell of Tables 1-2 is k / N + 1 / (r + 2).
  pn = protocols.REPRODUCTIONS["unix_ratio"]["paper_numbers"]
  for table, ks in (("table1", (40, 48)), ("table2", (36, 48))):
    for pair, row in pn[table].items():
      for k in ks:
        want = 100 * (k / 64 + 1 / (row["ratio"] + 2))
        assert row[f"computation_k{k}"] == pytest.approx(want, abs=0.06), (
            pair, k)
    for k in ks:
      mean = np.mean([r[f"computation_k{k}"] for r in pn[table].values()])
      assert pn[f"{table}_mean"][f"k{k}"]["computation"] == pytest.approx(
          mean / 100, abs=1e-4)


def _write_teacher(folder, accuracy, train_size):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, publish.TEACHER_JSON), "w") as f:
    json.dump(dict(accuracy=accuracy, model="lenet5", train_size=train_size),
              f)


def _write_curve(part, strategy, seed, success, teacher):
  d = os.path.join(part.workdir, strategy, f"seed{seed}")
  os.makedirs(d, exist_ok=True)
  c = part.config
  recs = [dict(round=r, queries=c.split.initial + r * c.per_round,
               student_accuracy=s * teacher, teacher_accuracy=teacher,
               success_rate=s, wall_time=1.0) for r, s in enumerate(success)]
  with open(os.path.join(d, "rounds.json"), "w") as f:
    json.dump(recs, f)


def test_rad_gain_table_from_fake_finished_runs(tmp_path):
  from scipy import stats as sps
  parts = _parts("rad_noisy_teacher", str(tmp_path))
  parts = {n: protocols.Part(n, p.kind, protocols.with_fields(
      p.config, rounds=1, seeds=(0, 1)) if p.kind == "active" else p.config,
                             p.workdir) for n, p in parts.items()}
  # Final success (round 1; round 0 is 0.5 for all) by strategy and seed:
  # at the worst teacher RAD leads margin (the best other) by 2 and 4
  # points; at the others margin leads.
  finals = {1000: dict(random=(.70, .72), rad=(.80, .84), margin=(.78, .80),
                       entropy=(.75, .75), coreset=(.71, .71)),
            5000: dict(random=(.80, .81), rad=(.83, .84), margin=(.85, .86),
                       entropy=(.82, .82), coreset=(.80, .80)),
            30000: dict(random=(.85, .86), rad=(.86, .86), margin=(.88, .88),
                        entropy=(.87, .87), coreset=(.85, .85))}
  acc = {1000: 0.82, 5000: 0.86, 30000: 0.90}
  for n, by in finals.items():
    _write_teacher(os.path.join(parts[f"t{n}_teacher"].workdir, "teacher"),
                   acc[n], n)
    for s, vals in by.items():
      for seed, v in enumerate(vals):
        _write_curve(parts[f"t{n}"], s, seed, [0.5, v], acc[n])
  out = publish.publish("rad_noisy_teacher", list(parts.values()),
                        results_dir=str(tmp_path / "res"))
  assert out["complete"] and out["parts"]["t1000_teacher"]["teacher"][
      "train_size"] == 1000
  text = publish.markdown(out)
  p = sps.ttest_rel([.80, .84], [.78, .80]).pvalue
  q = sps.ttest_rel([.80, .84], [.70, .72]).pvalue
  # AUBC over [500, 800] with round 0 at 0.5: (0.5 + final) / 2.
  row = (f"| 1000 | 82.00 | 18.00 | 2 | 82.00 | margin | +3.00 (p {p:.3g}) "
         f"| +11.00 (p {q:.3g}) | 66.00 | margin | +1.50 (p {p:.3g}) "
         f"| +5.50 (p {q:.3g}) |")
  assert row in text, text
  assert "| 5000 | 86.00 | 14.00 | 2 | 83.50 | margin | -2.00 (p -) " in text
  assert "| 30000 | 90.00 | 10.00 | 2 | 86.00 | margin | -2.00 (p -) " in text
  assert "simultaneously informative and correctly labeled" in text
  assert "t1000 (teacher 82.00%)" in text     # the per-strategy tables


def _write_unix(part, method, seed, success, computation, paper=None):
  from jaxkd import run_dir
  path = run_dir.run_path(part.workdir, method, seed) + ".json"
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rec = dict(seed=seed, student_accuracy=0.9 * success, success_rate=success,
             computation=computation, wall_time=10.0)
  if paper is not None:
    rec.update(computation_paper=paper, flops_ratio=12.1)
  with open(path, "w") as f:
    json.dump(rec, f)


def test_unix_ratio_tables_from_fake_finished_runs(tmp_path):
  from scipy import stats as sps
  parts = _parts("unix_ratio", str(tmp_path))
  _write_teacher(os.path.join(parts["k48"].workdir, "teacher"), 0.9, 60000)
  kd, r48, u48 = (.95, .97, .96), (.93, .94, .92), (.96, .99, .97)
  r40, u40 = (.92, .92, .90), (.95, .96, .96)
  for seed in range(3):
    _write_unix(parts["k48"], "kd", seed, kd[seed], 1.0, 1.0)
    _write_unix(parts["k48"], "random_kd", seed, r48[seed], .75, .75)
    _write_unix(parts["k48"], "unix", seed, u48[seed], .817, .821)
    _write_unix(parts["k40"], "random_kd", seed, r40[seed], .625, .625)
    _write_unix(parts["k40"], "unix", seed, u40[seed], .692, .696)
  out = publish.publish("unix_ratio", list(parts.values()),
                        results_dir=str(tmp_path / "res"))
  assert out["complete"] and out["missing"] == []
  st = out["parts"]["k40"]["statistics"]
  # k = 40 has no KD of its own: compared with k = 48's.
  assert st["unix"]["p_value_kd"] == pytest.approx(
      sps.ttest_rel(u40, kd).pvalue)
  text = publish.markdown(out)
  assert "teacher 90.00%, F_t/F_s = 12.10 (XLA)" in text
  assert ("| computation % of KD (XLA) | computation % of KD (paper, "
          "B_s = F_s) |") in text
  assert "| k40 | unix | 3 | 86.10 ± 0.42 | 69.20 ± 0.00 | 69.60 ± 0.00 |" \
      in text
  p48 = sps.ttest_rel(u48, kd).pvalue
  assert f"| 48/64 | +1.20 (p {p48:.3g}) |" in text, text
  assert ("| 40/64 | " in text and "| +0.29 | 66.94 | ResNet50 -> VGG8 "
          "(13.56): +0.16 at 68.93% |" in text)
  assert "| +1.07 | 79.44 | ResNet50 -> VGG8 (13.56): +0.78 at 81.43% |" \
      in text
  # Records without the paper's convention: no such column (unix_fmnist).
  for seed in range(3):
    for m, v in (("kd", kd), ("random_kd", r48), ("unix", u48)):
      _write_unix(parts["k48"], m, seed, v[seed], 1.0)
  old = publish.markdown(publish.publish(
      "unix_ratio", [parts["k48"]], results_dir=str(tmp_path / "res")))
  assert "paper, B_s = F_s) |" not in old.split("\n\nAgainst")[0]
  assert "F_t/F_s = " not in old.split("\n|")[0]


def _tiny(part, **fields):
  """`part` on the bundled digits at tiny sizes (same parts, workdirs and
  teacher folders as the reproduction's)."""
  c = protocols.with_fields(part.config, dataset="digits", data_dir="",
                            **fields)
  return protocols.Part(part.name, part.kind, c, part.workdir)


def test_rad_noisy_teacher_quick_runs_end_to_end_and_publishes(tmp_path):
  import reproduce
  parts = []
  for p in _parts("rad_noisy_teacher", str(tmp_path / "runs")).values():
    n = {"t1000": 40, "t5000": 80, "t30000": 160}[p.name.split("_")[0]]
    if p.kind == "teacher":
      parts.append(_tiny(p, **{"split.teacher_train": n, "teacher.epochs": 1}))
    else:   # skips the largest teacher's 160 images, as 30,000 at full size
      parts.append(_tiny(p, rounds=1, per_round=10, seeds=(0,),
                         **{"split.teacher_train": 160, "split.initial": 20,
                            "split.pool": 60, "loop.train_steps": 2,
                            "teacher.epochs": 1}))
  for p in parts:
    reproduce.run_part(p)
  out = publish.publish("rad_noisy_teacher", parts,
                        results_dir=str(tmp_path / "res"))
  assert out["complete"], out["missing"]
  sizes = [out["parts"][f"t{n}_teacher"]["teacher"]["train_size"]
           for n in (1000, 5000, 30000)]
  assert sizes == [40, 80, 160]
  text = publish.markdown(out)
  assert text.count("| rad | 1 |") == 3
  assert "| 40 | " in text and "| 160 | " in text   # the gain table's rows


def test_unix_ratio_quick_runs_end_to_end_and_publishes(tmp_path):
  import reproduce
  parts = [_tiny(p, seeds=(0,), **{"unix.max_train": 128, "unix.epochs": 1,
                                   "unix.warmup_epochs": 0,
                                   "teacher.epochs": 1})
           for p in _parts("unix_ratio", str(tmp_path / "runs")).values()]
  for p in parts:
    reproduce.run_part(p)
  out = publish.publish("unix_ratio", parts,
                        results_dir=str(tmp_path / "res"))
  assert out["complete"], out["missing"]
  text = publish.markdown(out)
  assert "| k40 | unix | 1 |" in text and "| 40/64 | " in text
  rec = out["parts"]["k40"]["runs"]["unix"][0]
  if "flops_ratio" in rec:   # the job's records since it counts both
    assert rec["flops_ratio"] > 10
    assert rec["computation_paper"] == pytest.approx(
        40 / 64 + 1 / (rec["flops_ratio"] + 2), abs=0.02)


def test_active_mixup_official_parts_have_the_official_schedule():
  for name, steps in (("active_mixup_official", 1),
                      ("active_mixup_multistep", 6)):
    parts = protocols.REPRODUCTIONS[name]["parts"]("runs")
    active = [p for p in parts if p.kind == "active"]
    for p in active:
      loop = p.config.loop
      assert (loop.optimizer, loop.learning_rate, loop.momentum,
              loop.weight_decay, loop.batch_size) == ("sgd", 0.01, 0.9,
                                                      5e-4, 128)
      assert loop.schedule == "blocks" and tuple(loop.lr_blocks) == (
          80, 60, 40, 20)
      assert loop.augment == "random_crop" and loop.track_best_test
      assert p.config.rounds == steps and len(p.config.seeds) == 3
    # The teacher is the T = 1 reproduction's (one trained teacher).
    teachers = [p.workdir for p in parts if p.kind == "teacher"]
    assert all(w.startswith("runs/am_t1_") for w in teachers)
  (multi,) = [p for p in protocols.REPRODUCTIONS["active_mixup_multistep"][
      "parts"]("runs") if p.kind == "active"]
  assert multi.config.loop.epochs == 50 and multi.config.split.initial == 1000


def test_publish_shows_the_best_test_epoch_beside_the_last(tmp_path):
  part = _active_part(tmp_path)
  for s, base in (("random", 0.6), ("admm", 0.65)):
    for seed in (0, 1):
      _write_rounds(part, s, seed, [0.5, base, base + 0.05 * (seed + 1)])
      path = os.path.join(part.workdir, s, f"seed{seed}", "rounds.json")
      recs = json.load(open(path))
      recs[-1]["best_test_accuracy"] = recs[-1]["student_accuracy"] + 0.01
      json.dump(recs, open(path, "w"))
  out = publish.publish("recon_fmnist", [part],
                        results_dir=str(tmp_path / "res"))
  best = out["parts"]["main"]["summary"]["admm"]["best_test_accuracy"]
  assert best["mean"] == pytest.approx(np.mean([0.66 + 0.05, 0.66 + 0.1]))
  text = publish.markdown(out)
  assert "best-test-epoch accuracy % (selected on test)" in text
  assert "optimistic" in text


def test_published_files_name_no_folder_of_the_machine(tmp_path):
  # Paths under the folder holding the checkout become relative to it;
  # others (a user's own absolute paths elsewhere) stay as given.
  root = str(tmp_path / "work" / "main")
  tree = {"data_dir": str(tmp_path / "work" / "shared" / "data" / "mnist"),
          "teacher": {"checkpoint": root + "/runs/x/teacher"},
          "list": [root, "relative/path", 3, None],
          "elsewhere": "/opt/data/images"}
  out = publish.portable(tree, root)
  assert out == {"data_dir": "../shared/data/mnist",
                 "teacher": {"checkpoint": "runs/x/teacher"},
                 "list": [".", "relative/path", 3, None],
                 "elsewhere": "/opt/data/images"}


def test_every_published_reproduction_is_free_of_machine_paths():
  top = os.path.dirname(publish.ROOT)
  for name in sorted(os.listdir(publish.RESULTS)):
    if name.endswith(".json"):
      with open(os.path.join(publish.RESULTS, name)) as f:
        assert top + os.sep not in f.read(), name


def test_a_busy_workdir_is_one_line_and_runs_nothing(tmp_path):
  import subprocess
  from jaxkd import run_dir
  script = os.path.join(os.path.dirname(__file__), "..", "experiments",
                        "reproduce.py")
  workdir = tmp_path / "runs" / "am_t1_mnist_teacher"
  with run_dir.workdir_lock(str(workdir)):  # another process's run
    r = subprocess.run(
        [sys.executable, script, "active_mixup_official", "--parts",
         "mnist_teacher", "--runs", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=300)
  assert r.returncode == 1
  err = r.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("reproduce.py: error: "), err
  assert "in use by another jaxkd process" in err[0]
  assert sorted(os.listdir(workdir)) == [".lock"]  # nothing trained

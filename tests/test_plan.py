"""Learning-curve fits (jaxkd.curves) and the budget planner (jaxkd.plan).

References are independent of the code under test: the parameters and the
queries-to-target of a known power law, the Gauss-Newton standard errors of
its least-squares fit computed here with NumPy from the analytic Jacobian at
the true parameters, and a brute-force search on a fine grid.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxkd import curves, plan
from jaxkd.validation import JaxkdError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Q = np.arange(500.0, 5001.0, 300.0)          # the recon protocol's rounds
TRUE = (0.965, 8.0, 0.8)                      # s(500) = 0.91, s(oo) = 0.965


def law(q, a, b, c):
  return a - b * np.asarray(q, np.float64) ** (-c)


def records(q, success):
  return [{"round": i, "queries": float(x), "success_rate": float(s),
           "student_accuracy": float(s) * 0.9}
          for i, (x, s) in enumerate(zip(q, success))]


# ---------------------------------------------------------------- curves ---


def test_noise_free_curve_is_recovered_exactly():
  fit = curves.fit_power_law(Q, law(Q, *TRUE))
  assert fit.kind == curves.POWER_LAW
  np.testing.assert_allclose(fit.params, TRUE, rtol=1e-7)
  assert fit.residual < 1e-10
  assert fit.queries_range == (500.0, 5000.0)


def test_noisy_fit_is_within_four_standard_errors():
  """Noise N(0, 0.002) per round. For least squares the estimate is
  ~ N(truth, sigma^2 (J^T J)^-1) to first order, J the model's Jacobian in
  (a, b, c) at the truth: columns 1, -q^-c, b q^-c ln q. Four standard
  errors per parameter leaves a 6e-5 two-sided chance per parameter of a
  false failure if the fit is right. b and c are strongly correlated here
  (se 0.0036, 5.9, 0.12 for a, b, c), so the prediction at 6,000 queries,
  an extrapolation, is held to the same four standard errors by the delta
  method (se 0.0011): g^T Cov g with g the Jacobian row at q = 6,000."""
  a, b, c = TRUE
  sigma = 0.002

  def jac(q):
    return np.stack([np.ones_like(q), -q ** -c, b * q ** -c * np.log(q)], -1)

  cov = sigma ** 2 * np.linalg.inv(jac(Q).T @ jac(Q))
  se = np.sqrt(np.diag(cov))
  g = jac(np.float64(6000.0))
  se_pred = np.sqrt(g @ cov @ g)
  rng = np.random.default_rng(0)
  for _ in range(5):
    s = law(Q, *TRUE) + rng.normal(0, sigma, Q.shape)
    fit = curves.fit_power_law(Q, s)
    assert fit.kind == curves.POWER_LAW
    assert np.all(np.abs(np.subtract(fit.params, TRUE)) <= 4 * se), (
        fit.params, se)
    assert abs(curves.predict(fit, 6000.0) - law(6000.0, *TRUE)) <= (
        4 * se_pred)
    assert fit.residual < 2 * sigma


def test_three_points_fall_back_to_the_two_parameter_curve():
  q = np.array([100.0, 200.0, 400.0])
  fit = curves.fit_power_law(q, 0.9 - 5.0 / q)
  assert fit.kind == curves.INVERSE
  np.testing.assert_allclose(fit.params, (0.9, 5.0, 1.0), rtol=1e-9)


def test_non_convergence_falls_back():
  s = law(Q, *TRUE) + np.random.default_rng(1).normal(0, 0.002, Q.shape)
  fit = curves.fit_power_law(Q, s, maxfev=1)
  assert fit.kind == curves.INVERSE and fit.params[2] == 1.0
  # the fallback is the least-squares a - b/q: compare with NumPy's lstsq.
  coef, *_ = np.linalg.lstsq(np.stack([np.ones_like(Q), -1 / Q], 1), s,
                             rcond=None)
  np.testing.assert_allclose(fit.params[:2], coef, rtol=1e-6)


@pytest.mark.parametrize("q, s, match", [
    ([500, 800], [0.9, 0.92], "three distinct"),
    ([500, 500, 800], [0.9, 0.91, 0.92], "strictly increasing"),
    ([800, 500, 1100], [0.9, 0.91, 0.92], "strictly increasing"),
    ([500, 800, 1100], [0.9, np.nan, 0.92], "finite"),
    ([500, np.inf, 1100], [0.9, 0.91, 0.92], "finite"),
    ([0, 800, 1100], [0.9, 0.91, 0.92], "positive"),
    ([500, 800, 1100], [0.9, 0.91], "one length"),
])
def test_refuses_what_it_cannot_fit(q, s, match):
  with pytest.raises(JaxkdError, match=match) as e:
    curves.fit_power_law(q, s)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("params, target", [
    ((0.965, 8.0, 0.8), 0.955), ((0.97, 40.0, 0.6), 0.93),
    ((0.99, 0.5, 0.3), 0.95), ((0.95, 3.0, 1.0), 0.96),
    ((0.95, 0.0, 1.0), 0.9)])
def test_queries_to_reach_matches_a_brute_force_search(params, target):
  fit = curves.CurveFit(curves.POWER_LAW, params, 0.0, (1.0, 1.0))
  grid = np.linspace(1.0, 2e5, 2_000_001)                   # step 0.1
  ok = np.flatnonzero(law(grid, *params) >= target)
  got = curves.queries_to_reach(fit, target)
  if not len(ok):
    assert got == np.inf
  elif ok[0] == 0:
    assert got <= grid[0]
  else:
    assert grid[ok[0] - 1] <= got <= grid[ok[0]]


def test_crossing_interpolates_the_first_reach():
  assert curves.crossing([1, 2, 3, 4], [0.1, 0.5, 0.3, 0.9], 0.4) == 1.75
  assert curves.crossing([1, 2], [0.5, 0.6], 0.4) == 1.0
  assert curves.crossing([1, 2], [0.5, 0.6], 0.7) is None


def _coverage(n_seeds, reps=20, sigma=0.003):
  a, b, c = TRUE
  target, budget = 0.955, 6000.0
  q_true = (b / (a - target)) ** (1 / c)        # 4,255: beyond the rounds
  s_true = law(budget, *TRUE)
  q = Q[Q <= 4000]
  hit_q = hit_s = 0
  for rep in range(reps):
    rng = np.random.default_rng(1000 + rep)
    seeds = [(q, law(q, *TRUE) + rng.normal(0, sigma, q.shape))
             for _ in range(n_seeds)]
    bs = curves.bootstrap(seeds, target, budget, n_boot=40, seed=rep)
    hit_q += bs.queries_interval[0] <= q_true <= bs.queries_interval[1]
    hit_s += bs.success_interval[0] <= s_true <= bs.success_interval[1]
  return hit_q, hit_s


def test_bootstrap_over_seeds_covers_the_truth_most_of_the_time():
  """90% intervals from five noisy seeds; the truth (queries to 0.955 lies
  beyond the last round, success at 6,000 queries) was covered in 85 of
  100 repetitions of this set-up (a seed bootstrap sees (n-1)/n of the
  variance), 18 of these 20; at least 12 of 20 is asked."""
  hit_q, hit_s = _coverage(5)
  assert hit_q >= 12 and hit_s >= 12, (hit_q, hit_s)


def test_bootstrap_over_rounds_of_one_seed_covers_the_truth():
  """One seed: rounds are resampled (covered in 91 and 94 of 100
  repetitions for queries and success; 16 and 18 of these 20)."""
  hit_q, hit_s = _coverage(1)
  assert hit_q >= 12 and hit_s >= 12, (hit_q, hit_s)


def test_bootstrap_is_deterministic_given_its_seed():
  rng = np.random.default_rng(3)
  seeds = [(Q, law(Q, *TRUE) + rng.normal(0, 0.003, Q.shape))
           for _ in range(3)]
  one = curves.bootstrap(seeds, 0.95, 3000.0, n_boot=15, seed=7)
  two = curves.bootstrap(seeds, 0.95, 3000.0, n_boot=15, seed=7)
  other = curves.bootstrap(seeds, 0.95, 3000.0, n_boot=15, seed=8)
  np.testing.assert_array_equal(one.params, two.params)
  assert one.queries_interval == two.queries_interval
  assert not np.array_equal(one.params, other.params)
  # the point estimate is the fit of the mean over seeds.
  mean_fit = curves.fit_power_law(Q, np.mean([s for _, s in seeds], 0))
  np.testing.assert_allclose(one.fit.params, mean_fit.params)
  assert one.params.shape == (15, 3) and one.n_failed == 0


def test_bootstrap_refuses_seeds_with_other_rounds():
  with pytest.raises(JaxkdError, match="other query counts"):
    curves.bootstrap([(Q, law(Q, *TRUE)), (Q + 1, law(Q, *TRUE))], 0.95,
                     1000.0)


# ------------------------------------------------------------------ plan ---


FAST = (0.97, 6.0, 0.9)     # reaches 0.96 at (6 / 0.01)^(1/0.9) = 1,217
SLOW = (0.975, 30.0, 0.8)   # reaches 0.96 at (30 / 0.015)^(1/0.8) = 13,375
FLAT = (0.94, 5.0, 0.9)     # never reaches 0.96


def _synthetic(sigma=0.001, seeds=3):
  rng = np.random.default_rng(5)
  return {name: [records(Q, law(Q, *p) + rng.normal(0, sigma, Q.shape))
                 for _ in range(seeds)]
          for name, p in (("slow", SLOW), ("fast", FAST), ("flat", FLAT))}


def test_plan_names_the_cheapest_strategy():
  out = plan.plan(_synthetic(), 0.96, budget=8000, price=0.002, n_boot=30)
  assert out["cheapest"] == "fast"
  st = out["strategies"]
  for name, p in (("fast", FAST), ("slow", SLOW)):
    true_q = (p[1] / (p[0] - 0.96)) ** (1 / p[2])
    assert st[name]["queries_to_target"] == pytest.approx(true_q, rel=0.15)
    assert st[name]["success_at_budget"] == pytest.approx(
        law(8000, *p), abs=0.003)
    assert st[name]["cost"] == pytest.approx(
        0.002 * st[name]["queries_to_target"])
  assert st["fast"]["extrapolated"] is False
  assert st["slow"]["extrapolated"] is True        # 13,375 > 5,000 measured
  assert st["flat"]["queries_to_target"] is None
  assert st["flat"]["measured_queries_to_target"] is None
  assert "beyond the 90% intervals" in out["note"]
  json.dumps(out, allow_nan=False)                 # JSON-ready, no inf/nan
  text = plan.format_plan(out)
  assert "cheapest to reach 0.960: fast" in text and "never" in text


@pytest.mark.parametrize("kwargs, match", [
    ({"target": 1.01}, "target"), ({"target": 0.0}, "target"),
    ({"target": 0.9, "price": -1.0}, "price"),
    ({"target": 0.9, "budget": 0.0}, "budget")])
def test_plan_refuses_bad_settings(kwargs, match):
  with pytest.raises(JaxkdError, match=match):
    plan.plan(_synthetic(), **kwargs)


def test_plan_refuses_a_run_with_two_rounds():
  short = {"a": [records(Q[:2], [0.9, 0.91])]}
  with pytest.raises(JaxkdError, match="at least three"):
    plan.plan(short, 0.95)


def test_published_layout_is_read_from_its_runs():
  recs, info = plan.load_records(
      os.path.join(ROOT, "docs", "results", "recon_fmnist.json"), "main")
  assert set(recs) == {"random", "learning_loss", "coreset",
                       "discriminative", "admm"}
  assert all(len(runs) == 3 and len(runs[0]) == 16 for runs in recs.values())
  assert info["teacher_accuracy"] == pytest.approx(0.8987)


def test_summary_only_part_becomes_one_mean_curve(tmp_path):
  part = {"kind": "active", "summary": {"x": {
      "queries": [1, 2, 3],
      "success_rate": [{"mean": 0.5, "std": 0.1, "n": 2}] * 3}}}
  path = tmp_path / "pub.json"
  path.write_text(json.dumps({"parts": {"main": part}}))
  recs, _ = plan.load_records(str(path))
  assert recs == {"x": [[{"queries": q, "success_rate": 0.5}
                         for q in (1, 2, 3)]]}


# ------------------------------------------------------------------- CLI ---


def _fake_run(root, rounds=len(Q), name="RUN"):
  run = root / name
  run.mkdir()
  rng = np.random.default_rng(9)
  strategies = {
      s: [records(Q[:rounds], law(Q[:rounds], *p)
                  + rng.normal(0, 0.001, rounds)) for _ in range(2)]
      for s, p in (("slow", SLOW), ("fast", FAST))}
  (run / "results.json").write_text(json.dumps({
      "job": "active", "strategies": strategies, "teacher_accuracy": 0.9,
      "config": {"per_round": 300}}))
  return run


def test_cli_prints_the_plan_and_writes_png_and_json(tmp_path):
  run = _fake_run(tmp_path)
  p = subprocess.run(
      [sys.executable, "-m", "jaxkd.plan", "--workdir", str(run),
       "--target", "0.96", "--budget", "2000", "--price", "0.002",
       "--n_boot", "20"], capture_output=True, text=True, cwd=ROOT,
      timeout=300)
  assert p.returncode == 0, p.stderr
  assert "| strategy" in p.stdout and "queries to 0.960" in p.stdout
  assert "success % at 2,000" in p.stdout
  assert "cheapest to reach 0.960: fast" in p.stdout
  with open(run / "plan.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  out = json.loads((run / "plan.json").read_text())
  assert out["cheapest"] == "fast" and out["price"] == 0.002
  assert set(out["strategies"]) == {"slow", "fast"}


def _main(argv, capsys):
  try:
    rc = plan.main(argv)
  except SystemExit as e:
    rc = e.code
  return rc, capsys.readouterr()


@pytest.mark.parametrize("extra, match", [
    (["--target", "1.5"], "target"), (["--target", "0"], "target"),
    (["--target", "-0.2"], "target"),
    (["--target", "0.9", "--price", "-0.01"], "price"),
    ([], "--target is required"),
    (["--target", "x"], "invalid float")])
def test_cli_bad_settings_are_one_line_and_exit_2(extra, match, tmp_path,
                                                   capsys):
  run = _fake_run(tmp_path)
  rc, cap = _main(["--workdir", str(run), *extra], capsys)
  assert rc == 2
  assert cap.err.count("\n") == 1 and match in cap.err, cap.err
  assert not (run / "plan.json").exists()


def test_cli_short_run_and_missing_results_are_one_line(tmp_path, capsys):
  short = _fake_run(tmp_path, rounds=2, name="SHORT")
  rc, cap = _main(["--workdir", str(short), "--target", "0.9"], capsys)
  assert rc == 2 and cap.err.count("\n") == 1 and "three" in cap.err
  empty = tmp_path / "EMPTY"
  empty.mkdir()
  rc, cap = _main(["--workdir", str(empty), "--target", "0.9"], capsys)
  assert rc == 2 and cap.err.count("\n") == 1 and "results" in cap.err


def test_cli_unix_results_have_no_curve(capsys):
  rc, cap = _main(["--results", os.path.join(ROOT, "docs", "results",
                                             "unix_fmnist.json"),
                   "--target", "0.9"], capsys)
  assert rc == 2 and cap.err.count("\n") == 1
  assert "no query curve" in cap.err


def test_validate_scores_later_rounds(tmp_path, capsys):
  """On exact power-law curves the first-half fit predicts the queries to
  the final-minus-margin target and the final success almost exactly."""
  rng = np.random.default_rng(2)
  runs = {n: [records(Q, law(Q, *p) + rng.normal(0, 1e-4, Q.shape))
              for _ in range(2)] for n, p in (("fast", FAST),
                                              ("slow", SLOW))}
  pub = {"parts": {
      "main": {"kind": "active", "runs": runs, "summary": {"x": {}}},
      "u": {"kind": "unix", "summary": {"kd": {}}},
      "two": {"kind": "active", "runs": {"m": [records([1, 2], [.5, .6])]},
              "summary": {"m": {}}}}}
  path = tmp_path / "pub.json"
  path.write_text(json.dumps(pub))
  rc, cap = _main(["--validate", str(path), "--out", str(tmp_path),
                   "--n_boot", "10"], capsys)
  assert rc == 0, cap.err
  md = (tmp_path / "plan_validation.md").read_text()
  assert "| strategy | fit on |" in md and "When not to trust" in md
  assert "no query curve" in md and "a curve needs three" in md
  rows, _ = plan.validate_part(runs, n_boot=10)
  half = [r for r in rows if r["fraction"] == 0.5]
  assert len(rows) == 8 and len(half) == 4
  for r in half:
    assert r["predicted_final"] == pytest.approx(r["measured_final"],
                                                 abs=1e-3)
    if r["target_kind"] == "final" and r["measured_queries"] is not None:
      assert abs(r["error_pct"]) < 5

"""jaxkd.statistics against independent references on a fixed toy curve.

AUBC by hand and by numpy's trapezoid rule, p-values by scipy.stats on the
toy numbers and by the t formula, queries saved by hand interpolation,
bootstrap intervals by a per-resample numpy loop.
"""

import json

import numpy as np
import pytest
from scipy import stats

from jaxkd import statistics as st
from jaxkd.validation import JaxkdError

Q = [100, 200, 400]
RANDOM = [[0.5, 0.60, 0.70], [0.5, 0.62, 0.72], [0.5, 0.58, 0.71]]
ADMM = [[0.5, 0.70, 0.75], [0.5, 0.66, 0.74], [0.5, 0.69, 0.78]]
FLAT = [[0.5, 0.55, 0.60], [0.5, 0.56, 0.61], [0.5, 0.54, 0.62]]


def _runs(curves, queries=Q):
  return [[{"queries": q, "success_rate": s} for q, s in zip(queries, c)]
          for c in curves]


def _trapezoid(y, x):
  f = getattr(np, "trapezoid", None) or np.trapz
  return f(y, x)


def _hand_aubc(s):  # widths 100 and 200 over a range of 300
  return (100 * (s[0] + s[1]) / 2 + 200 * (s[1] + s[2]) / 2) / 300


def test_aubc_is_the_normalised_trapezoid():
  assert st.aubc(Q, ADMM[0]) == pytest.approx((60 + 145) / 300)
  for c in RANDOM + ADMM:
    assert st.aubc(Q, c) == pytest.approx(_hand_aubc(c))
    assert st.aubc(Q, c) == pytest.approx(_trapezoid(c, Q) / 300)
  assert st.aubc([7], [0.3]) == 0.3
  assert st.aubc([0, 10], [0.4, 0.4]) == pytest.approx(0.4)
  with pytest.raises(JaxkdError, match="increase"):
    st.aubc([200, 100], [0.5, 0.6])


def test_paired_test_is_scipys_ttest_rel_and_the_t_formula():
  a = [st.aubc(Q, c) for c in ADMM]
  b = [st.aubc(Q, c) for c in RANDOM]
  got = st.paired_test(a, b)
  ref = stats.ttest_rel(a, b)
  d = np.asarray(a) - np.asarray(b)
  t = d.mean() / (d.std(ddof=1) / np.sqrt(3))
  assert got["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
  assert got["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 2), rel=1e-9)
  assert got["statistic"] == pytest.approx(t)
  assert got["mean_difference"] == pytest.approx(d.mean())
  assert got["n"] == 3 and got["test"] == "ttest_rel"
  assert got["wilcoxon_p"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
  assert got["wilcoxon_p"] == pytest.approx(0.25)  # 2 / 2^3: its floor


def test_paired_test_without_spread_or_seeds_has_no_p_value():
  one = st.paired_test([0.7], [0.6])
  assert one["p_value"] is None and one["mean_difference"] == pytest.approx(
      0.1)
  same = st.paired_test([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
  assert same["p_value"] is None and same["wilcoxon_p"] is None
  shift = st.paired_test([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])  # d constant
  assert shift["p_value"] is None
  with pytest.raises(JaxkdError, match="as many"):
    st.paired_test([0.5, 0.6], [0.5])


def test_queries_saved_is_the_hand_interpolated_crossing():
  # reaches 0.70 exactly at 200: saves 400 - 200
  assert st.queries_saved(Q, ADMM[0], 0.70) == pytest.approx(200)
  # 0.72 between (200, 0.66) and (400, 0.74): 200 + 200 * 0.06 / 0.08 = 350
  assert st.queries_saved(Q, ADMM[1], 0.72) == pytest.approx(50)
  # 0.71 between (200, 0.69) and (400, 0.78): 200 + 200 * 0.02 / 0.09
  assert st.queries_saved(Q, ADMM[2], 0.71) == pytest.approx(
      400 - (200 + 200 * 0.02 / 0.09))
  assert st.queries_saved(Q, ADMM[0], 0.4) == pytest.approx(300)  # q[0]
  assert st.queries_saved(Q, FLAT[0], 0.70) is None
  assert st.queries_saved(Q, ADMM[0], 0.70, baseline_queries=1000) == (
      pytest.approx(800))
  assert st.queries_saved(Q, [0.5, 0.6, 0.55], 0.6) == pytest.approx(200)


def _brute_bootstrap(values, level, resamples, seed):
  rng = np.random.default_rng(seed)
  v = np.asarray(values, np.float64)
  means = np.empty(resamples)
  for i in range(resamples):  # one resample at a time
    means[i] = v[rng.integers(0, len(v), size=len(v))].mean()
  return tuple(np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


def test_bootstrap_interval_matches_a_resampling_loop_and_bounds():
  v = [0.61, 0.65, 0.70, 0.58, 0.66]
  lo, hi = st.bootstrap_interval(v, level=0.9, resamples=2000, seed=3)
  assert (lo, hi) == pytest.approx(_brute_bootstrap(v, 0.9, 2000, 3))
  assert min(v) <= lo <= np.mean(v) <= hi <= max(v)
  assert st.bootstrap_interval(v, seed=3) == st.bootstrap_interval(v, seed=3)
  assert st.bootstrap_interval([0.4]) == (0.4, 0.4)
  rng = np.random.default_rng(0)
  widths = []
  for n in (4, 40, 400):
    lo, hi = st.bootstrap_interval(rng.normal(size=n), resamples=4000)
    widths.append(hi - lo)
  assert widths[0] > widths[1] > widths[2]
  # ~ 2 x 1.96 / sqrt(n) for a unit normal
  assert widths[2] == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.2)
  with pytest.raises(JaxkdError):
    st.bootstrap_interval([])


def test_strategy_statistics_on_the_toy_curves():
  res = {"random": _runs(RANDOM), "admm": _runs(ADMM), "flat": _runs(FLAT)}
  out = st.strategy_statistics(res, "random", resamples=3000, seed=1)
  json.dumps(out, allow_nan=False)  # plain floats and None
  a = out["admm"]
  au = [_hand_aubc(c) for c in ADMM]
  assert a["aubc"]["mean"] == pytest.approx(np.mean(au))
  assert a["aubc"]["std"] == pytest.approx(np.std(au))
  assert a["aubc"]["n"] == 3 and a["aubc"]["values"] == pytest.approx(au)
  assert (a["aubc"]["lo"], a["aubc"]["hi"]) == pytest.approx(
      _brute_bootstrap(au, 0.95, 3000, 1))
  assert a["p_value"] == pytest.approx(stats.ttest_rel(
      au, [_hand_aubc(c) for c in RANDOM]).pvalue)
  assert a["p_value_final"] == pytest.approx(stats.ttest_rel(
      [c[-1] for c in ADMM], [c[-1] for c in RANDOM]).pvalue)
  pb = {x["queries"]: x for x in a["per_budget"]}
  assert sorted(pb) == Q and pb[100]["p_value"] is None
  assert pb[100]["mean_difference"] == 0.0
  assert pb[200]["p_value"] == pytest.approx(stats.ttest_rel(
      [c[1] for c in ADMM], [c[1] for c in RANDOM]).pvalue)
  saved = [200, 50, 400 - (200 + 200 * 0.02 / 0.09)]  # per-seed targets
  qs = a["queries_saved"]
  assert qs["values"] == pytest.approx(saved)
  assert qs["mean"] == pytest.approx(np.mean(saved))
  assert qs["reached"] == qs["seeds"] == qs["n"] == 3
  assert qs["lo"] <= qs["mean"] <= qs["hi"]
  r = out["random"]
  assert r["p_value"] is None and r["per_budget"] == []
  assert r["queries_saved"]["values"] == pytest.approx([0, 0, 0])
  f = out["flat"]["queries_saved"]
  assert f["values"] == [None, None, None] and f["reached"] == 0
  assert f["mean"] is None and st.format_saved(f) == "not reached"
  table = st.statistics_table(out)
  assert "p vs random (AUBC)" in table and "not reached" in table
  assert f"{100 * np.mean(au):.2f} [" in table


def test_some_seeds_never_reach_and_pairing_by_seed_id():
  half = [ADMM[0], FLAT[1], ADMM[2]]  # seed 1 stays below 0.72
  res = {"random": _runs(RANDOM), "mixed": _runs(half)}
  qs = st.strategy_statistics(res, resamples=500)["mixed"]["queries_saved"]
  assert qs["values"][1] is None and qs["reached"] == 2 and qs["seeds"] == 3
  assert qs["mean"] == pytest.approx(np.mean([200, 400 - (200 + 400 / 9)]))
  assert "(2/3 seeds)" in st.format_saved(qs)
  # the same runs in another order, paired by seed id
  base = st.strategy_statistics(
      {"random": _runs(RANDOM), "admm": _runs(ADMM)}, resamples=500)
  shuffled = st.strategy_statistics(
      {"random": _runs(RANDOM), "admm": _runs(ADMM[::-1])}, resamples=500,
      seeds={"random": [0, 1, 2], "admm": [2, 1, 0]})
  assert shuffled["admm"]["p_value"] == pytest.approx(base["admm"]["p_value"])
  assert shuffled["admm"]["queries_saved"]["mean"] == pytest.approx(
      base["admm"]["queries_saved"]["mean"])
  # records carrying their seed pair themselves
  tagged = {s: [[dict(x, seed=i) for x in run]
                for i, run in enumerate(_runs(c))]
            for s, c in (("random", RANDOM), ("admm", ADMM))}
  tagged["admm"] = tagged["admm"][::-1]
  got = st.strategy_statistics(tagged, resamples=500)["admm"]
  assert got["p_value"] == pytest.approx(base["admm"]["p_value"])


def test_one_seed_and_missing_baseline():
  one = st.strategy_statistics({"random": _runs(RANDOM[:1]),
                                "admm": _runs(ADMM[:1])})
  a = one["admm"]
  assert a["p_value"] is None and a["p_value_final"] is None
  assert a["aubc"]["lo"] == a["aubc"]["hi"] == a["aubc"]["mean"]
  assert a["queries_saved"]["mean"] == pytest.approx(200)
  none = st.strategy_statistics({"admm": _runs(ADMM)})
  assert none["admm"]["p_value"] is None
  assert none["admm"]["queries_saved"] is None
  assert none["admm"]["baseline"] is None
  assert none["admm"]["aubc"]["mean"] == pytest.approx(
      np.mean([_hand_aubc(c) for c in ADMM]))
  assert "| admm" in st.statistics_table(none)


def test_unequal_budgets_compare_on_the_common_ones():
  longer = _runs([c + [0.8] for c in ADMM], Q + [700])
  out = st.strategy_statistics({"random": _runs(RANDOM), "long": longer},
                               resamples=500)["long"]
  assert [x["queries"] for x in out["per_budget"]] == Q
  assert out["aubc_difference"] == pytest.approx(np.mean(
      [_hand_aubc(a) - _hand_aubc(b) for a, b in zip(ADMM, RANDOM)]))
  assert out["aubc"]["values"][0] == pytest.approx(
      _trapezoid(ADMM[0] + [0.8], Q + [700]) / 600)


def test_final_statistics_pairs_unix_records_by_seed():
  recs = lambda xs: [{"seed": i, "success_rate": x} for i, x in
                     enumerate(xs)]
  finals = {"kd": recs([0.99, 0.98, 0.985]),
            "random_kd": recs([0.98, 0.975, 0.976]),
            "unix": recs([0.982, 0.979, 0.978])[::-1]}
  out = st.final_statistics(finals, "random_kd", resamples=500)
  json.dumps(out, allow_nan=False)
  assert out["unix"]["p_value"] == pytest.approx(stats.ttest_rel(
      [0.982, 0.979, 0.978], [0.98, 0.975, 0.976]).pvalue)
  assert out["random_kd"]["p_value"] is None
  assert out["kd"]["aubc"] is None and out["kd"]["queries_saved"] is None
  assert st.final_statistics({"unix": recs([0.9])})["unix"]["p_value"] is None


def _publish_module():
  import os
  import sys
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..",
                                  "experiments"))
  import publish  # pylint: disable=import-outside-toplevel
  return publish


def test_add_statistics_republishes_from_the_records_alone(tmp_path):
  publish = _publish_module()
  runs = {"random": _runs(RANDOM), "admm": _runs(ADMM)}
  summary = {s: {"seeds": [0, 1, 2], "queries": Q,
                 "accuracy": [{"mean": 0.5, "std": 0.0, "n": 3}] * 3,
                 "success_rate": [{"mean": float(np.mean([c[r] for c in cs])),
                                   "std": 0.0, "n": 3} for r in range(3)],
                 "wall_time_s": 3.0}
             for s, cs in (("random", RANDOM), ("admm", ADMM))}
  path = tmp_path / "toy.json"
  path.write_text(json.dumps({
      "name": "toy", "complete": True, "missing": [], "parts": {
          "main": {"kind": "active", "runs": runs, "summary": summary,
                   "teacher_accuracy": 0.9},
          "unix": {"kind": "unix", "runs": {
              "random_kd": [{"seed": i, "success_rate": c[-1]}
                            for i, c in enumerate(RANDOM)],
              "unix": [{"seed": i, "success_rate": c[-1]}
                       for i, c in enumerate(ADMM)]}}}}))
  out = publish.add_statistics(str(path))
  saved = json.loads(path.read_text())
  assert saved["parts"]["main"]["statistics"] == out["parts"]["main"][
      "statistics"]
  got = saved["parts"]["main"]["statistics"]["admm"]
  assert got["p_value"] == pytest.approx(stats.ttest_rel(
      [_hand_aubc(c) for c in ADMM], [_hand_aubc(c) for c in RANDOM]).pvalue)
  assert got["queries_saved"]["mean"] == pytest.approx(
      np.mean([200, 50, 400 - (200 + 200 * 0.02 / 0.09)]))
  u = saved["parts"]["unix"]["statistics"]["unix"]
  assert u["p_value"] == pytest.approx(stats.ttest_rel(
      [c[-1] for c in ADMM], [c[-1] for c in RANDOM]).pvalue)
  assert u["aubc"] is None
  md = publish.markdown(saved)
  assert "| p vs random (AUBC) |" in md
  assert f"| {st.format_p(got['p_value'])} |" in md


@pytest.mark.parametrize("name", ["recon_fmnist", "active_mixup_t1",
                                  "unix_fmnist"])
def test_published_statistics_are_those_of_the_published_records(name):
  import os
  publish = _publish_module()
  path = os.path.join(publish.RESULTS, f"{name}.json")
  with open(path) as f:
    out = json.load(f)
  for pname, p in out["parts"].items():
    if p.get("runs"):
      assert p["statistics"] == json.loads(json.dumps(
          publish.part_statistics(p))), pname

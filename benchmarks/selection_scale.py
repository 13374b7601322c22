"""Every pool selection strategy at n = 1,000,000 candidates, and its
scikit-activeml peer where one exists.

  python benchmarks/selection_scale.py [--n 1000000] [--k 1000]
      [--strategies random,entropy,...] [--peers entropy,coreset,...]
      [--out benchmarks/results/selection_scale]

Inputs (float32, seed 0): student probabilities [n, C = 10] (softmax of
2 x Gaussian logits), embeddings [n, D = 84] (Gaussian), 500 points
already paid (available False), k = 1,000 picks; gap_diversity also gets
teacher and baseline probabilities, learning_loss Gaussian predicted
losses. Each strategy runs in its own process, so its peak RSS
(`ru_maxrss`) is that of one selection round: Python + JAX + the inputs +
the selection. Cheap strategies report the median of `--repeats` calls
after a first (compiling) call; expensive ones one call, compile included.

What is timed is the selection phase, called as the loop calls it
(`get_strategy(name).fn(key, SelectionInputs(...), k)`) for the function
strategies, with every option at its default. learning_loss and
discriminative need a student (their `select` runs it) so their inner
functions are timed on the random inputs instead: `learning_loss_select`
on given predicted losses, `discriminative_select` on the embeddings with
no labelled points outside the pool (the 500 paid ones are labelled).

Peers (scikit-activeml, at `--peer_n` points or the per-peer default,
where they run in reasonable time): UncertaintySampling (entropy,
margin_sampling, least_confident), CoreSet and Badge, with a fixed
classifier that returns the same probabilities / embeddings, so both
sides see the same numbers; their picks are compared before timing is
reported. A benchmark, not a test; the results go to
`<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STRATEGIES = ("random", "entropy", "margin", "least_confidence", "coreset",
              "badge", "rad", "admm", "gap_diversity", "learning_loss",
              "discriminative")
# Strategies whose single call is cheap enough to repeat.
CHEAP = {"random", "entropy", "margin", "least_confidence", "rad",
         "learning_loss"}
PEERS = {"entropy": "entropy", "margin": "margin_sampling",
         "least_confidence": "least_confident", "coreset": "coreset",
         "badge": "badge"}
PEER_N = {"entropy": 100_000, "margin": 100_000, "least_confidence": 100_000,
          "coreset": 100_000, "badge": 50_000}
C, D = 10, 84


def _rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_inputs(n: int, paid: int, seed: int = 0, extra: bool = False):
  """float32 inputs, written block by block (no float64 [n, D] copy)."""
  rng = np.random.default_rng(seed)
  emb = rng.standard_normal((n, D), dtype=np.float32)

  def probs():
    out = np.empty((n, C), np.float32)
    for s in range(0, n, 1 << 16):
      z = 2.0 * rng.standard_normal((min(1 << 16, n - s), C),
                                    dtype=np.float32)
      z = np.exp(z - z.max(1, keepdims=True))
      out[s:s + len(z)] = z / z.sum(1, keepdims=True)
    return out

  avail = np.ones(n, bool)
  avail[rng.choice(n, paid, replace=False)] = False
  out = dict(embeddings=emb, probs=probs(), available=avail)
  if extra:
    out.update(teacher_probs=probs(), baseline_probs=probs(),
               scores=rng.standard_normal(n, dtype=np.float32))
  return out


def selection_fn(name: str, x: dict, k: int):
  """A no-argument call of strategy `name`'s selection phase on `x`."""
  import jax
  from jaxkd.selection import SelectionInputs, get_strategy
  key = jax.random.key(0)
  if name == "learning_loss":
    from jaxkd.selection.learning_loss import learning_loss_select
    return lambda: learning_loss_select(key, x["scores"], x["available"], k)
  if name == "discriminative":
    from jaxkd.selection.discriminative import discriminative_select
    none = np.zeros((0, D), np.float32)
    return lambda: discriminative_select(key, none, x["embeddings"],
                                         x["available"], k)
  fields = dict(available=x["available"], probs=x["probs"],
                embeddings=x["embeddings"])
  if name == "rad":
    fields["mistake_rate"] = 0.05
  if name == "gap_diversity":
    fields.update(teacher_probs=x["teacher_probs"],
                  baseline_probs=x["baseline_probs"])
  inputs = SelectionInputs(**fields)
  fn = get_strategy(name).fn
  return lambda: fn(key, inputs, k)


def _timed(fn):
  t = time.perf_counter()
  out = np.asarray(fn())
  return time.perf_counter() - t, out


def run_strategy(name: str, n: int, k: int, paid: int, repeats: int) -> dict:
  x = make_inputs(n, paid, extra=name in ("gap_diversity", "learning_loss"))
  import jax  # noqa: F401  (imported before the inputs' RSS is read)
  rss_inputs = _rss_gib()
  fn = selection_fn(name, x, k)
  first, picks = _timed(fn)
  rec = dict(strategy=name, n=n, k=k, paid=paid, first_call_s=first)
  if name in CHEAP and repeats:
    times = [_timed(fn)[0] for _ in range(repeats)]
    rec.update(median_s=statistics.median(times), repeats=repeats)
  picks = picks.reshape(-1)
  rec.update(rss_inputs_gib=rss_inputs, rss_peak_gib=_rss_gib(),
             distinct=len(set(picks.tolist())) == k,
             all_available=bool(x["available"][picks].all()))
  return rec


class _Fixed:
  """Factory of a scikit-activeml classifier that returns given
  probabilities (and embeddings) for rows X[:, 0] = row ids."""

  @staticmethod
  def make(probs, emb):
    from skactiveml.base import SkactivemlClassifier

    class Fixed(SkactivemlClassifier):

      def __init__(self, classes=None, missing_label=np.nan):
        super().__init__(classes=classes, missing_label=missing_label)

      def fit(self, X, y, sample_weight=None):
        return self

      def predict_proba(self, X, return_embeddings=False):
        rows = np.asarray(X[:, 0], np.int64)
        if return_embeddings:
          return probs[rows], emb[rows]
        return probs[rows]

    return Fixed(classes=np.arange(C))


def peer_picks(name: str, x: dict, k: int):
  """A no-argument call of the scikit-activeml peer of `name`."""
  from skactiveml.pool import Badge, CoreSet, UncertaintySampling
  n = len(x["available"])
  y = np.where(x["available"], np.nan, 0.0)
  ids = np.arange(n, dtype=np.float64)[:, None]
  clf = _Fixed.make(x["probs"], x["embeddings"])
  if name == "coreset":
    qs = CoreSet(random_state=0)
    return lambda: qs.query(X=x["embeddings"], y=y, batch_size=k)
  if name == "badge":
    qs = Badge(clf_embedding_flag_name="return_embeddings", random_state=0)
    return lambda: qs.query(X=ids, y=y, clf=clf, fit_clf=False,
                            batch_size=k)
  qs = UncertaintySampling(method=PEERS[name], random_state=0)
  return lambda: qs.query(X=ids, y=y, clf=clf, fit_clf=False, batch_size=k)


def run_peer(name: str, n: int, k: int, paid: int, repeats: int) -> dict:
  x = make_inputs(n, paid)
  ours_fn, peer_fn = selection_fn(name, x, k), peer_picks(name, x, k)
  t_ours, ours = _timed(ours_fn)
  t_peer, peer = _timed(peer_fn)
  rec = dict(strategy=name, peer=f"skactiveml {PEERS[name]}", n=n, k=k,
             paid=paid)
  if name in CHEAP and repeats:
    t_ours = statistics.median(_timed(ours_fn)[0] for _ in range(repeats))
    t_peer = statistics.median(_timed(peer_fn)[0] for _ in range(repeats))
    rec["repeats"] = repeats
  else:
    rec["note"] = "one call each, jaxkd's compile included"
  ours, peer = np.asarray(ours).reshape(-1), np.asarray(peer).reshape(-1)
  diff = np.flatnonzero(ours != peer)
  rec.update(jaxkd_s=t_ours, peer_s=t_peer, speedup=t_peer / t_ours,
             same_order=bool(len(diff) == 0),
             same_set=set(ours.tolist()) == set(peer.tolist()),
             overlap=len(set(ours.tolist()) & set(peer.tolist())),
             first_difference=int(diff[0]) if len(diff) else None,
             same_first_pick=bool(ours[0] == peer[0]))
  if len(diff):  # how far apart the first differing picks' scores are
    rec["first_difference_detail"] = _difference_detail(
        name, x, ours, peer, int(diff[0]))
  return rec


def _difference_detail(name, x, ours, peer, i):
  """Float64 scores of the first differing picks (a near-tie?)."""
  if name == "badge":
    return "picks after the first are D^2 samples of different RNGs"
  if name == "coreset":
    e = x["embeddings"].astype(np.float64)
    centers = np.r_[np.flatnonzero(~x["available"]), ours[:i]]
    def mind(j):
      return float(np.sqrt(((e[centers] - e[j]) ** 2).sum(1).min()))
    return dict(jaxkd_pick_distance=mind(ours[i]),
                peer_pick_distance=mind(peer[i]))
  p = x["probs"].astype(np.float64)
  if name == "entropy":
    score = lambda j: float(-(p[j] * np.log(p[j])).sum())
  elif name == "margin":
    score = lambda j: float(-np.diff(np.sort(p[j])[-2:])[0])
  else:
    score = lambda j: float(1.0 - p[j].max())
  return dict(jaxkd_pick_score=score(ours[i]), peer_pick_score=score(peer[i]))


def _child(args) -> None:
  fn = run_peer if args.child_peer else run_strategy
  rec = fn(args.child, args.n, args.k, args.paid, args.repeats)
  print("RESULT " + json.dumps(rec), flush=True)


def _spawn(argv, timeout):
  load0 = os.getloadavg()
  t = time.perf_counter()
  try:
    out = subprocess.run([sys.executable, os.path.abspath(__file__)] + argv,
                         capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, PYTHONPATH=ROOT))
  except subprocess.TimeoutExpired:
    return dict(error=f"timed out after {timeout} s")
  lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
  if out.returncode or not lines:
    return dict(error=out.stderr[-1500:])
  rec = json.loads(lines[-1][len("RESULT "):])
  rec.update(wall_s=time.perf_counter() - t, load_before=load0,
             load_after=os.getloadavg())
  return rec


def _markdown(result) -> str:
  loads = [r[f"load_{w}"][0] for r in result["strategies"] + result["peers"]
           for w in ("before", "after") if f"load_{w}" in r]
  load = (f" The 1-minute load average ran from {min(loads):.1f} to "
          f"{max(loads):.1f} on the 2 cpus during the runs (other jobs "
          "shared the machine), so these times are above a quiet "
          "machine's." if loads else "")
  lines = [
      "# Selection at a million candidates", "",
      f"`python benchmarks/selection_scale.py`, {result['date']}, at "
      f"{result['commit']} on "
      f"{result['machine']}; n = {result['n']:,}, C = {C}, D = {D}, k = "
      f"{result['k']}, {result['paid']} paid; float32. Peak RSS is the "
      "whole process (Python, JAX, inputs, selection); inputs RSS is read "
      "before the selection starts." + load, "",
      "| strategy | time (s) | how timed | peak RSS (GiB) | inputs RSS "
      "(GiB) | load before / after |", "| --- | --- | --- | --- | --- | --- |"]
  for r in result["strategies"]:
    if "error" in r:
      lines.append(f"| {r['name']} | error | {r['error'][:80]!r} | | | |")
      continue
    how = (f"median of {r['repeats']} (first {r['first_call_s']:.2f})"
           if "median_s" in r else "one call, compile included")
    t = r.get("median_s", r["first_call_s"])
    lines.append(
        f"| {r['strategy']} | {t:.2f} | {how} | {r['rss_peak_gib']:.2f} | "
        f"{r['rss_inputs_gib']:.2f} | {r['load_before'][0]:.1f} / "
        f"{r['load_after'][0]:.1f} |")
  if result["peers"]:
    lines += ["", "Against scikit-activeml "
              f"{result['skactiveml']} (same inputs, fixed classifier):", "",
              "| strategy | peer | n | jaxkd (s) | peer (s) | speed-up | same "
              "picks (order) | same set | first difference |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["peers"]:
      if "error" in r:
        lines.append(f"| {r['name']} | error | | | | | | | "
                     f"{r['error'][:60]!r} |")
        continue
      lines.append(
          f"| {r['strategy']} | {r['peer']} | {r['n']:,} | "
          f"{r['jaxkd_s']:.2f} | {r['peer_s']:.2f} | {r['speedup']:.1f}x | "
          f"{r['same_order']} | {r['same_set']} ({r['overlap']}) | "
          f"{r['first_difference']} |")
  lines += ["", "Notes:", ""] + [f"- {note}" for note in NOTES]
  return "\n".join(lines) + "\n"


NOTES = (
    "Approximations at this n (each an option of the strategy, off at or "
    "below its threshold): admm solves on a uniform random subset of "
    "`max_rows` = 100,000 unqueried points; gap_diversity builds its exact "
    "kNN graph and greedy on a stratified random subset of `max_pool` = "
    "100,000 points (exact kNN of 10^6 points is ~10^14 flops); "
    "discriminative caps each fit at `max_train` = 8,192 rows. The others "
    "are exact on all n.",
    "learning_loss times `learning_loss_select` on given predicted losses "
    "and discriminative `discriminative_select` on the embeddings (their "
    "`select` runs the student, which this benchmark has not got); "
    "learning_loss's `select` now runs the student on its `subset` of "
    "candidates only.",
    "discriminative's time is its 20 discriminator fits (Adam, full batch, "
    "stopped at 98% training accuracy, ~100 steps each on these random "
    "embeddings), nearly independent of n.",
    "margin: the same set as scikit-activeml, ordered differently from the "
    "first exact tie of margins on (equal float64 scores): jaxkd breaks "
    "ties by lowest index, scikit-activeml at random.",
    "badge: the first pick (largest gradient norm) is the same; later "
    "picks are D^2 samples drawn by different RNGs, so the picks are not "
    "comparable one by one (tests/test_badge.py checks the D^2 "
    "frequencies).",
    "Peer times are one call each for coreset and badge (jaxkd's compile "
    "included), medians of 3 after a first call for the others.")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--n", type=int, default=1_000_000)
  ap.add_argument("--k", type=int, default=1000)
  ap.add_argument("--paid", type=int, default=500)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--strategies", default=",".join(STRATEGIES))
  ap.add_argument("--peers", default=",".join(PEERS))
  ap.add_argument("--peer_n", type=int, default=None,
                  help="peer size for every peer (default: per peer)")
  ap.add_argument("--timeout", type=int, default=1200)
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks",
                                                "results", "selection_scale"))
  ap.add_argument("--render", action="store_true",
                  help="only rewrite <out>.md from <out>.json")
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--child_peer", action="store_true", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.child:
    return _child(args)
  if args.render:
    with open(args.out + ".json") as f:
      result = json.load(f)
    with open(args.out + ".md", "w") as f:
      f.write(_markdown(result))
    return None
  import jax
  import skactiveml
  commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
  if subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--",
                     "jaxkd"], capture_output=True, text=True).stdout:
    commit += " + uncommitted changes"
  result = dict(
      date=datetime.date.today().isoformat(), commit=commit,
      machine=f"{os.cpu_count()} cpus, jax {jax.__version__} "
              f"({jax.devices()[0].platform})",
      skactiveml=skactiveml.__version__, n=args.n, k=args.k, paid=args.paid,
      strategies=[], peers=[])
  common = ["--k", str(args.k), "--paid", str(args.paid), "--repeats",
            str(args.repeats)]
  for name in filter(None, args.strategies.split(",")):
    rec = _spawn(["--child", name, "--n", str(args.n)] + common, args.timeout)
    rec.setdefault("name", name)
    print(json.dumps(rec), flush=True)
    result["strategies"].append(rec)
  for name in filter(None, args.peers.split(",")):
    n = args.peer_n or PEER_N[name]
    rec = _spawn(["--child", name, "--child_peer", "--n", str(n)] + common,
                 args.timeout)
    rec.setdefault("name", name)
    print(json.dumps(rec), flush=True)
    result["peers"].append(rec)
  with open(args.out + ".json", "w") as f:
    json.dump(result, f, indent=1)
  with open(args.out + ".md", "w") as f:
    f.write(_markdown(result))
  print(_markdown(result))


if __name__ == "__main__":
  main()

"""Publishing a reproduction: docs/results/<name>.json and <name>.png from
the finished runs on disk, its Markdown tables, and their copy in the
documentation's papers page (docs/papers.md).

"complete" is true only when every seed of every part has finished, and
"missing" lists what has not; each record's `queries` is checked against
what the protocol pays (initial + round x per_round) before it is
published. Each part with runs gets `statistics` (`jaxkd.statistics`:
AUBC with a bootstrap interval over seeds, paired t-tests against the
random baseline, queries saved), and `add_statistics` recomputes them in
a published JSON from the records it holds (`reproduce.py NAME
--restats`). Files are written atomically.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from jaxkd import run_dir
from jaxkd import statistics as stats
from jaxkd.checkpoint import write_json_atomic
from jaxkd.teacher_training import TEACHER_JSON
from protocols import REPRODUCTIONS, Part  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(ROOT, "docs", "results")


def _read(path):
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def _ms(values):
  a = np.asarray(values, np.float64)
  return {"mean": float(a.mean()), "std": float(a.std()), "n": int(len(a))}


def collect_active(part: Part, missing):
  """{strategy: [records of each finished seed]}, checked against the
  protocol's payments; unfinished seeds go to `missing`."""
  c = part.config
  runs, seeds_done = {}, {}
  for s in c.strategies:
    for seed in c.seeds:
      recs = _read(os.path.join(run_dir.run_path(part.workdir, s, seed),
                                "rounds.json"))
      if not recs or len(recs) != c.rounds + 1:
        missing.append(f"{part.name}/{s}/seed{seed}")
        continue
      for r, rec in enumerate(recs):
        want = c.split.initial + r * c.per_round
        if rec["round"] != r or rec["queries"] != want:
          raise SystemExit(
              f"{part.workdir}/{s}/seed{seed}: round {rec['round']} paid "
              f"{rec['queries']} queries, the protocol pays {want}")
      runs.setdefault(s, []).append(recs)
      seeds_done.setdefault(s, []).append(seed)
  summary = {}
  for s, seeds in runs.items():
    summary[s] = {
        "seeds": seeds_done[s],
        "queries": [r["queries"] for r in seeds[0]],
        "accuracy": [_ms([run[r]["student_accuracy"] for run in seeds])
                     for r in range(len(seeds[0]))],
        "success_rate": [_ms([run[r]["success_rate"] for run in seeds])
                         for r in range(len(seeds[0]))],
        "wall_time_s": float(sum(x["wall_time"] for run in seeds
                                 for x in run))}
    if all("best_test_accuracy" in run[-1] for run in seeds):
      # The official code's figure: the best test epoch of the last round
      # (selected on the test set; the last epoch's is the honest one).
      summary[s]["best_test_accuracy"] = _ms(
          [run[-1]["best_test_accuracy"] for run in seeds])
  teacher = next((run[0][0]["teacher_accuracy"] for run in runs.values()),
                 None)
  return {"runs": runs, "summary": summary, "teacher_accuracy": teacher}


def collect_unix(part: Part, missing):
  c = part.config
  runs, summary = {}, {}
  for m in c.unix.methods:
    for seed in c.seeds:
      rec = _read(run_dir.run_path(part.workdir, m, seed) + ".json")
      if rec is None:
        missing.append(f"{part.name}/{m}/seed{seed}")
      else:
        runs.setdefault(m, []).append(rec)
  for m, recs in runs.items():
    summary[m] = {"seeds": [r["seed"] for r in recs],
                  "accuracy": _ms([r["student_accuracy"] for r in recs]),
                  "computation": _ms([r["computation"] for r in recs]),
                  "wall_time_s": float(sum(r["wall_time"] for r in recs))}
    # Records written since the job counts both conventions (B_s = F_s as
    # in the paper, and F_t / F_s) carry these; older ones do not.
    for key in ("computation_paper", "flops_ratio"):
      if all(r.get(key) is not None for r in recs):
        summary[m][key] = _ms([r[key] for r in recs])
  meta = _read(os.path.join(part.config.teacher.get("checkpoint") or
                            os.path.join(part.workdir, "teacher"),
                            TEACHER_JSON))
  return {"runs": runs, "summary": summary,
          "teacher_accuracy": meta and meta.get("accuracy")}


# Baselines, first present wins: random sampling at the same budget
# ("random"; Active Mixup's parts compare with random mixup of the same
# count; UNIX's with Random+KD at the same k, its random counterpart).
BASELINES = ("random", "random_mixup", "random_kd")


def part_statistics(entry: dict, *, resamples: int = 10000,
                    seed: int = 0, kd_runs=None) -> dict:
  """`jaxkd.statistics` of one published part, from its `runs` only:
  AUBC, paired p-values and queries saved against the first of BASELINES
  present (active parts, seeds paired by id); for UNIX parts (no curve)
  paired tests of final success vs random_kd, with kd's beside them
  (`p_value_kd`, `difference_kd`), against `kd_runs` (another part's KD
  records) when the part has no KD of its own. {} without runs."""
  runs = entry.get("runs") or {}
  if not runs:
    return {}
  base = next((b for b in BASELINES if b in runs), None)
  if entry["kind"] == "unix":
    out = stats.final_statistics(runs, base or "random_kd",
                                 resamples=resamples, seed=seed)
    with_kd = runs if "kd" in runs or not kd_runs else {**runs,
                                                        "kd": kd_runs}
    kd = stats.final_statistics(with_kd, "kd", resamples=resamples,
                                seed=seed)
    for m, e in out.items():
      e.update(p_value_kd=kd[m]["p_value"],
               difference_kd=kd[m]["final_difference"])
    return out
  seeds = {s: x["seeds"] for s, x in (entry.get("summary") or {}).items()}
  return stats.strategy_statistics(runs, base or "random",
                                   resamples=resamples, seed=seed,
                                   seeds=seeds or None)


def _kd_runs(name: str, parts: dict, entry: dict):
  """The KD records a UNIX part without KD is compared with: those of its
  reproduction's `kd_part` (REPRODUCTIONS), else None."""
  ref = parts.get(REPRODUCTIONS.get(name, {}).get("kd_part") or "")
  if entry.get("kind") != "unix" or ref is None or ref is entry:
    return None
  return (ref.get("runs") or {}).get("kd")


def portable(value, root: str = ROOT):
  """`value` (a JSON tree) with every absolute path under the folder that
  holds `root` (the checkout and its sibling data) written relative to
  `root`: "runs/x/teacher", "../shared/data/mnist". Published files name no
  folder of the machine that ran them."""
  top = os.path.dirname(os.path.abspath(root))

  def walk(v):
    if isinstance(v, dict):
      return {k: walk(x) for k, x in v.items()}
    if isinstance(v, list):
      return [walk(x) for x in v]
    if isinstance(v, str) and os.path.isabs(v) and os.path.commonpath(
        [os.path.abspath(v), top]) == top:
      return os.path.relpath(v, root)
    return v

  return walk(value)


def add_statistics(path: str) -> dict:
  """Recomputes every part's `statistics` of a published JSON from the
  records it holds (no runs/ needed) and rewrites it atomically; returns
  what it holds."""
  with open(path) as f:
    out = json.load(f)
  for p in out["parts"].values():
    if p.get("runs"):
      p["statistics"] = part_statistics(
          p, kd_runs=_kd_runs(out["name"], out["parts"], p))
  out["statistics_computed"] = time.strftime("%Y-%m-%d %H:%M:%S")
  out = portable(out)
  write_json_atomic(path, out)
  return out


def publish(name: str, parts, results_dir: str = RESULTS) -> dict:
  """Writes results_dir/<name>.json and <name>.png from the runs on disk."""
  spec = REPRODUCTIONS[name]
  missing, out_parts = [], {}
  for part in parts:
    entry = {"workdir": os.path.relpath(part.workdir, ROOT),
             "kind": part.kind,
             "config": json.loads(json.dumps(part.config.to_dict(),
                                             default=str))}
    if part.kind == "teacher":
      meta = _read(os.path.join(part.workdir, "teacher", TEACHER_JSON))
      if meta is None:
        missing.append(f"{part.name}/teacher")
      entry["teacher"] = meta and {k: meta.get(k) for k in
                                   ("accuracy", "model", "train_size")}
    elif part.kind == "unix":
      entry.update(collect_unix(part, missing))
    else:
      entry.update(collect_active(part, missing))
    out_parts[part.name] = entry
  for entry in out_parts.values():
    if entry.get("runs"):
      entry["statistics"] = part_statistics(
          entry, kd_runs=_kd_runs(name, out_parts, entry))
  out = portable({"name": name,
                  "command": f"python experiments/reproduce.py {name}",
                  "paper": spec["paper"],
                  "paper_numbers": spec["paper_numbers"],
                  "complete": not missing, "missing": missing,
                  "published": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "parts": out_parts})
  write_json_atomic(os.path.join(results_dir, f"{name}.json"), out)
  figure(name, out, os.path.join(results_dir, f"{name}.png"))
  return out


def _panel(name: str, part_name: str) -> str:
  """Which panel of the figure a part is drawn in."""
  if name == "unix_fmnist":
    return "UNIX and Table 5 ablations (one panel)"
  if name == "unix_ratio":
    return "UNIX at k = 48 and 40 of N = 64 (one panel)"
  if name == "active_mixup_t1":
    return part_name.rsplit("_", 1)[0]
  return part_name


def figure(name, out, path):
  """Mean +- std over seeds: success rate vs queries (bands) for active
  parts, one panel per part (Active Mixup: per dataset, log x); UNIX:
  accuracy bars with the computation beside each."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = {}
  for pname, p in out["parts"].items():
    if p.get("summary"):
      panels.setdefault(_panel(name, pname), []).append((pname, p))
  if not panels:
    return
  wide = name in ("unix_fmnist", "unix_ratio")
  fig, axes = plt.subplots(1, len(panels), squeeze=False, dpi=110,
                           figsize=(9 if wide else 4.6 * len(panels), 4.2))
  for ax, (title, members) in zip(axes[0], panels.items()):
    i = 0
    labels, means, stds = [], [], []
    for pname, p in members:
      for s, sm in p["summary"].items():
        tag = s if len(members) == 1 else f"{pname.split('_')[-1]}: {s}"
        color = plt.cm.tab10(i % 10)
        i += 1
        if p["kind"] == "unix":
          a, cpt = sm["accuracy"], sm["computation"]
          labels.append(f"{pname}: {s} (n={a['n']}, "
                        f"{100 * cpt['mean']:.1f}% computation)")
          means.append(100 * a["mean"])
          stds.append(100 * a["std"])
          continue
        q = np.asarray(sm["queries"])
        m = 100 * np.asarray([x["mean"] for x in sm["success_rate"]])
        sd = 100 * np.asarray([x["std"] for x in sm["success_rate"]])
        n = sm["accuracy"][0]["n"]
        ax.plot(q, m, "o-", color=color, ms=3, label=f"{tag} (n={n})")
        ax.fill_between(q, m - sd, m + sd, color=color, alpha=0.2)
    if labels:
      y = np.arange(len(labels))[::-1]
      ax.barh(y, means, xerr=stds, color="tab:blue", alpha=0.6, capsize=3)
      ax.set_yticks(y, labels, fontsize=7)
      lo = min(means) - 2
      ax.set_xlim(lo, max(means) + 1)
      ax.set_xlabel("test accuracy % (mean ± std over seeds)")
    else:
      if name == "active_mixup_t1":
        ax.set_xscale("log")
        pn = out["paper_numbers"].get(title, {})
        if pn:
          ax.plot([pn["real"] + pn["mixup"]], [100 * pn["success"]], "k*",
                  ms=10, label="paper: Active Mixup")
          ax.plot([60000], [100 * pn["kd_upper"] / pn["teacher"]], "kx",
                  ms=8, label="paper: KD (all 60,000)")
      ax.set_xlabel("teacher queries")
      ax.set_ylabel("success rate % (student / teacher)")
      ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
  fig.suptitle(f"{name}: mean ± std over seeds"
               + ("" if out["complete"] else " (INCOMPLETE)"), fontsize=10)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, path)


def _pm(ms, scale=100):
  if ms is None:
    return "-"
  if ms["n"] > 1:
    return f"{scale * ms['mean']:.2f} ± {scale * ms['std']:.2f}"
  return f"{scale * ms['mean']:.2f}"


def _baseline(p) -> str:
  """The baseline named in a part's statistics (BASELINES' first else)."""
  return next((e["baseline"] for e in (p.get("statistics") or {}).values()
               if e.get("baseline")),
              next((b for b in BASELINES if b in (p.get("summary") or {})),
                   "random"))


STATS_NOTE = (
    "\nAUBC: area under success rate vs queries over the query range, "
    "mean over seeds [95% percentile bootstrap over seeds]. p: two-sided "
    "paired t-test against the part's random baseline (same seeds; '-' "
    "with one seed or on the baseline's row), of AUBC and of final "
    "success. Queries saved: per seed, the baseline's final queries minus "
    "where the strategy's curve first reaches the baseline's final success "
    "rate (linear interpolation), mean [bootstrap interval] over the seeds "
    "that reach it (k/n when not all do); on the baseline's row, how early "
    "it first reached its own final level. `statistics` in the JSON holds "
    "every number (per-budget p-values too).")

UNIX_NOTE = ("\np: two-sided paired t-test of final success over the same "
             "seeds against Random+KD (random_kd, the same k without "
             "uncertainty or mixup) and against KD; '-' with one seed or "
             "on the method's own row.")


BEST_NOTE = (
    "\nBest-test-epoch accuracy: the last round's student evaluated on the "
    "test set after every epoch and the best epoch kept, as the official "
    "code selects its result; chosen on the test set, so it is optimistic. "
    "The final accuracy (last epoch) is the reported figure.")


def markdown(out) -> str:
  """The papers-page tables of one published reproduction, with each
  part's `statistics` (AUBC, p vs random, queries saved) in its rows."""
  lines, notes = [], []
  unix_rows = [x for p in out["parts"].values() if p["kind"] == "unix"
               for x in (p.get("summary") or {}).values()]
  # The paper's convention (B_s = F_s) beside XLA's, once records hold it.
  paper_col = any(x.get("computation_paper") for x in unix_rows)
  ratio = next((x["flops_ratio"]["mean"] for x in unix_rows
                if x.get("flops_ratio")), None)
  for pname, p in out["parts"].items():
    sm = p.get("summary")
    if not sm:
      continue
    st = p.get("statistics") or {}
    if p["kind"] == "unix":  # one table for every UNIX part
      if not any(l.startswith("| part | method") for l in lines):
        lines += [f"\nteacher {100 * (p['teacher_accuracy'] or 0):.2f}%"
                  + (f", F_t/F_s = {ratio:.2f} (XLA)" if ratio else "")
                  + "\n",
                  "| part | method | seeds | accuracy % | computation % of KD "
                  + ("(XLA) | computation % of KD (paper, B_s = F_s) "
                     if paper_col else "")
                  + "| wall s per seed | p vs random_kd | p vs kd |",
                  "| --- " * (9 if paper_col else 8) + "|"]
        notes.append(UNIX_NOTE)
      for m, x in sm.items():
        n = x["accuracy"]["n"]
        e = st.get(m, {})
        lines.append(f"| {pname} | {m} | {n} | {_pm(x['accuracy'])} "
                     f"| {_pm(x['computation'])} "
                     + (f"| {_pm(x.get('computation_paper'))} "
                        if paper_col else "")
                     + f"| {x['wall_time_s'] / n:.0f} "
                     f"| {stats.format_p(e.get('p_value'))} "
                     f"| {stats.format_p(e.get('p_value_kd'))} |")
      continue
    if STATS_NOTE not in notes:
      notes.append(STATS_NOTE)
    base = _baseline(p)
    rounds = len(next(iter(sm.values()))["queries"])
    cols = sorted({0, rounds // 3, 2 * rounds // 3, rounds - 1})
    q = next(iter(sm.values()))["queries"]
    best_col = all("best_test_accuracy" in x for x in sm.values())
    lines += [f"\n{pname} (teacher {100 * (p['teacher_accuracy'] or 0):.2f}%)"
              "\n", "| strategy | seeds | " + " | ".join(
                  f"success % at {q[c]} queries" for c in cols)
              + " | final accuracy % | "
              + ("best-test-epoch accuracy % (selected on test) | "
                 if best_col else "")
              + "mean success over rounds % "
              "| wall s per seed | AUBC % | p vs " + base + " (AUBC) "
              "| p vs " + base + " (final) | queries saved vs " + base
              + " |",
              "| --- " * (len(cols) + 9 + best_col) + "|"]
    if best_col and BEST_NOTE not in notes:
      notes.append(BEST_NOTE)
    for s, x in sm.items():
      mean_over = float(np.mean([x["success_rate"][r]["mean"]
                                 for r in range(rounds)]))
      e = st.get(s, {})
      lines.append(
          f"| {s} | {len(x['seeds'])} | "
          + " | ".join(_pm(x["success_rate"][c]) for c in cols)
          + f" | {_pm(x['accuracy'][-1])} | "
          + (f"{_pm(x['best_test_accuracy'])} | " if best_col else "")
          + f"{100 * mean_over:.2f} "
          f"| {x['wall_time_s'] / len(x['seeds']):.0f} "
          f"| {stats.format_interval(e.get('aubc'))} "
          f"| {stats.format_p(e.get('p_value'))} "
          f"| {stats.format_p(e.get('p_value_final'))} "
          f"| {stats.format_saved(e.get('queries_saved'))} |")
  extra = EXTRA_TABLES.get(out.get("name"))
  if extra:
    lines += extra(out)
  return "\n".join(lines + notes)


# --------------------------------------- the reproductions' own tables ---


def _per_seed(p, strategy, value):
  """{seed: value(run)} of one strategy of an active part."""
  return dict(zip(p["summary"][strategy]["seeds"],
                  (value(run) for run in p["runs"][strategy])))


def _final(run):
  return run[-1]["success_rate"]


def _aubc(run):
  return stats.aubc([x["queries"] for x in run],
                    [x["success_rate"] for x in run])


def _gain(p, a, b, value):
  """Mean over paired seeds of value(a) - value(b), points of success
  rate, with the paired t-test's p: 'd (p)'."""
  va, vb = _per_seed(p, a, value), _per_seed(p, b, value)
  seeds = sorted(set(va) & set(vb))
  test = stats.paired_test([va[i] for i in seeds], [vb[i] for i in seeds])
  if test["mean_difference"] is None:
    return "-"
  return (f"{100 * test['mean_difference']:+.2f} "
          f"(p {stats.format_p(test['p_value'])})")


def rad_gain_table(out) -> list:
  """rad_noisy_teacher: per teacher level, RAD's final success and AUBC
  minus the best other strategy's (chosen per measure) and random's,
  paired over seeds, beside the paper's claim."""
  rows = []
  for pname, p in out["parts"].items():
    sm = p.get("summary") or {}
    if p["kind"] != "active" or "rad" not in sm:
      continue
    teacher = (out["parts"].get(f"{pname}_teacher") or {}).get(
        "teacher") or {}
    acc = p.get("teacher_accuracy") or teacher.get("accuracy")
    means = {m: {s: float(np.mean(list(_per_seed(p, s, f).values())))
                 for s in sm} for m, f in (("final", _final),
                                           ("aubc", _aubc))}
    cells = []
    for m, f in (("final", _final), ("aubc", _aubc)):
      others = {s: v for s, v in means[m].items() if s != "rad"}
      best = max(others, key=others.get) if others else None
      cells += [f"{100 * means[m]['rad']:.2f}", best or "-",
                _gain(p, "rad", best, f) if best else "-",
                _gain(p, "rad", "random", f) if "random" in sm else "-"]
    head = [str(teacher.get("train_size") or pname),
            f"{100 * acc:.2f}" if acc is not None else "-",
            f"{100 * (1 - acc):.2f}" if acc is not None else "-",
            str(len(sm["rad"]["seeds"]))]
    rows.append("| " + " | ".join(head + cells) + " |")
  if not rows:
    return []
  pn = out.get("paper_numbers") or {}
  return [
      "\nRAD's gain by teacher error (points of success rate; the best "
      "other strategy is chosen per measure, by its mean; p: paired t-test "
      "over seeds)\n",
      "| teacher images | teacher accuracy % | teacher error % | seeds "
      "| RAD final success % | best other (final) | RAD - best other, "
      "final | RAD - random, final | RAD AUBC % | best other (AUBC) "
      "| RAD - best other, AUBC | RAD - random, AUBC |",
      "| --- " * 12 + "|"] + rows + (
          [f"\nThe paper's claim ({pn.get('source', 'Baykal et al.')}): "
           f"\"{pn['claim']}\" Expected here: {pn.get('expected', '')}."]
          if pn.get("claim") else [])


def unix_ratio_table(out) -> list:
  """unix_ratio: per k, UNIX - KD and Random+KD - KD (accuracy points,
  paired p) and UNIX's computation, ours beside the paper's Table 1 mean
  and its pair nearest our F_t/F_s."""
  pn = out.get("paper_numbers") or {}
  parts = out["parts"]
  ref = parts.get(REPRODUCTIONS.get(out["name"], {}).get("kd_part") or "")
  table = pn.get("table1") or {}
  rows = []
  for p in parts.values():
    sm = p.get("summary") or {}
    if p["kind"] != "unix" or "unix" not in sm:
      continue
    k, st, u = p["config"]["unix"]["k"], p.get("statistics") or {}, sm["unix"]
    kd = sm.get("kd") or ((ref or {}).get("summary") or {}).get("kd")

    def over_kd(m):
      if m not in sm or not kd:
        return "-"
      d = sm[m]["accuracy"]["mean"] - kd["accuracy"]["mean"]
      return (f"{100 * d:+.2f} "
              f"(p {stats.format_p(st.get(m, {}).get('p_value_kd'))})")

    mean = (pn.get("table1_mean") or {}).get(f"k{k}")
    ratio = (u.get("flops_ratio") or {}).get("mean")
    near = (min(table, key=lambda n: abs(np.log(table[n]["ratio"] / ratio)))
            if table and ratio else None)
    pair = table.get(near) or {}
    cells = [f"{k}/64", over_kd("unix"), over_kd("random_kd"),
             _pm(u["computation"]), _pm(u.get("computation_paper")),
             f"{100 * mean['gain_over_kd']:+.2f}" if mean else "-",
             f"{100 * mean['computation']:.2f}" if mean else "-",
             (f"{near} ({pair['ratio']:g}): "
              f"{pair[f'unix_k{k}'] - pair['kd']:+.2f} at "
              f"{pair[f'computation_k{k}']:.2f}%")
             if f"unix_k{k}" in pair else "-"]
    rows.append("| " + " | ".join(cells) + " |")
  if not rows:
    return []
  return ["\nAgainst the paper (UNIX Table 1, CIFAR-100, cross-architecture "
          "pairs; accuracy points over KD, p: paired t-test over seeds)\n",
          "| k/N | ours: UNIX - KD | ours: Random+KD - KD "
          "| ours: UNIX computation % (XLA) | ours: UNIX computation % "
          "(paper, B_s = F_s) | paper mean: UNIX - KD | paper mean: "
          "computation % | paper, pair nearest our F_t/F_s |",
          "| --- " * 8 + "|"] + rows + [
              f"\nPaper Table 2 (similar-architecture pairs, F_t/F_s "
              f"{min(r['ratio'] for r in t2.values()):g}-"
              f"{max(r['ratio'] for r in t2.values()):g}), mean UNIX - KD: "
              + "; ".join(f"{k[1:]}/64 {100 * m['gain_over_kd']:+.2f} at "
                          f"{100 * m['computation']:.2f}%"
                          for k, m in pn["table2_mean"].items()) + "."
              for t2 in [pn.get("table2")] if t2 and pn.get("table2_mean")]


EXTRA_TABLES = {"rad_noisy_teacher": rad_gain_table,
                "unix_ratio": unix_ratio_table}


def update_readme(name: str, out,
                  path=os.path.join(ROOT, "docs", "papers.md")):
  """Replaces the block between `<!-- reproduce:NAME -->` and
  `<!-- /reproduce:NAME -->` in the README with `markdown(out)`, so the
  published tables are exactly the JSON's."""
  start, end = f"<!-- reproduce:{name} -->", f"<!-- /reproduce:{name} -->"
  with open(path) as f:
    text = f.read()
  if start not in text or end not in text:
    raise SystemExit(f"{path} has no {start} ... {end} block")
  head, rest = text.split(start, 1)
  _, tail = rest.split(end, 1)
  state = ("" if out["complete"] else
           f"\n**Incomplete:** {len(out['missing'])} runs missing "
           f"({', '.join(out['missing'][:4])}...).\n")
  text = f"{head}{start}\n{state}{markdown(out)}\n\n{end}{tail}"
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)

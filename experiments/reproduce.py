"""The papers' protocols at their sizes: one command each, resumable.

  python experiments/reproduce.py recon_fmnist     # Singh & Chakraborty,
                                                   # Figures 1, 2, 4b (FMNIST)
  python experiments/reproduce.py active_mixup_t1  # Wang et al., Table 1
  python experiments/reproduce.py unix_fmnist      # Xu, Liu & Loy, FMNIST

Options: --parts=a,b runs only those parts, --seeds=1,2 only those seeds
(two processes can share the work, e.g. one per core with `taskset -c 0` /
`-c 1`); --publish_only
rewrites the results from what is on disk; --runs=DIR (default runs/).

Every part is one `jaxkd.experiment` job in its own workdir under runs/
(a killed part resumes where it stopped when the same command is run
again: ledgers and checkpoints per round, one file per finished UNIX run).
After each part, docs/results/<name>.json and <name>.png are rewritten
(atomically) from every finished run on disk: "complete" is true only when
every seed of every part has finished, and "missing" lists what has not.
Each record's `queries` is checked against what the protocol pays
(initial + round x per_round) before it is published.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(ROOT, "docs", "results")
sys.path.insert(0, ROOT)

from jaxkd import experiment  # noqa: E402
from jaxkd.teacher_training import TEACHER_JSON  # noqa: E402


def load_config(file: str, arg: str = ""):
  spec = importlib.util.spec_from_file_location(
      "cfg_" + os.path.basename(file)[:-3], os.path.join(HERE, "configs", file))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _with(config, **fields):
  """A copy of `config` with dotted fields set ("teacher.checkpoint")."""
  c = config.copy_and_resolve_references()
  for key, value in fields.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


# ------------------------------------------------------------- the parts ---


class Part:
  """One job: `kind` "active", "unix" or "teacher", its config, workdir."""

  def __init__(self, name, kind, config, workdir):
    self.name, self.kind, self.config, self.workdir = (name, kind, config,
                                                       workdir)


def recon_parts(runs):
  main_dir = os.path.join(runs, "recon_fmnist")
  teacher = os.path.join(main_dir, "teacher")
  parts = [Part("main", "active", load_config("recon_fmnist.py"), main_dir)]
  # Figure 4b (hard-label teacher) and Figure 2's budgets: random and admm,
  # one seed (the reduced-seed fallback), with the main part's teacher.
  for name, arg in (("hard_labels", "hard_labels"), ("k100", "k=100"),
                    ("k200", "k=200"), ("k500", "k=500")):
    c = _with(load_config("recon_fmnist.py", arg),
              strategies=("random", "admm"), seeds=(0,),
              **{"teacher.checkpoint": teacher})
    parts.append(Part(name, "active", c, os.path.join(runs,
                                                      f"recon_fmnist_{name}")))
  return parts


def active_mixup_parts(runs):
  parts = []
  for ds in ("mnist", "fashion_mnist"):
    tdir = os.path.join(runs, f"am_t1_{ds}_teacher")
    parts.append(Part(f"{ds}_teacher", "teacher",
                      load_config("active_mixup_t1.py", f"{ds},teacher"),
                      tdir))
    t = f"teacher_dir={os.path.join(tdir, 'teacher')}"
    parts.append(Part(f"{ds}_upper", "active",
                      load_config("active_mixup_t1.py", f"{ds},upper,{t}"),
                      os.path.join(runs, f"am_t1_{ds}_upper")))
    # Full size: one seed of each (the reduced-seed fallback); half size:
    # three seeds of each.
    full = load_config("active_mixup_t1.py", f"{ds},{t}")
    parts.append(Part(f"{ds}_full", "active", full,
                      os.path.join(runs, f"am_t1_{ds}")))
    parts.append(Part(f"{ds}_half", "active",
                      load_config("active_mixup_t1.py", f"{ds},half,{t}"),
                      os.path.join(runs, f"am_t1_{ds}_half")))
  return parts


def unix_parts(runs):
  main_dir = os.path.join(runs, "unix_fmnist")
  base = load_config("unix.py", "fashion_mnist,full")
  parts = [Part("main", "unix", base, main_dir)]
  teacher = os.path.join(main_dir, "teacher")
  # The paper's Table 5: UNIX at w = 1, 10 (main), 1000, and uncertainty
  # sampling without mixup under the three criteria. One seed each (the
  # reduced-seed fallback): 5 x 3 seeds of 9,375 steps did not fit this
  # machine's time beside the other reproductions.
  for name, method, field, value in (
      ("w1", "unix", "unix.w", 1.0), ("w1000", "unix", "unix.w", 1000.0),
      ("entropy", "uncertainty", "unix.uncertainty", "entropy"),
      ("confidence", "uncertainty", "unix.uncertainty", "confidence"),
      ("margin", "uncertainty", "unix.uncertainty", "margin")):
    c = _with(base, seeds=(0,), **{field: value, "unix.methods": (method,),
                                   "teacher.checkpoint": teacher})
    parts.append(Part(name, "unix", c,
                      os.path.join(runs, f"unix_fmnist_{name}")))
  return parts


REPRODUCTIONS = {
    "recon_fmnist": dict(
        parts=recon_parts,
        paper=("Singh & Chakraborty, Figure 1 (FMNIST): LeNet-5 teacher "
               "88.27% on 30,000 images; L 500, U 5,000, k 300, 15 rounds; "
               "Figure 4b hard-label teacher; Figure 2 budgets (CIFAR-10 "
               "there, FMNIST here)"),
        paper_numbers={"teacher_accuracy": 0.8827}),
    "active_mixup_t1": dict(
        parts=active_mixup_parts,
        paper="Wang et al., CVPR 2020, Table 1 (T = 1)",
        paper_numbers={"mnist": {"real": 2000, "mixup": 22000,
                                 "teacher": 0.9929, "kd_upper": 0.9905,
                                 "accuracy": 0.9874, "success": 0.9945},
                       "fashion_mnist": {"real": 2000, "mixup": 46000,
                                         "teacher": 0.9080,
                                         "kd_upper": 0.8779,
                                         "accuracy": 0.8090,
                                         "success": 0.8910}}),
    "unix_fmnist": dict(
        parts=unix_parts,
        paper=("Xu, Liu & Loy, UNIX: +1.07% accuracy over KD at 79.44% "
               "computation (CIFAR-100, not available here; FMNIST instead)"),
        paper_numbers={"accuracy_gain_over_kd": 0.0107,
                       "computation": 0.7944,
                       # Table 5, mean over six CIFAR-100 pairs.
                       "table5_unix_w": {"1": 0.7554, "10": 0.7575,
                                         "1000": 0.7528},
                       "table5_uncertainty_no_mixup": {
                           "confidence": 0.7444, "margin": 0.7456,
                           "entropy": 0.7464}}),
}


# ------------------------------------------------------------- running ---


def run_part(part: Part) -> None:
  t0 = time.time()
  print(f"== {part.name}: {part.workdir}", flush=True)
  if part.kind == "teacher":
    if not os.path.isfile(os.path.join(part.workdir, "teacher",
                                       TEACHER_JSON)):
      experiment.teacher_only(part.config, part.workdir)
  else:
    experiment.train_and_evaluate(part.config, part.workdir)
  print(f"== {part.name}: done in {time.time() - t0:.0f}s", flush=True)


# ---------------------------------------------------------- publishing ---


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
      recs = _read(os.path.join(experiment.run_path(part.workdir, s, seed),
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
  teacher = next((run[0][0]["teacher_accuracy"] for run in runs.values()),
                 None)
  return {"runs": runs, "summary": summary, "teacher_accuracy": teacher}


def collect_unix(part: Part, missing):
  c = part.config
  runs, summary = {}, {}
  for m in c.unix.methods:
    for seed in c.seeds:
      rec = _read(experiment.run_path(part.workdir, m, seed) + ".json")
      if rec is None:
        missing.append(f"{part.name}/{m}/seed{seed}")
      else:
        runs.setdefault(m, []).append(rec)
  for m, recs in runs.items():
    summary[m] = {"seeds": [r["seed"] for r in recs],
                  "accuracy": _ms([r["student_accuracy"] for r in recs]),
                  "computation": _ms([r["computation"] for r in recs]),
                  "wall_time_s": float(sum(r["wall_time"] for r in recs))}
  meta = _read(os.path.join(part.config.teacher.get("checkpoint") or
                            os.path.join(part.workdir, "teacher"),
                            TEACHER_JSON))
  return {"runs": runs, "summary": summary,
          "teacher_accuracy": meta and meta.get("accuracy")}


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
  out = {"name": name,
         "command": f"python experiments/reproduce.py {name}",
         "paper": spec["paper"], "paper_numbers": spec["paper_numbers"],
         "complete": not missing, "missing": missing,
         "published": time.strftime("%Y-%m-%d %H:%M:%S"),
         "parts": out_parts}
  experiment.write_json_atomic(os.path.join(results_dir, f"{name}.json"),
                               out)
  figure(name, out, os.path.join(results_dir, f"{name}.png"))
  return out


def _panel(name: str, part_name: str) -> str:
  """Which panel of the figure a part is drawn in."""
  if name == "unix_fmnist":
    return "UNIX and Table 5 ablations (one panel)"
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
  wide = name == "unix_fmnist"
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


def markdown(out) -> str:
  """The README tables of one published reproduction."""
  lines = []
  for pname, p in out["parts"].items():
    sm = p.get("summary")
    if not sm:
      continue
    if p["kind"] == "unix":  # one table for every UNIX part
      if not any(l.startswith("| part | method") for l in lines):
        lines += [f"\nteacher {100 * (p['teacher_accuracy'] or 0):.2f}%\n",
                  "| part | method | seeds | accuracy % | computation % of KD "
                  "| wall s per seed |", "| --- | --- | --- | --- | --- | --- |"]
      for m, x in sm.items():
        n = x["accuracy"]["n"]
        lines.append(f"| {pname} | {m} | {n} | {_pm(x['accuracy'])} "
                     f"| {_pm(x['computation'])} "
                     f"| {x['wall_time_s'] / n:.0f} |")
      continue
    rounds = len(next(iter(sm.values()))["queries"])
    cols = sorted({0, rounds // 3, 2 * rounds // 3, rounds - 1})
    q = next(iter(sm.values()))["queries"]
    lines += [f"\n{pname} (teacher {100 * (p['teacher_accuracy'] or 0):.2f}%)"
              "\n", "| strategy | seeds | " + " | ".join(
                  f"success % at {q[c]} queries" for c in cols)
              + " | final accuracy % | mean success over rounds % "
              "| wall s per seed |",
              "| --- " * (len(cols) + 5) + "|"]
    for st, x in sm.items():
      mean_over = float(np.mean([x["success_rate"][r]["mean"]
                                 for r in range(rounds)]))
      lines.append(
          f"| {st} | {len(x['seeds'])} | "
          + " | ".join(_pm(x["success_rate"][c]) for c in cols)
          + f" | {_pm(x['accuracy'][-1])} | {100 * mean_over:.2f} "
          f"| {x['wall_time_s'] / len(x['seeds']):.0f} |")
  return "\n".join(lines)


def update_readme(name: str, out, path=os.path.join(ROOT, "README.md")):
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


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("name", choices=sorted(REPRODUCTIONS))
  ap.add_argument("--parts", default="", help="comma-separated part names")
  ap.add_argument("--seeds", default="",
                  help="run only these seeds of the chosen parts (another "
                  "process may run the others in the same workdirs)")
  ap.add_argument("--publish_only", action="store_true")
  ap.add_argument("--readme", action="store_true",
                  help="also rewrite this reproduction's README tables")
  ap.add_argument("--runs", default=os.path.join(ROOT, "runs"))
  args = ap.parse_args(argv)
  parts = REPRODUCTIONS[args.name]["parts"](args.runs)
  by_name = {p.name: p for p in parts}
  chosen = ([by_name[n] for n in args.parts.split(",") if n in by_name]
            if args.parts else parts)  # in the order given
  unknown = set(filter(None, args.parts.split(","))) - {p.name for p in parts}
  if unknown:
    ap.error(f"unknown parts {sorted(unknown)}; have "
             f"{[p.name for p in parts]}")
  if not args.publish_only:
    for part in chosen:
      if args.seeds:  # seeds never change results: a share of the work
        part = Part(part.name, part.kind, _with(part.config, seeds=tuple(
            int(x) for x in args.seeds.split(","))), part.workdir)
      run_part(part)
      publish(args.name, parts)
  out = publish(args.name, parts)
  print(markdown(out))
  if args.readme:
    update_readme(args.name, out)
  print(f"wrote docs/results/{args.name}.json: complete={out['complete']}"
        + (f", missing {len(out['missing'])}: {out['missing'][:6]}"
           if out["missing"] else ""))


if __name__ == "__main__":
  main()

"""The papers' protocols at their sizes: one command each, resumable.

  python experiments/reproduce.py recon_fmnist     # Singh & Chakraborty,
                                                   # Figures 1, 2, 4b (FMNIST)
  python experiments/reproduce.py active_mixup_t1  # Wang et al., Table 1
  python experiments/reproduce.py unix_fmnist      # Xu, Liu & Loy, FMNIST
  python experiments/reproduce.py active_mixup_official   # Table 1, the
                                                   # official student schedule
  python experiments/reproduce.py active_mixup_multistep  # Figure 4-style
  python experiments/reproduce.py rad_noisy_teacher  # RAD vs teacher error
  python experiments/reproduce.py unix_ratio       # UNIX at F_t/F_s = 12

Options: --parts=a,b runs only those parts, --seeds=1,2 only those seeds
(two processes can share the work by parts, e.g. one per core with
`taskset -c 0` / `-c 1`; a part's workdir is held by one process at a
time, so its seeds run in turn, or one after another with --seeds);
--publish_only
rewrites the results from what is on disk; --runs=DIR (default runs/);
--restats recomputes the statistics (AUBC, p vs random, queries saved) of
the published docs/results/<name>.json from the records it holds, without
runs/ (with --readme, also its tables in docs/papers.md).

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
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from jaxkd import experiment  # noqa: E402
from jaxkd.teacher_training import TEACHER_JSON  # noqa: E402
from protocols import REPRODUCTIONS, Part, with_fields  # noqa: E402
from publish import (RESULTS, add_statistics, markdown, publish,  # noqa: E402
                     update_readme)


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


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("name", choices=sorted(REPRODUCTIONS))
  ap.add_argument("--parts", default="", help="comma-separated part names")
  ap.add_argument("--seeds", default="",
                  help="run only these seeds of the chosen parts (a "
                  "part's workdir is held by one process at a time)")
  ap.add_argument("--publish_only", action="store_true")
  ap.add_argument("--restats", action="store_true",
                  help="recompute the statistics of the published JSON "
                  "from its records (no runs needed)")
  ap.add_argument("--readme", action="store_true",
                  help="also rewrite this reproduction's tables in docs/papers.md")
  ap.add_argument("--runs", default=os.path.join(ROOT, "runs"))
  args = ap.parse_args(argv)
  if args.restats:
    out = add_statistics(os.path.join(RESULTS, f"{args.name}.json"))
    print(markdown(out))
    if args.readme:
      update_readme(args.name, out)
    print(f"wrote docs/results/{args.name}.json: statistics recomputed")
    return
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
        part = Part(part.name, part.kind, with_fields(part.config, seeds=tuple(
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
  from jaxkd.validation import JaxkdError  # noqa: E402
  try:
    main()
  except JaxkdError as e:  # bad input or a busy workdir: one line
    sys.exit(f"reproduce.py: error: {e}")

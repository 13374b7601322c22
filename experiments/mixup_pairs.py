"""Which mixup pairs did each strategy pay for? Read from the ledgers.

For every seed of an Active Mixup reproduction part that the publisher
counts as finished, its `ledger.sqlite` read-only (it can run beside the
job writing the others; seeds not finished are named, not counted): how the paid pairs
spread over the real images, how often both images of a pair have the same
label (the teacher's argmax on the real image, the label the student
sees), the class pairs paid most, and how confident the teacher was on
the mixed images (`jaxkd.inspection.mixup_pair_stats`). Mean ± std over
seeds. Prints a Markdown report and writes it to `--out` (default
docs/results/NAME_pairs.md, or NAME_PART_pairs.md where the reproduction
has several active parts).

  python experiments/mixup_pairs.py                 # active_mixup_multistep
  python experiments/mixup_pairs.py active_mixup_official --part fashion_mnist
"""

import argparse
import collections
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from jaxkd import inspection, ledger, run_dir  # noqa: E402
from jaxkd.data import (CIFAR10_CLASS_NAMES, DIGIT_CLASS_NAMES,  # noqa: E402
                        FASHION_MNIST_CLASS_NAMES)
import publish  # noqa: E402
from protocols import REPRODUCTIONS  # noqa: E402

CLASS_NAMES = {"fashion_mnist": FASHION_MNIST_CLASS_NAMES,
               "mnist": DIGIT_CLASS_NAMES, "digits": DIGIT_CLASS_NAMES,
               "cifar10": CIFAR10_CLASS_NAMES}


def seed_stats(path: str, names=None):
  """(MixupPairStats, Counter of class-name pairs, n real images) of one
  finished seed's ledger; `names` names the classes (default: numbers)."""
  rows = ledger.read_entries(path)
  real = {e["pool_index"]: int(e["probs"].argmax()) for e in rows
          if e["kind"] == "pool"}
  mix = [e for e in rows if e["kind"] == "mixup"]
  labels = np.full(max(real) + 1, -1)
  labels[list(real)] = list(real.values())
  pairs = np.asarray([(e["i"], e["j"]) for e in mix], np.int64)
  probs = np.stack([e["probs"] for e in mix])
  name = (lambda c: names[c]) if names else str
  classes = collections.Counter(
      " + ".join(sorted((name(labels[i]), name(labels[j]))))
      for i, j in pairs)
  return (inspection.mixup_pair_stats(pairs, labels, probs), classes,
          len(labels))


def report(part, command: str = "python experiments/mixup_pairs.py",
           title: str = "") -> str:
  """The Markdown report of a reproduction part's finished seeds (those
  `publish.collect_active` publishes; the others are named)."""
  missing = []
  summary = publish.collect_active(part, missing)["summary"]
  rel = os.path.relpath(part.workdir, ROOT)
  names = CLASS_NAMES.get(part.config.dataset)
  lines = ["# Which mixup pairs each strategy paid for"
           + (f": {title}" if title else ""), "",
           f"`{command}` on `{rel}`: the paid "
           "mixup pairs read from each seed's ledger (mean ± std over "
           "seeds; labels: the teacher's argmax on each real image).", "",
           "| strategy | seeds | pairs | real images used | top-10 images' "
           "share of pair slots % | most pairs of one image | same-class "
           "pairs % | teacher's mean max-probability | most paid class "
           "pairs (share %) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  sizes = set()
  fmt = lambda v, d=1: f"{np.mean(v):.{d}f} ± {np.std(v):.{d}f}"
  for strategy in summary:
    got = [seed_stats(os.path.join(run_dir.run_path(part.workdir, strategy,
                                                    seed), "ledger.sqlite"),
                      names)
           for seed in summary[strategy]["seeds"]]
    s = [g[0] for g in got]
    sizes.add((got[0][2], s[0].num_pairs))
    pooled = sum((g[1] for g in got), collections.Counter())
    total = sum(pooled.values())
    top = ", ".join(f"{k} ({100 * v / total:.1f})"
                    for k, v in pooled.most_common(3))
    lines.append(
        f"| {strategy} | {len(s)} | "
        f"{fmt([x.num_pairs for x in s], 0)} | "
        f"{fmt([x.distinct_images for x in s], 0)} | "
        f"{fmt([100 * x.top10_share for x in s])} | "
        f"{fmt([x.max_uses for x in s], 0)} | "
        f"{fmt([100 * x.same_class for x in s])} | "
        f"{fmt([x.teacher_confidence for x in s], 3)} | {top} |")
  if missing:
    lines += ["", "Not counted, not finished: " + ", ".join(
        m.split("/", 1)[1] for m in missing) + "."]
  lines += ["", "With n real images used equally, the 10 most used hold "
            "10/n of the slots and one image is in 2m/n of the m pairs"
            + "".join(f"; n = {n:,}, m = {m:,}: {1000 / n:.1f}% and "
                      f"{2 * m / n:.0f}" for n, m in sorted(sizes)) + "."]
  return "\n".join(lines) + "\n"


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("name", nargs="?", default="active_mixup_multistep",
                  choices=sorted(REPRODUCTIONS))
  ap.add_argument("--part", default="", help="the part (default: the "
                  "first active one)")
  ap.add_argument("--runs", default=os.path.join(ROOT, "runs"))
  ap.add_argument("--out", default="", help="default: docs/results/"
                  "NAME_pairs.md, or NAME_PART_pairs.md where the "
                  "reproduction has several active parts")
  args = ap.parse_args()
  active = [p for p in REPRODUCTIONS[args.name]["parts"](args.runs)
            if p.kind == "active"]
  parts = [p for p in active if args.part in ("", p.name)]
  if not parts:
    sys.exit(f"mixup_pairs.py: error: {args.name} has no active part "
             f"{args.part!r}; have {[p.name for p in active]}")
  part, several = parts[0], len(active) > 1
  command = "python experiments/mixup_pairs.py" + (
      "" if args.name == ap.get_default("name") else f" {args.name}") + (
      f" --part {part.name}" if several else "")
  text = report(part, command, f"{args.name}, {part.name}" if several
                else args.name)
  print(text)
  out = args.out or os.path.join(ROOT, "docs", "results", args.name + (
      f"_{part.name}" if several else "") + "_pairs.md")
  with open(out, "w") as f:
    f.write(text)


if __name__ == "__main__":
  main()

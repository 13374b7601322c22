"""Which mixup pairs did each strategy pay for? Read from the ledgers.

For every `<strategy>/seed<k>/ledger.sqlite` under a Active Mixup workdir
(read-only: it can run beside the job writing them): how the paid pairs
spread over the real images, how often both images of a pair have the same
label (the teacher's argmax on the real image, the label the student
sees), the class pairs paid most, and how confident the teacher was on
the mixed images (`jaxkd.inspection.mixup_pair_stats`). Mean ± std over
seeds. Prints a Markdown report and writes it to `--out`.

  python experiments/mixup_pairs.py                 # runs/am_multistep
  python experiments/mixup_pairs.py --workdir runs/am_official_fashion_mnist \
      --out docs/results/active_mixup_official_pairs.md
"""

import argparse
import collections
import glob
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxkd import inspection, ledger  # noqa: E402

FASHION = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
           "Shirt", "Sneaker", "Bag", "Boot")


def seed_stats(path: str):
  """(MixupPairStats, Counter of class-name pairs, n real images) of one
  ledger; None when it holds no mixup answer yet."""
  rows = ledger.read_entries(path)
  real = {e["pool_index"]: int(e["probs"].argmax()) for e in rows
          if e["kind"] == "pool"}
  mix = [e for e in rows if e["kind"] == "mixup"]
  if not mix:  # a seed still in its first round
    return None
  labels = np.full(max(real) + 1, -1)
  labels[list(real)] = list(real.values())
  pairs = np.asarray([(e["i"], e["j"]) for e in mix], np.int64)
  probs = np.stack([e["probs"] for e in mix])
  names = FASHION if probs.shape[1] == 10 else None
  name = (lambda c: names[c]) if names else str
  classes = collections.Counter(
      " + ".join(sorted((name(labels[i]), name(labels[j]))))
      for i, j in pairs)
  return (inspection.mixup_pair_stats(pairs, labels, probs), classes,
          len(labels))


def report(workdir: str) -> str:
  lines = [f"Paid mixup pairs in `{os.path.relpath(workdir, ROOT)}` "
           "(mean ± std over seeds; labels: the teacher's argmax on each "
           "real image).", "",
           "| strategy | seeds | pairs | real images used | top-10 images' "
           "share of pair slots % | most pairs of one image | same-class "
           "pairs % | teacher's mean max-probability | most paid class "
           "pairs (share %) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  sizes = set()
  fmt = lambda v, d=1: f"{np.mean(v):.{d}f} ± {np.std(v):.{d}f}"
  for strat_dir in sorted(glob.glob(os.path.join(workdir, "*"))):
    paths = sorted(glob.glob(os.path.join(strat_dir, "seed*",
                                          "ledger.sqlite")))
    if not paths:
      continue
    got = [g for g in map(seed_stats, paths) if g is not None]
    if not got:
      continue
    s = [g[0] for g in got]
    sizes.add((got[0][2], s[0].num_pairs))
    pooled = sum((g[1] for g in got), collections.Counter())
    total = sum(pooled.values())
    top = ", ".join(f"{k} ({100 * v / total:.1f})"
                    for k, v in pooled.most_common(3))
    lines.append(
        f"| {os.path.basename(strat_dir)} | {len(s)} | "
        f"{fmt([x.num_pairs for x in s], 0)} | "
        f"{fmt([x.distinct_images for x in s], 0)} | "
        f"{fmt([100 * x.top10_share for x in s])} | "
        f"{fmt([x.max_uses for x in s], 0)} | "
        f"{fmt([100 * x.same_class for x in s])} | "
        f"{fmt([x.teacher_confidence for x in s], 3)} | {top} |")
  lines += ["", "With n real images used equally, the 10 most used hold "
            "10/n of the slots and one image is in 2m/n of the m pairs"
            + "".join(f"; n = {n:,}, m = {m:,}: {1000 / n:.1f}% and "
                      f"{2 * m / n:.0f}" for n, m in sorted(sizes)) + "."]
  return "\n".join(lines) + "\n"


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", default=os.path.join(ROOT, "runs",
                                                    "am_multistep"))
  ap.add_argument("--out", default=os.path.join(
      ROOT, "docs", "results", "active_mixup_multistep_pairs.md"))
  args = ap.parse_args()
  text = report(os.path.abspath(args.workdir))
  print(text)
  with open(args.out, "w") as f:
    f.write(text)


if __name__ == "__main__":
  main()

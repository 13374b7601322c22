"""Which mixup pairs did each strategy pay for? Read from the ledgers.

For every finished `<strategy>/seed<k>/ledger.sqlite` under an Active Mixup
workdir (read-only: it can run beside the job writing them; seeds still
not finished are named, not counted): how the paid pairs
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
import json
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


def finished(seed_dir: str, rounds: int) -> bool:
  """Whether a seed's rounds.json records all rounds 0..rounds."""
  try:
    with open(os.path.join(seed_dir, "rounds.json")) as f:
      return len(json.load(f)) == rounds + 1
  except (OSError, ValueError):
    return False


def report(workdir: str) -> str:
  """The Markdown report of the finished seeds under `workdir`."""
  rel = os.path.relpath(workdir, ROOT)
  lines = ["# Which mixup pairs each strategy paid for", "",
           f"`python experiments/mixup_pairs.py --workdir {rel}`: the paid "
           "mixup pairs read from each seed's ledger (mean ± std over "
           "seeds; labels: the teacher's argmax on each real image).", "",
           "| strategy | seeds | pairs | real images used | top-10 images' "
           "share of pair slots % | most pairs of one image | same-class "
           "pairs % | teacher's mean max-probability | most paid class "
           "pairs (share %) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  sizes = set()
  fmt = lambda v, d=1: f"{np.mean(v):.{d}f} ± {np.std(v):.{d}f}"
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  rounds = config["rounds"]
  running = [os.path.join(workdir, st, f"seed{k}", "ledger.sqlite")
             for st in config.get("strategies", ()) if "mixup" in st
             for k in config.get("seeds", ())
             if not glob.glob(os.path.join(workdir, st, f"seed{k}"))]
  for strat_dir in sorted(glob.glob(os.path.join(workdir, "*"))):
    paths = []
    for path in sorted(glob.glob(os.path.join(strat_dir, "seed*",
                                              "ledger.sqlite"))):
      (paths if finished(os.path.dirname(path), rounds)
       else running).append(path)
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
  if running:
    lines += ["", "Not counted, not finished: " + ", ".join(sorted(
        os.path.relpath(os.path.dirname(p), workdir) for p in running))
              + "."]
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

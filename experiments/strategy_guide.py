"""The strategy guide: every default pool strategy on digits, mnist5k,
Fashion-MNIST and own data (a folder of PNGs), 3 seeds, with the cost the
job measures (seconds per round selecting and training, unpaid teacher
forwards, peak memory). One command, resumable:

  python experiments/strategy_guide.py [--parts=digits,mnist5k,fmnist,folder]
      [--runs=runs] [--folder=DIR] [--publish_only]

`folder` reads the 10,000 MNIST test digits written as PNGs in class
sub-folders (written to --folder, default runs/mnist_test_png, when
missing). Each part is one job in runs/guide_<part>; after each,
docs/results/strategy_guide.json and the measured table of
docs/strategies.md are rewritten from every finished part ("complete" only
when all four are).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from jaxkd import experiment, report, statistics  # noqa: E402
from jaxkd.checkpoint import write_json_atomic  # noqa: E402
from protocols import load_config  # noqa: E402

PARTS = ("digits", "mnist5k", "fmnist", "folder")
OUT = os.path.join(ROOT, "docs", "results", "strategy_guide.json")
PAGE = os.path.join(ROOT, "docs", "strategies.md")
_MNIST = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "mnist"))
DESCRIPTION = {
    "digits": "digits (scikit-learn): teacher lenet5 on 700, L 50, U 547, "
              "5 x 40",
    "mnist5k": "mnist5k: teacher lenet5 on 2,000, L 100, U 1,900, 5 x 100",
    "fmnist": "Fashion-MNIST: teacher lenet5 on 10,000, L 200, U 3,000, "
              "5 x 200, official test set",
    "folder": "own data, a folder of 10,000 PNG digits (MNIST test set) in "
              "class sub-folders: teacher on 4,000, L 100, U 3,000, 5 x 100",
}


def make_folder(out: str, mnist_dir: str = _MNIST) -> str:
  """Writes the MNIST test images as out/<label>/<index>.png (once)."""
  from PIL import Image  # noqa: PLC0415
  from jaxkd.data.idx import read_idx  # noqa: PLC0415
  done = os.path.join(out, ".complete")
  if os.path.exists(done):
    return out
  images = read_idx(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"))
  labels = read_idx(os.path.join(mnist_dir, "t10k-labels-idx1-ubyte.gz"))
  for i, (img, y) in enumerate(zip(images, labels)):
    d = os.path.join(out, str(int(y)))
    os.makedirs(d, exist_ok=True)
    Image.fromarray(img).save(os.path.join(d, f"{i:05d}.png"))
  open(done, "w").close()
  return out


def config(part: str, folder: str):
  if part == "mnist5k":
    return load_config("compare_mnist5k.py")
  if part == "folder":
    return load_config("strategy_guide.py", f"folder={folder}")
  return load_config("strategy_guide.py", part)


def collect(runs: str) -> dict:
  parts, missing = {}, []
  for part in PARTS:
    path = os.path.join(runs, f"guide_{part}", "results.json")
    if not os.path.isfile(path):
      missing.append(part)
      continue
    with open(path) as f:
      res = json.load(f)
    keep = ("strategy", "rank", "seeds", "final_success_mean",
            "final_success_std", "mean_success_mean", "mean_success_std",
            "final_vs_next", "select_seconds_per_round",
            "train_seconds_per_round", "unpaid_teacher_forwards",
            "peak_rss_mib")
    stats = report.strategy_statistics(res["strategies"])["strategies"]
    rows = []
    for r in res["ranking"]:
      row = {k: r.get(k) for k in keep}
      st = stats[r["strategy"]]
      row.update(aubc=st["aubc"], p_value=st["p_value"],
                 queries_saved=st["queries_saved"])
      rows.append(row)
    parts[part] = {"description": DESCRIPTION[part],
                   "teacher_accuracy": res["teacher_accuracy"],
                   "wall_time_s": res["wall_time"],
                   "ranking": rows}
  return {"name": "strategy_guide",
          "command": "python experiments/strategy_guide.py",
          "complete": not missing, "missing": missing,
          "published": time.strftime("%Y-%m-%d"), "parts": parts}


def _cost(v, digits=2):
  return "-" if v is None else f"{v:.{digits}f}"


def markdown(out: dict) -> str:
  lines = []
  for part, p in out["parts"].items():
    lines += [f"**{p['description']}** (teacher "
              f"{100 * p['teacher_accuracy']:.1f}%, "
              f"{p['wall_time_s'] / 60:.0f} min for all runs)", "",
              "| rank | strategy | final success % | vs next | AUBC % "
              "[95% CI] | p vs random | queries saved | select s/round | "
              "train s/round | unpaid teacher fwd | peak MiB |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
              "| --- |"]
    for r in p["ranking"]:
      lines.append(
          f"| {r['rank']} | `{r['strategy']}` | "
          f"{100 * r['final_success_mean']:.2f} ± "
          f"{100 * r['final_success_std']:.2f} | {r['final_vs_next'] or ''} "
          f"| {statistics.format_interval(r['aubc'])} | "
          f"{statistics.format_p(r['p_value'])} | "
          + ("-" if r["strategy"] == "random" else
             statistics.format_saved(r["queries_saved"])) + " | "
          f"{_cost(r['select_seconds_per_round'])} | "
          f"{_cost(r['train_seconds_per_round'])} | "
          f"{r['unpaid_teacher_forwards']:.0f} | "
          f"{_cost(r['peak_rss_mib'], 0)} |")
    lines.append("")
  if out["missing"]:
    lines.append(f"Not yet run: {', '.join(out['missing'])}.")
  return "\n".join(lines).rstrip() + "\n"


def publish(runs: str) -> dict:
  out = collect(runs)
  write_json_atomic(OUT, out)
  start, end = "<!-- guide -->", "<!-- /guide -->"
  with open(PAGE) as f:
    text = f.read()
  if start in text and end in text:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    text = f"{head}{start}\n{markdown(out)}{end}{tail}"
    with open(PAGE + ".tmp", "w") as f:
      f.write(text)
    os.replace(PAGE + ".tmp", PAGE)
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--parts", default=",".join(PARTS))
  ap.add_argument("--runs", default="runs")
  ap.add_argument("--folder", default="")
  ap.add_argument("--publish_only", action="store_true")
  a = ap.parse_args(argv)
  folder = a.folder or os.path.join(a.runs, "mnist_test_png")
  for part in filter(None, a.parts.split(",")):
    if part not in PARTS:
      raise SystemExit(f"unknown part {part!r}; parts: {', '.join(PARTS)}")
    if a.publish_only:
      continue
    if part == "folder":
      make_folder(folder)
    t0 = time.time()
    experiment.train_and_evaluate(config(part, os.path.abspath(folder)),
                                  os.path.join(a.runs, f"guide_{part}"))
    print(f"[guide] {part} done in {time.time() - t0:.0f}s", flush=True)
    publish(a.runs)
  out = publish(a.runs)
  print(f"wrote {OUT} ({'complete' if out['complete'] else 'missing: '}"
        f"{', '.join(out['missing'])})")


if __name__ == "__main__":
  main()

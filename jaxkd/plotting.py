"""Learning curves: success rate (student / teacher accuracy) vs queries."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np


def plot_success_curves(results: Dict[str, Sequence[Sequence[dict]]], path: str,
                        title: str = "Active distillation") -> str:
  """One line per strategy: mean success rate vs queries, band = min..max.

  results: {strategy: [records of seed 0, records of seed 1, ...]} where each
  record has "queries" and "success_rate". Writes a PNG and returns its path.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=120)
  colors = plt.get_cmap("tab20").colors
  markers = "osD^v<>P*Xh"
  for n, (name, runs) in enumerate(sorted(results.items())):
    runs = [r for r in runs if r]
    if not runs:
      continue
    length = min(len(r) for r in runs)
    q = np.asarray([rec["queries"] for rec in runs[0][:length]])
    s = np.asarray([[rec["success_rate"] for rec in r[:length]] for r in runs])
    # Distinct colour and marker per strategy, even with more than 10.
    line, = ax.plot(q, s.mean(0), marker=markers[n % len(markers)], ms=3.5,
                    color=colors[(2 * n) % 20 if n < 10 else (2 * n + 1) % 20],
                    label=name)
    if len(runs) > 1:
      ax.fill_between(q, s.min(0), s.max(0), alpha=0.15, color=line.get_color())
  ax.set_xlabel("teacher queries paid")
  ax.set_ylabel("success rate (student acc / teacher acc)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2 if len(results) > 6 else 1)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def format_table(rows: List[List[str]], header: List[str]) -> str:
  """A plain fixed-width table (also valid Markdown)."""
  cols = [header] + rows
  widths = [max(len(str(r[i])) for r in cols) for i in range(len(header))]
  line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
  sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
  return "\n".join([line(header), sep] + [line(r) for r in rows])

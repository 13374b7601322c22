"""Learning curves: success rate (student / teacher accuracy) vs queries."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

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
  draw_success_curves(ax, results, title=title)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def draw_success_curves(ax, results: Dict[str, Sequence[Sequence[dict]]],
                        title: str = "Active distillation"):
  """Draws `plot_success_curves`' lines on a matplotlib Axes (for notebooks
  and composite figures); returns the Axes.

  results: {strategy: [records of seed 0, records of seed 1, ...]}; one line
  per strategy at the mean success rate over seeds, band = min..max.
  """
  import matplotlib

  colors = matplotlib.colormaps["tab20"].colors
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
  return ax


def image_grid(images, titles: Optional[Sequence[str]] = None, *,
               ncols: int = 8, size: float = 1.0, dpi: int = 70,
               title: Optional[str] = None, fontsize: float = 7.0):
  """A grid of images as a matplotlib Figure (no pyplot state: display it
  with IPython's `display(fig)` or save it with `fig.savefig`).

  Args:
    images: [n, H, W, C] (C = 1 grey or 3 RGB) in [0, 1], or [n, H, W].
    titles: n captions (may hold newlines), or None.
    ncols: images per row.
    size: inches per image (the caption height is added).
    dpi: figure resolution; small keeps committed notebooks small.
    title: optional figure title.
    fontsize: caption font size.

  Returns:
    matplotlib.figure.Figure with one axis per image.
  """
  from matplotlib.figure import Figure

  from jaxkd.validation import JaxkdError
  images = np.asarray(images, np.float32)
  if images.ndim == 3:
    images = images[..., None]
  n = len(images)
  if n == 0:
    raise JaxkdError("image_grid needs at least one image.")
  ncols = max(1, min(ncols, n))
  nrows = -(-n // ncols)
  lines = 0 if titles is None else max(str(t).count("\n") + 1
                                       for t in titles)
  cap = lines * fontsize * 1.3 / 72
  height = nrows * (size + cap) + (0.35 if title else 0.0)
  fig = Figure(figsize=(ncols * size, height), dpi=dpi, layout="constrained")
  fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02,
                              hspace=0.02)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  for pos, ax in enumerate(axes.ravel()):
    ax.set_axis_off()
    if pos >= n:
      continue
    img = np.clip(images[pos], 0.0, 1.0)
    if img.shape[-1] == 1:
      ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0,
                interpolation="nearest")
    else:
      ax.imshow(img, interpolation="nearest")
    if titles is not None:
      ax.set_title(str(titles[pos]), fontsize=fontsize, pad=2)
  if title:
    fig.suptitle(title, fontsize=fontsize + 2)
  return fig


def format_table(rows: List[List[str]], header: List[str]) -> str:
  """A plain fixed-width table (also valid Markdown)."""
  cols = [header] + rows
  widths = [max(len(str(r[i])) for r in cols) for i in range(len(header))]
  line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
  sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
  return "\n".join([line(header), sep] + [line(r) for r in rows])

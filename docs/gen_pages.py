"""Regenerates the generated blocks of the documentation pages.

  python docs/gen_pages.py           # rewrite them in place
  python docs/gen_pages.py --check   # exit 1, naming the pages, if any differ

* docs/configuration.md: the settings tables between
  `<!-- settings:begin ... -->` and `<!-- settings:end -->`, from the
  declarations (`python -m jaxkd.settings`);
* docs/papers.md: each reproduction's tables between
  `<!-- reproduce:NAME -->` and `<!-- /reproduce:NAME -->`, from
  `docs/results/NAME.json` (`experiments/publish.py`'s `markdown`).

The strategy-options tables and the benchmark results are generated when
the site is built (docs/hooks.py), so they have no block here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
CONFIGURATION = os.path.join(DOCS, "configuration.md")
PAPERS = os.path.join(DOCS, "papers.md")
REPRODUCTIONS = ("recon_fmnist", "active_mixup_t1", "unix_fmnist",
                 "active_mixup_official", "active_mixup_multistep",
                 "rad_noisy_teacher", "unix_ratio")


def _replace(text: str, start: str, end: str, block: str, where: str) -> str:
  """`text` with the span from `start` to `end` (both kept) set to
  `block`."""
  if start not in text or end not in text:
    raise SystemExit(f"{where} has no {start} ... {end} block")
  head, rest = text.split(start, 1)
  _, tail = rest.split(end, 1)
  return f"{head}{start}{block}{end}{tail}"


def configuration_text(text: str) -> str:
  sys.path.insert(0, ROOT)
  from jaxkd import settings  # pylint: disable=import-outside-toplevel
  tables = settings.readme_tables()
  inner = tables[len(settings.TABLES_BEGIN):-len(settings.TABLES_END)]
  return _replace(text, settings.TABLES_BEGIN, settings.TABLES_END, inner,
                  CONFIGURATION)


def papers_text(text: str) -> str:
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import publish  # pylint: disable=import-outside-toplevel
  for name in REPRODUCTIONS:
    path = os.path.join(DOCS, "results", f"{name}.json")
    if not os.path.isfile(path):  # not run yet: its block says so
      continue
    with open(path) as f:
      out = json.load(f)
    state = ("" if out["complete"] else
             f"\n**Incomplete:** {len(out['missing'])} runs missing "
             f"({', '.join(out['missing'][:4])}...).\n")
    text = _replace(text, f"<!-- reproduce:{name} -->",
                    f"<!-- /reproduce:{name} -->",
                    f"\n{state}{publish.markdown(out)}\n\n", PAPERS)
  return text


STRATEGIES = os.path.join(DOCS, "strategies.md")


def strategies_text(text: str) -> str:
  """The strategy guide's measured tables, from
  docs/results/strategy_guide.json (experiments/strategy_guide.py)."""
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import strategy_guide  # pylint: disable=import-outside-toplevel
  with open(os.path.join(DOCS, "results", "strategy_guide.json")) as f:
    out = json.load(f)
  return _replace(text, "<!-- guide -->", "<!-- /guide -->",
                  "\n" + strategy_guide.markdown(out), STRATEGIES)


PAGES = ((CONFIGURATION, configuration_text), (PAPERS, papers_text),
         (STRATEGIES, strategies_text))


def stale_pages() -> list[str]:
  """The pages whose generated blocks differ from what they would be."""
  stale = []
  for path, make in PAGES:
    with open(path, encoding="utf-8") as f:
      text = f.read()
    if make(text) != text:
      stale.append(os.path.relpath(path, ROOT))
  return stale


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--check", action="store_true",
                  help="only report pages that differ (exit status 1)")
  args = ap.parse_args(argv)
  if args.check:
    stale = stale_pages()
    for path in stale:
      print(f"{path} is out of date: run python docs/gen_pages.py")
    return 1 if stale else 0
  for path, make in PAGES:
    with open(path, encoding="utf-8") as f:
      text = f.read()
    new = make(text)
    if new != text:
      with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(new)
      os.replace(path + ".tmp", path)
      print(f"wrote {os.path.relpath(path, ROOT)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""MkDocs hooks: pages of the site that live outside docs/.

* `notebooks/*.ipynb` become pages (rendered by mkdocs-jupyter, outputs as
  committed, never executed).
* Every `benchmarks/results/*.md` becomes a page under Benchmarks (added to
  the nav here, so a results file added later appears without editing
  mkdocs.yml); `<!-- benchmark-results -->` in a page is replaced by a list
  of those pages and, in full, the `*.txt` outputs beside them.
* `<!-- strategy-options -->` is replaced by one table per registered
  strategy of its options (defaults and meanings from their declarations),
  so the page never lags the code; only this imports jaxkd.
* The snippets extension resolves `--8<-- "PATH"` against the repository
  root, whatever the working directory.
"""

from __future__ import annotations

import os

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join("benchmarks", "results")
MARKER = "<!-- benchmark-results -->"
OPTIONS_MARKER = "<!-- strategy-options -->"


def _listing(folder: str, ext: str) -> list[str]:
  path = os.path.join(ROOT, folder)
  if not os.path.isdir(path):
    return []
  return sorted(n for n in os.listdir(path) if n.endswith(ext))


def _title(path: str, default: str) -> str:
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.startswith("# "):
        return line[2:].strip()
  return default


def on_config(config):
  snippets = config.mdx_configs.setdefault("pymdownx.snippets", {})
  snippets["base_path"] = [ROOT]
  pages = [{_title(os.path.join(ROOT, RESULTS, n), n[:-3]):
            f"{RESULTS}/{n}"} for n in _listing(RESULTS, ".md")]
  for entry in config.nav or []:
    if isinstance(entry, dict) and "Benchmarks" in entry:
      entry["Benchmarks"] = list(entry["Benchmarks"]) + pages
  return config


def _add(files, path, config):
  files.append(File(path, src_dir=ROOT, dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"]))


@event_priority(100)  # before mkdocs-jupyter picks its notebooks
def on_files(files, config):
  for name in _listing("notebooks", ".ipynb"):
    _add(files, f"notebooks/{name}", config)
  for name in _listing(RESULTS, ".md") + _listing(RESULTS, ".json"):
    _add(files, f"{RESULTS}/{name}", config)
  return files


def _strategy_options() -> str:
  from jaxkd import fields  # pylint: disable=import-outside-toplevel
  from jaxkd.selection import get_strategy, strategy_names
  out = []
  for name in strategy_names():
    strategy = get_strategy(name)
    options = strategy.options()
    out += ["", f"### `{name}`", ""]
    desc = strategy.description.strip().rstrip(".")
    needs = ", ".join(f"`{n}`" for n in sorted(strategy.needs)) or "none"
    out += [(f"{desc}. " if desc else "") + f"`needs`: {needs}.", ""]
    if fields.flat_fields(options):
      out.append(fields.field_table(options, f"strategy_options.{name}."))
    else:
      out.append("No options.")
  return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
  if OPTIONS_MARKER in markdown:
    markdown = markdown.replace(OPTIONS_MARKER, _strategy_options())
  if MARKER not in markdown:
    return markdown
  here = os.path.dirname(page.file.src_uri)
  out = []
  for name in _listing(RESULTS, ".md"):
    link = os.path.relpath(f"{RESULTS}/{name}", here or ".")
    title = _title(os.path.join(ROOT, RESULTS, name), name)
    extra = ""
    data = name[:-3] + ".json"
    if os.path.isfile(os.path.join(ROOT, RESULTS, data)):
      extra = f" ([raw JSON]({os.path.relpath(f'{RESULTS}/{data}', here or '.')}))"
    out.append(f"- [{title}]({link}){extra}: `{RESULTS}/{name}`")
  for name in _listing(RESULTS, ".txt"):
    with open(os.path.join(ROOT, RESULTS, name), encoding="utf-8") as f:
      text = f.read().rstrip("\n")
    out += ["", f"### `{RESULTS}/{name}`", "", "```text", text, "```"]
  return markdown.replace(MARKER, "\n".join(out))

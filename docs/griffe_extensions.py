"""Griffe extension for the API pages (mkdocs.yml: mkdocstrings' extensions).

jaxkd's docstrings head their doctests `Example:`, which Google style (and
Sphinx's napoleon) accepts as the Examples section; griffe knows only the
plural and would render the doctest as Markdown. This maps the singular to
the plural before griffe parses a docstring.
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
  """`Example:` section headers read as `Examples:`."""

  def on_instance(self, *, obj, **kwargs) -> None:
    del kwargs
    if obj.docstring is not None:
      obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)

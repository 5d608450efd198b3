"""Build script: the metadata lives in setup.cfg; this only makes the README's links absolute.

The package index shows the README (the long description) away from the repository, where its relative links
(``docs/GUIDE.md``, ``samples/quickstart.py``, ``#quick-start``) lead nowhere: they are rewritten against
``[metadata] url`` in setup.cfg (files under ``/blob/main/``, anchors on the README itself).
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
# [text](target) and [text](target "title"); images too. Targets with a scheme (https:, mailto:) stay.
_LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def absolute_links(markdown: str, repository: str, branch: str = "main", page: str = "README.md") -> str:
    """``markdown`` with each relative link made absolute: ``path`` -> ``<repository>/blob/<branch>/path``,
    ``#anchor`` -> ``<repository>/blob/<branch>/<page>#anchor``. Absolute links and code are left alone."""
    base = f"{repository.rstrip('/')}/blob/{branch}/"
    out = []
    fenced = False
    for line in markdown.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced:
            out.append(line)
            continue
        parts = re.split(r"(`[^`]*`)", line)  # inline code spans stay as written
        for i in range(0, len(parts), 2):
            parts[i] = _LINK.sub(lambda m: m.group(1) + _absolute(m.group(2), base, page) + m.group(3), parts[i])
        out.append("".join(parts))
    return "".join(out)


def _absolute(target: str, base: str, page: str) -> str:
    if _SCHEME.match(target) or target.startswith("//"):
        return target
    if target.startswith("#"):
        return base + page + target
    if target.startswith("./"):
        target = target[2:]
    return base + target.lstrip("/")


def long_description() -> str:
    """The README with absolute links, against setup.cfg's ``[metadata] url``."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(HERE / "setup.cfg", encoding="utf-8")
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    return absolute_links(readme, config["metadata"]["url"])


if __name__ == "__main__":
    from setuptools import setup

    setup(long_description=long_description(), long_description_content_type="text/markdown")

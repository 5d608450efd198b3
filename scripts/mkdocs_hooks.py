"""MkDocs hooks (mkdocs.yml ``hooks:``): links from a docs page to a repository file outside docs/, and the
Sphinx roles of the docstrings (``:class:`X```) in the API reference.

The guides link to ``../README.md``, ``../samples/...`` and ``../benchmarks/...`` so that they work when browsed in
the repository; the site holds only docs/, so those links are made absolute against ``repo_url`` (files under
``/blob/main/``) for the built site, and MkDocs' strict link check sees no link it cannot resolve.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

_LINK = re.compile(r"(\]\()([^)\s#]*)(#[^)\s]*)?(\))")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def outside_links(markdown: str, page_path: str, repo_url: str, branch: str = "main") -> str:
    """``markdown`` of the page at ``page_path`` (relative to docs/) with links that leave docs/ made absolute."""
    base = f"{repo_url.rstrip('/')}/blob/{branch}/"
    folder = posixpath.dirname(page_path)

    def replace(match: re.Match[str]) -> str:
        target = match.group(2)
        if not target or _SCHEME.match(target) or target.startswith("/"):
            return match.group(0)
        resolved = posixpath.normpath(posixpath.join("docs", folder, target))
        if resolved.startswith(("docs/", "../")) or resolved == "docs":
            return match.group(0)
        return match.group(1) + base + resolved + (match.group(3) or "") + match.group(4)

    out = []
    fenced = False
    for line in markdown.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced:
            out.append(line)
            continue
        parts = re.split(r"(`[^`]*`)", line)  # inline code stays as written
        for i in range(0, len(parts), 2):
            parts[i] = _LINK.sub(replace, parts[i])
        out.append("".join(parts))
    return "".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: rewrite the page's links to files outside docs/."""
    return outside_links(markdown, page.file.src_uri, config["repo_url"])


_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|attr|exc|mod|obj):<code>(~?)([^<]+)</code>")


def plain_roles(html: str) -> str:
    """``html`` with the docstrings' Sphinx roles, which mkdocstrings renders as ``:class:<code>X</code>``, shown
    as the code they name (``~a.b.C`` as ``C``, as Sphinx shows it)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"<code>{name.rsplit('.', 1)[-1] if match.group(1) else name}</code>"

    return _ROLE.sub(replace, html)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: the API reference's docstrings without Sphinx role markers."""
    return plain_roles(html)

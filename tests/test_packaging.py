"""Packaging: the import error without the testing extra, the README's absolute links for the package index
(setup.py), and the README's commands that .ci/run reads."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import List

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "https://example.invalid/avatarsdk"
BASE = REPOSITORY + "/blob/main/"


def _setup_module() -> ModuleType:
    """setup.py as a module: its functions, without running setup() (that only happens as __main__)."""
    spec = importlib.util.spec_from_file_location("avatarsdk_setup_py", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BLOCK_WEBSOCKETS = """\
import sys

sys.modules["websockets"] = None  # as if the testing extra were not installed: importing it raises ImportError
import avatarsdk  # the SDK itself needs no extra

try:
    import avatarsdk.testing
except ImportError as exc:
    print(type(exc).__name__, exc, sep=": ")
    raise SystemExit(3)
raise SystemExit("avatarsdk.testing imported without websockets")
"""


def test_testing_without_the_extra_names_the_install_command() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_WEBSOCKETS], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith("ImportError: avatarsdk.testing needs the websockets package"), result.stdout
    assert 'pip install "avatarsdk[testing]"' in result.stdout


def test_relative_links_become_absolute() -> None:
    setup = _setup_module()
    text = (
        "See [the guide](docs/GUIDE.md#session-pool), [a sample](./samples/quickstart.py) and "
        '[start](#quick-start); ![logo](docs/logo.png "Logo").\n'
    )
    assert setup.absolute_links(text, REPOSITORY) == (
        f"See [the guide]({BASE}docs/GUIDE.md#session-pool), [a sample]({BASE}samples/quickstart.py) and "
        f'[start]({BASE}README.md#quick-start); ![logo]({BASE}docs/logo.png "Logo").\n'
    )


@pytest.mark.parametrize(
    "text",
    [
        "[site](https://example.org/x) and [mail](mailto:someone@example.org)\n",
        "`[not a link](docs/GUIDE.md)` in code\n",
        "```python\nx = d[k](docs)  # [a](b) in a fence\n```\n",
    ],
)
def test_absolute_links_and_code_are_left_alone(text: str) -> None:
    assert _setup_module().absolute_links(text, REPOSITORY + "/") == text


def _link_targets(markdown: str) -> List[str]:
    prose = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    prose = re.sub(r"`[^`]*`", "", prose)
    return re.findall(r"\]\(([^)\s]+)", prose)


def test_the_long_description_has_only_absolute_links() -> None:
    """What the package index shows: the README against setup.cfg's url, every link absolute."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    relative = [t for t in _link_targets(readme) if not t.startswith("https://")]
    assert relative, "the README has relative links: the test would check nothing"
    description = _setup_module().long_description()
    targets = _link_targets(description)
    assert len(targets) == len(_link_targets(readme))
    assert all(t.startswith("https://") for t in targets), [t for t in targets if not t.startswith("https://")]
    for target in relative:  # each relative link leads to a file of the repository
        path = target.split("#")[0] or "README.md"
        assert (ROOT / path).exists(), target


def _readme_command(name: str) -> List[str]:
    """The lines of the fenced block after README.md's ``<!-- ci: NAME`` marker (as .ci/run reads it)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"<!-- ci: {name} "))
    assert lines[start + 1].startswith("```"), lines[start + 1]
    end = next(i for i in range(start + 2, len(lines)) if lines[i].startswith("```"))
    return lines[start + 2 : end]


def test_the_readme_commands_that_ci_runs_use_a_virtual_environment() -> None:
    demo, tests = _readme_command("demo"), _readme_command("tests")
    assert demo == ['python3 -m venv .venv && . .venv/bin/activate && python -m pip install -e ".[testing]" '
                    "&& python -m avatarsdk demo"]  # fmt: skip
    assert tests == ['. .venv/bin/activate && python -m pip install -e ".[tests]" && python -m pytest']
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "run_readme_command demo" in ci and "run_readme_command tests" in ci
    assert "PIP_REQUIRE_VIRTUALENV=true" in ci


def _hooks_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("avatarsdk_mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_shows_sphinx_roles_as_the_code_they_name() -> None:
    hooks = _hooks_module()
    html = (
        "<p>Create an :class:<code>AvatarSession</code>; see :meth:<code>~avatarsdk.SessionPool.session</code>"
        " and :py:func:<code>avatarsdk.iter_audio</code>; keep :<code>x</code> and <code>:class:</code>.</p>"
    )
    assert hooks.plain_roles(html) == (
        "<p>Create an <code>AvatarSession</code>; see <code>session</code>"
        " and <code>avatarsdk.iter_audio</code>; keep :<code>x</code> and <code>:class:</code>.</p>"
    )


def test_docs_links_outside_docs_become_absolute_in_the_site() -> None:
    """The site holds docs/ only: links from its pages to other repository files point at the repository."""
    hooks = _hooks_module()
    text = "[r](../README.md#quick-start) [g](GUIDE.md#errors) [s](../../samples/x.py) [c](../CHANGELOG.md)\n"
    assert hooks.outside_links(text, "reference/index.md", REPOSITORY) == (
        f"[r](../README.md#quick-start) [g](GUIDE.md#errors) [s]({BASE}samples/x.py) [c](../CHANGELOG.md)\n"
    )  # from docs/reference/, ../ is still inside docs/
    assert hooks.outside_links(text, "GUIDE.md", REPOSITORY) == (
        f"[r]({BASE}README.md#quick-start) [g](GUIDE.md#errors) [s](../../samples/x.py) [c]({BASE}CHANGELOG.md)\n"
    )
    fenced = "```\n[r](../README.md)\n```\n`[r](../README.md)`\n"
    assert hooks.outside_links(fenced, "GUIDE.md", REPOSITORY) == fenced

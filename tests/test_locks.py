"""The SDK's locks stay safe under Ctrl-C: no ``with`` statement takes a ``threading.Condition`` (the stand-in,
``avatarsdk.testing``, runs its own server threads and is left out).

``Condition.__enter__`` is Python code: an asynchronous exception (KeyboardInterrupt in the main thread, a
gevent timeout) can land after it took the lock and before the ``with`` block began, so ``__exit__`` never runs
and every other thread then waits on that lock for ever. A lock's own ``__enter__`` runs in C, with no such gap, so
the package takes each condition's lock with ``with`` and uses the condition only to wait and notify
(docs/ARCHITECTURE.md, Locks)."""

from __future__ import annotations

import ast
import threading
from pathlib import Path
from typing import List, Set

import avatarsdk

PACKAGE = Path(avatarsdk.__file__).parent


def _condition_names(tree: ast.AST) -> Set[str]:
    """Attribute and variable names assigned a ``threading.Condition(...)`` in ``tree``."""
    names: Set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
            continue
        func = node.value.func
        called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if called != "Condition":
            continue
        for target in node.targets:
            if isinstance(target, ast.Attribute):
                names.add(target.attr)
            elif isinstance(target, ast.Name):
                names.add(target.id)
    return names


def _with_conditions(path: Path, conditions: Set[str]) -> List[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                expr = item.context_expr
                name = expr.attr if isinstance(expr, ast.Attribute) else expr.id if isinstance(expr, ast.Name) else ""
                if name in conditions:
                    found.append(f"{path}:{node.lineno}: with {ast.unparse(expr)}:")
    return found


def test_no_with_statement_takes_a_condition() -> None:
    modules = sorted(p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts)
    seen: Set[str] = set()
    offending = []
    for path in modules:  # a module's own conditions, by the names it gives them
        conditions = _condition_names(ast.parse(path.read_text(encoding="utf-8")))
        seen |= conditions
        offending += _with_conditions(path, conditions)
    assert {"_cond", "cond", "changed"} <= seen  # the check sees the package's conditions
    assert offending == []


def test_the_check_finds_a_with_on_a_condition(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import threading\n"
        "class A:\n"
        "    def __init__(self):\n"
        "        self._lock = threading.Lock()\n"
        "        self._cond = threading.Condition(self._lock)\n"
        "    def good(self):\n"
        "        with self._lock:\n"
        "            self._cond.notify()\n"
        "    def bad(self):\n"
        "        with self._cond:\n"
        "            pass\n",
        encoding="utf-8",
    )
    tree = ast.parse(sample.read_text(encoding="utf-8"))
    assert _condition_names(tree) == {"_cond"}
    assert _with_conditions(sample, {"_cond"}) == [f"{sample}:10: with self._cond:"]


def test_a_condition_over_its_lock_waits_and_notifies_as_before() -> None:
    lock = threading.Lock()
    cond = threading.Condition(lock)
    seen: List[int] = []

    def notifier() -> None:
        with lock:
            seen.append(1)
            cond.notify_all()

    with lock:
        thread = threading.Thread(target=notifier)
        thread.start()
        assert cond.wait_for(lambda: seen == [1], 5)
    thread.join(5)
    assert not thread.is_alive()

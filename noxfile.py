"""The test matrix and the checks CI runs (``.ci/run``); each session also works on its own.

    python3 -m pip install -e ".[dev]"
    python3 -m nox -s lint proto package docs tests-oldest tests-newest

Sessions:

* ``tests-newest``: Python 3.11 with the newest requests / websocket-client / protobuf that setup.cfg allows.
* ``tests-without-audio``: Python 3.11 without the ``audio`` extra (PyAV): the tests that need it skip.
* ``tests-oldest``: Python 3.9 with the oldest supported ones (requests 2.26.0, websocket-client 1.6.0,
  protobuf 3.20.3, and the ``otel`` extra's opentelemetry-api 1.30.0 with the SDK of that release), pinned
  through a constraints file so that installing the package cannot move them.
* ``lint``: ruff check, ruff format --check, mypy (strict; configured in setup.cfg [mypy]).
* ``proto``: the committed ``avatarsdk/_proto`` modules match what the pinned protoc generates.
* ``package``: wheel and sdist build, hold the data files, and the bare wheel imports without any extra; the sdist
  ships no test suite (MANIFEST.in says why); the metadata has the project URLs and the long description (the
  README) only absolute links; an editable install is seen by mypy from a user's file.
* ``docs``: the documentation site and its API reference (mkdocs.yml), ``mkdocs build --strict``.
* ``mutation`` (on demand only: not in the default sessions, CI does not run it): mutation testing (mutmut 3) of
  the I/O-free modules, each against its own unit tests, and a table of the scores (scripts/mutation.py, whose
  MODULES table maps each module to its tests; docs/MUTATION.md). ``nox -s mutation -- avatarsdk/_frames.py``
  runs some modules; ``-- --sample 100 --seed 1 MODULE`` a seeded sample of a module's mutants. Offline, with
  mutmut already installed: ``nox -s mutation --no-venv --no-install -- ...``.

Interpreters are looked up by absolute path (an ``AVATARSDK_PYTHON39``-style override, the running
interpreter, pyenv's versions folder, ``pyenv prefix``, then PATH), each candidate checked by running it:
pyenv's ``python3.9`` shim is on PATH but fails unless 3.9 is selected, and nox would otherwise take it or
try to download a Python. A missing interpreter is an error, never a skip.

Virtualenvs under .nox/ are reused between runs (``--reuse-venv=no`` rebuilds them). The test sessions
still reinstall their pins (tests-oldest) or upgrade eagerly (tests-newest) each run, so a reused venv
tests the same versions as a new one; package always installs the wheel into a new venv.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from functools import cache
from pathlib import Path
from typing import List

import nox

nox.needs_version = ">=2024.3.2"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "proto", "package", "docs", "tests-oldest", "tests-newest", "tests-without-audio"]

ROOT = Path(__file__).resolve().parent
NEWEST_PYTHON = "3.11"
OLDEST_PYTHON = "3.9"
# The oldest releases that setup.cfg's install_requires admits; tests-oldest runs the suite against them.
OLDEST_PINS = [
    "requests==2.26.0",
    "websocket-client==1.6.0",
    "protobuf==3.20.3",
    "opentelemetry-api==1.30.0",  # the otel extra's oldest, and the SDK of the same release for its tests
    "opentelemetry-sdk==1.30.0",
]
# The runtime dependencies that tests-newest moves to the newest release setup.cfg allows.
RUNTIME_DEPS = ["requests", "websocket-client", "protobuf"]
# What tests-oldest's constraints file holds: the pins and what requests 2.26.0 brings.
OLDEST_CONSTRAINED = {"requests", "websocket-client", "protobuf", "urllib3", "idna", "charset-normalizer", "certifi",
                      "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-semantic-conventions"}  # fmt: skip
# Distributions whose versions the test sessions print before running the suite.
REPORTED = {"requests", "websocket-client", "protobuf", "urllib3", "charset-normalizer", "idna", "certifi",
            "websockets", "pytest", "pytest-timeout", "opentelemetry-api", "opentelemetry-sdk"}  # fmt: skip
LINT_PATHS = ["avatarsdk", "tests", "scripts", "samples", "benchmarks", "noxfile.py", "setup.py"]
WHEEL_MUST_CONTAIN = [
    "avatarsdk/py.typed",
    "avatarsdk/_proto/ingress_v2.proto",
    "avatarsdk/_proto/ingress_v2_pb2.py",
    "avatarsdk/_proto/ingress_v2_pb2.pyi",
    "avatarsdk/_proto/ingress_v1.proto",
    "avatarsdk/_proto/ingress_v1_pb2.py",
    "avatarsdk/testing/__init__.py",
]


def _runs_as(executable: str, version: str) -> bool:
    """Whether ``executable`` starts and is Python ``version`` (a broken pyenv shim fails here)."""
    try:
        result = subprocess.run(
            [executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == version


@cache
def find_python(version: str) -> str:
    """An absolute path to a working Python ``version`` ("3.9"), or ``version`` itself for nox to report."""
    candidates: List[str] = []
    env_override = os.environ.get("AVATARSDK_PYTHON" + version.replace(".", ""))  # e.g. AVATARSDK_PYTHON39
    if env_override:
        candidates.append(env_override)
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        candidates.append(sys.executable)
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    installed = sorted(  # newest patch release first: 3.9.18 before 3.9.9
        (pyenv_root / "versions").glob(version + ".*"),
        key=lambda p: [int(n) if n.isdigit() else -1 for n in p.name.split(".")],
        reverse=True,
    )
    candidates += [str(prefix / "bin" / ("python" + version)) for prefix in installed]
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            prefix = subprocess.run([pyenv, "prefix", version], capture_output=True, text=True, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            prefix = subprocess.CompletedProcess([], 1)
        if prefix.returncode == 0 and prefix.stdout.strip():
            candidates.append(str(Path(prefix.stdout.strip().splitlines()[0]) / "bin" / ("python" + version)))
    on_path = shutil.which("python" + version)
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if _runs_as(candidate, version):
            return candidate
    return version


def _dist_name(freeze_line: str) -> str:
    """The normalized distribution name of a ``pip freeze`` line."""
    name = re.split(r"[=<>~!@ ;\[]", freeze_line.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _run_script(session: nox.Session, name: str, code: str, python: str = "python") -> None:
    """Run ``code`` as ``<session tmp>/<name>.py`` with ``python`` (the session's unless an outside one is given)."""
    script = Path(session.create_tmp()) / f"{name}.py"
    script.write_text(code, encoding="utf-8")
    session.run(python, str(script), external=python != "python")


REPORT_PROTOBUF = """\
import sys

import google.protobuf
from google.protobuf.internal import api_implementation

import avatarsdk

print("avatarsdk", avatarsdk.__version__, "from", avatarsdk.__file__)
print("python", sys.version.split()[0], "| protobuf", google.protobuf.__version__, end=" ")
print("| implementation", api_implementation.Type())
"""


def _show_versions(session: nox.Session) -> None:
    """Log the resolved versions (``pip freeze`` filtered) and the protobuf implementation in use."""
    freeze = session.run("python", "-m", "pip", "freeze", "--all", silent=True)
    assert isinstance(freeze, str)
    lines = []
    for line in freeze.splitlines():
        if _dist_name(line) in REPORTED:
            lines.append(line.strip())
    session.log("resolved versions:\n    " + "\n    ".join(lines))
    _run_script(session, "report_protobuf", REPORT_PROTOBUF)


def _pytest(session: nox.Session) -> None:
    """Run the suite (pytest's configuration is in setup.cfg)."""
    session.run("python", "-m", "pytest", *session.posargs)


CHECK_OLDEST = """\
from importlib.metadata import version

import google.protobuf
import requests
import websocket

got = (google.protobuf.__version__, requests.__version__, websocket.__version__)
assert got == ("3.20.3", "2.26.0", "1.6.0"), f"protobuf, requests, websocket-client: {got}"
otel = (version("opentelemetry-api"), version("opentelemetry-sdk"))
assert otel == ("1.30.0", "1.30.0"), f"opentelemetry-api, opentelemetry-sdk: {otel}"
import avatarsdk._proto.ingress_v2_pb2  # the generated module loads on the oldest runtime

print("oldest pins in place: protobuf 3.20.3, requests 2.26.0, websocket-client 1.6.0, opentelemetry 1.30.0")
"""


@nox.session(python=find_python(OLDEST_PYTHON), name="tests-oldest")
def tests_oldest(session: nox.Session) -> None:
    """Python 3.9 with the oldest supported runtime dependencies."""
    session.install(*OLDEST_PINS)
    # Constraints, generated from what that installed: the pins and the urllib3 < 1.27, idna < 4 and
    # charset-normalizer 2.0.x that requests 2.26.0 declares, so installing the package and the test tools
    # can move none of them.
    frozen = session.run("python", "-m", "pip", "freeze", silent=True)
    assert isinstance(frozen, str)
    pinned = [line for line in frozen.splitlines() if _dist_name(line) in OLDEST_CONSTRAINED]
    constraints = Path(session.create_tmp()) / "oldest-constraints.txt"
    constraints.write_text("\n".join(pinned) + "\n", encoding="utf-8")
    session.log(f"constraints: {', '.join(pinned)}")
    session.install("-c", str(constraints), "-e", ".[tests]")
    _show_versions(session)
    _run_script(session, "check_oldest", CHECK_OLDEST)
    _pytest(session)


@nox.session(python=find_python(NEWEST_PYTHON), name="tests-newest")
def tests_newest(session: nox.Session) -> None:
    """Python 3.11 with the newest runtime dependencies setup.cfg allows."""
    # Named beside the package so the resolver applies setup.cfg's upper bounds; eager moves the
    # dependencies' own dependencies too (urllib3, charset-normalizer, ...), as a fresh install would.
    session.install("--upgrade", "--upgrade-strategy", "eager", "-e", ".[tests]", *RUNTIME_DEPS)
    _show_versions(session)
    _pytest(session)


@nox.session(python=find_python(NEWEST_PYTHON), name="tests-without-audio")
def tests_without_audio(session: nox.Session) -> None:
    """The suite without the audio extra (PyAV): what needs it skips, everything else passes."""
    session.install("-e", ".[tests]")
    session.run("python", "-m", "pip", "uninstall", "--yes", "av")
    _run_script(session, "check_no_pyav", CHECK_NO_PYAV)
    _pytest(session)


CHECK_NO_PYAV = """\
import importlib.util

assert importlib.util.find_spec("av") is None, "PyAV is still installed"
print("PyAV not installed: tests that need it skip")
"""


@nox.session(python=find_python(NEWEST_PYTHON))
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check and mypy --strict, with the tool versions pinned in the dev extra."""
    session.install("-e", ".[dev]")
    paths = [p for p in LINT_PATHS if (ROOT / p).exists()]
    session.log("linting: " + " ".join(paths))
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", "--diff", *paths)
    session.run("mypy")  # files, strictness and overrides: [mypy] in setup.cfg


# The mutmut release scripts/mutation.py is written against (it reads `mutmut results` and names mutants as it does).
MUTMUT = "mutmut==3.8.1"


@nox.session(python=find_python(NEWEST_PYTHON))
def mutation(session: nox.Session) -> None:
    """Mutation testing of the I/O-free modules against their own unit tests; arguments go to scripts/mutation.py."""
    session.install("-e", ".[tests]", MUTMUT)
    session.run("python", "scripts/mutation.py", *session.posargs)


@nox.session(python=find_python(NEWEST_PYTHON))
def proto(session: nox.Session) -> None:
    """The committed generated protobuf modules match the pinned protoc's output."""
    session.install("-r", "scripts/proto-requirements.txt")
    session.run("python", "scripts/generate_proto.py", "--check")


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts" if sys.platform == "win32" else "bin") / "python"


CHECK_BARE_INSTALL = """\
import importlib.util

import avatarsdk
import avatarsdk._proto.ingress_v2_pb2

assert "site-packages" in avatarsdk.__file__, f"not the installed wheel: {avatarsdk.__file__}"
assert importlib.util.find_spec("websockets") is None, "websockets is installed without the testing extra"
assert importlib.util.find_spec("opentelemetry") is None, "opentelemetry is installed without the otel extra"
print("import avatarsdk: ok, version", avatarsdk.__version__, "from", avatarsdk.__file__)
try:
    import avatarsdk.testing
except ImportError as exc:  # ModuleNotFoundError: No module named 'websockets'
    print(f"import avatarsdk.testing: {type(exc).__name__}: {exc}")
    assert "websockets" in str(exc) and 'pip install "avatarsdk[testing]"' in str(exc), exc
else:
    raise AssertionError("avatarsdk.testing imported without the testing extra")

# WAV files need no extra: 0.1 s of 48 kHz stereo in, 0.1 s of 16 kHz mono out.
import io
import wave

buffer = io.BytesIO()
with wave.open(buffer, "wb") as w:
    w.setnchannels(2)
    w.setsampwidth(2)
    w.setframerate(48000)
    w.writeframes(bytes([0, 16, 0, 240]) * 4800)
assert importlib.util.find_spec("av") is None, "PyAV is installed without the audio extra"
pcm = avatarsdk.load_audio(buffer.getvalue())
assert len(pcm) == 2 * 1600, len(pcm)
print("avatarsdk.load_audio reads WAV without extras")
"""


@nox.session(python=find_python(NEWEST_PYTHON))
def package(session: nox.Session) -> None:
    """Build the sdist and (from it) the wheel; check the wheel's files and a bare install of it."""
    session.install("build")
    tmp = Path(session.create_tmp())
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), ".")  # sdist, then the wheel built from it
    wheels = sorted(dist.glob("avatarsdk-*.whl"))
    sdists = sorted(dist.glob("avatarsdk-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist in {dist}, found {[p.name for p in dist.iterdir()]}")
    wheel = wheels[0]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = [name for name in WHEEL_MUST_CONTAIN if name not in names]
    if missing:
        session.error(f"{wheel.name} lacks {missing}")
    session.log(f"{wheel.name}: {len(names)} files, all of {WHEEL_MUST_CONTAIN} present")
    # The wheel without extras, in a venv of its own: the SDK imports, the stand-in service needs websockets.
    bare = tmp / "bare-venv"
    shutil.rmtree(bare, ignore_errors=True)
    session.run("python", "-m", "venv", str(bare))
    python = str(_venv_python(bare))
    session.run(python, "-m", "pip", "install", "--quiet", str(wheel), external=True)
    _run_script(session, "check_bare_install", CHECK_BARE_INSTALL, python=python)
    _check_sdist(session, sdists[0])
    _check_metadata(session, wheel)
    _check_editable_types(session, tmp)


# What the sdist must hold (it builds the wheel: setup.py reads setup.cfg and README.md); it ships no tests.
SDIST_MUST_CONTAIN = ["setup.py", "setup.cfg", "pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE",
                      "avatarsdk/py.typed", "avatarsdk/_proto/ingress_v2.proto"]  # fmt: skip
PROJECT_URLS = ["Source", "Changelog"]


def _check_sdist(session: nox.Session, sdist: Path) -> None:
    """The sdist holds what builds the wheel and no test suite (MANIFEST.in: the suite runs from the repository)."""
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = [name for name in SDIST_MUST_CONTAIN if name not in names]
    if missing:
        session.error(f"{sdist.name} lacks {missing}")
    tests = sorted(name for name in names if name.startswith("tests/") or name.endswith("conftest.py"))
    if tests:
        session.error(f"{sdist.name} ships part of the test suite (MANIFEST.in prunes tests/): {tests[:5]}")
    session.log(f"{sdist.name}: {len(names)} entries, no tests/")


def _relative_links(markdown: str) -> List[str]:
    """The link targets of ``markdown`` (outside code) that are not absolute URLs."""
    prose = re.sub(r"`{3}.*?`{3}", "", markdown, flags=re.DOTALL)
    prose = re.sub(r"`[^`]*`", "", prose)
    return [t for t in re.findall(r"\]\(([^)\s]+)", prose) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def _check_metadata(session: nox.Session, wheel: Path) -> None:
    """The wheel's metadata: the project URLs, and a long description (the README) with absolute links only."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(name))
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL") or [])
    missing = [label for label in PROJECT_URLS if label not in urls]
    if missing or metadata["Home-page"] != urls.get("Source"):
        session.error(f"metadata: Project-URL {missing} missing, or Home-page differs from Source: {urls}")
    description = str(metadata.get_payload())
    if "## Quick start" not in description or metadata["Description-Content-Type"] != "text/markdown":
        session.error("metadata: the long description is not the README as Markdown")
    relative = _relative_links(description)
    if relative:
        session.error(f"metadata: the long description has relative links (setup.py rewrites them): {relative}")
    session.log(f"metadata: project URLs {urls}; the long description's links are absolute")


USER_FILE = """\
from avatarsdk import AvatarSDKError, new_avatar_session


def on_error(err: AvatarSDKError) -> None:
    print(err.code, err.retryable)


session = new_avatar_session(avatar_id="a", api_key="k", app_id="x", region="us-west", on_error=on_error)
req_id: str = session.send_audio(b"", end=True)
"""


def _check_editable_types(session: nox.Session, tmp: Path) -> None:
    """``pip install -e .`` (strict mode: setup.cfg [editable_wheel]) is seen by mypy from a user's file."""
    tmp = tmp.resolve()  # the commands below run from the user's folder
    venv = tmp / "editable-venv"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "venv", str(venv))
    python = str(_venv_python(venv))
    mypy_pin = next(line.strip() for line in (ROOT / "setup.cfg").read_text().splitlines() if "mypy==" in line)
    session.run(python, "-m", "pip", "install", "--quiet", "-e", str(ROOT), mypy_pin, external=True)
    user = tmp / "user_code"
    shutil.rmtree(user, ignore_errors=True)
    user.mkdir()
    (user / "good.py").write_text(USER_FILE, encoding="utf-8")
    (user / "bad.py").write_text(USER_FILE.replace("req_id: str", "req_id: int"), encoding="utf-8")
    mypy = [python, "-m", "mypy", "--strict", "--no-incremental", "--config-file", os.devnull]
    # From the user's folder, as a user runs it (inside the repository mypy would check the package's sources too).
    with session.chdir(user):
        session.run(*mypy, "good.py", external=True)
        out = session.run(*mypy, "bad.py", external=True, success_codes=[1], silent=True)
    if "Incompatible types in assignment" not in str(out):
        session.error(f"mypy did not see the editable install's types: {out}")
    session.log("editable install: mypy --strict sees avatarsdk's types from a user's file")


@nox.session(python=find_python(NEWEST_PYTHON))
def docs(session: nox.Session) -> None:
    """The documentation site and API reference (mkdocs.yml), warnings as errors, with the docs extra's pins."""
    session.install("-e", ".[docs]")
    site = Path(session.create_tmp()) / "site"
    session.run("mkdocs", "build", "--strict", "--site-dir", str(site))

"""What the ``avatarsdk`` commands share: exit statuses, credentials (flags, ``AVATARSDK_*`` variables and the
``--local`` stand-in), the one-line error report with its hints, and writing output.

Credentials come from one table (:data:`ENV_VARS`, :data:`FLAGS`) under two rules: ``send`` and ``token``
take each one from its flag, else its variable, and need them all (:func:`resolve_credentials`); ``demo``
takes all the variables or none, and runs on the stand-in with none (:func:`credentials_from_env`). A region
(``--region``, ``AVATARSDK_REGION``) is never needed, and stands in for the two URLs when given.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import warnings
from contextlib import ExitStack
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

from .. import REGIONS, AvatarSDKError, AvatarSDKErrorCode, InsecureTransportWarning
from .._network import NetworkOptions
from .interrupt import Interrupt, run_interruptible

if TYPE_CHECKING:
    from ..testing import FakeAvatarService

EXIT_OK, EXIT_SERVICE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a program that SIGPIPE ended (``... | head -1``)

#: Environment variable of each credential (the demo, the commands and the samples read them).
ENV_VARS = {
    "api_key": "AVATARSDK_API_KEY",
    "app_id": "AVATARSDK_APP_ID",
    "avatar_id": "AVATARSDK_AVATAR_ID",
    "console_endpoint_url": "AVATARSDK_CONSOLE_URL",
    "ingress_endpoint_url": "AVATARSDK_INGRESS_URL",
    "region": "AVATARSDK_REGION",
}
#: Command-line flag of each credential.
FLAGS = {
    "api_key": "--api-key",
    "app_id": "--app-id",
    "avatar_id": "--avatar-id",
    "console_endpoint_url": "--console-url",
    "ingress_endpoint_url": "--ingress-url",
    "region": "--region",
}
LOCAL_ENV = "AVATARSDK_LOCAL"
SESSION_FIELDS = tuple(FLAGS)
TOKEN_FIELDS = ("api_key", "app_id", "console_endpoint_url", "region")  # the app id only when set
URL_FIELDS = ("console_endpoint_url", "ingress_endpoint_url")
TESTING_HINT = 'the built-in stand-in needs the testing extra: pip install "avatarsdk[testing]"'

_C = AvatarSDKErrorCode
HINTS: Dict[AvatarSDKErrorCode, str] = {
    _C.sessionTokenExpired: "the session token expired; each run gets a new one, so check the machine's clock",
    _C.sessionTokenInvalid: "the service refused the session token; check that the console and ingress URLs "
    "belong to the same deployment",
    _C.appIDUnrecognized: "check --app-id / AVATARSDK_APP_ID",
    _C.appIDMismatch: "the app id does not belong to the API key; check --app-id / AVATARSDK_APP_ID",
    _C.avatarNotFound: "check --avatar-id / AVATARSDK_AVATAR_ID",
    _C.billingRequired: "the account needs billing set up in the console",
    _C.creditsExhausted: "the account is out of credits",
    _C.sessionDurationExceeded: "the session reached its time limit; send fewer files per run",
    _C.concurrencyLimit: "too many sessions at once; end others or try again later",
    _C.unsupportedSampleRate: "this deployment does not take that rate; try --sample-rate 16000",
    _C.invalidEgressConfig: "the egress configuration was refused",
    _C.egressUnavailable: "the service's egress is unavailable; try again later",
    _C.idleTimeout: "the service received no audio for too long",
    _C.upstreamError: "the service had a temporary problem; try again",
    _C.invalidRequest: "the service refused the request; check the credentials and URLs",
    _C.connectionFailed: "could not reach the service; check --console-url / --ingress-url and the network",
    _C.connectionClosed: "the connection was lost; try again",
    _C.protocolError: "the reply was not the avatar service's; check that the URLs point at it",
    _C.serverError: "the service reported an error; try again later",
    _C.unknown: "run with --verbose for details",
}


Command = Callable[[argparse.Namespace, TextIO, TextIO, Interrupt], int]
"""A command's ``run``: its arguments, stdout, stderr and what Ctrl-C does to it; returns the exit status."""


class UsageError(Exception):
    """Bad arguments, credentials or input files: exit status 2."""


class OutputError(Exception):
    """The command's output cannot be written: its reader went away (a closed pipe), or the disk is full."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.strerror or str(cause))
        self.errno = cause.errno


def say(stream: TextIO, *lines: str) -> None:
    """Write ``lines`` to ``stream`` and flush (another process may be reading it line by line).

    Raises:
        OutputError: the stream cannot be written.
    """
    try:
        stream.write("".join(line + "\n" for line in lines))
        stream.flush()
    except OSError as exc:
        raise OutputError(exc) from exc


def flush_output() -> None:
    """Flush stdout now, so that output still buffered (argparse's help) fails here rather than at exit.

    Raises:
        OutputError: it cannot be written.
    """
    try:
        sys.stdout.flush()
    except OSError as exc:
        raise OutputError(exc) from exc
    except ValueError:  # closed
        pass


def output_failed(exc: OutputError) -> int:
    """End quietly after output failed: a closed pipe says nothing (exit 141, as SIGPIPE would); another
    failure (a full disk) one line on stderr (exit 1, as coreutils do). Whatever is still buffered for stdout
    is dropped, so that the interpreter's flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    if exc.errno == errno.EPIPE:
        return EXIT_BROKEN_PIPE
    try:
        say(sys.stderr, f"error: cannot write the output: {exc}")
    except OutputError:
        pass
    return EXIT_SERVICE


def ms(seconds: float) -> str:
    """A duration as ``12.3 ms``."""
    return f"{seconds * 1000:.1f} ms"


def error_line(err: AvatarSDKError) -> str:
    """``error: <code>: <message> (hint: ...)`` on one line."""
    hint = HINTS.get(err.code, "")
    if err.http_status in (401, 403) and err.code is _C.invalidRequest:
        hint = "check the API key (--api-key / AVATARSDK_API_KEY) and --console-url / AVATARSDK_CONSOLE_URL"
    text = " ".join(str(err).split())
    return f"error: {text}" + (f" (hint: {hint})" if hint else "")


# ------------------------------------------------------------------------------------ credentials


def _lookup(fields: Sequence[str], flags: Optional[argparse.Namespace], environ: Mapping[str, str]) -> Dict[str, str]:
    """The fields that are set: each from its flag (when ``flags`` has it), else its ``AVATARSDK_*`` variable."""
    found = {name: getattr(flags, name, None) or environ.get(ENV_VARS[name], "") for name in fields}
    return {name: value for name, value in found.items() if value}


def _missing(fields: Sequence[str], found: Mapping[str, str], optional: Sequence[str]) -> List[str]:
    """The fields still needed: all not found but the region, the ``optional`` ones, and the URLs a region gives."""
    needless = {"region", *optional, *(URL_FIELDS if "region" in found else ())}
    return [name for name in fields if name not in found and name not in needless]


def _region_hint(missing: Sequence[str], *, flag: bool = True) -> str:
    """What may stand in for missing URLs."""
    if not any(name in URL_FIELDS for name in missing):
        return ""
    region = ENV_VARS["region"] + (f" ({FLAGS['region']})" if flag else "")
    return f" (or {region} for the URLs)"


def credentials_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, str]]:
    """The real service's settings from ``AVATARSDK_*`` variables; ``None`` when none is set.

    Raises:
        ValueError: some but not all of the variables are set.
    """
    found = _lookup(SESSION_FIELDS, None, os.environ if environ is None else environ)
    if not found:
        return None
    missing = _missing(SESSION_FIELDS, found, ())
    if missing:
        names = ", ".join(ENV_VARS[name] for name in missing)
        raise ValueError(
            f"set all of the AVATARSDK_* variables or none; missing: {names}{_region_hint(missing, flag=False)}"
        )
    return found


def resolve_credentials(
    args: argparse.Namespace, fields: Sequence[str], environ: Mapping[str, str], optional: Sequence[str] = ()
) -> Dict[str, str]:
    """Each field from its flag, else its ``AVATARSDK_*`` variable.

    Raises:
        UsageError: some are missing (the message names their variables and flags).
    """
    found = _lookup(fields, args, environ)
    missing = _missing(fields, found, optional)
    if missing:
        names = ", ".join(f"{ENV_VARS[name]} ({FLAGS[name]})" for name in missing)
        raise UsageError(
            f"missing credentials: set {names}{_region_hint(missing)}, or use --local for the built-in stand-in"
        )
    return found


def _wants_local(args: argparse.Namespace, environ: Mapping[str, str]) -> bool:
    """``--local``, or ``AVATARSDK_LOCAL=1`` unless credentials were given as flags."""
    if args.local:
        return True
    given_as_flags = any(getattr(args, name, None) for name in FLAGS)
    return environ.get(LOCAL_ENV, "") == "1" and not given_as_flags


def credentials(
    args: argparse.Namespace, fields: Sequence[str], stack: ExitStack, optional: Sequence[str] = ()
) -> Tuple[Dict[str, str], bool]:
    """The credentials to use (``optional`` ones, and the region, only when set) and whether they are the
    stand-in's (started for ``--local``, closed with ``stack``).

    Raises:
        UsageError: credentials are missing, or the stand-in's extra is not installed.
    """
    environ = dict(os.environ)
    if not _wants_local(args, environ):
        return resolve_credentials(args, fields, environ, optional), False
    service = stack.enter_context(fake_service())
    given = service.credentials()
    return {name: given[name] for name in fields if name in given}, True


def fake_service(port: int = 0, console_port: int = 0) -> FakeAvatarService:
    """The built-in stand-in service, not started yet (``with`` or ``start()`` starts it).

    Raises:
        UsageError: the testing extra is not installed.
    """
    try:
        from ..testing import FakeAvatarService  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise UsageError(TESTING_HINT) from exc
    return FakeAvatarService(port=port, console_port=console_port)


# ---------------------------------------------------------------------------------------- parsers


def add_credentials(parser: argparse.ArgumentParser, fields: Sequence[str]) -> None:
    """The flags of ``fields`` and ``--local``."""
    group = parser.add_argument_group(
        "credentials", "each flag overrides its environment variable; --local uses the built-in stand-in instead"
    )
    for name in fields:
        text = f"default: ${ENV_VARS[name]}"
        if name == "region":
            text = f"{', '.join(REGIONS)} or auto, for both URLs (a URL given wins); {text}"
        group.add_argument(FLAGS[name], dest=name, metavar="VALUE", help=text)


#: The options every command takes, before or after its name: ``(flags, dest, default, keywords)``. The TLS
#: ones only matter to the commands that connect (``demo``, ``send``, ``token``).
COMMON_OPTIONS: Tuple[Tuple[Tuple[str, ...], str, Any, Dict[str, Any]], ...] = (
    (("-v", "--verbose"), "verbose", False, {"action": "store_true", "help": "show the SDK's debug logs"}),
    (
        ("--local",),
        "local",
        False,
        {"action": "store_true", "help": f"use the built-in stand-in service (also {LOCAL_ENV}=1)"},
    ),
    (
        ("--ca-bundle",),
        "ca_bundle",
        None,
        {"metavar": "PEM", "help": "trust the certificate authorities in this PEM file instead of the default store"},
    ),
    (
        ("--insecure",),
        "insecure",
        False,
        {"action": "store_true", "help": "do not check the servers' certificates (credentials can be intercepted)"},
    ),
)


def add_common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The common options on the top-level parser (``top``: with their defaults) or a command's parser (no
    default: a value given before the command name is kept unless given again after it)."""
    group = parser.add_argument_group("common options", None if top else "also accepted before the command name")
    for flags, dest, default, keywords in COMMON_OPTIONS:
        group.add_argument(*flags, dest=dest, default=default if top else argparse.SUPPRESS, **keywords)


def tls_options(args: argparse.Namespace, err: TextIO) -> Dict[str, Any]:
    """The library's ``ca_bundle`` / ``verify_tls`` from ``--ca-bundle`` / ``--insecure``; ``--insecure`` warns
    on one line of ``err`` (the library's warning, and urllib3's for each request, are not shown again).

    Raises:
        UsageError: both given, or the bundle is not a file.
    """
    if args.ca_bundle and args.insecure:
        raise UsageError("--ca-bundle and --insecure: give one (--insecure checks no certificate at all)")
    if args.ca_bundle:
        if not os.path.isfile(args.ca_bundle):
            raise UsageError(f"--ca-bundle: expected a PEM file, got {args.ca_bundle!r} (no such file)")
        try:  # built once per process: a file that is not PEM fails here, before any I/O
            NetworkOptions.checked(ca_bundle=args.ca_bundle).prepare_tls(None, None)
        except ValueError as exc:
            raise UsageError(f"--{str(exc).replace('_', '-', 1)}") from None
        return {"ca_bundle": args.ca_bundle}
    if not args.insecure:
        return {}
    warnings.filterwarnings("ignore", category=InsecureTransportWarning)
    try:
        from urllib3.exceptions import InsecureRequestWarning  # noqa: PLC0415 - requests' dependency
    except ImportError:  # pragma: no cover - requests always brings urllib3
        pass
    else:
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)
    say(err, "warning: --insecure: the servers' certificates are not checked; credentials can be intercepted")
    return {"verify_tls": False}


def guarded(run: Command, *, graceful: bool = False) -> Callable[[argparse.Namespace], int]:
    """``run`` on stdout and stderr, on a worker thread while the main thread waits for it or Ctrl-C
    (``interrupt.run_interruptible``); a :class:`UsageError` made an error line and its exit status. On Ctrl-C
    the command's stop actions run, it prints nothing more, and ``interrupted`` is the last line (status 130);
    a ``graceful`` command also takes SIGTERM, and ends as it chooses on either."""

    def work(args: argparse.Namespace, out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
        try:
            return run(args, out, err, interrupt)
        except UsageError as exc:
            say(err, f"error: {exc}")
            return EXIT_USAGE

    def call(args: argparse.Namespace) -> int:
        signals = (signal.SIGINT, signal.SIGTERM) if graceful else (signal.SIGINT,)
        status, _ = run_interruptible(partial(work, args), sys.stdout, sys.stderr, signals=signals, graceful=graceful)
        if status is None:  # interrupted (a graceful command: it had not ended when the wait did)
            say(sys.stderr, "interrupted")
            return EXIT_INTERRUPTED
        return status

    return call

"""``avatarsdk token``: request a session token from the console API and print when it expires (the token
itself only with ``--show``)."""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from typing import Dict, TextIO, Tuple
from urllib.parse import urlsplit

from .. import AvatarSDKError
from .._bootstrap import auto_region, region_endpoints
from .._http_pool import shared_session
from .._network import NetworkOptions
from .._token import request_session_token
from .._validation import check_text, check_url
from ..regions import AUTO_REGION, default_bootstrap_url, endpoints_for
from .common import (
    EXIT_OK,
    EXIT_SERVICE,
    TOKEN_FIELDS,
    UsageError,
    add_credentials,
    credentials,
    error_line,
    say,
    tls_options,
)
from .interrupt import Interrupt

MAX_EXPIRES_IN = 24 * 3600


def run(args: argparse.Namespace, out: TextIO, err: TextIO, interrupt: Interrupt) -> int:
    """``avatarsdk token``: request a session token and print its expiry (the token only with --show)."""
    if not 0 < args.expires_in <= MAX_EXPIRES_IN:
        raise UsageError(f"--expires-in: expected 1 to {MAX_EXPIRES_IN} seconds (24 h), got {args.expires_in}")
    network = NetworkOptions.checked(**tls_options(args, err))
    with ExitStack() as stack:
        found, _ = credentials(args, TOKEN_FIELDS, stack, optional=("app_id",))
        try:
            console, route = _console(found, network)
            api_key = check_text("api_key", found["api_key"], secret=True, header=True)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from exc
        expire_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=args.expires_in)
        try:
            token = request_session_token(
                console,
                api_key=api_key,
                app_id=found.get("app_id"),
                route=route,
                expire_at=expire_at,
                timeout=(5.0, 15.0),
                http=shared_session(console, network),  # the TLS options live in its context
                request_options=network.requests_kwargs(),
            )
        except AvatarSDKError as exc:
            say(err, error_line(exc))
            return EXIT_SERVICE
    say(
        out,
        f"session token from {urlsplit(console).netloc}: expires {expire_at:%Y-%m-%d %H:%M:%S} UTC"
        f" (in {args.expires_in} s)",
        token if args.show else "(the token is not shown; --show prints it)",
    )
    return EXIT_OK


def _console(found: Dict[str, str], network: NetworkOptions) -> Tuple[str, str]:
    """The console URL given (its route ``"console"``), else the region's and its route (``--region auto``: the
    bootstrap call with the command's TLS options)."""
    if "console_endpoint_url" in found:
        return check_url("console_endpoint_url", found["console_endpoint_url"], ("http", "https")), "console"
    region = found["region"]
    if region != AUTO_REGION:
        endpoints = endpoints_for(region)
    elif "app_id" not in found:
        raise ValueError("--region auto: the bootstrap call needs the app id (--app-id / AVATARSDK_APP_ID)")
    else:
        url = default_bootstrap_url()
        answer = auto_region(found["app_id"], url=url, http=shared_session(url, network))
        endpoints = region_endpoints(answer)
    return endpoints.console_endpoint_url, endpoints.token_route


NAME = "token"
HELP = "request a session token and print when it expires"
DESCRIPTION = "Requests a session token from the console API. The token itself is printed only with --show."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``token``'s arguments."""
    parser.add_argument(
        "--expires-in", type=int, default=3600, metavar="S", help="token lifetime in seconds (default 3600, max 86400)"
    )
    parser.add_argument("--show", action="store_true", help="print the token (a secret) on the last line")
    add_credentials(parser, TOKEN_FIELDS)

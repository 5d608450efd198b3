"""The token call (``POST {console}/session-tokens``, or another route of ``TOKEN_ROUTES``) over requests."""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

import requests

from ._backoff import NO_RETRIES, Backoff
from ._http_errors import RAW_BODY_LIMIT, error_details, http_rejection, int_or_none, json_or_none, redact
from ._protocol import session_token_url
from .errors import PHASE_SESSION_TOKEN, AvatarSDKErrorCode, SessionTokenError, classify

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20  # a token response is tiny; anything past 1 MiB is not one
#: Where a token call's answer may hold the token, in order of preference (at the top level, then in ``data``).
TOKEN_KEYS = ("sessionToken", "sessionKey", "token", "session_token")


def request_session_token(
    console_endpoint_url: str,
    *,
    api_key: str,
    expire_at: datetime,
    app_id: Optional[str] = None,
    route: str = "console",
    timeout: Optional[Tuple[Optional[float], Optional[float]]],
    retry: Backoff = NO_RETRIES,
    http: Optional[requests.Session] = None,
    request_options: Optional[Dict[str, Any]] = None,
    on_attempt: Optional[Callable[[int], None]] = None,
) -> str:
    """Ask the console for a session token valid until ``expire_at``, retrying as ``retry`` says: connection
    failures, 5xx and 429 only (never another 4xx), ``Retry-After`` honoured. The body names ``app_id`` when
    one is given; ``route`` is a key of ``TOKEN_ROUTES``. ``on_attempt(n)``, if given, is called before the
    n-th attempt.

    Raises:
        SessionTokenError: the call failed (network, HTTP status, error document or unusable body); after
            retries, the last attempt's error, its message saying how many attempts were made.
    """
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        if on_attempt is not None:  # the telemetry's count (_otel)
            on_attempt(attempt)
        outcome = _request_once(
            session_token_url(console_endpoint_url, route),
            api_key=api_key,
            payload=_payload(app_id, expire_at),
            timeout=timeout,
            http=http,
            options=request_options or {},
        )
        if isinstance(outcome, str):
            return outcome
        err, retry_after = outcome
        if not _worth_retrying(err) or (retry.retries is not None and attempt > retry.retries):
            raise _after(err, attempt, "") from err.__cause__
        delay = retry.next_delay(attempt, time.monotonic() - started, retry_after)
        if delay is None:
            raise _after(err, attempt, "; the next would pass the retry deadline") from err.__cause__
        logger.debug("token call failed (%s); retry %d in %.2fs", err.code.value, attempt, delay)
        time.sleep(delay)


def _after(err: SessionTokenError, attempts: int, why: str) -> SessionTokenError:
    """The error to raise after ``attempts`` calls: ``err``, its message saying how many were made."""
    if attempts == 1 and not why:
        return err
    return err._derive(f"{err.message} (after {attempts} attempt{'s' if attempts > 1 else ''}{why})")


def _worth_retrying(err: SessionTokenError) -> bool:
    """Connection failures, 5xx and 429: the call may succeed later. Never another 4xx."""
    if not err.retryable:
        return False
    status = err.http_status
    return status is None or status == 429 or status >= 500


def _payload(app_id: Optional[str], expire_at: datetime) -> Dict[str, Any]:
    """The token call's body: ``appId`` first (when known), then ``expireAt``; never ``modelVersion``."""
    payload: Dict[str, Any] = {"appId": app_id} if app_id else {}
    payload["expireAt"] = int(expire_at.timestamp())
    return payload


def _request_once(
    url: str,
    *,
    api_key: str,
    payload: Dict[str, Any],
    timeout: Optional[Tuple[Optional[float], Optional[float]]],
    http: Optional[requests.Session],
    options: Dict[str, Any],
) -> Union[str, Tuple[SessionTokenError, Optional[float]]]:
    """One token call: the token, or the error and the server's ``Retry-After`` in seconds (if any)."""
    host = urlsplit(url).netloc
    headers = {"X-Api-Key": api_key, "Content-Type": "application/json", "Accept": "application/json"}
    logger.debug("requesting a session token from %s (expireAt=%d)", host, payload["expireAt"])
    try:
        with contextlib.ExitStack() as stack:
            client = http if http is not None else stack.enter_context(requests.Session())
            resp = stack.enter_context(
                client.post(url, data=json.dumps(payload), headers=headers, timeout=timeout, stream=True, **options)
            )
            status = resp.status_code
            retry_after = _retry_after(resp.headers.get("Retry-After"))
            body = read_limited(resp, MAX_BODY_BYTES)
    except requests.Timeout as exc:
        return transport_error(f"token call to {host} timed out ({type(exc).__name__})", exc), None
    except requests.ConnectionError as exc:
        return transport_error(f"could not reach {host} for a session token ({reason_of(exc)})", exc), None
    except requests.RequestException as exc:
        err = SessionTokenError(
            f"token call to {host} failed: {reason_of(exc)}", code=AvatarSDKErrorCode.connectionFailed
        )
        err.__cause__ = exc
        return err, None
    if body is None:
        return (
            SessionTokenError(
                f"token response from {host} is larger than {MAX_BODY_BYTES} bytes",
                code=AvatarSDKErrorCode.protocolError,
                http_status=status,
            ),
            None,
        )
    try:
        token = parse_token_response(status, body, secrets=(api_key,))
    except SessionTokenError as err:
        return err, retry_after
    logger.debug("session token obtained from %s (%d characters)", host, len(token))
    return token


def _retry_after(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110); ``None`` if absent or unusable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def reason_of(exc: BaseException) -> str:
    """The innermost cause's class name (e.g. ``SSLCertVerificationError``, ``ProxyError``), never its text
    (which may hold URLs)."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    inner = type(seen).__name__
    return inner if inner == type(exc).__name__ else f"{type(exc).__name__}: {inner}"


def read_limited(resp: requests.Response, limit: int) -> Optional[bytes]:
    """The body of ``resp``, or ``None`` once it passes ``limit`` bytes (the rest is not read)."""
    chunks = []
    size = 0
    for chunk in resp.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def transport_error(message: str, cause: BaseException) -> SessionTokenError:
    code, retryable, _ = classify(phase=PHASE_SESSION_TOKEN, transport=True)
    err = SessionTokenError(message, code=code, retryable=retryable)
    err.__cause__ = cause
    return err


def parse_token_response(status: int, body: bytes, *, secrets: Tuple[str, ...] = ()) -> str:
    """The session token from a token call's response, or a classified :class:`SessionTokenError`.

    A non-200 status, or an ``errors`` list (even with HTTP 200), is a failure; a 200 without a non-empty
    string under one of :data:`TOKEN_KEYS`, at the top level or inside ``data``, is a protocol error. Known
    ``secrets`` are removed from any echoed body.
    """
    text = body.decode("utf-8", errors="replace")
    document = json_or_none(text)
    errors = document.get("errors") if isinstance(document, dict) else None
    found = _tokens_in(document)
    secrets = (*secrets, *found)  # a token in a failed response is still a secret
    if status != 200 or errors:
        doc_status = int_or_none(error_details(document, text)["status"])
        http_status = doc_status if status == 200 and doc_status is not None else status
        fields = http_rejection(
            "session token request failed",
            phase=PHASE_SESSION_TOKEN,
            http_status=http_status,
            text=text,
            document=document,
            secrets=secrets,
        )
        raise SessionTokenError(fields.pop("message"), **fields)
    raw_body = redact(text, secrets)[:RAW_BODY_LIMIT] or None
    if not isinstance(document, dict):
        raise SessionTokenError(
            "session token response is not a JSON object",
            code=AvatarSDKErrorCode.protocolError,
            http_status=status,
            raw_body=raw_body,
        )
    token = found[0] if found else None
    if token is None:
        raise SessionTokenError(
            f"session token response has no {', '.join(TOKEN_KEYS)} (top level or in data)",
            code=AvatarSDKErrorCode.protocolError,
            http_status=status,
            raw_body=raw_body,
        )
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in token):
        raise SessionTokenError(
            "session token contains whitespace or control characters",
            code=AvatarSDKErrorCode.protocolError,
            http_status=status,
        )
    return token


def _tokens_in(document: Any) -> List[str]:
    """The non-empty strings under :data:`TOKEN_KEYS` in a response, the one to use first: the top level before
    ``data``, each in the keys' order."""
    if not isinstance(document, dict):
        return []
    places = [document]
    if isinstance(document.get("data"), dict):
        places.append(document["data"])
    found = []
    for place in places:
        for key in TOKEN_KEYS:
            value = place.get(key)
            if isinstance(value, str) and value:
                found.append(value)
    return found

"""The console API's token call (``POST {console}/session-tokens``) over requests."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Optional, Tuple
from urllib.parse import urlsplit

import requests

from ._http_errors import RAW_BODY_LIMIT, error_details, http_rejection, int_or_none, json_or_none, redact
from ._protocol import session_token_url
from .errors import PHASE_SESSION_TOKEN, AvatarSDKErrorCode, SessionTokenError, classify

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20  # a token response is tiny; anything past 1 MiB is not one


def request_session_token(
    console_endpoint_url: str,
    *,
    api_key: str,
    expire_at: datetime,
    timeout: Optional[Tuple[Optional[float], Optional[float]]],
) -> str:
    """Ask the console for a session token valid until ``expire_at``.

    Raises:
        SessionTokenError: the call failed (network, HTTP status, error document or unusable body).
    """
    url = session_token_url(console_endpoint_url)
    host = urlsplit(url).netloc
    payload = {"expireAt": int(expire_at.timestamp())}
    headers = {"X-Api-Key": api_key, "Content-Type": "application/json", "Accept": "application/json"}
    logger.debug("requesting a session token from %s (expireAt=%d)", host, payload["expireAt"])
    try:
        with (
            requests.Session() as http,
            http.post(url, data=json.dumps(payload), headers=headers, timeout=timeout, stream=True) as resp,
        ):
            status = resp.status_code
            body = _read_limited(resp)
    except requests.Timeout as exc:
        raise _transport_error(f"token call to {host} timed out ({type(exc).__name__})") from exc
    except requests.ConnectionError as exc:
        raise _transport_error(f"could not reach {host} for a session token ({type(exc).__name__})") from exc
    except requests.RequestException as exc:
        raise SessionTokenError(
            f"token call to {host} failed: {type(exc).__name__}",
            code=AvatarSDKErrorCode.connectionFailed,
        ) from exc
    if body is None:
        raise SessionTokenError(
            f"token response from {host} is larger than {MAX_BODY_BYTES} bytes",
            code=AvatarSDKErrorCode.protocolError,
            http_status=status,
        )
    token = parse_token_response(status, body, secrets=(api_key,))
    logger.debug("session token obtained from %s (%d characters)", host, len(token))
    return token


def _read_limited(resp: requests.Response) -> Optional[bytes]:
    chunks = []
    size = 0
    for chunk in resp.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _transport_error(message: str) -> SessionTokenError:
    code, retryable, _ = classify(phase=PHASE_SESSION_TOKEN, transport=True)
    return SessionTokenError(message, code=code, retryable=retryable)


def parse_token_response(status: int, body: bytes, *, secrets: Tuple[str, ...] = ()) -> str:
    """The session token from a token call's response, or a classified :class:`SessionTokenError`.

    A non-200 status, or an ``errors`` list (even with HTTP 200), is a failure; a 200 without a non-empty
    ``sessionToken`` string is a protocol error. Known ``secrets`` are removed from any echoed body.
    """
    text = body.decode("utf-8", errors="replace")
    document = json_or_none(text)
    errors = document.get("errors") if isinstance(document, dict) else None
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
    raw_body = redact(text[:RAW_BODY_LIMIT], secrets) or None
    if not isinstance(document, dict):
        raise SessionTokenError(
            "session token response is not a JSON object",
            code=AvatarSDKErrorCode.protocolError,
            http_status=status,
            raw_body=raw_body,
        )
    token = document.get("sessionToken")
    if not isinstance(token, str) or not token:
        raise SessionTokenError(
            "session token response has no sessionToken",
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

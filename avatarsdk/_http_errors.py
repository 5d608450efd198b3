"""Turning HTTP-level rejections (the token call, the WebSocket upgrade) into error details."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

from .errors import classify

RAW_BODY_LIMIT = 64 * 1024  # characters of a response body kept on an error


def redact(text: str, secrets: Tuple[str, ...]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def json_or_none(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def int_or_none(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):  # None, lists, "abc", ...
        return None


def _str_or_none(value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    return str(value)


def error_details(document: Any, text: str, secrets: Tuple[str, ...] = ()) -> Dict[str, Optional[str]]:
    """``status``, ``code``, ``title`` and ``detail`` of a JSON:API error document (first error), a flat
    ``{"code", "message", ...}`` object, or a plain-text body (as ``detail``, its first 1,000 characters once
    ``secrets`` are removed: cutting first could leave part of one)."""
    if isinstance(document, dict):
        errors = document.get("errors")
        source: Any = errors[0] if isinstance(errors, list) and errors else document
        if isinstance(source, dict):
            return {
                "status": _str_or_none(source.get("status")),
                "code": _str_or_none(source.get("code") or source.get("error") or source.get("id")),
                "title": _str_or_none(source.get("title")),
                "detail": _str_or_none(source.get("detail") or source.get("message")),
            }
        return {"status": None, "code": None, "title": None, "detail": None}
    stripped = redact(text, secrets).strip()
    return {"status": None, "code": None, "title": None, "detail": stripped[:1000] or None}


def http_rejection(
    prefix: str,
    *,
    phase: str,
    http_status: int,
    text: str,
    document: Any,
    secrets: Tuple[str, ...],
) -> Dict[str, Any]:
    """Keyword arguments for an :class:`~avatarsdk.AvatarSDKError` describing an HTTP-level rejection (token
    call or WebSocket upgrade) with body ``text`` (``document``: its JSON, if any).

    The body is parsed and classified as received; ``secrets`` are removed only from what the error keeps
    (message, server texts, raw body), so a secret that happens to occur in the JSON cannot break parsing.
    """
    details = error_details(document, text, secrets)
    joined = " | ".join(v for v in (details["code"], details["title"], details["detail"]) if v)
    code, retryable, _ = classify(phase=phase, http_status=http_status, server_code=details["code"], text=joined)
    server_code, title, detail = (
        None if v is None else redact(v, secrets) for v in (details["code"], details["title"], details["detail"])
    )
    parts = [p for p in (title, detail) if p]
    message = f"{prefix} (HTTP {http_status})"
    if parts:
        message += ": " + " - ".join(parts)
    elif server_code:
        message += f": {server_code}"
    return {
        "code": code,
        "message": message,
        "phase": phase,
        "retryable": retryable,
        "http_status": http_status,
        "server_code": server_code,
        "server_title": title,
        "server_detail": detail,
        "raw_body": redact(text, secrets)[:RAW_BODY_LIMIT] or None,  # removed before the cut: no half secret
    }

"""HTTP-level rejections (the token call, the WebSocket upgrade) turned into error details
(avatarsdk/_http_errors.py), without I/O. Over real HTTP: tests/test_token.py and tests/test_upgrade.py."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

from avatarsdk import AvatarSDKErrorCode
from avatarsdk._http_errors import RAW_BODY_LIMIT, error_details, http_rejection, int_or_none, json_or_none, redact

C = AvatarSDKErrorCode
NONE = {"status": None, "code": None, "title": None, "detail": None}

# --------------------------------------------------------------------------------------------------
# redact, json_or_none, int_or_none
# --------------------------------------------------------------------------------------------------


def test_redact_replaces_every_occurrence_of_each_secret() -> None:
    assert redact("key=abc, again abc; token=xyz", ("abc", "xyz")) == "key=***, again ***; token=***"


def test_redact_ignores_empty_secrets() -> None:
    assert redact("plain text", ("", "zzz")) == "plain text"
    assert redact("plain text", ()) == "plain text"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("0", 0),
        ('"s"', "s"),
        ("null", None),
        ("", None),
        (" \n\t", None),
        ("not json", None),
        ('{"a": ', None),
        ("[" * 100_000 + "]" * 100_000, None),  # nested past the recursion limit
    ],
)
def test_json_or_none(text: str, expected: Any) -> None:
    assert json_or_none(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(12, 12), ("12", 12), (" 7 ", 7), (12.9, 12), (None, None)],
        *[(True, None), (False, None), ("x", None), ([], None), ({}, None), ("", None)],
    ],
)
def test_int_or_none(value: Any, expected: Optional[int]) -> None:
    assert int_or_none(value) == expected


# --------------------------------------------------------------------------------------------------
# error_details
# --------------------------------------------------------------------------------------------------


def test_details_of_a_jsonapi_document_come_from_its_first_error() -> None:
    document = {
        "errors": [
            {"status": 401, "code": "UNAUTHENTICATED", "title": "Unauthorized", "detail": "bad key"},
            {"status": 500, "code": "OTHER", "title": "Other", "detail": "other"},
        ]
    }
    assert error_details(document, json.dumps(document)) == {
        "status": "401",
        "code": "UNAUTHENTICATED",
        "title": "Unauthorized",
        "detail": "bad key",
    }


def test_details_of_a_flat_object() -> None:
    document = {"code": "E1", "message": "went wrong", "status": "400"}
    assert error_details(document, "") == {"status": "400", "code": "E1", "title": None, "detail": "went wrong"}


@pytest.mark.parametrize(
    ("source", "code", "detail"),
    [
        ({"code": "c", "error": "e", "id": "i", "detail": "d", "message": "m"}, "c", "d"),
        ({"error": "e", "id": "i", "message": "m"}, "e", "m"),
        ({"id": "i"}, "i", None),
        ({"code": "", "error": "e", "detail": "", "message": "m"}, "e", "m"),
        ({"code": 0, "id": 7}, "7", None),
    ],
)
def test_which_field_gives_the_code_and_the_detail(source: Any, code: Optional[str], detail: Optional[str]) -> None:
    got = error_details(source, "")
    assert (got["code"], got["detail"]) == (code, detail)


@pytest.mark.parametrize(
    "document",
    [{"errors": []}, {"errors": {"code": "x"}}, {"errors": None}],
    ids=["no-errors", "errors-not-a-list", "errors-null"],
)
def test_without_a_usable_errors_list_the_document_itself_is_read(document: Any) -> None:
    document = {**document, "code": "TOP", "title": "Top", "detail": "top level", "status": 503}
    assert error_details(document, "") == {"status": "503", "code": "TOP", "title": "Top", "detail": "top level"}


@pytest.mark.parametrize("first", ["a string", 3, None, ["nested"]])
def test_a_first_error_that_is_not_an_object_gives_no_details(first: Any) -> None:
    assert error_details({"errors": [first, {"code": "second"}]}, "x") == NONE


def test_empty_values_are_none_and_others_become_strings() -> None:
    got = error_details({"status": 0, "code": None, "title": False, "detail": ""}, "")
    assert got == {"status": "0", "code": None, "title": "False", "detail": None}
    assert error_details({"status": "", "title": 12}, "") == {**NONE, "title": "12"}


@pytest.mark.parametrize("document", [None, ["a", "list"], "a string", 42])
def test_a_body_that_is_not_an_object_is_its_own_detail(document: Any) -> None:
    assert error_details(document, "  bad gateway\n") == {**NONE, "detail": "bad gateway"}


def test_a_blank_body_has_no_detail() -> None:
    assert error_details(None, " \n ") == NONE


def test_a_plain_text_detail_is_redacted_then_cut_to_1000_characters() -> None:
    secret = "s" * 10
    text = "x" * 995 + secret + "y" * 100
    detail = error_details(None, text, (secret,))["detail"]
    assert detail == "x" * 995 + "***yy"  # cut after redacting: no part of the secret is left
    assert len(error_details(None, "z" * 1001)["detail"] or "") == 1000


# --------------------------------------------------------------------------------------------------
# http_rejection
# --------------------------------------------------------------------------------------------------


def rejection(status: int, body: Any, *, secrets: tuple = (), phase: str = "session_token") -> Any:
    text = body if isinstance(body, str) else json.dumps(body)
    return http_rejection(
        "session token request failed",
        phase=phase,
        http_status=status,
        text=text,
        document=json_or_none(text),
        secrets=secrets,
    )


def test_a_jsonapi_rejection_in_full() -> None:
    body = {"errors": [{"status": "403", "code": "PERMISSION_DENIED", "title": "Forbidden", "detail": "key revoked"}]}
    assert rejection(403, body) == {
        "code": C.invalidRequest,
        "message": "session token request failed (HTTP 403): Forbidden - key revoked",
        "phase": "session_token",
        "retryable": False,
        "http_status": 403,
        "server_code": "PERMISSION_DENIED",
        "server_title": "Forbidden",
        "server_detail": "key revoked",
        "raw_body": json.dumps(body),
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"title": "Only a title"}, "session token request failed (HTTP 500): Only a title"),
        ({"detail": "only a detail"}, "session token request failed (HTTP 500): only a detail"),
        ({"code": "ONLY_A_CODE"}, "session token request failed (HTTP 500): ONLY_A_CODE"),
        ({"code": "C", "title": "T"}, "session token request failed (HTTP 500): T"),
        ({}, "session token request failed (HTTP 500)"),
        ("", "session token request failed (HTTP 500)"),
        ("upstream timed out", "session token request failed (HTTP 500): upstream timed out"),
    ],
)
def test_the_message_says_the_title_and_detail_else_the_code(body: Any, message: str) -> None:
    got = rejection(500, body)
    assert got["message"] == message
    assert (got["code"], got["retryable"]) == (C.serverError, True)


def test_an_empty_body_is_kept_as_none() -> None:
    assert rejection(502, "")["raw_body"] is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"code": "x", "title": "credits exhausted", "detail": "d"}, C.creditsExhausted),
        ({"code": "x", "title": "t", "detail": "Session denied"}, C.billingRequired),
        ({"code": "app id mismatch"}, C.appIDMismatch),
        ("avatar not found", C.avatarNotFound),
    ],
)
def test_the_code_title_and_detail_are_all_classified(body: Any, code: AvatarSDKErrorCode) -> None:
    assert rejection(400, body)["code"] is code


@pytest.mark.parametrize(("server_code", "code"), [("4001", C.creditsExhausted), ("4003", C.concurrencyLimit)])
def test_a_server_code_in_the_body_classifies_an_upgrade_rejection(server_code: str, code: AvatarSDKErrorCode) -> None:
    assert rejection(403, {"code": server_code}, phase="websocket_connect")["code"] is code
    assert rejection(403, {"detail": server_code}, phase="websocket_connect")["code"] is C.invalidRequest


def test_the_phase_decides_what_a_status_means() -> None:
    assert rejection(401, {}, phase="websocket_connect")["code"] is C.sessionTokenExpired
    assert rejection(401, {}, phase="session_token")["code"] is C.invalidRequest
    got = rejection(401, {}, phase="websocket_connect")
    assert (got["phase"], got["http_status"]) == ("websocket_connect", 401)


def test_secrets_are_removed_from_what_is_kept_but_not_from_what_is_classified() -> None:
    body = {"errors": [{"code": "k-123", "title": "credits exhausted for k-123", "detail": "key k-123"}]}
    got = rejection(402, body, secrets=("k-123", ""))
    assert got["code"] is C.creditsExhausted  # classified on the text as received
    assert (got["server_code"], got["server_title"], got["server_detail"]) == (
        "***",
        "credits exhausted for ***",
        "key ***",
    )
    assert got["message"] == "session token request failed (HTTP 402): credits exhausted for *** - key ***"
    assert got["raw_body"] == json.dumps(body).replace("k-123", "***")


def test_no_part_of_a_secret_survives_in_a_plain_text_detail() -> None:
    secret = "SECRET-VALUE"
    got = rejection(500, "x" * 995 + secret + " and more", secrets=(secret,))
    assert got["server_detail"] == "x" * 995 + "*** a"  # redacted, then cut to 1,000 characters
    assert "SECR" not in got["message"]


def test_the_raw_body_is_redacted_then_cut() -> None:
    secret = "SECRET-VALUE"
    text = "a" * (RAW_BODY_LIMIT - 5) + secret + "b" * 10
    got = rejection(500, text, secrets=(secret,))
    assert got["raw_body"] == "a" * (RAW_BODY_LIMIT - 5) + "***bb"
    assert len(rejection(500, "c" * (RAW_BODY_LIMIT + 1))["raw_body"]) == RAW_BODY_LIMIT
    assert RAW_BODY_LIMIT == 64 * 1024

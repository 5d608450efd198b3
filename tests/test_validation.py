"""Checks of single values of user input (avatarsdk/_validation.py), without I/O: what each accepts, what it
returns, and the exact message of each refusal (the field named, what was expected, what was given)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Callable, Type

import pytest

from avatarsdk import _validation
from avatarsdk._validation import (
    MAX_TIMEOUT,
    MAX_TOKEN_LIFETIME,
    OGG_OPUS_SAMPLE_RATES,
    PCM_SAMPLE_RATES,
    check_callback,
    check_expire_at,
    check_http_timeout,
    check_int,
    check_text,
    check_timeout,
    check_url,
)

NOW = datetime(2030, 5, 17, 12, 0, 0, tzinfo=timezone.utc)  # far from the real time: `now` must be the one used


def message(kind: Type[Exception], call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The message of the ``kind`` that ``call(*args, **kwargs)`` raises (exactly that type)."""
    with pytest.raises(kind) as info:
        call(*args, **kwargs)
    assert type(info.value) is kind
    return str(info.value)


# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------


def test_the_sample_rates_and_limits() -> None:
    assert PCM_SAMPLE_RATES == (8000, 16000, 22050, 24000, 32000, 44100, 48000)
    assert OGG_OPUS_SAMPLE_RATES == (8000, 12000, 16000, 24000, 48000)
    assert timedelta(hours=24) == MAX_TOKEN_LIFETIME
    assert MAX_TIMEOUT == 86400.0


# --------------------------------------------------------------------------------------------------
# check_text
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "avatar-1", "with inner space", "x\u00e9y", "~!@#"])
def test_check_text_returns_the_value(value: str) -> None:
    assert check_text("f", value) is value


@pytest.mark.parametrize(("value", "name"), [(None, "NoneType"), (b"abc", "bytes"), (3, "int"), (["a"], "list")])
def test_check_text_refuses_other_types_by_name(value: Any, name: str) -> None:
    assert message(TypeError, check_text, "avatar_id", value) == f"avatar_id: expected a str, got {name}"


@pytest.mark.parametrize("value", ["", " ", "  \t ", "\n", "\r\n"])
def test_check_text_refuses_empty_or_blank(value: str) -> None:
    assert message(ValueError, check_text, "f", value) == f"f: expected a non-empty string, got {value!r}"


@pytest.mark.parametrize(
    "value",
    ["a\nb", "a\rb", "ab\x00", "\x1fab", "a\tb", "ab\x7f", "\x7f", "key\r\nX-Injected: 1"],
)
def test_check_text_refuses_control_characters(value: str) -> None:
    assert (
        message(ValueError, check_text, "f", value) == f"f: expected no control characters (CR, LF, ...), got {value!r}"
    )


@pytest.mark.parametrize("value", ["\x20a", "a\x7e", "a\x80b", "a\u2028b"])
def test_check_text_the_edges_of_control_characters(value: str) -> None:
    """0x20 (space, inside the text), 0x7E and 0x80 and above are not control characters here."""
    text = "x" + value + "x"
    assert check_text("f", text) == text


@pytest.mark.parametrize("value", [" a", "a ", "\u00a0a", "a\u3000"])
def test_check_text_refuses_surrounding_whitespace(value: str) -> None:
    assert (
        message(ValueError, check_text, "f", value) == f"f: expected no leading or trailing whitespace, got {value!r}"
    )


def test_check_text_in_a_header_must_be_ascii() -> None:
    assert check_text("app_id", "app-1", header=True) == "app-1"
    assert check_text("app_id", "caf\u00e9") == "caf\u00e9"  # fine outside a header
    assert (
        message(ValueError, check_text, "app_id", "caf\u00e9", header=True)
        == "app_id: expected printable ASCII (it is sent in an HTTP header), got 'caf\u00e9'"
    )


@pytest.mark.parametrize(
    ("value", "header", "expected"),
    [
        ("", False, "a non-empty string"),
        ("a\nb", False, "no control characters (CR, LF, ...)"),
        (" sk-1", False, "no leading or trailing whitespace"),
        ("sk-\u00e9", True, "printable ASCII (it is sent in an HTTP header)"),
    ],
)
def test_check_text_secret_is_never_shown(value: str, header: bool, expected: str) -> None:
    text = message(ValueError, check_text, "api_key", value, secret=True, header=header)
    assert text == f"api_key: expected {expected}, got <redacted>"


def test_check_text_secret_type_error_names_only_the_type() -> None:
    assert message(TypeError, check_text, "api_key", 12345, secret=True) == "api_key: expected a str, got int"


def test_check_text_secret_accepted_is_returned() -> None:
    assert check_text("api_key", "sk-1", secret=True, header=True) == "sk-1"


# --------------------------------------------------------------------------------------------------
# check_url
# --------------------------------------------------------------------------------------------------

HTTP = ("http", "https")


@pytest.mark.parametrize(
    "url",
    ["https://console.example", "http://h:8080/path?q=1", "HTTPS://h.example/", "https://[::1]:443/", "https://h:0"],
)
def test_check_url_accepts_absolute_urls(url: str) -> None:
    assert check_url("console_endpoint_url", url, HTTP) is url


@pytest.mark.parametrize(("value", "name"), [(None, "NoneType"), (b"https://h", "bytes"), (1, "int")])
def test_check_url_refuses_other_types(value: Any, name: str) -> None:
    assert message(TypeError, check_url, "u", value, HTTP) == f"u: expected a URL string, got {name}"


def test_check_url_refuses_the_empty_string_naming_the_schemes() -> None:
    assert message(ValueError, check_url, "u", "", HTTP) == "u: expected a URL (http/https), got an empty string"
    assert message(ValueError, check_url, "u", "", ("ws",)) == "u: expected a URL (ws), got an empty string"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://h:port", "Port could not be cast to integer value as 'port'"),
        ("https://h:99999", "Port out of range 0-65535"),
        ("https://[::1", "Invalid IPv6 URL"),
    ],
)
def test_check_url_refuses_malformed_urls(url: str, reason: str) -> None:
    assert message(ValueError, check_url, "u", url, HTTP) == f"u: malformed URL {url!r} ({reason})"


def test_check_url_malformed_hides_the_parser_traceback() -> None:
    with pytest.raises(ValueError) as info:
        check_url("u", "https://h:port", HTTP)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("ftp://h.example", "'ftp'"),
        ("h.example/path", "'none'"),
        ("//h.example", "'none'"),
        ("wss://h.example", "'wss'"),
    ],
)
def test_check_url_refuses_other_schemes(url: str, shown: str) -> None:
    assert (
        message(ValueError, check_url, "u", url, HTTP)
        == f"u: expected a URL with scheme http or https, got {shown} in {url!r}"
    )


def test_check_url_scheme_message_joins_every_scheme() -> None:
    schemes = ("http", "https", "ws", "wss")
    assert check_url("u", "WSS://h", schemes) == "WSS://h"
    assert (
        message(ValueError, check_url, "u", "ftp://h", schemes)
        == "u: expected a URL with scheme http or https or ws or wss, got 'ftp' in 'ftp://h'"
    )


@pytest.mark.parametrize("url", ["https://", "https:///path", "https://:443/", "http:?q=1"])
def test_check_url_refuses_urls_without_a_host(url: str) -> None:
    assert message(ValueError, check_url, "u", url, HTTP) == f"u: expected a URL with a host, got {url!r}"


# --------------------------------------------------------------------------------------------------
# check_expire_at
# --------------------------------------------------------------------------------------------------


def test_check_expire_at_refuses_none() -> None:
    assert (
        message(ValueError, check_expire_at, None, now=NOW)
        == "expire_at: expected a timezone-aware datetime at most 24 h ahead, got None"
    )


@pytest.mark.parametrize(("value", "name"), [("2030-05-17T13:00:00Z", "str"), (1_900_000_000, "int")])
def test_check_expire_at_refuses_other_types(value: Any, name: str) -> None:
    assert message(TypeError, check_expire_at, value, now=NOW) == f"expire_at: expected a datetime, got {name}"


def test_check_expire_at_refuses_a_date() -> None:
    day = datetime(2030, 5, 17).date()
    assert message(TypeError, check_expire_at, day, now=NOW) == "expire_at: expected a datetime, got date"


def test_check_expire_at_refuses_naive_datetimes() -> None:
    naive = datetime(2030, 5, 17, 13, 0, 0)
    assert message(ValueError, check_expire_at, naive, now=NOW) == (
        "expire_at: expected a timezone-aware datetime (e.g. datetime.now(timezone.utc) + timedelta(hours=1)), "
        "got naive 2030-05-17T13:00:00"
    )


class _NoOffset(tzinfo):
    """A tzinfo whose utcoffset() is None: the datetime is naive although tzinfo is set."""

    def utcoffset(self, dt: Any) -> None:
        return None


def test_check_expire_at_refuses_a_tzinfo_without_offset() -> None:
    value = datetime(2030, 5, 17, 13, 0, 0, tzinfo=_NoOffset())
    assert value.tzinfo is not None
    text = message(ValueError, check_expire_at, value, now=NOW)
    assert text.startswith("expire_at: expected a timezone-aware datetime (e.g. ")
    assert text.endswith("got naive 2030-05-17T13:00:00")


def test_check_expire_at_accepts_the_future_within_24_hours() -> None:
    for ahead in (timedelta(microseconds=1), timedelta(hours=1), MAX_TOKEN_LIFETIME):
        value = NOW + ahead
        assert check_expire_at(value, now=NOW) is value


def test_check_expire_at_refuses_exactly_now_and_the_past() -> None:
    assert message(ValueError, check_expire_at, NOW, now=NOW) == (
        "expire_at: expected a time in the future, got 2030-05-17T12:00:00+00:00 (now 2030-05-17T12:00:00+00:00)"
    )
    past = NOW - timedelta(seconds=1)
    assert message(ValueError, check_expire_at, past, now=NOW) == (
        "expire_at: expected a time in the future, got 2030-05-17T11:59:59+00:00 (now 2030-05-17T12:00:00+00:00)"
    )


def test_check_expire_at_refuses_just_over_24_hours() -> None:
    value = NOW + MAX_TOKEN_LIFETIME + timedelta(microseconds=1)
    assert message(ValueError, check_expire_at, value, now=NOW) == (
        "expire_at: expected at most 24 h ahead, got 2030-05-18T12:00:00.000001+00:00 (now 2030-05-17T12:00:00+00:00)"
    )


def test_check_expire_at_compares_instants_across_time_zones() -> None:
    tokyo = timezone(timedelta(hours=9))
    # 20:59 in Tokyo is 11:59 UTC: the past, although its wall clock is later than NOW's.
    past = datetime(2030, 5, 17, 20, 59, 0, tzinfo=tokyo)
    assert message(ValueError, check_expire_at, past, now=NOW) == (
        "expire_at: expected a time in the future, got 2030-05-17T20:59:00+09:00 (now 2030-05-17T12:00:00+00:00)"
    )
    # 21:00 the next day in Tokyo is exactly 24 h after NOW: accepted; a second more is not.
    edge = datetime(2030, 5, 18, 21, 0, 0, tzinfo=tokyo)
    assert check_expire_at(edge, now=NOW) is edge
    assert "at most 24 h ahead" in message(ValueError, check_expire_at, edge + timedelta(seconds=1), now=NOW)
    # A `now` given in another zone is the same instant.
    new_york = timezone(timedelta(hours=-4))
    assert check_expire_at(NOW + timedelta(hours=1), now=NOW.astimezone(new_york)) == NOW + timedelta(hours=1)


def test_check_expire_at_without_now_uses_the_current_utc_time() -> None:
    current = datetime.now(timezone.utc)
    ahead = current + timedelta(hours=1)
    assert check_expire_at(ahead) is ahead
    text = message(ValueError, check_expire_at, current - timedelta(hours=1))
    assert text.startswith("expire_at: expected a time in the future, got ")
    assert "+00:00 (now " in text
    assert "at most 24 h ahead" in message(ValueError, check_expire_at, current + timedelta(hours=25))


# --------------------------------------------------------------------------------------------------
# check_int, check_callback
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -3, 16000, 2**70])
def test_check_int_returns_ints(value: int) -> None:
    assert check_int("sample_rate", value) is value


@pytest.mark.parametrize(
    ("value", "name"), [(True, "bool"), (False, "bool"), (16000.0, "float"), ("16000", "str"), (None, "NoneType")]
)
def test_check_int_refuses_the_rest(value: Any, name: str) -> None:
    assert message(TypeError, check_int, "sample_rate", value) == f"sample_rate: expected an int, got {name}"


@pytest.mark.parametrize("value", [None, print, lambda: None, str, type("C", (), {"__call__": lambda self: 0})()])
def test_check_callback_accepts_callables_and_none(value: Any) -> None:
    assert check_callback("on_error", value) is None


@pytest.mark.parametrize(("value", "name"), [("print", "str"), (0, "int"), (False, "bool"), ([print], "list")])
def test_check_callback_refuses_the_rest(value: Any, name: str) -> None:
    assert message(TypeError, check_callback, "on_close", value) == f"on_close: expected a callable or None, got {name}"


# --------------------------------------------------------------------------------------------------
# check_timeout
# --------------------------------------------------------------------------------------------------


def test_check_timeout_none_is_no_limit() -> None:
    assert check_timeout("connect_timeout", None) is None


@pytest.mark.parametrize(("value", "expected"), [(1, 1.0), (0.001, 0.001), (5e-324, 5e-324), (86400, 86400.0)])
def test_check_timeout_returns_a_float(value: Any, expected: float) -> None:
    result = check_timeout("t", value)
    assert type(result) is float
    assert result == expected


def test_check_timeout_the_maximum_is_24_hours() -> None:
    assert check_timeout("t", 86400.0) == 86400.0
    over = math.nextafter(86400.0, math.inf)
    assert message(ValueError, check_timeout, "t", over) == (
        f"t: expected at most 86400 seconds (None for no limit), got {over!r}"
    )
    assert message(ValueError, check_timeout, "t", 86401) == (
        "t: expected at most 86400 seconds (None for no limit), got 86401"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0"), (0.0, "0.0"), (-0.0, "-0.0"), (-1, "-1"), (-5e-324, "-5e-324"), (math.nan, "nan"), (math.inf, "inf")],
)
def test_check_timeout_refuses_zero_negative_and_non_finite(value: float, shown: str) -> None:
    assert message(ValueError, check_timeout, "read_timeout", value) == (
        f"read_timeout: expected a positive, finite number of seconds or None, got {shown}"
    )


def test_check_timeout_refuses_minus_infinity() -> None:
    assert message(ValueError, check_timeout, "t", -math.inf).endswith("got -inf")


@pytest.mark.parametrize(("value", "name"), [(True, "bool"), (False, "bool"), ("5", "str"), ((1, 2), "tuple")])
def test_check_timeout_refuses_other_types(value: Any, name: str) -> None:
    assert message(TypeError, check_timeout, "t", value) == f"t: expected seconds as a number or None, got {name}"


# --------------------------------------------------------------------------------------------------
# check_http_timeout
# --------------------------------------------------------------------------------------------------


def test_check_http_timeout_none_is_no_limit() -> None:
    assert check_http_timeout(None) is None


def test_check_http_timeout_one_number_is_both() -> None:
    result = check_http_timeout(5)
    assert result == (5.0, 5.0)
    assert all(type(v) is float for v in result or ())


def test_check_http_timeout_a_pair_is_connect_then_read() -> None:
    assert check_http_timeout((3, 30)) == (3.0, 30.0)
    assert check_http_timeout((None, 30)) == (None, 30.0)
    assert check_http_timeout((3, None)) == (3.0, None)
    assert check_http_timeout((None, None)) == (None, None)


@pytest.mark.parametrize("value", [(), (1,), (1, 2, 3)])
def test_check_http_timeout_pair_of_the_wrong_length(value: tuple) -> None:  # type: ignore[type-arg]
    assert message(ValueError, check_http_timeout, value) == (
        f"http_timeout: expected seconds or a (connect, read) pair, got {value!r}"
    )


def test_check_http_timeout_names_the_element_at_fault() -> None:
    assert message(ValueError, check_http_timeout, (0, 5)) == (
        "http_timeout[0] (connect): expected a positive, finite number of seconds or None, got 0"
    )
    assert message(ValueError, check_http_timeout, (5, -1)) == (
        "http_timeout[1] (read): expected a positive, finite number of seconds or None, got -1"
    )
    assert message(TypeError, check_http_timeout, ("5", 5)) == (
        "http_timeout[0] (connect): expected seconds as a number or None, got str"
    )
    assert message(ValueError, check_http_timeout, (5, 86401)) == (
        "http_timeout[1] (read): expected at most 86400 seconds (None for no limit), got 86401"
    )


def test_check_http_timeout_a_single_value_is_named_plainly() -> None:
    assert message(ValueError, check_http_timeout, math.inf) == (
        "http_timeout: expected a positive, finite number of seconds or None, got inf"
    )
    # A list is not a pair: it is refused as a value that is not a number.
    assert message(TypeError, check_http_timeout, [1, 2]) == (
        "http_timeout: expected seconds as a number or None, got list"
    )


def test_fail_builds_the_message() -> None:
    err = _validation._fail("f", "something", [1])
    assert type(err) is ValueError
    assert str(err) == "f: expected something, got [1]"
    assert str(_validation._fail("f", "something", "secret", secret=True)) == "f: expected something, got <redacted>"

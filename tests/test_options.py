"""Session options without I/O: defaults, each option's checks and messages, unknown keywords, what they resolve to."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Optional, Type

import pytest

from avatarsdk import InsecureTransportWarning, LocalLimiter, ReconnectPolicy, SharedDispatcher
from avatarsdk._backoff import Backoff
from avatarsdk._network import NetworkOptions
from avatarsdk._options import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HTTP_RETRIES,
    DEFAULT_HTTP_RETRY_DEADLINE,
    DEFAULT_HTTP_TIMEOUT,
    DEFAULT_LIMITER_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_QUEUED_FRAMES,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    TOKEN_BACKOFF_CAP,
    TOKEN_BACKOFF_INITIAL,
    Options,
    SessionOptions,
)

# Each keyword of SessionOptions, once: the test below fails when a key is added here or there alone.
KEYS = {
    "http_timeout",
    "connect_timeout",
    "handshake_timeout",
    "send_timeout",
    "close_timeout",
    "max_queued_frames",
    "max_queued_bytes",
    "max_message_size",
    "ping_interval",
    "ping_timeout",
    "http_retries",
    "http_retry_deadline",
    "verify_tls",
    "ca_bundle",
    "client_cert",
    "proxy",
    "reconnect",
    "dispatcher",
    "bootstrap_url",
    "limiter",
    "limiter_timeout",
}

# The options that are plain timeouts, and the Options field each one lands in.
TIMEOUTS: Dict[str, Callable[[Options], Optional[float]]] = {
    "connect_timeout": lambda o: o.connect_timeout,
    "handshake_timeout": lambda o: o.handshake_timeout,
    "send_timeout": lambda o: o.send_timeout,
    "close_timeout": lambda o: o.close_timeout,
    "ping_interval": lambda o: o.keepalive[0],
    "ping_timeout": lambda o: o.keepalive[1],
    "http_retry_deadline": lambda o: o.token_retry.deadline,
    "limiter_timeout": lambda o: o.limiter_timeout,
}


def checked(**given: Any) -> Options:
    return Options.checked(given)


def raises(exc: Type[Exception], message: str, **given: Any) -> None:
    """``Options.checked(given)`` raises ``exc`` with exactly ``message``."""
    with pytest.raises(exc) as caught:
        Options.checked(given)
    assert type(caught.value) is exc
    assert str(caught.value) == message


@pytest.fixture
def pem(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


# ------------------------------------------------------------------------------------------------ defaults


def test_defaults_when_nothing_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AVATARSDK_BOOTSTRAP_URL", raising=False)
    options = Options.checked({})
    assert options == Options(
        http_timeout=(5.0, 15.0),
        connect_timeout=10.0,
        handshake_timeout=10.0,
        send_timeout=10.0,
        close_timeout=5.0,
        max_queued_frames=4096,
        max_queued_bytes=4 * 1024 * 1024,
        max_message_size=16 * 1024 * 1024,
        keepalive=(20.0, 20.0),
        token_retry=Backoff(initial=0.5, cap=8.0, multiplier=2.0, jitter=1.0, retries=2, deadline=30.0),
        network=NetworkOptions(verify_tls=True, ca_bundle=None, client_cert=None, proxy=None),
        reconnect=None,
        dispatcher=None,
        bootstrap_url="https://global.spatialwalk.top/bootstrap",
        limiter=None,
        limiter_timeout=30.0,
    )


def test_the_default_constants() -> None:
    assert DEFAULT_HTTP_TIMEOUT == (5.0, 15.0)
    assert (DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SEND_TIMEOUT) == (10.0, 10.0, 10.0)
    assert DEFAULT_CLOSE_TIMEOUT == 5.0
    assert (DEFAULT_MAX_QUEUED_FRAMES, DEFAULT_MAX_QUEUED_BYTES) == (4096, 4194304)
    assert DEFAULT_MAX_MESSAGE_SIZE == 16777216
    assert (DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT) == (20.0, 20.0)
    assert (DEFAULT_HTTP_RETRIES, DEFAULT_HTTP_RETRY_DEADLINE) == (2, 30.0)
    assert (TOKEN_BACKOFF_INITIAL, TOKEN_BACKOFF_CAP) == (0.5, 8.0)
    assert DEFAULT_LIMITER_TIMEOUT == 30.0


def test_the_defaults_are_the_constants() -> None:
    options = Options.checked({})
    assert options.http_timeout == DEFAULT_HTTP_TIMEOUT
    assert options.connect_timeout == DEFAULT_CONNECT_TIMEOUT
    assert options.handshake_timeout == DEFAULT_HANDSHAKE_TIMEOUT
    assert options.send_timeout == DEFAULT_SEND_TIMEOUT
    assert options.close_timeout == DEFAULT_CLOSE_TIMEOUT
    assert options.max_queued_frames == DEFAULT_MAX_QUEUED_FRAMES
    assert options.max_queued_bytes == DEFAULT_MAX_QUEUED_BYTES
    assert options.max_message_size == DEFAULT_MAX_MESSAGE_SIZE
    assert options.keepalive == (DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT)
    assert options.token_retry.retries == DEFAULT_HTTP_RETRIES
    assert options.token_retry.deadline == DEFAULT_HTTP_RETRY_DEADLINE
    assert options.limiter_timeout == DEFAULT_LIMITER_TIMEOUT


def test_no_warning_by_default() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Options.checked({})


def test_options_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Options.checked({}).send_timeout = 1.0  # type: ignore[misc]


def test_any_mapping_is_accepted() -> None:
    options = Options.checked(MappingProxyType({"send_timeout": 3}))
    assert options.send_timeout == 3.0


# ------------------------------------------------------------------------------------- keys and keywords


def test_session_options_keys() -> None:
    assert set(SessionOptions.__annotations__) == KEYS
    assert SessionOptions.__optional_keys__ == frozenset(KEYS)  # every option may be left out
    assert SessionOptions.__required_keys__ == frozenset()


class AskedFor(Dict[str, Any]):
    """An empty mapping that records the keys looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: List[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.append(key)
        return super().get(key, default)


def test_checked_reads_every_key_of_session_options_and_no_other() -> None:
    given = AskedFor()
    Options.checked(given)
    assert set(given.asked) == set(SessionOptions.__annotations__)


def test_every_key_is_accepted() -> None:
    # each alone, with a value other than its default: accepted (none is unknown) and it changes the result
    values: Dict[str, Any] = {
        "http_timeout": 7,
        "connect_timeout": 7,
        "handshake_timeout": 7,
        "send_timeout": 7,
        "close_timeout": 7,
        "max_queued_frames": 7,
        "max_queued_bytes": 7,
        "max_message_size": 7,
        "ping_interval": 7,
        "ping_timeout": 7,
        "http_retries": 7,
        "http_retry_deadline": 7,
        "verify_tls": False,
        "ca_bundle": __file__,
        "client_cert": __file__,
        "proxy": "http://proxy.example:3128",
        "reconnect": True,
        "dispatcher": SharedDispatcher(),
        "bootstrap_url": "http://127.0.0.1:9/bootstrap",
        "limiter": LocalLimiter(2),
        "limiter_timeout": 7,
    }
    assert set(values) == set(SessionOptions.__annotations__)
    default = Options.checked({})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureTransportWarning)
        for key, value in values.items():
            assert Options.checked({key: value}) != default, key


def test_an_unknown_keyword_with_a_close_name_gets_a_hint() -> None:
    raises(
        TypeError,
        "unexpected keyword argument 'conect_timeout' (did you mean 'connect_timeout'?)",
        conect_timeout=5,
    )
    raises(
        TypeError,
        "unexpected keyword argument 'max_queued_frame' (did you mean 'max_queued_frames'?)",
        max_queued_frame=5,
    )
    raises(TypeError, "unexpected keyword argument 'reconect' (did you mean 'reconnect'?)", reconect=True)


def test_an_unknown_keyword_with_a_far_name_gets_no_hint() -> None:
    raises(TypeError, "unexpected keyword argument 'banana'", banana=1)
    raises(TypeError, "unexpected keyword argument 'on_frame'", on_frame=print)


def test_the_first_unknown_keyword_in_order_is_named() -> None:
    raises(TypeError, "unexpected keyword argument 'alpha'", zulu=1, alpha=2, send_timeout=1)
    raises(TypeError, "unexpected keyword argument 'apple'", banana=1, apple=2)


def test_an_unknown_keyword_is_reported_before_bad_values() -> None:
    raises(TypeError, "unexpected keyword argument 'banana'", banana=1, send_timeout="x", dispatcher=5)


# --------------------------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize("name", sorted(TIMEOUTS))
def test_timeout_values(name: str) -> None:
    field = TIMEOUTS[name]
    assert field(checked(**{name: 3})) == 3.0
    assert isinstance(field(checked(**{name: 3})), float)
    assert field(checked(**{name: 0.25})) == 0.25
    assert field(checked(**{name: 86400})) == 86400.0
    assert field(checked(**{name: None})) is None


@pytest.mark.parametrize("name", sorted(TIMEOUTS))
def test_timeout_type_errors_name_the_field(name: str) -> None:
    raises(TypeError, f"{name}: expected seconds as a number or None, got str", **{name: "5"})
    raises(TypeError, f"{name}: expected seconds as a number or None, got bool", **{name: True})


@pytest.mark.parametrize("name", sorted(TIMEOUTS))
def test_timeout_value_errors_name_the_field(name: str) -> None:
    raises(ValueError, f"{name}: expected a positive, finite number of seconds or None, got 0", **{name: 0})
    raises(ValueError, f"{name}: expected a positive, finite number of seconds or None, got -1.5", **{name: -1.5})
    raises(ValueError, f"{name}: expected a positive, finite number of seconds or None, got inf", **{name: 1e400})
    raises(ValueError, f"{name}: expected at most 86400 seconds (None for no limit), got 86401", **{name: 86401})


def test_http_timeout() -> None:
    assert checked(http_timeout=3).http_timeout == (3.0, 3.0)
    assert checked(http_timeout=(1, 2.5)).http_timeout == (1.0, 2.5)
    assert checked(http_timeout=(None, 4)).http_timeout == (None, 4.0)
    assert checked(http_timeout=None).http_timeout is None
    raises(
        ValueError, "http_timeout: expected seconds or a (connect, read) pair, got (1, 2, 3)", http_timeout=(1, 2, 3)
    )
    raises(TypeError, "http_timeout[0] (connect): expected seconds as a number or None, got str", http_timeout=("1", 2))
    raises(
        ValueError,
        "http_timeout[1] (read): expected a positive, finite number of seconds or None, got 0",
        http_timeout=(1, 0),
    )
    raises(TypeError, "http_timeout: expected seconds as a number or None, got list", http_timeout=[1, 2])


def test_keepalive_pair() -> None:
    assert checked(ping_interval=5, ping_timeout=7).keepalive == (5.0, 7.0)
    assert checked(ping_interval=None).keepalive == (None, 20.0)
    assert checked(ping_timeout=None).keepalive == (20.0, None)
    assert checked(ping_interval=3).keepalive == (3.0, 20.0)
    assert checked(ping_timeout=3).keepalive == (20.0, 3.0)


# ------------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize("name", ["max_queued_frames", "max_queued_bytes"])
def test_queue_bounds(name: str) -> None:
    assert getattr(checked(**{name: 1}), name) == 1
    assert getattr(checked(**{name: 2}), name) == 2
    assert getattr(checked(**{name: 10**9}), name) == 10**9
    raises(ValueError, f"{name}: expected at least 1, got 0", **{name: 0})
    raises(ValueError, f"{name}: expected at least 1, got -3", **{name: -3})
    raises(TypeError, f"{name}: expected an int, got float", **{name: 4.0})
    raises(TypeError, f"{name}: expected an int, got bool", **{name: True})
    raises(TypeError, f"{name}: expected an int, got NoneType", **{name: None})
    raises(TypeError, f"{name}: expected an int, got str", **{name: "8"})


def test_max_message_size() -> None:
    assert checked(max_message_size=None).max_message_size is None
    assert checked(max_message_size=1).max_message_size == 1
    assert checked(max_message_size=2).max_message_size == 2
    assert checked(max_message_size=1 << 30).max_message_size == 1 << 30
    raises(ValueError, "max_message_size: expected at least 1 byte or None, got 0", max_message_size=0)
    raises(ValueError, "max_message_size: expected at least 1 byte or None, got -1", max_message_size=-1)
    raises(TypeError, "max_message_size: expected an int, got float", max_message_size=1024.0)
    raises(TypeError, "max_message_size: expected an int, got bool", max_message_size=True)


def test_int_subclasses_become_plain_ints() -> None:
    class Size(int):
        pass

    options = checked(max_queued_frames=Size(3), max_queued_bytes=Size(4), max_message_size=Size(5))
    assert (options.max_queued_frames, options.max_queued_bytes, options.max_message_size) == (3, 4, 5)
    assert type(options.max_queued_frames) is int
    assert type(options.max_queued_bytes) is int
    assert type(options.max_message_size) is int


# ------------------------------------------------------------------------------------------- token retry


def test_token_retry_from_http_retries_and_deadline() -> None:
    assert checked(http_retries=5, http_retry_deadline=12).token_retry == Backoff(
        initial=0.5, cap=8.0, multiplier=2.0, jitter=1.0, retries=5, deadline=12.0
    )


def test_token_retry_without_retries() -> None:
    backoff = checked(http_retries=0).token_retry
    assert backoff.retries == 0
    assert backoff.next_delay(1, 0.0) is None


def test_token_retry_one_retry() -> None:
    backoff = checked(http_retries=1).token_retry
    assert backoff.retries == 1
    assert backoff.next_delay(1, 0.0, rand=lambda: 0.0) == 0.5
    assert backoff.next_delay(2, 0.0, rand=lambda: 0.0) is None


def test_token_retry_without_a_deadline() -> None:
    backoff = checked(http_retry_deadline=None).token_retry
    assert backoff.deadline is None
    assert backoff.retries == 2


def test_token_retry_checks() -> None:
    raises(ValueError, "http_retries: expected 0 or more, got -1", http_retries=-1)
    raises(TypeError, "http_retries: expected an int, got float", http_retries=1.0)
    raises(TypeError, "http_retries: expected an int, got NoneType", http_retries=None)
    raises(TypeError, "http_retries: expected an int, got bool", http_retries=False)
    raises(
        ValueError,
        "http_retry_deadline: expected a positive, finite number of seconds or None, got 0",
        http_retry_deadline=0,
    )


# --------------------------------------------------------------------------------------------- network


def test_network_options(pem: str) -> None:
    options = checked(ca_bundle=pem, client_cert=(pem, pem), proxy="http://user:pw@proxy.example:3128")
    assert options.network == NetworkOptions(
        verify_tls=True, ca_bundle=pem, client_cert=(pem, pem), proxy="http://user:pw@proxy.example:3128"
    )
    assert checked(client_cert=pem).network.client_cert == pem


def test_verify_tls_false_warns() -> None:
    with pytest.warns(InsecureTransportWarning, match="verify_tls=False"):
        options = checked(verify_tls=False)
    assert options.network.verify_tls is False
    assert checked(verify_tls=True).network.verify_tls is True


def test_network_checks(tmp_path: Path, pem: str) -> None:
    missing = str(tmp_path / "missing.pem")
    raises(TypeError, "verify_tls: expected a bool, got int", verify_tls=1)
    raises(TypeError, "verify_tls: expected a bool, got NoneType", verify_tls=None)
    raises(ValueError, f"ca_bundle: expected a readable file, got {missing!r}", ca_bundle=missing)
    raises(TypeError, "ca_bundle: expected a file path, got int", ca_bundle=3)
    raises(ValueError, f"client_cert: expected a readable file, got {missing!r}", client_cert=missing)
    raises(ValueError, f"client_cert[1] (key): expected a readable file, got {missing!r}", client_cert=(pem, missing))
    raises(ValueError, "client_cert: expected a PEM path or a (certificate, key) pair of paths", client_cert=(pem,))
    raises(TypeError, "proxy: expected a URL string, got bytes", proxy=b"http://proxy:1")
    raises(ValueError, "proxy: expected http://[user:password@]host:port", proxy="socks5://proxy:1080")


# ------------------------------------------------------------------------------------ reconnect, dispatcher


def test_reconnect_normalised() -> None:
    assert checked().reconnect is None
    assert checked(reconnect=None).reconnect is None
    assert checked(reconnect=False).reconnect is None
    assert checked(reconnect=True).reconnect == ReconnectPolicy()
    policy = ReconnectPolicy(max_attempts=2)
    assert checked(reconnect=policy).reconnect is policy


@pytest.mark.parametrize(("value", "name"), [(1, "int"), (0, "int"), ("yes", "str"), ({}, "dict")])
def test_reconnect_of_another_type(value: Any, name: str) -> None:
    raises(TypeError, f"reconnect: expected a bool or a ReconnectPolicy, got {name}", reconnect=value)


def test_dispatcher() -> None:
    shared = SharedDispatcher(threads=1)
    assert checked(dispatcher=shared).dispatcher is shared
    assert checked(dispatcher=None).dispatcher is None


@pytest.mark.parametrize(("value", "name"), [(2, "int"), ("shared", "str"), (object(), "object")])
def test_dispatcher_of_another_type(value: Any, name: str) -> None:
    raises(TypeError, f"dispatcher: expected a SharedDispatcher or None, got {name}", dispatcher=value)


class _OwnLimiter:
    """A limiter of the user's own: anything with acquire(timeout) and release(slot)."""

    def acquire(self, timeout: Optional[float]) -> Optional[object]:
        return object()

    def release(self, slot: Any) -> None:
        pass


def test_limiter() -> None:
    limiter = LocalLimiter(1)
    assert checked(limiter=limiter).limiter is limiter
    own = _OwnLimiter()
    assert checked(limiter=own).limiter is own
    assert checked().limiter is None


@pytest.mark.parametrize("value, name", [(1, "int"), ("redis://", "str"), (object(), "object")])
def test_limiter_of_another_type(value: Any, name: str) -> None:
    raises(
        TypeError,
        "limiter: expected a Limiter (LocalLimiter, RedisLimiter, or an object with acquire(timeout) and"
        f" release(slot)) or None, got {name}",
        limiter=value,
    )


def test_a_bad_dispatcher_is_reported_before_other_bad_values() -> None:
    raises(TypeError, "dispatcher: expected a SharedDispatcher or None, got int", dispatcher=1, send_timeout="x")


# ------------------------------------------------------------------------------------------ all together


def test_every_option_given() -> None:
    shared = SharedDispatcher()
    policy = ReconnectPolicy(max_attempts=3)
    limiter = LocalLimiter(4)
    options = Options.checked(
        {
            "http_timeout": (2, 3),
            "connect_timeout": 4,
            "handshake_timeout": 5,
            "send_timeout": 6,
            "close_timeout": 7,
            "max_queued_frames": 8,
            "max_queued_bytes": 9,
            "max_message_size": 10,
            "ping_interval": 11,
            "ping_timeout": 12,
            "http_retries": 13,
            "http_retry_deadline": 14,
            "verify_tls": True,
            "ca_bundle": None,
            "client_cert": None,
            "proxy": "https://proxy.example",
            "reconnect": policy,
            "dispatcher": shared,
            "bootstrap_url": "https://bootstrap.example/bootstrap",
            "limiter": limiter,
            "limiter_timeout": 15,
        }
    )
    assert options == Options(
        http_timeout=(2.0, 3.0),
        connect_timeout=4.0,
        handshake_timeout=5.0,
        send_timeout=6.0,
        close_timeout=7.0,
        max_queued_frames=8,
        max_queued_bytes=9,
        max_message_size=10,
        keepalive=(11.0, 12.0),
        token_retry=Backoff(initial=0.5, cap=8.0, retries=13, deadline=14.0),
        network=NetworkOptions(proxy="https://proxy.example"),
        reconnect=policy,
        dispatcher=shared,
        bootstrap_url="https://bootstrap.example/bootstrap",
        limiter=limiter,
        limiter_timeout=15.0,
    )


def test_optional_none_values_are_none_not_defaults() -> None:
    options = checked(
        http_timeout=None,
        connect_timeout=None,
        handshake_timeout=None,
        send_timeout=None,
        close_timeout=None,
        max_message_size=None,
        ping_interval=None,
        ping_timeout=None,
        http_retry_deadline=None,
        limiter_timeout=None,
    )
    none: Optional[Any] = None
    assert (options.http_timeout, options.connect_timeout, options.handshake_timeout) == (none, none, none)
    assert (options.send_timeout, options.close_timeout, options.max_message_size) == (none, none, none)
    assert options.keepalive == (None, None)
    assert options.token_retry.deadline is None
    assert options.limiter_timeout is None


def test_messages_name_the_field_not_another() -> None:
    # a bad value in one field names that field, whichever fields come before or after it
    for name in sorted(TIMEOUTS):
        with pytest.raises(ValueError, match=rf"^{re.escape(name)}: "):
            Options.checked({name: -1})


# ------------------------------------------------------------------------------------------ bootstrap_url


def test_bootstrap_url_from_the_option_the_environment_or_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATARSDK_BOOTSTRAP_URL", "http://127.0.0.1:8/bootstrap")
    assert checked().bootstrap_url == "http://127.0.0.1:8/bootstrap"
    assert checked(bootstrap_url="https://b.example/x").bootstrap_url == "https://b.example/x"  # the option wins
    monkeypatch.setenv("AVATARSDK_BOOTSTRAP_URL", "")
    assert checked().bootstrap_url == "https://global.spatialwalk.top/bootstrap"


def test_bad_bootstrap_urls_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    ftp = "bootstrap_url: expected a URL with scheme http or https, got 'ftp' in 'ftp://b/x'"
    raises(ValueError, ftp, bootstrap_url="ftp://b/x")
    raises(TypeError, "bootstrap_url: expected a URL string, got int", bootstrap_url=5)
    monkeypatch.setenv("AVATARSDK_BOOTSTRAP_URL", "global.example/bootstrap")
    raises(
        ValueError,
        "bootstrap_url (from AVATARSDK_BOOTSTRAP_URL): expected a URL with scheme http or https, got 'none' in"
        " 'global.example/bootstrap'",
    )

"""``region="auto"`` (PROTOCOL.md section 6): the bootstrap call against the stand-in over real HTTP (its request,
its answers and failures, the debug log), the cache without I/O (a clock of its own), and sessions and pools
that resolve at ``init()``, never before."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from _region_world import RegionWorld
from conftest import pcm, unused_port, wait_until

import avatarsdk
from avatarsdk import AvatarSession, SessionPool, new_avatar_session
from avatarsdk._bootstrap import RegionCache, auto_region
from avatarsdk.regions import BOOTSTRAP_URL
from avatarsdk.testing import FakeAvatarService, TokenReply


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> RegionCache:
    return RegionCache(ttl=300.0, clock=clock)


@pytest.fixture
def service() -> Iterator[FakeAvatarService]:
    """A stand-in with an app id of its own: the sessions' bootstrap cache is process-wide."""
    with FakeAvatarService(app_id=f"app-{uuid.uuid4().hex[:12]}", bootstrap_region="ap-northeast") as svc:
        yield svc


def ask(service: FakeAvatarService, cache: RegionCache, **overrides: Any) -> str:
    kwargs: Dict[str, Any] = {"url": service.bootstrap_url, "cache": cache}
    kwargs.update(overrides)
    return auto_region(service.app_id, **kwargs)


# ----------------------------------------------------------------------------------- the call itself


def test_the_request_and_a_good_answer(service: FakeAvatarService, cache: RegionCache) -> None:
    assert ask(service, cache) == "ap-northeast"
    (request,) = service.bootstrap_requests
    assert request.path == "/bootstrap"
    assert request.json == {
        "app_id": service.app_id,
        "sdk_version": avatarsdk.__version__,
        "region": "auto",
        "platform": "python",
    }
    assert request.headers["content-type"] == "application/json"
    assert "x-api-key" not in request.headers  # the bootstrap host never sees the API key
    assert BOOTSTRAP_URL == "https://global.spatialwalk.top/bootstrap"


@pytest.mark.parametrize(
    "reply",
    [
        TokenReply(500, "upstream failed"),
        TokenReply(404, {"region": {"current": "ap-northeast"}}),  # a good body with an error status
        TokenReply(200, "<html>not json</html>"),
        TokenReply(200, b"\xff\xfe"),
        TokenReply(200, ["ap-northeast"]),
        TokenReply(200, {"region": "ap-northeast"}),
        TokenReply(200, {"region": {"current": 7}}),
        TokenReply(200, {"region": {"current": "uswest"}}),  # a region name has a hyphen
        TokenReply(200, {"region": {"current": "US-WEST"}}),
        TokenReply(200, {"region": {"current": "../evil-host"}}),
        TokenReply(200, {"region": {"current": "us-west.evil.example"}}),
        TokenReply(200, {"region": {"current": "us-west\n"}}),
        TokenReply(200, {"region": {"current": "x" * 70_000 + "-y"}}),  # larger than an answer may be
        TokenReply(200, None),
    ],
    ids=lambda reply: f"{reply.status}-{str(reply.body)[:24]}",
)
def test_a_failed_call_falls_back_to_us_west(service: FakeAvatarService, cache: RegionCache, reply: TokenReply) -> None:
    service.script_bootstrap(reply)
    assert ask(service, cache) == "us-west"
    assert len(service.bootstrap_requests) == 1


def test_a_slow_answer_times_out(service: FakeAvatarService, cache: RegionCache) -> None:
    service.script_bootstrap(TokenReply(200, {"region": {"current": "cn-beijing"}}, delay=2.0))
    assert ask(service, cache, timeout=0.2) == "us-west"


def test_an_unreachable_host_falls_back(cache: RegionCache) -> None:
    url = f"http://127.0.0.1:{unused_port()}/bootstrap"
    assert auto_region("app", url=url, cache=cache) == "us-west"


def test_the_debug_log_shows_the_call_and_its_outcome_without_secrets(
    service: FakeAvatarService, cache: RegionCache, caplog: pytest.LogCaptureFixture
) -> None:
    host = service.console_url.split("//")[1]
    with caplog.at_level(logging.DEBUG, logger="avatarsdk"):
        ask(service, cache)
        service.script_bootstrap(TokenReply(503, "down"))
        ask(service, RegionCache())
    lines = [r.getMessage() for r in caplog.records if r.name == "avatarsdk._bootstrap"]
    assert lines[0] == f"region auto: asking {host}"
    assert lines[1].startswith(f"region auto: {host} named 'ap-northeast' in ")
    assert lines[2] == "region auto: ap-northeast (bootstrap)"
    assert lines[4].startswith(f"region auto: {host} answered HTTP 503 in ")
    assert lines[5] == "region auto: us-west (the default, after a failed call)"
    assert not any(service.app_id in line for line in lines)


# ------------------------------------------------------------------------------- the cache, no I/O


def test_an_answer_is_kept_300_seconds(cache: RegionCache, clock: Clock) -> None:
    calls: List[str] = []

    def call() -> Optional[str]:
        calls.append("call")
        return f"region-{len(calls)}"

    assert cache.resolve("k", call) == ("region-1", "bootstrap")
    clock.now += 299.9
    assert cache.resolve("k", call) == ("region-1", "cached")
    clock.now += 0.1
    assert cache.resolve("k", call) == ("region-2", "bootstrap")
    assert cache.resolve("other", call) == ("region-3", "bootstrap")  # each key its own
    assert len(calls) == 3


def test_a_failure_falls_back_to_the_last_answer_even_an_old_one(cache: RegionCache, clock: Clock) -> None:
    assert cache.resolve("k", lambda: None) == ("us-west", "the default, after a failed call")
    assert cache.resolve("k", lambda: "ap-northeast") == ("ap-northeast", "bootstrap")
    clock.now += 3600
    assert cache.resolve("k", lambda: None) == ("ap-northeast", "the last answer, after a failed call")
    assert cache.resolve("k", lambda: "cn-beijing") == ("cn-beijing", "bootstrap")  # a failure is not cached


def call_once_for_five(cache: RegionCache, key: str, answer: Optional[str]) -> None:
    """Five callers of ``key`` at once, the first one's call held until the four others wait: one call is made,
    and all five get its outcome."""
    entered, release = threading.Event(), threading.Event()
    calls: List[int] = []

    def call() -> Optional[str]:
        calls.append(1)
        entered.set()
        assert release.wait(5)
        return answer

    results: List[Any] = []
    first = threading.Thread(target=lambda: results.append(cache.resolve(key, call)))
    first.start()
    assert entered.wait(5)
    others = [threading.Thread(target=lambda: results.append(cache.resolve(key, call))) for _ in range(4)]
    for thread in others:
        thread.start()
    wait_until(lambda: cache.waiting(key) == 4, "four callers waiting for the call")
    release.set()
    for thread in (first, *others):
        thread.join(5)
    assert len(calls) == 1
    assert len(results) == 5 and {region for region, _ in results} == {answer or "us-west"}


def test_one_call_at_a_time_per_key_shared_by_those_waiting(cache: RegionCache) -> None:
    call_once_for_five(cache, "good", "eu-central")
    call_once_for_five(cache, "failing", None)  # a failed call is shared too, not made five times


def test_a_cache_made_anew_in_a_forked_child_keeps_its_answers(cache: RegionCache) -> None:
    cache.resolve("k", lambda: "cn-beijing")
    cache.after_fork()  # what a child runs (os.register_at_fork); the locks are new, the answers kept
    assert cache.resolve("k", lambda: "other-region") == ("cn-beijing", "cached")


# ------------------------------------------------------------------------------ sessions and pools


def auto_session(service: FakeAvatarService, **overrides: Any) -> AvatarSession:
    kwargs = service.session_kwargs(region="auto", ingress_endpoint_url="", bootstrap_url=service.bootstrap_url)
    kwargs.update(overrides)
    return new_avatar_session(**kwargs)


def test_auto_is_resolved_at_init_never_before(service: FakeAvatarService) -> None:
    session = auto_session(service)
    assert service.bootstrap_requests == [] and session.config.ingress_endpoint_url == ""
    session.init()
    assert len(service.bootstrap_requests) == 1 and len(service.token_requests) == 1
    assert session.config.ingress_endpoint_url == "wss://api.ap-northeast.spatialwalk.cloud/v2/driveningress"
    assert session.config.console_endpoint_url == service.console_url  # the URL given wins
    session.init()  # a new token: the region stays
    assert len(service.bootstrap_requests) == 1
    again = auto_session(service)
    again.init()  # another session of the app: the process-wide cache answers
    assert len(service.bootstrap_requests) == 1
    assert again.config.ingress_endpoint_url == session.config.ingress_endpoint_url
    session.close()
    again.close()


def test_a_region_not_in_the_table_resolves_by_the_pattern(service: FakeAvatarService) -> None:
    service.bootstrap_region = "eu-central"
    session = auto_session(service)
    session.init()
    assert session.config.ingress_endpoint_url == "wss://api.eu-central.spatialwalk.cloud/v2/driveningress"
    session.close()


def test_a_failed_bootstrap_means_us_west(service: FakeAvatarService) -> None:
    service.script_bootstrap(TokenReply(502, ""))
    session = auto_session(service)
    session.init()  # the token call still runs: bootstrap failures never fail init()
    assert session.config.ingress_endpoint_url == "wss://api.us-west.spatialwalk.cloud/v2/driveningress"
    session.close()


def test_no_bootstrap_call_when_both_urls_are_given(service: FakeAvatarService) -> None:
    with auto_session(service, ingress_endpoint_url=service.ingress_url) as session:
        assert len(session.collect(pcm(0.12))) == 3
    assert service.bootstrap_requests == []


def test_the_bootstrap_url_from_the_environment(service: FakeAvatarService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATARSDK_BOOTSTRAP_URL", service.bootstrap_url)
    session = auto_session(service, bootstrap_url=None)
    session.init()
    assert len(service.bootstrap_requests) == 1
    session.close()


def test_a_whole_session_on_the_region_the_default_bootstrap_names(tmp_path: Path) -> None:
    with RegionWorld(tmp_path, bootstrap_region="cn-beijing") as world:
        with new_avatar_session(**world.credentials(), region="auto", **world.options()) as session:
            assert len(session.collect(pcm(0.12))) == 3
        assert world.hosts[0] == ("global.spatialwalk.top", 443)  # then the console and the ingress, together
        assert sorted(world.hosts[1:]) == [
            ("api.cn-beijing.spatialwalk.cloud", 443),
            ("console.cn-beijing.spatialwalk.cloud", 443),
        ]
        assert json.loads(world.service.bootstrap_requests[0].body)["app_id"] == world.service.app_id


def test_a_pool_resolves_once_for_all_its_sessions(tmp_path: Path) -> None:
    with RegionWorld(tmp_path, bootstrap_region="ap-northeast") as world:
        pool = SessionPool(**world.credentials(), region="auto", max_size=2, **world.options())
        with pool, pool.session(timeout=10) as first, pool.session(timeout=10) as second:
            assert first is not second
            assert len(first.collect(pcm(0.08))) == len(second.collect(pcm(0.08))) == 2
        assert len(world.service.bootstrap_requests) == 1
        assert [host for host, _ in world.hosts].count("api.ap-northeast.spatialwalk.cloud") == 2


def test_auto_needs_no_url(make_session: Callable[..., AvatarSession]) -> None:
    session = make_session(region="auto", console_endpoint_url="", ingress_endpoint_url="")
    assert (session.config.console_endpoint_url, session.config.ingress_endpoint_url) == ("", "")

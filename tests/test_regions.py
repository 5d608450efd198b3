"""Regions and token routes (PROTOCOL.md section 6): what a region means (no I/O), when it is resolved, that
explicit URLs win each on its own, and whole sessions against the stand-in behind the service's real host
names (``_region_world``: TLS and a CONNECT proxy on loopback)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from _region_world import RegionWorld
from conftest import pcm, valid_config

import avatarsdk
from avatarsdk import (
    REGIONS,
    TOKEN_ROUTES,
    AvatarSession,
    Endpoints,
    SessionConfigBuilder,
    SessionPool,
    endpoints_for,
    new_avatar_session,
)
from avatarsdk.testing import FakeAvatarService

KNOWN = "'us-west', 'ap-northeast', 'cn-beijing', 'spatialreal' or 'auto'"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[RegionWorld]:
    with RegionWorld(tmp_path) as world:
        yield world


# ------------------------------------------------------------------------------- what a region means


def test_each_region_of_the_protocol_by_the_documented_pattern() -> None:
    for region in ("us-west", "ap-northeast", "cn-beijing"):
        assert REGIONS[region] == Endpoints(
            console_endpoint_url=f"https://console.{region}.spatialwalk.cloud/v1/console",
            ingress_endpoint_url=f"wss://api.{region}.spatialwalk.cloud/v2/driveningress",
            token_route="console",
        )
        assert endpoints_for(region) is REGIONS[region]
    assert (
        Endpoints.of_region("eu-central").ingress_endpoint_url
        == "wss://api.eu-central.spatialwalk.cloud/v2/driveningress"
    )


def test_the_spatialreal_preset_uses_the_auth_route() -> None:
    assert REGIONS["spatialreal"] == Endpoints(
        "https://api.spatialreal.cloud", "https://driven.us-west.spatialreal.cloud/v2/driveningress", "auth"
    )
    assert dict(TOKEN_ROUTES) == {"console": "/session-tokens", "auth": "/v1/auth/session-token"}


def test_the_table_and_its_values_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        REGIONS["mars"] = REGIONS["us-west"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGIONS["us-west"].console_endpoint_url = "https://elsewhere.example"  # type: ignore[misc]
    assert {"Endpoints", "REGIONS", "TOKEN_ROUTES", "endpoints_for"} <= set(avatarsdk.__all__)


def test_an_unknown_region_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        endpoints_for("eu-central")
    assert str(info.value) == f"region: expected one of {KNOWN}, got 'eu-central'"
    with pytest.raises(ValueError, match="'auto' has no fixed endpoints"):
        endpoints_for("auto")
    with pytest.raises(TypeError, match="region: expected a str, got int"):
        endpoints_for(1)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- sessions: before any I/O


def test_a_region_gives_both_urls_when_the_session_is_created(service: FakeAvatarService) -> None:
    kwargs = service.session_kwargs()
    del kwargs["console_endpoint_url"], kwargs["ingress_endpoint_url"]
    session = new_avatar_session(**kwargs, region="ap-northeast")
    assert session.config.console_endpoint_url == "https://console.ap-northeast.spatialwalk.cloud/v1/console"
    assert session.config.ingress_endpoint_url == "wss://api.ap-northeast.spatialwalk.cloud/v2/driveningress"
    assert (session.config.region, session.config.token_route) == ("ap-northeast", "console")
    session.close()
    assert service.token_requests == [] and service.upgrade_attempts == 0


@pytest.mark.parametrize(
    ("changes", "exc", "message"),
    [
        ({"region": "eu"}, ValueError, f"region: expected one of {KNOWN}, got 'eu'"),
        ({"region": "US-WEST"}, ValueError, f"region: expected one of {KNOWN}, got 'US-WEST'"),
        ({"region": 3}, TypeError, "region: expected a str, got int"),
        ({"token_route": "v1"}, ValueError, "token_route: expected 'console' or 'auth' (or None), got 'v1'"),
        (
            {"console_endpoint_url": ""},
            ValueError,
            "console_endpoint_url: expected a URL (http/https) or a region, got an empty string",
        ),
        (
            {"ingress_endpoint_url": ""},
            ValueError,
            "ingress_endpoint_url: expected a URL (http/https/ws/wss) or a region, got an empty string",
        ),
        (
            {"region": "us-west", "console_endpoint_url": "ftp://c.example"},
            ValueError,
            "console_endpoint_url: expected a URL with scheme http or https, got 'ftp' in 'ftp://c.example'",
        ),
    ],
)
def test_bad_regions_routes_and_urls_are_refused_naming_the_field(changes: Any, exc: type, message: str) -> None:
    with pytest.raises(exc) as info:
        AvatarSession(valid_config(**changes))
    assert type(info.value) is exc and str(info.value) == message


def test_the_builder_takes_a_region_and_a_route() -> None:
    config = (
        SessionConfigBuilder()
        .with_avatar_id("a")
        .with_api_key("k")
        .with_app_id("app")
        .with_region("cn-beijing")
        .with_token_route("auth")
        .build()
    )
    assert (config.region, config.token_route, config.console_endpoint_url) == ("cn-beijing", "auth", "")
    session = AvatarSession(config)
    assert session.config.console_endpoint_url == "https://console.cn-beijing.spatialwalk.cloud/v1/console"
    assert session.config.token_route == "auth"  # a route given wins over the region's
    assert config.console_endpoint_url == ""  # the caller's configuration is left as it was
    session.close()


def test_a_url_given_wins_over_the_regions_each_on_its_own(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    session = make_session(region="us-west", ingress_endpoint_url="")
    assert session.config.console_endpoint_url == service.console_url
    assert session.config.ingress_endpoint_url == "wss://api.us-west.spatialwalk.cloud/v2/driveningress"
    session.init()  # over a real socket, to the console given
    assert [r.path for r in service.token_requests] == ["/session-tokens"]

    other = make_session(region="us-west", console_endpoint_url="")
    assert other.config.console_endpoint_url == "https://console.us-west.spatialwalk.cloud/v1/console"
    assert other.config.ingress_endpoint_url == service.ingress_url


def test_a_region_beside_both_urls_changes_nothing(
    service: FakeAvatarService, make_session: Callable[..., AvatarSession]
) -> None:
    session = make_session(region="spatialreal")
    session.init()
    session.start()
    assert len(session.collect(pcm(0.12))) == 3
    assert [r.path for r in service.token_requests] == ["/session-tokens"]  # the route stays with the URL given


# ------------------------------------------------------------------------------------ token routes


@pytest.mark.parametrize(
    ("suffix", "route", "path"),
    [
        ("", None, "/session-tokens"),
        ("", "console", "/session-tokens"),
        ("", "auth", "/v1/auth/session-token"),
        ("/v1/console", None, "/v1/console/session-tokens"),  # the alias of the auth route
    ],
)
def test_the_token_route_chooses_the_path(
    service: FakeAvatarService,
    make_session: Callable[..., AvatarSession],
    suffix: str,
    route: Any,
    path: str,
) -> None:
    session = make_session(console_endpoint_url=service.console_url + suffix, token_route=route)
    session.init()
    session.start()  # the token answered on that route opens the WebSocket
    assert [r.path for r in service.token_requests] == [path]
    assert list(service.token_requests[0].json) == ["appId", "expireAt"]


# ------------------------------------------------------------ whole sessions behind the real host names


def test_a_region_alone_reaches_that_regions_hosts(world: RegionWorld) -> None:
    with new_avatar_session(**world.credentials(), region="ap-northeast", **world.options()) as session:
        assert len(session.collect(pcm(0.2))) == 5
    assert sorted(world.hosts) == [
        ("api.ap-northeast.spatialwalk.cloud", 443),
        ("console.ap-northeast.spatialwalk.cloud", 443),
    ]
    assert [r.path for r in world.service.token_requests] == ["/v1/console/session-tokens"]


def test_the_spatialreal_preset_takes_its_token_from_the_auth_route(world: RegionWorld) -> None:
    with new_avatar_session(**world.credentials(), region="spatialreal", **world.options()) as session:
        assert len(session.collect(pcm(0.12))) == 3
    assert sorted(world.hosts) == [("api.spatialreal.cloud", 443), ("driven.us-west.spatialreal.cloud", 443)]
    request = world.service.token_requests[0]
    assert request.path == "/v1/auth/session-token"  # answered {"session_token": ...}, as that API does
    assert list(request.json) == ["appId", "expireAt"]


def test_a_pool_takes_a_region(world: RegionWorld) -> None:
    with SessionPool(**world.credentials(), region="us-west", max_size=2, **world.options()) as pool:
        assert len(pool.collect(pcm(0.12), timeout=10)) == 3
        with pytest.raises(ValueError, match="region: expected one of"):
            SessionPool(**world.credentials(), region="mars")
    assert sorted(world.hosts) == [("api.us-west.spatialwalk.cloud", 443), ("console.us-west.spatialwalk.cloud", 443)]

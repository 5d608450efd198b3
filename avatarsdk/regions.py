"""Where the service runs: its regions as :class:`Endpoints`, and the token call's routes.

Nothing here does I/O. ``region="auto"`` is resolved later, at a session's ``init()``, by the bootstrap call
(``_bootstrap``); a region it names that :data:`REGIONS` does not list resolves through the URL pattern
(:data:`CONSOLE_URL_PATTERN`, :data:`INGRESS_URL_PATTERN`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

__all__ = [
    "AUTO_REGION",
    "BOOTSTRAP_URL",
    "CONSOLE_URL_PATTERN",
    "DEFAULT_REGION",
    "INGRESS_URL_PATTERN",
    "REGIONS",
    "TOKEN_ROUTES",
    "Endpoints",
    "endpoints_for",
]

#: ``region="auto"``: ask the bootstrap service at ``init()`` (opt-in: it calls a third host).
AUTO_REGION = "auto"
#: The region ``"auto"`` falls back to when the bootstrap call fails and no earlier answer is cached.
DEFAULT_REGION = "us-west"
#: Where ``"auto"`` asks for an app's region, unless the ``bootstrap_url`` option or ``AVATARSDK_BOOTSTRAP_URL``
#: names another URL.
BOOTSTRAP_URL = "https://global.spatialwalk.top/bootstrap"
BOOTSTRAP_URL_ENV = "AVATARSDK_BOOTSTRAP_URL"
#: The service's console URL of a region (``{region}`` replaced by its name).
CONSOLE_URL_PATTERN = "https://console.{region}.spatialwalk.cloud/v1/console"
#: The service's v2 ingress URL of a region.
INGRESS_URL_PATTERN = "wss://api.{region}.spatialwalk.cloud/v2/driveningress"
#: What a region name looks like (the bootstrap's answers are checked against it).
REGION_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)+$")

#: The token call's routes: the path each appends to ``console_endpoint_url``. ``"console"`` is the console
#: API's (``POST {console}/session-tokens``); ``"auth"`` is the SpatialReal-branded API's
#: (``POST {api root}/v1/auth/session-token``, ``console_endpoint_url`` then being the API root).
TOKEN_ROUTES: Mapping[str, str] = MappingProxyType({"console": "/session-tokens", "auth": "/v1/auth/session-token"})


@dataclass(frozen=True)
class Endpoints:
    """Where a session's calls go. The fields are named as :class:`~avatarsdk.SessionConfig`'s.

    Attributes:
        console_endpoint_url: The console API (the token call), or the API root for the ``"auth"`` route.
        ingress_endpoint_url: The v2 ingress (the WebSocket).
        token_route: A key of :data:`TOKEN_ROUTES`: which path the token call appends to the console URL.
    """

    console_endpoint_url: str
    ingress_endpoint_url: str
    token_route: str = "console"

    @classmethod
    def of_region(cls, region: str) -> Endpoints:
        """The service's URLs of ``region`` by the documented pattern, whether :data:`REGIONS` lists it or not."""
        return cls(CONSOLE_URL_PATTERN.format(region=region), INGRESS_URL_PATTERN.format(region=region))


#: The named endpoints ``region=`` takes: the service's regions, and ``"spatialreal"``, the preset of the
#: SpatialReal-branded API (its token call takes the ``"auth"`` route).
REGIONS: Mapping[str, Endpoints] = MappingProxyType(
    {
        "us-west": Endpoints.of_region("us-west"),
        "ap-northeast": Endpoints.of_region("ap-northeast"),
        "cn-beijing": Endpoints.of_region("cn-beijing"),
        "spatialreal": Endpoints(
            "https://api.spatialreal.cloud", "https://driven.us-west.spatialreal.cloud/v2/driveningress", "auth"
        ),
    }
)


def default_bootstrap_url() -> str:
    """The bootstrap URL when no option names one: ``AVATARSDK_BOOTSTRAP_URL``, else :data:`BOOTSTRAP_URL`."""
    return os.environ.get(BOOTSTRAP_URL_ENV) or BOOTSTRAP_URL


def endpoints_for(region: str) -> Endpoints:
    """The endpoints of a region :data:`REGIONS` lists.

    Raises:
        TypeError: ``region`` is not a string.
        ValueError: an unknown region (the message lists the known ones); ``"auto"`` has no fixed endpoints.
    """
    if not isinstance(region, str):
        raise TypeError(f"region: expected a str, got {type(region).__name__}")
    endpoints = REGIONS.get(region)
    if region == AUTO_REGION:
        raise ValueError("region: 'auto' has no fixed endpoints: a session resolves it at init() (bootstrap call)")
    if endpoints is None:
        known = ", ".join(repr(name) for name in REGIONS)
        raise ValueError(f"region: expected one of {known} or {AUTO_REGION!r}, got {region!r}")
    return endpoints

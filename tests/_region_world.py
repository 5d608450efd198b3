"""The stand-in behind the service's real host names, for tests of regions without the network.

A TLS stand-in whose certificate (from a test CA) names the regions' hosts, the bootstrap host and the
SpatialReal preset's hosts, and a CONNECT proxy on 127.0.0.1 that tunnels each of those hosts to the stand-in:
console-like hosts to its console port, ingress hosts to its ingress port. A session given the proxy and the
CA (``options()``, or ``env()`` for a subprocess) reaches ``https://console.us-west.spatialwalk.cloud`` and
``wss://api.us-west.spatialwalk.cloud`` on loopback; the proxy records every host it was asked for.
"""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

import trustme
from _connect_proxy import ConnectProxy

from avatarsdk.testing import FakeAvatarService

REGION_NAMES = ("us-west", "ap-northeast", "cn-beijing", "eu-central")
CONSOLE_HOSTS = (
    *(f"console.{region}.spatialwalk.cloud" for region in REGION_NAMES),
    "global.spatialwalk.top",
    "api.spatialreal.cloud",
)
INGRESS_HOSTS = (*(f"api.{region}.spatialwalk.cloud" for region in REGION_NAMES), "driven.us-west.spatialreal.cloud")


class RegionWorld:
    """A started TLS stand-in (``service``, its ``app_id`` unique: the bootstrap cache is process-wide) and the
    proxy in front of it (``proxy``). Use as a context manager."""

    def __init__(self, tmp_path: Path, **service_options: Any) -> None:
        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*CONSOLE_HOSTS, *INGRESS_HOSTS, "127.0.0.1").configure_cert(context)  # and its own URLs
        self.ca_bundle = str(tmp_path / "region-ca.pem")
        ca.cert_pem.write_to_path(self.ca_bundle)
        service_options.setdefault("app_id", f"app-{uuid.uuid4().hex[:12]}")
        self.service = FakeAvatarService(ssl_context=context, **service_options)
        self.proxy = ConnectProxy(route=self._port_for)

    def _port_for(self, host: str, port: int) -> int:
        assert port == 443, f"{host}:{port}"
        if host in CONSOLE_HOSTS:
            return int(self.service.console_url.rsplit(":", 1)[1])
        assert host in INGRESS_HOSTS, host
        return int(self.service.ingress_url.split(":")[2].split("/")[0])

    def __enter__(self) -> RegionWorld:
        self.service.start()
        self.proxy.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proxy.__exit__(*exc)
        self.service.close()

    @property
    def hosts(self) -> List[Tuple[str, int]]:
        """The hosts the proxy tunnelled to, in order."""
        return list(self.proxy.targets)

    def credentials(self) -> Dict[str, str]:
        """The stand-in's ``avatar_id``, ``api_key`` and ``app_id`` (no URLs: a region gives them)."""
        service = self.service
        return {"avatar_id": service.avatar_id, "api_key": service.api_key, "app_id": service.app_id}

    def options(self) -> Dict[str, Any]:
        """Session options that reach the stand-in through the proxy and trust its certificate."""
        return {"proxy": self.proxy.url, "ca_bundle": self.ca_bundle}

    def env(self) -> Dict[str, str]:
        """The same for a subprocess, as the environment requests and websocket-client read."""
        return {
            "HTTPS_PROXY": self.proxy.url,
            "REQUESTS_CA_BUNDLE": self.ca_bundle,
            "WEBSOCKET_CLIENT_CA_BUNDLE": self.ca_bundle,
            "NO_PROXY": "127.0.0.1,localhost",
        }

"""The relay app: its SessionPool is made once per process, when Django is ready."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import TYPE_CHECKING, Optional

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV
from guard import Guard  # samples/relay_common (on sys.path: relay_site/settings.py)
from relaying import make_pool, service_name, speech_like_clip

if TYPE_CHECKING:
    from avatarsdk import SessionPool
    from avatarsdk.testing import FakeAvatarService

logger = logging.getLogger(__name__)


class RelayConfig(AppConfig):
    name = "relay"
    pool: Optional[SessionPool] = None
    service: Optional[FakeAvatarService] = None  # the built-in stand-in, when AVATARSDK_LOCAL=1
    clip = b""  # the bundled utterance (PCM)
    guard = Guard(local=False)  # who may speak, and how many streams each client may have (ready() sets it)

    def ready(self) -> None:
        if autoreloader_parent():
            return  # that process only restarts the one that serves
        local = os.environ.get("AVATARSDK_LOCAL") == "1"
        try:
            self.pool, self.service = make_pool(
                local, max_size=settings.RELAY_MAX_SIZE, min_idle=settings.RELAY_MIN_IDLE
            )
        except KeyError as exc:
            raise ImproperlyConfigured(f"set {exc.args[0]} (or AVATARSDK_LOCAL=1 for the built-in stand-in)") from exc
        except ValueError as exc:  # an unknown AVATARSDK_REGION
            raise ImproperlyConfigured(str(exc)) from exc
        try:
            self.guard = Guard.from_environment(local)  # RELAY_TOKEN, RELAY_MAX_STREAMS_PER_CLIENT
        except ValueError as exc:
            self.close()
            raise ImproperlyConfigured(str(exc)) from exc
        if not local and not self.guard.checks_access:
            logger.warning("no RELAY_TOKEN: serving the real avatar service to loopback clients only")
        self.clip = speech_like_clip()
        atexit.register(self.close)
        logger.info(
            "relay: pool of up to %d sessions against %s",
            self.pool.max_size,
            service_name(self.service),
        )

    def close(self) -> None:
        """Close the pool (waiting up to 5 s for streams in flight), then the stand-in."""
        if self.pool is not None:
            self.pool.close(timeout=5)
        if self.service is not None:
            self.service.close()


def autoreloader_parent() -> bool:
    """Whether this is the process of ``runserver`` (without ``--noreload``) that watches the files and runs
    the serving process as its child (Django runs ``ready()`` in both)."""
    return (
        sys.argv[1:2] == ["runserver"]
        and "--noreload" not in sys.argv
        and os.environ.get(DJANGO_AUTORELOAD_ENV) != "true"
    )

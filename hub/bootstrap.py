"""First start: create the bootstrap organization and its admin from ``TELEHUB_BOOTSTRAP_*``."""

from __future__ import annotations

import asyncio
import logging

from hub.auth.principal import Role
from hub.registry.users import check_password
from hub.services import Services

__all__ = ["bootstrap_organization"]

log = logging.getLogger("telehub.bootstrap")
BOOTSTRAP_LOCK = "th:bootstrap-lock"
# The lock's life, and the longest another worker waits for it (a worker that died holding it).
LOCK_S = 60
POLL_S = 0.05


async def bootstrap_organization(services: Services) -> str | None:
    """Create the organization and admin when the store has no organization; the id, or None if skipped.

    Several workers may start at once; a short Redis lock lets exactly one of them do it, and the others wait
    until it is done: a worker must not serve (and answer a login for the admin) before the admin exists.
    """
    config = services.config
    if not config.bootstrap_email:
        return None
    await _wait_while_locked(services)
    if await services.orgs.count() > 0:
        # The organization may be one another worker made after the wait above and is still giving its admin:
        # it holds the lock from before making it until after the admin exists.
        await _wait_while_locked(services)
        return None
    check_password(config.bootstrap_password)
    if not await services.redis.set(BOOTSTRAP_LOCK, "1", nx=True, ex=LOCK_S):
        await _wait_while_locked(services)
        return None
    try:
        if await services.orgs.count() > 0:
            return None
        org = await services.orgs.create(name=config.bootstrap_org)
        await services.users.create(
            org_id=org["id"],
            email=config.bootstrap_email,
            password=config.bootstrap_password,
            role=Role.ADMIN,
        )
        log.info("created organization %s (%s) with admin %s", org["name"], org["id"], config.bootstrap_email)
        return str(org["id"])
    finally:
        await services.redis.delete(BOOTSTRAP_LOCK)


async def _wait_while_locked(services: Services) -> None:
    """Until no worker holds the bootstrap lock (at most its lifetime). Polled: the holder is another process."""
    for _ in range(int(LOCK_S / POLL_S)):
        if not await services.redis.exists(BOOTSTRAP_LOCK):
            return
        await asyncio.sleep(POLL_S)

"""First start with several workers: one creates the organization and admin, and none is done before it is."""

from __future__ import annotations

import asyncio
import dataclasses

from hub.auth.principal import Role
from hub.bootstrap import bootstrap_organization
from hub.config import HubConfig
from hub.redis_client import open_redis
from hub.services import Services

EMAIL = "first-admin@example.com"
PASSWORD = "correct-horse-battery-staple"


async def test_workers_starting_together_make_one_admin_and_all_wait_for_it(config: HubConfig) -> None:
    config = dataclasses.replace(config, bootstrap_email=EMAIL, bootstrap_password=PASSWORD, bootstrap_org="acme")
    clients = [open_redis(config.redis_url or "") for _ in range(4)]
    workers = [Services.build(config, redis) for redis in clients]
    try:

        async def start(services: Services) -> tuple[str | None, bool]:
            made = await bootstrap_organization(services)
            # What a login at this moment would find, on this worker: the admin, with its password.
            return made, await services.users.authenticate(EMAIL, PASSWORD) is not None

        results = await asyncio.gather(*(start(services) for services in workers))
        made = [org_id for org_id, _ in results if org_id is not None]
        assert len(made) == 1
        assert all(admin_found for _, admin_found in results), results
        assert await workers[0].orgs.count() == 1
        user = await workers[0].users.authenticate(EMAIL, PASSWORD)
        assert user is not None and user["role"] == Role.ADMIN and user["org_id"] == made[0]
        # Started again, nothing more is made.
        assert await bootstrap_organization(workers[1]) is None
        assert await workers[0].orgs.count() == 1
    finally:
        for redis in clients:
            await redis.aclose()

"""First start with several workers: one creates the organization and admin, and none is done before it is."""

from __future__ import annotations

import asyncio
import dataclasses

from hub.auth.principal import Role
from hub.bootstrap import BOOTSTRAP_LOCK, LOCK_S, bootstrap_organization
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


async def test_a_worker_that_finds_the_organization_mid_bootstrap_waits_for_its_admin(config: HubConfig) -> None:
    """The interleaving that a crowd of workers only meets sometimes, made certain: another worker takes the
    lock and makes the organization between this one's wait for the lock and its look at the organizations."""
    config = dataclasses.replace(config, bootstrap_email=EMAIL, bootstrap_password=PASSWORD, bootstrap_org="acme")
    other, late = open_redis(config.redis_url), open_redis(config.redis_url)
    first, second = Services.build(config, other), Services.build(config, late)
    count = second.orgs.count

    async def count_after_the_other_worker_began() -> int:
        await other.set(BOOTSTRAP_LOCK, "1", ex=LOCK_S)
        org = await first.orgs.create(name="acme")

        async def finish() -> None:
            await asyncio.sleep(0.3)
            await first.users.create(org_id=org["id"], email=EMAIL, password=PASSWORD, role=Role.ADMIN)
            await other.delete(BOOTSTRAP_LOCK)

        tasks.append(asyncio.get_running_loop().create_task(finish()))
        return await count()

    tasks: list[asyncio.Task[None]] = []
    second.orgs.count = count_after_the_other_worker_began  # type: ignore[method-assign]
    try:
        assert await bootstrap_organization(second) is None
        assert await second.users.authenticate(EMAIL, PASSWORD) is not None, "done before the admin existed"
        await asyncio.gather(*tasks)
    finally:
        await other.aclose()
        await late.aclose()

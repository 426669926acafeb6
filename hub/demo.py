"""``telehub serve --demo``: a demo organization with an admin whose login is printed at start.

The organization is made once and remembered; each start gives its admin a fresh password, since only a
hash of the old one is kept.
"""

from __future__ import annotations

import secrets

from hub.auth.principal import Role
from hub.services import Services

__all__ = ["DEMO_KEY", "demo_login"]

DEMO_KEY = "th:demo"
DEMO_EMAIL = "demo@telehub.local"


async def demo_login(services: Services) -> dict[str, str]:
    """The demo organization (made if missing) and a new password for its admin."""
    password = secrets.token_urlsafe(12)
    remembered = await services.redis.hgetall(DEMO_KEY)
    if remembered and await services.users.role_of(remembered["org_id"], remembered["user_id"]):
        await services.users.set_password(remembered["org_id"], remembered["user_id"], password)
        return {"org_id": remembered["org_id"], "email": DEMO_EMAIL, "password": password}
    org = await services.orgs.create(name="demo")
    user = await services.users.create(org_id=org["id"], email=DEMO_EMAIL, password=password, role=Role.ADMIN)
    await services.redis.hset(DEMO_KEY, mapping={"org_id": org["id"], "user_id": user["id"]})
    return {"org_id": org["id"], "email": DEMO_EMAIL, "password": password}

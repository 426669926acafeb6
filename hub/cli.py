"""The ``telehub`` command: ``serve`` and ``admin`` (API.md §7)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hub import __version__
from hub.auth.principal import PERSON_ROLES, Role
from hub.config import ConfigError, HubConfig
from hub.demo import demo_login
from hub.embedded_redis import EmbeddedRedis, EmbeddedRedisError, die_with_parent
from hub.errors import NotFound, TelehubError
from hub.services import Services, open_redis

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["main", "worker_app"]

log = logging.getLogger("telehub")
ROLE_CHOICES = [r.value for r in PERSON_ROLES]
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except (ConfigError, EmbeddedRedisError) as exc:
        print(f"telehub: {exc}", file=sys.stderr)
        return 2
    except TelehubError as exc:
        print(f"telehub: {exc.message} ({exc.code})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telehub", description="A real-time IoT telemetry hub.")
    parser.add_argument("--version", action="version", version=f"telehub {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the hub (REST, WebSockets, ingest, fan-out)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--workers", type=int, help="server processes sharing the port (default 1)")
    _store_options(serve)
    serve.add_argument("--demo", action="store_true", default=None, help="also create a demo organization")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=run_serve)

    admin = commands.add_parser("admin", help="manage organizations, users and API keys; prints JSON")
    actions = admin.add_subparsers(dest="action", required=True, metavar="ACTION")
    create_org = actions.add_parser("create-org", help="create an organization")
    create_org.add_argument("--name", required=True)
    create_user = actions.add_parser("create-user", help="create a user in an organization")
    create_user.add_argument("--org", required=True, help="organization id (org_…)")
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--password", required=True)
    create_user.add_argument("--role", required=True, choices=ROLE_CHOICES)
    create_key = actions.add_parser("create-api-key", help="create an API key (printed once)")
    create_key.add_argument("--org", required=True, help="organization id (org_…)")
    create_key.add_argument("--role", required=True, choices=ROLE_CHOICES)
    create_key.add_argument("--name", required=True)
    for action in (create_org, create_user, create_key):
        _store_options(action)
        action.set_defaults(handler=run_admin)
    return parser


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="use this Redis instead of the embedded one")
    parser.add_argument("--data-dir", type=Path, help="where the embedded Redis keeps its data (./telehub-data)")


def _config(args: argparse.Namespace) -> HubConfig:
    flags = {
        name: getattr(args, name, None)
        for name in ("host", "port", "workers", "redis_url", "data_dir", "demo", "log_level")
    }
    return HubConfig.from_env(**flags)


@contextlib.contextmanager
def redis_for(config: HubConfig, *, serving: bool) -> Iterator[HubConfig]:
    """The config with a Redis URL: the given one, or the embedded server's (started or attached to)."""
    if config.redis_url:
        yield config
        return
    with EmbeddedRedis(config.data_dir, fsync=config.redis_fsync) as embedded:
        if serving and not embedded.owner:
            raise EmbeddedRedisError(
                f"another telehub is already serving from {embedded.data_dir}; stop it, or pass a different --data-dir"
            )
        yield config.replace(redis_url=embedded.url)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.supervisors import multiprocess as uvicorn_multiprocess

    from hub.lifecycle import HubServer
    from hub.websocket_dispatch import WebSocketDispatch

    config = _config(args)
    # SIGTERM stops the hub like Ctrl-C does: uvicorn shuts down gracefully and then raises the signal again,
    # which by default would kill the process before the embedded Redis is stopped and its files removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    where = "external Redis" if config.redis_url else "embedded Redis"
    with redis_for(config, serving=True) as config:
        log.info(
            "telehub %s on http://%s:%d with %s (data dir %s), %d worker(s)",
            __version__,
            config.host,
            config.port,
            where,
            Path(config.data_dir).resolve(),
            config.workers,
        )
        if config.demo:
            _print_demo_login(asyncio.run(_with_services(config, demo_login)), config)
        options: dict[str, Any] = {
            "host": config.host,
            "port": config.port,
            "log_level": config.log_level,
            "loop": "uvloop" if sys.platform != "win32" else "asyncio",
            "timeout_graceful_shutdown": 10,
            "server_header": False,
            # Device sockets on the lean path, the rest on uvicorn's sans-I/O websockets (hub.websocket_dispatch).
            "ws": WebSocketDispatch,
            "ws_max_size": config.max_frame_bytes,
        }
        if config.workers == 1:
            from hub.app import create_app

            server = HubServer(uvicorn.Config(create_app(config), **options))
            with contextlib.suppress(KeyboardInterrupt):
                server.run()
            if not server.started:
                return 3
        else:
            os.environ.update(config.to_env())
            # Each worker runs uvicorn's Server class from this module: make it the draining one.
            uvicorn_multiprocess.Server = HubServer  # type: ignore[attr-defined]
            uvicorn.run("hub.cli:worker_app", factory=True, workers=config.workers, **options)
    return 0


def worker_app() -> Starlette:
    """The app of one ``--workers`` process, which ends with the supervisor (even a SIGKILLed one)."""
    supervisor = multiprocessing.parent_process()
    if supervisor is not None and supervisor.pid is not None:
        die_with_parent(supervisor.pid)
    from hub.app import app_from_env

    return app_from_env()


def run_admin(args: argparse.Namespace) -> int:
    config = _config(args)
    with redis_for(config, serving=False) as config:
        result = asyncio.run(_with_services(config, lambda services: admin_action(services, args)))
    print(json.dumps(result, indent=2))
    return 0


async def admin_action(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    if args.action == "create-org":
        return await services.orgs.create(name=args.name)
    if not await services.orgs.exists(args.org):
        raise NotFound(f"no organization {args.org}; create one with `telehub admin create-org --name NAME`")
    if args.action == "create-user":
        return await services.users.create(
            org_id=args.org, email=args.email, password=args.password, role=Role(args.role)
        )
    return await services.api_keys.create(org_id=args.org, name=args.name, role=Role(args.role))


async def _with_services(config: HubConfig, action: Callable[[Services], Awaitable[T]]) -> T:
    redis = open_redis(config.redis_url)
    try:
        return await action(Services.build(config, redis))
    finally:
        await redis.aclose()


def _print_demo_login(login: dict[str, str], config: HubConfig) -> None:
    print(
        f"\n  demo organization {login['org_id']}\n"
        f"  log in at http://{config.host}:{config.port}/api/v1/auth/login with\n"
        f"    email    {login['email']}\n    password {login['password']}\n",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())

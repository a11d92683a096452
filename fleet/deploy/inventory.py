"""The inventory: which boards exist, how to reach them, what runs on them (fleet/inventory.toml).

Validated with pydantic like the scenarios: an unknown key, a wrong type or an impossible value is
one line naming the file, the key and what was expected, and nothing starts. Secrets stay out:
a board names the *path* of its SSH private key; a ``password`` key is refused outright.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ecufl import tomlfile

ARCHES = ("armv7-a9", "x86_64")
# `uname -m` on a board of each architecture (a Cortex-A9 Linux reports armv7l).
UNAME = {"armv7-a9": "armv7l", "x86_64": "x86_64"}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
# What a board path or command may hold: these values are written into unit files and shell
# scripts on the board (config.py, supervise.sh), so no quote, space, '$', '`', ';' or newline.
SAFE_RE = re.compile(r"^[A-Za-z0-9._/+@%-]+$")


class InventoryError(ValueError):
    """One line: file, key, what was expected."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Profile(Strict):
    """Resource limits of a device profile, written into the board's unit file."""

    # 1 GB by default: supernode mode's three Python processes (SuperNode, SuperExec, ClientApp)
    # held about 480 MB RSS together in a quickstart round; agent mode needs far less (imx6: 64).
    memory_max_mb: int = Field(1024, ge=16, le=65536)
    cpu_quota_percent: int = Field(80, ge=1, le=100 * 64)
    nice: int = Field(10, ge=-20, le=19)


class Board(Strict):
    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(pattern=r"^[a-z_][a-z0-9_-]*$")
    key: Path  # SSH private key (unencrypted or loaded in ssh-agent); never a password
    arch: Literal["armv7-a9", "x86_64"]
    profile: str = "default"
    mode: Literal["supernode", "agent"]
    # directory on the board with the MNIST training set (IDX files, .gz or not); the node trains
    # its partition of it. `push` copies no data: it must be there before `start`.
    data: PurePosixPath
    install_root: PurePosixPath = PurePosixPath("/opt/ecufl")
    # How services run: systemd on real boards; the project's supervisor where there is none.
    init: Literal["systemd", "supervise"] = "systemd"
    python: str = "python3"  # supernode mode only: the board's interpreter
    python_path: list[PurePosixPath] = []  # extra site dirs on the board (numpy, grpcio, flwr)
    agent_port: int = Field(9443, ge=1, le=65535)
    supernode_port: int = Field(9094, ge=1, le=65535)  # the SuperNode's local ClientAppIo port

    @model_validator(mode="before")
    @classmethod
    def no_password(cls, data):
        if isinstance(data, dict):
            for k in data:
                if "pass" in str(k).lower():
                    raise ValueError(f"{k!r}: passwords are not accepted in files; give `key` (an SSH private key path)")
        return data

    @field_validator("host")
    @classmethod
    def host_ok(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
            return v
        except ValueError:
            if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", v):
                return v
        raise ValueError(f"expected an IP address or host name, got {v!r}")

    @field_validator("python")
    @classmethod
    def python_ok(cls, v: str) -> str:
        if not SAFE_RE.match(v):
            raise ValueError(f"expected a command name or path of A-Z a-z 0-9 . _ / + @ % -, got {v!r}")
        return v

    @field_validator("data", "install_root", "python_path")
    @classmethod
    def absolute(cls, v):
        if isinstance(v, list):
            return [cls.absolute(p) for p in v]
        if not SAFE_RE.match(str(v)):
            raise ValueError(f"expected a path of A-Z a-z 0-9 . _ / + @ % - (it reaches the board's shell), got {str(v)!r}")
        if not v.is_absolute() or ".." in v.parts:
            raise ValueError(f"expected an absolute path on the board without '..', got {str(v)!r}")
        if v == PurePosixPath("/"):
            raise ValueError("must not be /")
        return v


class Fleet(Strict):
    superlink: str = Field(pattern=r"^[A-Za-z0-9.:\[\]-]+:\d{1,5}$")  # Fleet API address the boards dial
    state_dir: Path = Path(".ecufl/deploy")  # CA, certificates, known_hosts, bundles (relative to the file)


class Inventory(Strict):
    fleet: Fleet
    profiles: dict[str, Profile] = {"default": Profile()}
    boards: dict[str, Board]

    @model_validator(mode="after")
    def cross_checks(self):
        if not self.boards:
            raise ValueError("boards: at least one board is needed")
        for name, b in self.boards.items():
            if not NAME_RE.match(name):
                raise ValueError(f"boards.{name}: a board name is 1-32 of a-z, 0-9, '-'")
            if b.profile not in self.profiles:
                raise ValueError(f"boards.{name}.profile: unknown profile {b.profile!r} (have {', '.join(self.profiles)})")
        seen: dict[tuple[str, int], str] = {}
        for name, b in self.boards.items():
            if (b.host, b.port) in seen:
                raise ValueError(f"boards.{name}: same host:port as boards.{seen[(b.host, b.port)]}")
            seen[(b.host, b.port)] = name
        return self

    def board(self, name: str) -> Board:
        if name not in self.boards:
            raise InventoryError(f"no board {name!r} in the inventory (have {', '.join(self.boards)})")
        return self.boards[name]


def load(path: str | Path, *, check_keys: bool = True) -> Inventory:
    """Read and validate an inventory file; relative paths in it are relative to the file.

    ``check_keys``: the SSH key files must exist (off only to validate an example elsewhere)."""
    path = Path(path)
    raw = tomlfile.read(path, "inventory", InventoryError)
    inv = tomlfile.validate(Inventory, raw, path, "inventory", InventoryError)
    base = path.resolve().parent
    fleet = inv.fleet.model_copy(update={"state_dir": (base / inv.fleet.state_dir).resolve()})
    boards = {}
    for name, b in inv.boards.items():
        try:
            key = (base / b.key.expanduser()).resolve()
        except (RuntimeError, OSError) as e:  # ~nosuchuser: "Could not determine home directory"
            raise InventoryError(f"{path}: boards.{name}.key: cannot resolve {str(b.key)!r} ({e})") from None
        if check_keys and not key.is_file():
            raise InventoryError(f"{path}: boards.{name}.key: no such file {key}")
        boards[name] = b.model_copy(update={"key": key})
    return inv.model_copy(update={"fleet": fleet, "boards": boards})

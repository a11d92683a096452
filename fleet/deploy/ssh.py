"""SSH to boards through asyncssh, with host keys pinned in a known_hosts file that ecufl keeps.

Why asyncssh: one event loop drives every board at once (push to 20 ECUs in parallel without
threads), it verifies host keys against an OpenSSH known_hosts file by default, and it has SFTP.

Host keys, stated plainly: the first time ecufl meets a board (no line for its host:port in
``<state_dir>/known_hosts``, as asyncssh matches it: plain, hashed (``ssh-keyscan -H``),
multi-host and wildcard lines, by name and by address) it TRUSTS THE KEY THE BOARD PRESENTS and pins it (trust on first use;
the fingerprint is printed so that you can compare it with the board's console). From then on a
different key is refused. A board that was re-imaged needs its line removed by hand. Give
``--no-pin`` (pin=False) to refuse unknown boards instead, e.g. after filling known_hosts yourself.
Authentication is by private key only (the inventory names the key file); never by password.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from .inventory import Board

CONNECT_TIMEOUT = 8.0


class BoardError(RuntimeError):
    """One line about one board; the fleet goes on without it."""

    def __init__(self, name: str, what: str):
        super().__init__(f"board {name}: {what}")
        self.board = name


@dataclass
class Result:
    rc: int
    out: str
    err: str


def host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _addresses(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        return sorted({ai[4][0] for ai in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})
    except OSError:
        return [""]


def read_known_hosts(known_hosts: Path) -> asyncssh.SSHKnownHosts | None:
    """The file parsed by asyncssh (None if there is none); ValueError names a malformed file in one line."""
    if not known_hosts.is_file():
        return None
    try:
        return asyncssh.import_known_hosts(known_hosts.read_text())
    except (ValueError, asyncssh.KeyImportError, UnicodeDecodeError) as e:
        raise ValueError(f"{known_hosts}: not a known_hosts file ({_why(e)})") from None


def pinned(known_hosts: Path, host: str, port: int) -> bool:
    """Whether known_hosts says anything about host:port (a key, a CA, a revocation), matched the way
    asyncssh matches it when it verifies the board: hashed and multi-host lines count."""
    kh = read_known_hosts(known_hosts)
    if kh is None:
        return False
    for addr in _addresses(host):
        if any(kh.match(host, addr, port)):
            return True
    return False


async def pin_host_key(name: str, b: Board, known_hosts: Path, log=print) -> None:
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(b.host, b.port), CONNECT_TIMEOUT)
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as e:
        raise BoardError(name, f"unreachable at {b.host}:{b.port} ({_why(e)})")
    if key is None:
        raise BoardError(name, f"{b.host}:{b.port} presented no host key")
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    line = f"{host_pattern(b.host, b.port)} {key.export_public_key('openssh').decode().strip()}\n"
    with open(known_hosts, "a") as f:
        f.write(line)
    log(f"board {name}: first contact with {b.host}:{b.port}: pinned its host key "
        f"{key.get_fingerprint('sha256')} in {known_hosts} (trust on first use)")


def _why(e: BaseException, timeout: float = CONNECT_TIMEOUT) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return f"no answer within {timeout:.0f} s"
    return (str(e) or type(e).__name__).strip().splitlines()[0]


class Conn:
    """One SSH connection to one board."""

    def __init__(self, name: str, board: Board, conn: asyncssh.SSHClientConnection):
        self.name, self.board, self.conn = name, board, conn

    async def run(self, cmd: str, *, check: bool = True, what: str | None = None, timeout: float = 120) -> Result:
        try:
            r = await asyncio.wait_for(self.conn.run(cmd, check=False), timeout)
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
            raise BoardError(self.name, f"connection lost during {what or cmd.split()[0]} ({_why(e, timeout)})")
        res = Result(r.exit_status if r.exit_status is not None else 255, str(r.stdout or ""), str(r.stderr or ""))
        if check and res.rc != 0:
            detail = (res.err.strip() or res.out.strip() or f"exit {res.rc}").splitlines()[-1]
            raise BoardError(self.name, f"{what or cmd} failed: {detail}")
        return res

    async def put(self, local: Path, remote: str) -> None:
        try:
            async with self.conn.start_sftp_client() as sftp:
                await sftp.put(str(local), remote)
        except (OSError, asyncssh.Error) as e:
            msg = _why(e)
            if "space" in msg.lower() or "failure" in msg.lower():
                msg += " (disk full?)"
            raise BoardError(self.name, f"upload of {local.name} to {remote} failed: {msg}")

    async def write_file(self, remote: str, text: str, mode: int = 0o644) -> None:
        """Write a small file atomically (temp file + rename) with the given mode."""
        tmp = remote + ".tmp"
        cmd = (f"umask 077 && cat > {shlex.quote(tmp)} && chmod {mode:o} {shlex.quote(tmp)} && "
               f"mv -f {shlex.quote(tmp)} {shlex.quote(remote)}")
        try:
            r = await asyncio.wait_for(self.conn.run(cmd, input=text, check=False), 60)
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
            raise BoardError(self.name, f"connection lost writing {remote} ({_why(e)})")
        if r.exit_status != 0:
            await self.conn.run(f"rm -f {shlex.quote(tmp)}", check=False)
            raise BoardError(self.name, f"cannot write {remote}: {str(r.stderr).strip().splitlines()[-1:] or r.exit_status}")

    def close(self) -> None:
        self.conn.close()


async def connect(name: str, b: Board, known_hosts: Path, *, pin: bool = True, log=print) -> Conn:
    try:
        if not pinned(known_hosts, b.host, b.port):
            if not pin:
                raise BoardError(name, f"{b.host}:{b.port} is not in {known_hosts} and --no-pin was given")
            await pin_host_key(name, b, known_hosts, log)
        kh = read_known_hosts(known_hosts)
    except ValueError as e:
        raise BoardError(name, str(e)) from None
    try:
        conn = await asyncio.wait_for(asyncssh.connect(
            b.host, b.port, username=b.user, client_keys=[str(b.key)], known_hosts=kh,
            password=None, kbdint_auth=False, agent_path=None, preferred_auth="publickey",
            config=None, connect_timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT + 2)
    except asyncssh.HostKeyNotVerifiable:
        raise BoardError(name, f"host key of {b.host}:{b.port} differs from the one pinned in {known_hosts}: "
                               "refusing to connect (if the board was re-imaged, delete its line there)")
    except asyncssh.PermissionDenied:
        raise BoardError(name, f"SSH key {b.key} was refused for {b.user}@{b.host}:{b.port} (wrong key or user?)")
    except asyncssh.KeyImportError as e:
        raise BoardError(name, f"cannot read SSH key {b.key}: {_why(e)} (encrypted keys need no passphrase prompt: "
                               "use an unencrypted deploy key readable only by you)")
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as e:
        raise BoardError(name, f"unreachable at {b.host}:{b.port} ({_why(e)})")
    return Conn(name, b, conn)

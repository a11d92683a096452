"""What `ecufl deploy` does on one board, over one SSH connection. Commands are POSIX sh + coreutils
(busybox has them all: sha256sum -c, df -P, tar, ln, mv), so a minimal Yocto image is enough.

Layout on the board, under the inventory's ``install_root`` (ROOT):

    ROOT/.ecufl-root                   marker: `remove` deletes ROOT only if this is there
    ROOT/releases/<bundle id>/         one unpacked bundle each (checked by its MANIFEST.sha256)
    ROOT/current -> releases/<id>      what runs; switched by renaming a new symlink over it (atomic)
    ROOT/previous -> releases/<id>     what ran before; `rollback` swaps the two
    ROOT/etc/                          this board's config: unit, env, certificates, key (0600)
    ROOT/run/                          supervisor pid files and logs (init = "supervise")

A push unpacks into ``releases/.incoming-<id>``, verifies every checksum, renames it into place and
only then switches ``current``: a push that fails (disk full, lost link) leaves the old version
running and nothing half-installed.
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .bundle import Bundle
from .inventory import UNAME, Board, Inventory
from .ssh import BoardError, Conn

q = shlex.quote
SERVICE = {"supernode": "ecufl-supernode", "agent": "ecufl-agent"}


@dataclass
class BoardConfig:
    """Per-board files written to ROOT/etc at push (rendered by ecufl.fleet.deploy.config)."""

    files: dict[str, tuple[str, int]]  # name -> (text, mode)
    unit: str  # rendered unit file text


def root(b: Board) -> str:
    return str(b.install_root)


async def check_arch(c: Conn, arch: str) -> None:
    machine = (await c.run("uname -m", what="uname -m")).out.strip()
    if machine != UNAME[arch]:
        raise BoardError(c.name, f"is {machine}, but the inventory says arch = {arch!r} (expects {UNAME[arch]}): "
                                 "fix the inventory or the host address")


def _unpacked_bytes(tarball: Path) -> int:
    with tarfile.open(tarball) as t:
        return sum(m.size for m in t.getmembers())


async def free_bytes(c: Conn, path: str) -> int:
    r = await c.run(f"df -Pk {q(path)} | tail -n 1", what="df")
    return int(r.out.split()[3]) * 1024


async def push(c: Conn, bundle: Bundle, cfg: BoardConfig, log=print) -> str:
    b = c.board
    R = root(b)
    await check_arch(c, bundle.arch)
    # ecufl installs into a folder it makes (or an empty one): `remove` deletes it whole later
    r = await c.run(f"if [ -e {q(R)} ] && [ ! -f {q(R)}/.ecufl-root ] && [ -n \"$(ls -A {q(R)} 2>/dev/null)\" ]; "
                    "then echo foreign; fi", check=False)
    if "foreign" in r.out:
        raise BoardError(c.name, f"{R} exists, holds files and was not made by ecufl (no .ecufl-root): refusing to "
                                 "install there; choose another install_root or empty it")
    await c.run(f"mkdir -p {q(R)}/releases {q(R)}/etc {q(R)}/run && chmod 700 {q(R)}/etc && touch {q(R)}/.ecufl-root",
                what=f"creating {R}")
    rel = f"{R}/releases/{bundle.id}"
    have = await c.run(f"test -d {q(rel)} && cd {q(rel)} && sha256sum MANIFEST.sha256", check=False)
    if not (have.rc == 0 and have.out.split()[0] == bundle.manifest_sha256):
        await _upload(c, bundle, R)
    else:
        log(f"board {c.name}: bundle {bundle.id} already on the board")
    for name, (text, mode) in cfg.files.items():
        await c.write_file(f"{R}/etc/{name}", text, mode)
    await c.write_file(f"{R}/etc/{SERVICE[b.mode]}.service", cfg.unit, 0o644)
    await switch(c, bundle.id)
    await prune(c)
    return bundle.id


async def _upload(c: Conn, bundle: Bundle, R: str) -> None:
    need = int((bundle.tarball.stat().st_size + _unpacked_bytes(bundle.tarball)) * 1.1) + (1 << 20)
    free = await free_bytes(c, f"{R}/releases")
    if free < need:
        raise BoardError(c.name, f"not enough disk space under {R}: the bundle needs {need / 2**20:.1f} MiB, "
                                 f"{free / 2**20:.1f} MiB free; nothing was installed")
    inc = f"{R}/releases/.incoming-{bundle.id}"
    try:
        await c.run(f"rm -rf {q(inc)} {q(inc)}.tar.gz && mkdir -p {q(inc)}", what="preparing the upload")
        await c.put(bundle.tarball, f"{inc}.tar.gz")
        r = await c.run(f"tar -xzf {q(inc)}.tar.gz -C {q(inc)} && rm -f {q(inc)}.tar.gz", check=False)
        if r.rc != 0:
            full = "No space left" in r.err
            raise BoardError(c.name, "disk full while unpacking the bundle; nothing was installed" if full
                             else f"unpacking the bundle failed: {r.err.strip().splitlines()[-1:]}")
        await verify(c, inc, bundle.manifest_sha256, bundle.id)
        await c.run(f"rm -rf {q(R)}/releases/{q(bundle.id)} && mv {q(inc)} {q(R)}/releases/{q(bundle.id)}",
                    what="moving the release into place")
    except BaseException:
        await c.run(f"rm -rf {q(inc)} {q(inc)}.tar.gz", check=False)
        raise


async def verify(c: Conn, release_dir: str, manifest_sha256: str, bid: str) -> None:
    """The release's MANIFEST.sha256 is the one ecufl built, every file matches it, and the release
    holds nothing else: no file the manifest does not name, no symbolic link."""
    r = await c.run(f"cd {q(release_dir)} && cat MANIFEST.sha256", check=False)
    if r.rc != 0 or hashlib.sha256(r.out.encode()).hexdigest() != manifest_sha256:
        raise BoardError(c.name, f"bundle {bid}: MANIFEST.sha256 on the board is not the one ecufl built "
                                 "(tampered or corrupt): refusing to start; push it again")
    listed = {ln.split("  ", 1)[1] for ln in r.out.splitlines() if "  " in ln} | {"MANIFEST.sha256"}
    r = await c.run(f"cd {q(release_dir)} && find . -mindepth 1 ! -type d -print && "
                    "find . -mindepth 1 -type l -print | sed 's/^/LINK /'", check=False)
    found = [ln.removeprefix("./") for ln in r.out.splitlines() if not ln.startswith("LINK ")]
    links_ = [ln.removeprefix("LINK ./") for ln in r.out.splitlines() if ln.startswith("LINK ")]
    extra = sorted(set(found) - listed - set(links_))
    if r.rc != 0 or extra or links_:
        what = (f"symbolic links ({', '.join(links_[:3])})" if links_ else
                f"files not in its manifest ({', '.join(extra[:3])})" if extra else "a listing that failed")
        raise BoardError(c.name, f"bundle {bid} holds {what}: tampered; refusing to start; push it again")
    r = await c.run(f"cd {q(release_dir)} && sha256sum -c --quiet MANIFEST.sha256 2>&1", check=False)
    if r.rc != 0:
        bad = [ln.split(":")[0] for ln in r.out.splitlines() if ln.rstrip().endswith(("FAILED", "FAILED open or read"))]
        raise BoardError(c.name, f"bundle {bid} fails its checksums ({', '.join(bad[:3]) or 'see sha256sum -c'}): "
                                 "tampered or corrupt; refusing to start; push it again")


async def links(c: Conn) -> tuple[str | None, str | None]:
    R = root(c.board)
    r = await c.run(f"cd {q(R)} 2>/dev/null && for l in current previous; do "
                    "if [ -L $l ]; then basename \"$(readlink $l)\"; else echo -; fi; done", check=False)
    parts = r.out.split()
    if r.rc != 0 or len(parts) != 2:
        return None, None
    return tuple(None if p == "-" else p for p in parts)  # type: ignore[return-value]


async def _set_link(c: Conn, name: str, bid: str) -> None:
    R = root(c.board)
    # ln -sfn then rename: readers see the old or the new link, never none (mv -T renames over it).
    await c.run(f"cd {q(R)} && ln -sfn releases/{q(bid)} {name}.new && mv -Tf {name}.new {name}",
                what=f"switching {name}")


async def switch(c: Conn, bid: str) -> None:
    cur, _ = await links(c)
    r = await c.run(f"readlink {q(root(c.board))}/current", check=False)
    if cur == bid and r.out.strip() == f"releases/{bid}":  # exactly ours (a link elsewhere is replaced)
        return
    if cur:
        await _set_link(c, "previous", cur)
    await _set_link(c, "current", bid)


async def prune(c: Conn) -> None:
    """Keep only current and previous."""
    cur, prev = await links(c)
    keep = {x for x in (cur, prev) if x}
    R = root(c.board)
    r = await c.run(f"ls -1 {q(R)}/releases", check=False)
    for d in r.out.split():
        if d not in keep and not d.startswith(".incoming-"):
            await c.run(f"rm -rf {q(R)}/releases/{q(d)}", check=False)


async def rollback(c: Conn) -> str:
    cur, prev = await links(c)
    if not prev:
        raise BoardError(c.name, "no previous version to roll back to")
    await _set_link(c, "current", prev)
    if cur:
        await _set_link(c, "previous", cur)
    return prev


# --- services ------------------------------------------------------------------------------------
def _pidfiles(c: Conn) -> tuple[str, str]:
    R, svc = root(c.board), SERVICE[c.board.mode]
    return f"{R}/run/{svc}.pid", f"{R}/run/{svc}.child"


async def running(c: Conn) -> dict:
    b, svc = c.board, SERVICE[c.board.mode]
    if b.init == "systemd":
        r = await c.run(f"systemctl is-active {svc}", check=False)
        return {"running": r.out.strip() == "active", "service": r.out.strip() or "unknown"}
    pid, child = _pidfiles(c)
    R = root(b)
    r = await c.run(
        f"p=$(cat {q(pid)} 2>/dev/null); k=$(cat {q(child)} 2>/dev/null); "
        f"n=$(cat {q(R)}/run/{svc}.restarts 2>/dev/null); "
        # alive: the pid exists and is not a zombie (a killed process its parent has not reaped yet)
        "alive() { [ -n \"$1\" ] && kill -0 \"$1\" 2>/dev/null && "
        "[ \"$(sed 's/.*) //' /proc/$1/stat 2>/dev/null | cut -c1)\" != Z ]; }; "
        "s=dead; alive \"$p\" && s=up; "
        "t=dead; alive \"$k\" && t=up; "
        "echo \"$s $t ${n:-0} ${p:--}\"", check=False)
    sup, svc_state, restarts, p = (r.out.split() + ["dead", "dead", "0", "-"])[:4]
    return {"running": sup == "up" and svc_state == "up", "supervisor": sup, "service": svc_state,
            "restarts": int(restarts) if restarts.isdigit() else 0, "pid": p}


async def start(c: Conn, manifests: dict[str, str], unit_text: str) -> None:
    """Verify the current release against the manifest ecufl built (and that ``current`` is that
    release), and the installed unit against ``unit_text`` (what ecufl renders for this board), then
    start the service."""
    b, svc = c.board, SERVICE[c.board.mode]
    R = root(b)
    cur, _ = await links(c)
    if not cur:
        raise BoardError(c.name, f"nothing installed under {R}: run `ecufl deploy push` first")
    if cur not in manifests:
        raise BoardError(c.name, f"bundle {cur} on the board was not built here (no manifest in the state dir): "
                                 "refusing to start; push a bundle built by this ecufl")
    # what runs is ROOT/current/...: it must be exactly the release verified below, a real folder
    r = await c.run(f"cd {q(R)} && test ! -L releases && test -d releases/{q(cur)} && test ! -L releases/{q(cur)} "
                    "&& readlink current", check=False)
    if r.rc != 0 or r.out.strip() != f"releases/{cur}":
        raise BoardError(c.name, f"{R}/current points at {r.out.strip() or '?'}, not at the release folder "
                                 f"releases/{cur}: tampered; refusing to start; push again")
    await verify(c, f"{R}/releases/{cur}", manifests[cur], cur)
    unit = f"{R}/etc/{svc}.service"
    r = await c.run(f"cat {q(unit)}", check=False)
    if r.rc != 0 or r.out != unit_text:
        raise BoardError(c.name, f"{unit} is not the unit ecufl renders for this board (tampered, or the "
                                 "inventory changed since the push): refusing to start; push again")
    await stop(c)
    if b.init == "systemd":
        sudo = "" if b.user == "root" else "sudo -n "
        await c.run(f"{sudo}install -m 0644 {q(unit)} /etc/systemd/system/{svc}.service && "
                    f"{sudo}systemctl daemon-reload && {sudo}systemctl enable --now {svc}", what="systemctl start")
    else:
        # In a subshell that exits at once, with no fd left on the SSH channel (else the session hangs).
        await c.run(f"cd / && (setsid {q(R)}/current/bin/ecufl-supervise {q(unit)} {q(R)}/run "
                    "</dev/null >/dev/null 2>&1 &)", what="starting the supervisor", timeout=30)
    for _ in range(20):
        await asyncio.sleep(0.25)
        st = await running(c)
        # The agent never exits on its own: a restart means it died (bad data, bad config), even if
        # the poll catches the restarted one alive. A SuperNode does exit and come back by design
        # (turned away by the SuperLink: Restart=always), so for it running is enough.
        if b.mode == "agent" and st.get("restarts", 0) > 0:
            break
        if st["running"]:
            return
    # the service's own last words, not the supervisor's lines about starting and exiting it
    tail = [ln for ln in (await logs(c, 20)).strip().splitlines() if "ecufl-supervise:" not in ln]
    raise BoardError(c.name, f"{svc} did not stay up" + (f": {tail[-1]}" if tail else ""))


async def stop(c: Conn) -> None:
    b, svc = c.board, SERVICE[c.board.mode]
    if b.init == "systemd":
        sudo = "" if b.user == "root" else "sudo -n "
        await c.run(f"{sudo}systemctl stop {svc} 2>/dev/null", check=False)
        return
    pid, child = _pidfiles(c)
    # The supervisor leads its process group (setsid): TERM the group, then KILL what is left.
    await c.run(f"p=$(cat {q(pid)} 2>/dev/null); [ -n \"$p\" ] || exit 0; kill -TERM -- -$p 2>/dev/null; "
                f"i=0; while kill -0 -- -$p 2>/dev/null && [ $i -lt 40 ]; do sleep 0.25; i=$((i+1)); done; "
                f"kill -KILL -- -$p 2>/dev/null; rm -f {q(pid)} {q(child)}; true", check=False, what="stop")


async def logs(c: Conn, lines: int = 50) -> str:
    b, svc = c.board, SERVICE[c.board.mode]
    if b.init == "systemd":
        r = await c.run(f"journalctl -u {svc} -n {int(lines)} --no-pager", check=False)
    else:
        r = await c.run(f"tail -n {int(lines)} {q(root(b))}/run/{svc}.log", check=False)
    return r.out


async def remove(c: Conn) -> None:
    b, svc = c.board, SERVICE[c.board.mode]
    R = root(b)
    await stop(c)
    if b.init == "systemd":
        sudo = "" if b.user == "root" else "sudo -n "
        await c.run(f"{sudo}systemctl disable {svc} 2>/dev/null; {sudo}rm -f /etc/systemd/system/{svc}.service; "
                    f"{sudo}systemctl daemon-reload", check=False)
    r = await c.run(f"test -e {q(R)}", check=False)
    if r.rc != 0:
        return
    r = await c.run(f"test -f {q(R)}/.ecufl-root", check=False)
    if r.rc != 0:
        raise BoardError(c.name, f"{R} exists but was not made by ecufl (no .ecufl-root): not deleting it")
    await c.run(f"rm -rf {q(R)} && test ! -e {q(R)}", what=f"removing {R}")


def manifest_digests(bundles_dir: Path) -> dict[str, str]:
    out = {}
    for m in bundles_dir.glob("ecufl-*.manifest.sha256"):
        out[m.name.removeprefix("ecufl-").removesuffix(".manifest.sha256")] = hashlib.sha256(m.read_bytes()).hexdigest()
    return out


def board_index(inv: Inventory, name: str) -> int:
    return list(inv.boards).index(name)

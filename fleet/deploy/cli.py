"""`ecufl deploy ...`: take the fleet off this machine and onto boards.

Every command works on all boards of the inventory at once (or the ones named), one asyncio task per
board; a board that fails prints one line (`ecufl: board NAME: what went wrong`) and the others go
on. Exit status: 0 all boards fine, 1 some board failed, 2 bad flags or a bad inventory.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import click
from ecufl.ui import Failure

from .inventory import ARCHES, Inventory, InventoryError, load

DEFAULT_INVENTORY = os.environ.get("ECUFL_INVENTORY", "inventory.toml")


def _inv(ctx: click.Context) -> Inventory:
    try:
        return load(ctx.obj["inventory"])
    except InventoryError as e:
        raise click.UsageError(str(e))


def _pick(inv: Inventory, boards: tuple[str, ...]) -> list[str]:
    for b in boards:
        if b not in inv.boards:
            raise click.UsageError(f"no board {b!r} in the inventory (have {', '.join(inv.boards)})")
    return list(boards) or list(inv.boards)


def _say(msg: str) -> None:
    click.echo(msg)


def _plain(msg: str) -> None:
    """Progress lines of a run: launch marks a rejected client up for rich ([red]...[/]), echoed plainly here."""
    _say(msg.replace("[red]", "").replace("[/]", ""))


def _fail(msg: str) -> None:
    click.echo(f"ecufl: {msg}", err=True)


def _security(inv: Inventory) -> dict:
    f = inv.fleet.state_dir / "security.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _run_each(inv: Inventory, names: list[str], action, *, pin: bool = True) -> dict[str, object]:
    """Run ``action(conn)`` on every board concurrently; failures are one line each."""
    from .ssh import BoardError, connect

    known_hosts = inv.fleet.state_dir / "known_hosts"
    results: dict[str, object] = {}

    async def one(name: str):
        c = None
        try:
            c = await connect(name, inv.boards[name], known_hosts, pin=pin, log=_say)
            results[name] = await action(c)
        except BoardError as e:
            results[name] = e
            _fail(str(e))
        finally:
            if c:
                c.close()

    async def all_():
        await asyncio.gather(*(one(n) for n in names))

    asyncio.run(all_())
    return {n: results[n] for n in names}  # inventory order, not completion order


def _exit(results: dict[str, object]) -> None:

    bad = [n for n, r in results.items() if isinstance(r, Exception)]
    if bad:
        raise Failure(f"{len(bad)} of {len(results)} board(s) failed: {', '.join(bad)}")


@click.group()
@click.option("--inventory", "-i", default=DEFAULT_INVENTORY, show_default=True, type=click.Path(dir_okay=False),
              help="Inventory file (env ECUFL_INVENTORY).")
@click.pass_context
def deploy(ctx, inventory):
    """Deploy the fleet to boards over SSH: build, push, start, status, logs, rollback, remove."""
    ctx.obj = {"inventory": inventory}


@deploy.command()
@click.option("--arch", "arches", multiple=True, type=click.Choice(ARCHES),
              help="Architecture(s) to build (default: those in the inventory).")
@click.option("--natives", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Directory with prebuilt native programs (ecufl-agent, ecufl-train-c, ...).")
@click.option("--wheel", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Use this ecufl wheel instead of building one (x86_64).")
@click.pass_context
def build(ctx, arches, natives, wheel):
    """Build the bundle per architecture (wheel + natives, sha256 manifest) into the state dir."""

    from .bundle import BundleError
    from .bundle import build as build_bundle

    inv = _inv(ctx)
    arches = arches or sorted({b.arch for b in inv.boards.values()})
    need_agent = {b.arch for b in inv.boards.values() if b.mode == "agent"}
    for arch in arches:
        try:
            bun = build_bundle(arch, inv.fleet.state_dir / "bundles", natives=natives, wheel=wheel,
                               require_agent=arch in need_agent)
        except BundleError as e:
            raise Failure(str(e))
        size = bun.tarball.stat().st_size
        _say(f"{arch}: bundle {bun.id} ({size / 2**20:.1f} MiB, manifest sha256 {bun.manifest_sha256[:16]}...) "
             f"-> {bun.tarball}")


@deploy.command()
@click.argument("boards", nargs=-1)
@click.option("--insecure", is_flag=True, help="Plaintext SuperLink connection, no node authentication.")
@click.option("--no-pin", is_flag=True, help="Refuse boards whose host key is not yet in known_hosts.")
@click.option("--kernel", help="Kernel for supernode boards' node config (default numpy).")
@click.pass_context
def push(ctx, boards, insecure, no_pin, kernel):
    """Upload the bundle to a new versioned dir, verify it, switch `current` atomically (keeps `previous`)."""

    from . import remote
    from .bundle import BundleError, latest
    from .config import board_config

    inv = _inv(ctx)
    names = _pick(inv, boards)
    sec = inv.fleet.state_dir / "security.json"
    sec.parent.mkdir(parents=True, exist_ok=True)
    sec.write_text(json.dumps({"insecure": insecure}) + "\n")
    try:
        bundles = {a: latest(inv.fleet.state_dir / "bundles", a) for a in {inv.boards[n].arch for n in names}}
    except BundleError as e:
        raise Failure(str(e))
    cfgs = {n: board_config(inv, n, insecure=insecure, kernel=kernel) for n in names}

    async def act(c):
        bid = await remote.push(c, bundles[c.board.arch], cfgs[c.name], log=_say)
        _say(f"board {c.name}: {bid} installed at {c.board.install_root}/current")
        return bid

    _exit(_run_each(inv, names, act, pin=not no_pin))


@deploy.command()
@click.argument("boards", nargs=-1)
@click.pass_context
def start(ctx, boards):
    """Check the installed bundle against its manifest (refuse if tampered), then start the service."""
    from . import remote
    from .config import render_unit

    inv = _inv(ctx)
    names = _pick(inv, boards)
    manifests = remote.manifest_digests(inv.fleet.state_dir / "bundles")

    async def act(c):
        await remote.start(c, manifests, render_unit(inv, c.name))
        _say(f"board {c.name}: {remote.SERVICE[c.board.mode]} running")

    _exit(_run_each(inv, names, act))


def _each(ctx: click.Context, boards: tuple[str, ...], op: str, done: str) -> None:
    """``remote.<op>(conn)`` on each board, then ``board NAME: <done>`` ({root} = its install root)."""
    from . import remote

    inv = _inv(ctx)

    async def act(c):
        await getattr(remote, op)(c)
        _say(f"board {c.name}: " + done.format(root=c.board.install_root))

    _exit(_run_each(inv, _pick(inv, boards), act))


@deploy.command()
@click.argument("boards", nargs=-1)
@click.pass_context
def stop(ctx, boards):
    """Stop the service on the boards."""
    _each(ctx, boards, "stop", "stopped")


@deploy.command()
@click.argument("boards", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx, boards, as_json):
    """Installed version, previous version and service state of each board."""
    from . import remote

    inv = _inv(ctx)

    async def act(c):
        cur, prev = await remote.links(c)
        st = await remote.running(c)
        return {"current": cur, "previous": prev, **st}

    res = _run_each(inv, _pick(inv, boards), act)
    if as_json:
        click.echo(json.dumps({n: (r if not isinstance(r, Exception) else {"error": str(r)}) for n, r in res.items()}))
    else:
        for n, r in res.items():
            if not isinstance(r, Exception):
                state = "running" if r["running"] else "not running"
                extra = f", restarts {r['restarts']}" if "restarts" in r else ""
                _say(f"board {n}: current {r['current'] or '-'}, previous {r['previous'] or '-'}, {state}{extra}")
    _exit(res)


@deploy.command()
@click.argument("node")
@click.option("-n", "--lines", default=50, show_default=True, type=click.IntRange(1, 100000))
@click.pass_context
def logs(ctx, node, lines):
    """The last lines of NODE's service log."""
    from . import remote

    inv = _inv(ctx)
    names = _pick(inv, (node,))

    async def act(c):
        click.echo(await remote.logs(c, lines), nl=False)

    _exit(_run_each(inv, names, act))


@deploy.command()
@click.argument("boards", nargs=-1)
@click.pass_context
def rollback(ctx, boards):
    """Switch `current` back to `previous` (atomically) and restart the service if it was running."""
    from . import remote
    from .config import render_unit

    inv = _inv(ctx)
    manifests = remote.manifest_digests(inv.fleet.state_dir / "bundles")

    async def act(c):
        was = (await remote.running(c))["running"]
        bid = await remote.rollback(c)
        if was:
            await remote.start(c, manifests, render_unit(inv, c.name))
        _say(f"board {c.name}: rolled back to {bid}" + (" and restarted" if was else ""))

    _exit(_run_each(inv, _pick(inv, boards), act))


@deploy.command()
@click.argument("boards", nargs=-1)
@click.pass_context
def remove(ctx, boards):
    """Stop the service and delete everything ecufl put on the boards."""
    _each(ctx, boards, "remove", "removed {root}")


# --- the SuperLink of the deployed fleet -----------------------------------------------------------
@deploy.group()
def superlink():
    """The deployed fleet's SuperLink (TLS + SuperNode authentication unless --insecure)."""


@superlink.command("start")
@click.option("--insecure", is_flag=True, help="Plaintext, no node authentication (must match `push --insecure`).")
@click.pass_context
def superlink_start(ctx, insecure):
    """Start flower-superlink on the inventory's address and register every board's node key."""

    from . import superlink as sl

    inv = _inv(ctx.parent)
    pushed = _security(inv)
    if pushed and pushed.get("insecure") != insecure:
        raise click.UsageError(
            "the boards were pushed " + ("with" if pushed["insecure"] else "without") + " --insecure: start the "
            "SuperLink the same way (or push again)")
    try:
        st = sl.start(inv, insecure=insecure)
        _say(f"superlink: running on {st['host']}:{st['port']} (pid {st['pid']}, "
             + ("INSECURE: plaintext, no node authentication)" if insecure else "TLS, SuperNode authentication)"))
        if not insecure:
            for name, node_id in sl.register(inv, list(inv.boards)).items():
                _say(f"superlink: board {name}'s node key registered (node id {node_id})")
        from . import gateway

        for name, pid in gateway.start(inv, insecure=insecure).items():
            _say(f"gateway: SuperNode for agent board {name} (remote kernel) running (pid {pid})")
    except sl.SuperLinkError as e:
        raise Failure(str(e))


@superlink.command("stop")
@click.pass_context
def superlink_stop(ctx):
    """Stop the SuperLink and its children."""
    from . import superlink as sl

    from . import gateway

    inv = _inv(ctx.parent)
    for name in gateway.stop(inv):
        _say(f"gateway: SuperNode for agent board {name} stopped")
    _say("superlink: stopped" if sl.stop(inv) else "superlink: was not running")


@superlink.command("register")
@click.argument("boards", nargs=-1)
@click.pass_context
def superlink_register(ctx, boards):
    """Register boards' node keys with the running SuperLink (start does it for all boards)."""

    from . import superlink as sl

    inv = _inv(ctx.parent)
    try:
        for name, node_id in sl.register(inv, _pick(inv, boards)).items():
            _say(f"superlink: board {name}'s node key registered (node id {node_id})")
    except sl.SuperLinkError as e:
        raise Failure(str(e))


# --- a run on the deployed fleet ---------------------------------------------------------------------
@deploy.command("run")
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--results", "results_base", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Where run folders are created.")
@click.pass_context
def run_cmd(ctx, scenario, results_base):
    """Run SCENARIO (engine = deployment, one node per board) on the deployed fleet; write its report."""
    from ecufl.fleet import flwr_app, launch
    from ecufl.fleet.cli import _finish, _scenario
    from ecufl.fleet.local import FleetError
    from ecufl.runconfig import new_run_folder

    from . import superlink as sl

    inv = _inv(ctx)
    sc = _scenario(scenario)
    if sc.engine != "deployment":
        raise click.UsageError(f"{scenario}: engine = {sc.engine!r}; a deployed fleet runs engine = 'deployment'")
    if sc.nodes != len(inv.boards):
        raise click.UsageError(f"{scenario}: nodes = {sc.nodes}, but the inventory has {len(inv.boards)} boards")
    st = sl.state(inv)
    if not st:
        raise Failure("no SuperLink running for this inventory: `ecufl deploy superlink start` first")
    d = sl.folder(inv)
    cfg = sc.config()
    # Agent boards train with their native C kernel, whatever the scenario names for that node.
    kernels = sc.node_kernels()
    if kernels:
        cfg.kernels = [f"remote:{name}" if b.mode == "agent" else k
                       for k, (name, b) in zip(kernels, inv.boards.items())]
    launch.prepare(cfg, new_run_folder(Path(results_base).resolve(), sc.name))
    results = Path(cfg.run_dir)
    env = sl.env(inv)
    try:
        run_id = flwr_app.run(flwr_app.app_dir(), sl.CONNECTION, env, d, cfg.to_flat())
    except flwr_app.FlowerError as e:
        raise Failure(str(e))
    (results / "flower-runs.txt").write_text(f"{run_id} deployment {inv.fleet.superlink}\n")
    _say(f"run {run_id} on {len(inv.boards)} boards via {inv.fleet.superlink} "
         f"({'INSECURE' if st['insecure'] else 'TLS + node authentication'})")
    try:
        launch.follow(results, cfg.rounds, lambda: flwr_app.status(run_id, sl.CONNECTION, env, d),
                      300 + cfg.rounds * (cfg.round_timeout + 60), _plain, str(d / "superlink.log"))
    except FleetError as e:
        flwr_app.stop(run_id, sl.CONNECTION, env, d)
        raise Failure(str(e))
    _finish([results])

"""What gets installed, derived from the code rather than kept by hand: `./bootstrap run` pulls no
test tools, every third-party module the package imports is a declared dependency, and the Yocto
recipe's RDEPENDS carry every Python module the on-board ClientApp imports."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from conftest import ROOT

# the source folders of the packages (pyproject.toml [tool.scikit-build] wheel.packages)
PACKAGES = {"ecufl": "ecufl", "ecufl.kernels": "kernels", "ecufl.server": "server", "ecufl.client": "client",
            "ecufl.proto": "proto", "ecufl.fleet": "fleet", "ecufl.scenarios": "scenarios"}
# generated at build time (proto/CMakeLists.txt): protobuf's runtime
GENERATED = {"ecufl.proto.round_report_pb2": {"google"}, "ecufl.proto.agent_pb2": {"google"}}
NOT_FOR_RUN = {"tensorflow", "tensorflow-cpu", "ray", "pytest", "oelint-adv", "scipy", "import-linter"}


def source_of(module: str) -> Path | None:
    for prefix, folder in sorted(PACKAGES.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            rest = module[len(prefix):].lstrip(".").replace(".", "/")
            base = ROOT / folder / rest if rest else ROOT / folder
            for p in (base / "__init__.py", base.with_suffix(".py")):
                if p.is_file():
                    return p
    return None


def imports_of(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports (function-level imports included), absolute names."""
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return out


def third_party(start: list[str]) -> set[str]:
    """Top-level names of the non-stdlib, non-ecufl modules reachable from ``start``."""
    seen: set[str] = set()
    found: set[str] = set()
    todo = list(start)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        found |= GENERATED.get(m, set())
        path = source_of(m)
        if path is None:
            continue
        for name in imports_of(path, m):
            top = name.split(".")[0]
            if top == "ecufl":
                todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.add(top)
    return found


def closure(requirements: list[str], extras: set[str] = frozenset()) -> set[str]:
    """Distribution names (normalised) that installing these requirements installs, resolved over
    the distributions installed here."""
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    out: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, ex = todo.pop()
        env = [{"extra": e} for e in ex] or [{"extra": ""}]
        if req.marker and not any(req.marker.evaluate(e) for e in env):
            continue
        name = norm(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in out:
            continue
        out |= {name, key}
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        todo += [(Requirement(r), set(req.extras)) for r in dist.requires or []]
    return {n for n in out if "[" not in n}


def ecufl_requirements() -> tuple[list[str], dict[str, list[str]]]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"], project["optional-dependencies"]


def test_the_run_install_pulls_no_test_or_optional_tools():
    core, _ = ecufl_requirements()
    got = closure(core)
    assert "flwr" in got and "numpy" in got  # the resolution works
    assert not got & NOT_FOR_RUN, sorted(got & NOT_FOR_RUN)
    with_test = closure([f"ecufl[test,export]"], set())
    assert {"pytest", "ray", "scipy"} <= with_test  # ... and the test extras do bring them


def test_every_imported_third_party_module_is_declared():
    core, extras = ecufl_requirements()
    declared = closure(core) | {n for reqs in extras.values() for n in closure(reqs)}
    dists = metadata.packages_distributions()
    modules = third_party(list(PACKAGES))
    for folder in set(PACKAGES.values()):  # every module of every package, not only the reachable ones
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            prefix = next(k for k, v in PACKAGES.items() if v == folder)
            modules |= third_party([".".join([prefix, *parts])])
    undeclared = {}
    for m in modules:
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(m, [])}
        if not names:
            undeclared[m] = "not installed"
        elif not names & declared:
            undeclared[m] = sorted(names)
    assert not undeclared, undeclared
    # and directly: a module may not be used only because another package happens to pull it in
    direct = {re.sub(r"[-_.]+", "-", Requirement(r).name).lower() for r in core}
    for m in ("httpx", "numpy", "cffi", "threadpoolctl", "pydantic", "click", "rich"):
        assert {re.sub(r"[-_.]+", "-", d).lower() for d in dists[m]} & direct, m


# Python modules an on-board ClientApp can go without: Flower has no Yocto recipe (installed from
# its wheel, see the recipe), LiteRT has no armv7 build, the rest belong to the host's tools.
OFF_BOARD = {"flwr", "ai_edge_litert", "tensorflow", "scipy", "ray", "matplotlib", "asyncssh", "httpx"}
YOCTO_NAME = {"google": "python3-protobuf"}


def test_yocto_rdepends_carry_every_module_the_onboard_client_imports():
    from ecufl.kernels.registry import KERNELS

    kernels = {f"ecufl.kernels.{spec.module}" for spec in KERNELS.values() if spec.name != "tflite"}
    needed = third_party(["ecufl.client.client_app", *kernels]) - OFF_BOARD
    assert {"numpy", "cffi", "threadpoolctl", "google"} <= needed  # the derivation sees the kernels
    recipe = (ROOT / "fleet/yocto/meta-ecufl/recipes-ecufl/python3-ecufl/python3-ecufl_git.bb").read_text()
    block = re.search(r'RDEPENDS:\$\{PN\} \+= "(.*?)"', recipe, re.S).group(1)
    rdepends = set(block.replace("\\", " ").split())
    want = {YOCTO_NAME.get(m, "python3-" + m.replace("_", "-")) for m in needed}
    assert want <= rdepends, f"missing from RDEPENDS: {sorted(want - rdepends)}"

"""Bundles: what `ecufl deploy push` puts on a board, one per architecture, with a sha256 manifest.

A bundle is a directory tree packed as ``ecufl-<id>.tar.gz``:

    BUNDLE.json          version, architecture, what is inside
    MANIFEST.sha256      `sha256sum` lines for every other file (the board checks it with sha256sum -c)
    lib/                 x86_64: the ecufl wheel, unpacked (a wheel's platlib is importable as is)
    bin/ecufl-supervise  the project's supervisor for boards without systemd (POSIX sh)
    bin/ecufl-agent, bin/ecufl-train-c, bin/ecufl-train-eigen   native programs, when built
    share/units/*.service  unit templates, rendered per board at push

``<id>`` is the first 16 hex digits of the manifest's own sha256: two bundles with the same files
have the same id, and the host keeps the manifest's digest to check the board's copy before start.
The armv7-a9 bundle carries only native programs (no wheel: the board's Python, if any, comes from
the image; see fleet/yocto/meta-ecufl).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .inventory import ARCHES

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent  # the source tree (fleet/deploy/ -> repo)
NATIVE_PROGRAMS = ("ecufl-agent", "ecufl-train-c", "ecufl-train-eigen")
# Where the builds leave native programs, per architecture (first hit wins); --natives overrides.
NATIVE_SEARCH = {
    "x86_64": ["build/agent-x86_64", "build/native", "build/cp311-cp311-linux_x86_64"],
    "armv7-a9": ["build/arm", "build/agent-armv7-a9", "build/armv7-a9"],
}


class BundleError(RuntimeError):
    pass


@dataclass(frozen=True)
class Bundle:
    id: str
    arch: str
    tarball: Path
    manifest: Path  # a copy of MANIFEST.sha256 next to the tarball
    manifest_sha256: str
    contents: list[str]

    def to_dict(self) -> dict:
        return {"id": self.id, "arch": self.arch, "tarball": str(self.tarball), "manifest": str(self.manifest),
                "manifest_sha256": self.manifest_sha256, "contents": self.contents}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(tree: Path) -> str:
    """Write MANIFEST.sha256 for every file under ``tree`` (sorted, relative paths); return its text."""
    lines = []
    for p in sorted(tree.rglob("*")):
        if p.is_file() and p.name != "MANIFEST.sha256":
            lines.append(f"{sha256_file(p)}  {p.relative_to(tree).as_posix()}")
    text = "\n".join(lines) + "\n"
    (tree / "MANIFEST.sha256").write_text(text)
    return text


def verify_tree(tree: Path) -> list[str]:
    """Files whose content does not match MANIFEST.sha256 (missing counts); [] if all match."""
    bad = []
    for line in (tree / "MANIFEST.sha256").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        p = tree / rel
        if not p.is_file() or sha256_file(p) != digest:
            bad.append(rel)
    return bad


def build_wheel(out: Path) -> Path:
    """Build ecufl's wheel from the source tree (scikit-build-core compiles the native parts)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                       capture_output=True, text=True)
    wheels = list(out.glob("ecufl-*.whl"))
    if r.returncode != 0 or len(wheels) != 1:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise BundleError(f"building the ecufl wheel failed: {last}")
    return wheels[0]


ARM_TOOLCHAIN = ROOT / "kernels" / "cmake" / "armv7-cortex-a9.cmake"
ARMHF_SYSROOT = ROOT / "build" / "armhf-sysroot"  # `make agent-arm` makes the same one


def armhf_sysroot() -> Path:
    """OpenSSL/protobuf-c/zlib for armhf from Debian's packages (fleet/agent/fetch-armhf-sysroot.sh)."""
    if not (ARMHF_SYSROOT / "PACKAGES").is_file():
        r = subprocess.run(["sh", str(ROOT / "fleet" / "agent" / "fetch-armhf-sysroot.sh"), str(ARMHF_SYSROOT)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise BundleError(f"fetching the armhf libraries for ecufl-agent failed: {last}")
    return ARMHF_SYSROOT


def build_agent(build_dir: Path, arch: str = "x86_64") -> Path:
    """Build ecufl-agent with CMake (x86_64: for this machine; armv7-a9: cross, static, against the
    armhf sysroot); returns the directory holding it."""
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    cross = []
    if arch == "armv7-a9":
        cross = [f"-DCMAKE_TOOLCHAIN_FILE={ARM_TOOLCHAIN}", f"-DECUFL_AGENT_SYSROOT={armhf_sysroot()}"]
    for cmd in (["cmake", "-S", str(ROOT / "fleet" / "agent"), "-B", str(build_dir), *gen, *cross],
                ["cmake", "--build", str(build_dir)]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "rror" in ln] or (r.stderr or r.stdout).splitlines()
            raise BundleError(f"building ecufl-agent for {arch} failed: {(lines or ['?'])[0].strip()}")
    return build_dir


def find_natives(arch: str, natives: Path | None) -> dict[str, Path]:
    dirs = [natives] if natives else [ROOT / d for d in NATIVE_SEARCH[arch]]
    found: dict[str, Path] = {}
    for d in dirs:
        if d is None or not d.is_dir():
            continue
        for name in NATIVE_PROGRAMS:
            if name not in found:
                hits = sorted(p for p in d.rglob(name) if p.is_file() and p.stat().st_mode & 0o111)
                if hits:
                    found[name] = hits[0]
    for name, p in found.items():
        if arch == "armv7-a9" and not _is_arm_elf(p):
            raise BundleError(f"{p}: {name} is not a 32-bit ARM executable (wrong architecture for armv7-a9)")
        if arch == "x86_64" and not _is_elf_machine(p, 0x3E):
            raise BundleError(f"{p}: {name} is not an x86_64 executable")
    return found


# Flower's console scripts, as launchers that run the board's Python with the bundle's lib/ first:
# flower-supernode starts flower-superexec, which starts flwr-clientapp, each found on PATH.
FLOWER_COMMANDS = {
    "flower-supernode": "flwr.supernode.cli:flower_supernode",
    "flower-superexec": "flwr.supercore.cli:flower_superexec",
    "flwr-clientapp": "flwr.supernode.cli:flwr_clientapp",
}


def write_launcher(path: Path, cmd: str, target: str) -> None:
    module, func = target.split(":")
    path.write_text(
        "#!/bin/sh\n"
        f"# {cmd} on the board: Flower's console script, run by the board's Python (ECUFL_PYTHON) with\n"
        "# PYTHONPATH from supernode.env (the bundle's lib/ first). -s: no user site-packages.\n"
        f"exec \"${{ECUFL_PYTHON:-python3}}\" -s -c 'import sys; from {module} import {func} as main; "
        f"sys.argv[0] = \"{cmd}\"; sys.exit(main())' \"$@\"\n")
    path.chmod(0o755)


def _elf_header(p: Path) -> bytes:
    with open(p, "rb") as f:
        return f.read(20)


def _is_elf_machine(p: Path, machine: int) -> bool:
    h = _elf_header(p)
    return h[:4] == b"\x7fELF" and int.from_bytes(h[18:20], "little") == machine


def _is_arm_elf(p: Path) -> bool:
    return _elf_header(p)[4] == 1 and _is_elf_machine(p, 0x28)  # ELFCLASS32, EM_ARM


def build(arch: str, out_dir: Path, *, natives: Path | None = None, wheel: Path | None = None,
          require_agent: bool = False) -> Bundle:
    """Assemble, checksum and pack the bundle for ``arch`` into ``out_dir``."""
    if arch not in ARCHES:
        raise BundleError(f"--arch {arch}: expected one of {', '.join(ARCHES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ecufl-bundle-", dir=out_dir) as tmp:
        tree = Path(tmp) / "tree"
        (tree / "bin").mkdir(parents=True)
        (tree / "share" / "units").mkdir(parents=True)
        contents: list[str] = []
        if arch == "x86_64":
            whl = wheel or build_wheel(Path(tmp) / "wheel")
            with zipfile.ZipFile(whl) as z:
                z.extractall(tree / "lib")
            contents.append(f"lib: {whl.name}")
        progs = find_natives(arch, natives)
        if require_agent and "ecufl-agent" not in progs:  # built here, for either architecture
            progs["ecufl-agent"] = build_agent(out_dir / f"agent-build-{arch}", arch) / "ecufl-agent"
        for name, p in progs.items():
            shutil.copy2(p, tree / "bin" / name)
            contents.append(f"bin/{name}")
        if arch == "armv7-a9" and not progs:
            raise BundleError("armv7-a9: no native programs found (run `make arm`, or give --natives DIR)")
        if arch == "x86_64":
            for cmd, target in FLOWER_COMMANDS.items():
                write_launcher(tree / "bin" / cmd, cmd, target)
        shutil.copy2(HERE / "supervise.sh", tree / "bin" / "ecufl-supervise")
        (tree / "bin" / "ecufl-supervise").chmod(0o755)
        for unit in sorted((HERE / "units").glob("*.service")):
            shutil.copy2(unit, tree / "share" / "units" / unit.name)
        from ecufl import __version__

        (tree / "BUNDLE.json").write_text(json.dumps(
            {"ecufl": __version__, "arch": arch, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "contents": contents}, indent=1) + "\n")
        text = write_manifest(tree)
        digest = hashlib.sha256(text.encode()).hexdigest()
        bid = f"{arch}-{digest[:16]}"
        tarball = out_dir / f"ecufl-{bid}.tar.gz"
        with tarfile.open(tarball.with_suffix(".part"), "w:gz") as tar:
            for p in sorted(tree.rglob("*")):
                tar.add(p, arcname=p.relative_to(tree).as_posix(), recursive=False)
        tarball.with_suffix(".part").replace(tarball)
        manifest = out_dir / f"ecufl-{bid}.manifest.sha256"
        manifest.write_text(text)
    bundle = Bundle(bid, arch, tarball, manifest, digest, contents)
    (out_dir / f"latest-{arch}.json").write_text(json.dumps(bundle.to_dict(), indent=1) + "\n")
    return bundle


def latest(out_dir: Path, arch: str) -> Bundle:
    f = out_dir / f"latest-{arch}.json"
    if not f.is_file():
        raise BundleError(f"no {arch} bundle in {out_dir}: run `ecufl deploy build --arch {arch}` first")
    d = json.loads(f.read_text())
    b = Bundle(d["id"], d["arch"], Path(d["tarball"]), Path(d["manifest"]), d["manifest_sha256"], d["contents"])
    if not b.tarball.is_file() or hashlib.sha256(b.manifest.read_bytes()).hexdigest() != b.manifest_sha256:
        raise BundleError(f"{b.tarball}: bundle missing or its manifest changed: run `ecufl deploy build` again")
    return b

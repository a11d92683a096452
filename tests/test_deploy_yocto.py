"""The Yocto layer fleet/yocto/meta-ecufl: oelint-adv runs clean, and the recipes say what the issue asks.

oelint-adv parses recipes offline; its one network rule (pinging HOMEPAGE) is switched off.
A deliberately broken copy of a recipe must make oelint-adv fail, so the clean run means something.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "fleet" / "yocto" / "meta-ecufl"
OELINT = [str(Path(sys.executable).parent / "oelint-adv"), "--release", "scarthgap",
          "--suppress", "oelint.vars.homepageping", "--quiet", "--relpaths"]

# Recipe names that exist in scarthgap's oe-core / meta-oe / meta-python, or in this layer.
KNOWN_RUNTIME = {
    "python3-click", "python3-cryptography", "python3-grpcio", "python3-numpy", "python3-protobuf",
    "python3-pydantic", "python3-rich", "python3-packaging", "python3-pathspec",
    "python3-cffi",  # oe-core
    "python3-threadpoolctl",  # meta-python (scikit-learn's recipe depends on it)
    "ecufl-agent", "ecufl-kernels", "python3-ecufl", "${PN}",
}


def bb_vars(path: Path) -> dict[str, str]:
    """KEY = "value" / KEY += "value" assignments of a BitBake file, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out: dict[str, str] = {}
    for m in re.finditer(r'^([A-Za-z0-9_:${}\-\[\]]+)\s*(\?\?=|\?=|\+=|=)\s*"(.*)"\s*$', text, re.M):
        key, op, value = m.groups()
        out[key] = (out.get(key, "") + " " + value).strip() if op == "+=" else value.strip()
    return out


def inherits(path: Path) -> set[str]:
    return {c for line in re.findall(r"^inherit\s+(.+)$", path.read_text(), re.M) for c in line.split()}


def recipes() -> list[Path]:
    return sorted(LAYER.rglob("*.bb"))


def lint(files: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(OELINT + [str(f.relative_to(cwd)) for f in files], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_oelint_adv_clean():
    r = lint(recipes(), LAYER)
    findings = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not findings, findings


def test_oelint_adv_catches_a_broken_recipe(tmp_path):
    layer = tmp_path / "meta-ecufl"
    shutil.copytree(LAYER, layer)
    bb = layer / "recipes-ecufl" / "ecufl-kernels" / "ecufl-kernels_git.bb"
    bb.write_text(bb.read_text().replace('DEPENDS += "libeigen"', 'DEPENDS = "libeigen"'))
    r = lint(sorted(layer.rglob("*.bb")), layer)
    assert "oelint.vars.dependsappend" in r.stdout + r.stderr


def test_layer_conf_keys():
    conf = bb_vars(LAYER / "conf" / "layer.conf")
    assert conf["BBFILE_COLLECTIONS"] == "ecufl"
    assert conf["LAYERSERIES_COMPAT_ecufl"].split() == ["scarthgap"]
    assert conf["BBFILE_PATTERN_ecufl"] == "^${LAYERDIR}/"
    assert int(conf["BBFILE_PRIORITY_ecufl"]) > 0
    assert "${LAYERDIR}/recipes-*/*/*.bb" in conf["BBFILES"]
    assert set(conf["LAYERDEPENDS_ecufl"].split()) == {"core", "openembedded-layer"}
    # every recipe is found by BBFILES
    for bb in recipes():
        assert bb.relative_to(LAYER).match("recipes-*/*/*.bb"), bb


def test_recipe_fields():
    source = bb_vars(LAYER / "recipes-ecufl" / "ecufl-source.inc")
    assert source["LICENSE"] == "MIT" and "md5=" in source["LIC_FILES_CHKSUM"]
    for bb in recipes():
        v = bb_vars(bb)
        assert v.get("SUMMARY") and v.get("DESCRIPTION"), f"{bb.name}: SUMMARY/DESCRIPTION"
        if "require recipes-ecufl/ecufl-source.inc" not in bb.read_text() and "packagegroup" not in inherits(bb):
            assert v.get("LICENSE") and "md5=" in v.get("LIC_FILES_CHKSUM", ""), bb.name
        for key, value in v.items():
            if key.startswith("RDEPENDS"):
                unknown = set(value.split()) - KNOWN_RUNTIME
                assert not unknown, f"{bb.name}: {key} names unknown recipes {unknown}"


def test_kernels_and_agent_recipes():
    kern = LAYER / "recipes-ecufl" / "ecufl-kernels" / "ecufl-kernels_git.bb"
    assert "cmake" in inherits(kern)
    assert "-DECUFL_BUILD_TRAINERS=ON" in bb_vars(kern)["EXTRA_OECMAKE"]
    assert "option(ECUFL_BUILD_TRAINERS" in (ROOT / "kernels" / "CMakeLists.txt").read_text()
    agent = LAYER / "recipes-ecufl" / "ecufl-agent" / "ecufl-agent_git.bb"
    av = bb_vars(agent)
    assert {"cmake", "systemd"} <= inherits(agent)
    assert av["SYSTEMD_SERVICE:${PN}"] == "ecufl-agent.service"
    assert {"openssl", "protobuf-c", "protobuf-c-native", "zlib"} <= set(av["DEPENDS"].split())
    assert av["OECMAKE_SOURCEPATH"] == "${S}/fleet/agent" and (ROOT / "fleet" / "agent" / "CMakeLists.txt").is_file()
    unit = (agent.parent / "files" / "ecufl-agent.service").read_text()
    for line in ("ExecStart=/usr/bin/ecufl-agent", "Restart=on-failure", "MemoryMax=64M", "WantedBy=multi-user.target"):
        assert line in unit


def test_python_recipe_uses_the_right_backend():
    bb = LAYER / "recipes-ecufl" / "python3-ecufl" / "python3-ecufl_git.bb"
    assert {"python_pep517", "systemd"} <= inherits(bb)
    assert "python_setuptools_build_meta" not in inherits(bb)
    assert 'build-backend = "scikit_build_core.build"' in (ROOT / "pyproject.toml").read_text()
    assert "python3-scikit-build-core-native" in bb_vars(bb)["DEPENDS"].split()
    assert (LAYER / "recipes-devtools" / "python3-scikit-build-core").is_dir()
    unit = (bb.parent / "files" / "ecufl-supernode.service").read_text()
    assert "flower-supernode" in unit and "--root-certificates" in unit and "Restart=on-failure" in unit


def test_packagegroup():
    bb = LAYER / "recipes-ecufl" / "packagegroups" / "packagegroup-ecufl.bb"
    v = bb_vars(bb)
    assert "packagegroup" in inherits(bb)
    assert set(v["RDEPENDS:${PN}"].split()) == {"ecufl-agent", "ecufl-kernels"}
    assert "python3-ecufl" in v["RDEPENDS:${PN}-python"].split()


@pytest.mark.parametrize("machine", ["imx6qdlsabresd"])
def test_readme_names_machine_and_esdk(machine):
    text = (LAYER / "README.md").read_text()
    assert machine in text and "meta-freescale" in text and "environment-setup-" in text
    assert "CMAKE_TOOLCHAIN_FILE" in text

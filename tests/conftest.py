"""Shared fixtures. MNIST comes from ECUFL_DATA (CI points it at ../shared/data/mnist)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def ecufl_cmd() -> list[str]:
    exe = BIN / "ecufl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ecufl"]


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    d = os.environ.get("ECUFL_DATA")
    if not d:
        pytest.fail("set ECUFL_DATA to a directory with the MNIST files (CI sets it)")
    return Path(d)


@pytest.fixture(scope="session")
def mnist_train(mnist_dir):
    from ecufl import data

    return data.load("train", mnist_dir)


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    from ecufl import data

    return data.load("test", mnist_dir)

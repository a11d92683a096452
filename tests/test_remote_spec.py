"""Kernel `remote:NODE`: the part after ':' names the board whose agent trains (not a dtype), and
the kernel finds that board's endpoint in ECUFL_REMOTE_AGENT (one endpoint file, or a folder of
NODE.json), refusing an endpoint of another board. No agent runs here: the connection is opened
only by `train` (the agent itself is exercised in test_deploy_agent*.py and test_deploy_e2e.py)."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from ecufl.client import task
from ecufl.kernels import init_params, split_spec
from ecufl.scenarios.schema import check_kernel


def test_split_spec_reads_a_board_after_remote_and_a_dtype_after_others():
    assert split_spec("remote:b3") == ("remote", None, "b3")
    assert split_spec("remote") == ("remote", None, None)
    assert split_spec("c:float32") == ("c", "float32", None)
    assert split_spec("numpy") == ("numpy", None, None)


def test_identity_carries_the_board_of_remote():
    ident = task.identity({"partition-id": 1, "num-partitions": 2, "kernel": "remote:b2"}, {"num-partitions": 2})
    assert (ident.kernel, ident.dtype, ident.agent) == ("remote", None, "b2")


def test_scenario_accepts_remote_node_and_still_checks_dtypes():
    assert check_kernel("remote:b3") == "remote:b3"
    with pytest.raises(ValueError, match="float32 or float64"):
        check_kernel("c:b3")


@pytest.fixture
def remote(tmp_path, monkeypatch):
    folder = tmp_path / "gateway"
    folder.mkdir()
    for i, board in enumerate(["b1", "b2"]):
        (folder / f"{board}.json").write_text(json.dumps(
            {"node": board, "address": f"10.0.0.{i + 1}:7443", "ca": "ca.pem", "cert": "c.pem", "key": "k.pem"}))
    (folder / "state.json").write_text("{}")
    monkeypatch.setenv("ECUFL_REMOTE_AGENT", str(folder))
    import ecufl.kernels.remote as remote

    yield importlib.reload(remote), folder
    sys.modules.pop("ecufl.kernels.remote", None)  # loaded only while an agent is configured


def test_remote_node_picks_that_boards_endpoint_from_a_folder(remote):
    mod, _ = remote
    params = init_params([784, 4, 10], 1, dtype="float32")
    k = mod.RemoteAgentKernel(params, agent="b2")
    assert k.describe() == {"agent": "b2", "address": "10.0.0.2:7443"}
    with pytest.raises(mod.AgentError, match=r"kernel remote:b9: no endpoint .*b9\.json \(boards here: b1, b2\)"):
        mod.RemoteAgentKernel(params, agent="b9")
    with pytest.raises(mod.AgentError, match="is a folder of boards: name one with kernel remote:NODE"):
        mod.RemoteAgentKernel(params)


def test_remote_node_must_match_a_single_endpoint_file(remote, monkeypatch):
    mod, folder = remote
    monkeypatch.setenv("ECUFL_REMOTE_AGENT", str(folder / "b1.json"))
    params = init_params([784, 4, 10], 1, dtype="float32")
    assert mod.RemoteAgentKernel(params).describe()["agent"] == "b1"  # plain `remote`: the file's board
    assert mod.RemoteAgentKernel(params, agent="b1").describe()["agent"] == "b1"
    with pytest.raises(mod.AgentError, match=r"kernel remote:b2: this SuperNode's agent endpoint .* is board 'b1'"):
        mod.RemoteAgentKernel(params, agent="b2")

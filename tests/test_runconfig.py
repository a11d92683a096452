"""The run's settings: one flat set of keys (ecufl.runconfig), which are also the Flower App's
``[tool.flwr.app.config]`` in pyproject.toml and what a scenario file becomes."""

from __future__ import annotations

import tomllib

import pytest

from conftest import ROOT
from ecufl.runconfig import KEYS, RunConfig, RunConfigError, defaults
from ecufl.scenarios.schema import load


def test_pyproject_holds_every_key_with_its_default():
    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["config"] == defaults()
    assert set(app["config"]) == set(KEYS.values())
    assert app["components"] == {"serverapp": "ecufl.server.server_app:app",
                                 "clientapp": "ecufl.client.client_app:app"}


def test_every_key_is_documented_in_the_module():
    import ecufl.runconfig as rc

    for key in KEYS.values():
        assert f"\n    {key} " in rc.__doc__, key


@pytest.mark.parametrize("name", ["quickstart", "kernel-shootout", "noniid", "sim-100", "imx6-fleet"])
def test_a_scenario_round_trips_through_the_flat_keys(name):
    sc = load(ROOT / "scenarios" / f"{name}.toml")
    flat = sc.run_config()
    assert set(flat) == set(KEYS.values())
    assert RunConfig.from_flat(flat) == sc.config()
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())  # Flower's value types


@pytest.mark.parametrize("override,message", [
    ({"num-server-rounds": 0}, "num-server-rounds=0: must be at least 1"),
    ({"lr": "fast"}, "lr='fast'"),
    ({"layers": "100,10"}, "must start with 784"),
    ({"resume": "maybe"}, "expected true or false"),
    ({"batch-size": 2.5}, "expected an integer"),
])
def test_bad_values_are_one_line_naming_the_key(override, message):
    with pytest.raises(RunConfigError) as e:
        RunConfig.from_flat(defaults() | override)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_relative_results_dir_is_taken_from_the_workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("ECUFL_WORKDIR", str(tmp_path))
    folder = RunConfig(name="x").folder()
    assert folder.parent == tmp_path / "results" and folder.name.startswith("x-") and folder.is_dir()
    assert RunConfig(run_dir="runs/a").folder() == tmp_path / "runs" / "a"
    assert RunConfig(run_dir=str(tmp_path / "abs")).folder() == tmp_path / "abs"


def test_the_robust_aggregation_defaults_are_the_strategys():
    from ecufl.server import strategy

    cfg = RunConfig()
    assert cfg.aggregator == "fedavg" and set(strategy.AGGREGATORS) == {"fedavg", "median", "trimmed-mean"}
    assert cfg.trim_fraction == strategy.DEFAULT_TRIM_FRACTION
    assert cfg.max_update_norm == strategy.DEFAULT_MAX_UPDATE_NORM_RATIO

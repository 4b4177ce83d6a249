from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, GatewayConfig
from gateway.settings import Settings, SettingsError

MINIMAL: dict[str, Any] = {
    "models": [{"name": "sentiment", "task": "classify", "triton_model": "sentiment"}]
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_config_loads_yaml_with_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "triton: {url: 'triton:8001'}\n"
        "models:\n"
        "  - {name: sentiment, task: classify, triton_model: sst2, version: 2}\n"
        "  - {name: minilm, task: embed, triton_model: minilm}\n",
    )
    config = GatewayConfig.from_yaml(path)
    assert config.triton.url == "triton:8001"
    assert config.server.port == 50051
    assert config.limits.max_inputs_per_request >= 1
    assert [m.name for m in config.models] == ["sentiment", "minilm"]
    assert config.models[0].version == 2 and config.models[1].version is None


def test_config_rejects_unknown_key_and_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - {name: a, tsk: classify, task: embed, triton_model: a}\n")
    with pytest.raises(ConfigError, match=r"models\.0\.tsk") as info:
        GatewayConfig.from_yaml(path)
    assert str(path) in str(info.value)


def test_config_rejects_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="servr"):
        GatewayConfig.from_yaml(write(tmp_path, "servr: {port: 1}\nmodels: []\n"))


def test_config_rejects_bad_task_and_port(tmp_path: Path) -> None:
    text = "server: {port: 70000}\nmodels:\n  - {name: a, task: translate, triton_model: a}\n"
    with pytest.raises(ConfigError) as info:
        GatewayConfig.from_yaml(write(tmp_path, text))
    assert "server.port" in str(info.value)
    assert "models.0.task" in str(info.value)


def test_config_requires_at_least_one_model() -> None:
    with pytest.raises(ConfigError, match="models"):
        GatewayConfig.from_mapping({"models": []})


def test_config_rejects_duplicate_logical_names() -> None:
    models = [
        {"name": "a", "task": "embed", "triton_model": "x"},
        {"name": "a", "task": "classify", "triton_model": "y"},
    ]
    with pytest.raises(ConfigError, match=r"models\.1\.name 'a' repeats models\.0\.name"):
        GatewayConfig.from_mapping({"models": models})


def test_config_reports_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        GatewayConfig.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        GatewayConfig.from_yaml(write(tmp_path, "models: [\n"))
    with pytest.raises(ConfigError, match="mapping"):
        GatewayConfig.from_yaml(write(tmp_path, "- a\n"))


def test_config_overrides_are_validated() -> None:
    config = GatewayConfig.from_mapping(MINIMAL)
    changed = config.with_overrides({"server": {"port": 0}, "triton": {"url": "h:1"}})
    assert changed.server.port == 0 and changed.triton.url == "h:1"
    assert config.server.port == 50051  # the original is untouched
    with pytest.raises(ConfigError, match=r"server\.prt"):
        config.with_overrides({"server": {"prt": 1}})


def test_settings_read_environment_overrides() -> None:
    env = {"LMFORGE_TRITON_URL": "t:9", "LMFORGE_GATEWAY_PORT": "6000", "OTHER": "x"}
    settings = Settings.from_env(env)
    config = GatewayConfig.from_mapping(MINIMAL).with_overrides(settings.config_overrides())
    assert config.triton.url == "t:9"
    assert config.server.port == 6000


def test_settings_reject_non_integer_port() -> None:
    with pytest.raises(SettingsError, match="LMFORGE_GATEWAY_PORT"):
        Settings.from_env({"LMFORGE_GATEWAY_PORT": "http"})

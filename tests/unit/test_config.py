"""The configuration: documented defaults, file/env precedence, librdkafka passthrough, and
what the CLI says (exit code 2, one line naming the field) when the configuration is bad."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamrnn.config import ConfigError, KafkaConfig, Settings, load_settings
from streamrnn.kafka.clients import client_config

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_CONFIG = REPO_ROOT / "config.yaml"


@pytest.fixture(autouse=True)
def _in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory so no ``./config.yaml`` is picked up by accident."""
    monkeypatch.chdir(tmp_path)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- documented defaults -------------------------------------------------------------------


def test_repo_config_yaml_documents_exactly_the_builtin_defaults() -> None:
    # load_settings returns a per-file subclass of Settings, so compare the values.
    assert load_settings(REPO_CONFIG).model_dump() == Settings().model_dump()


def test_without_any_file_the_builtin_defaults_apply() -> None:
    settings = load_settings()
    assert settings.model_dump() == Settings().model_dump()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topics.input == ["metrics"]


def test_empty_file_means_builtin_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.yaml", "")
    assert load_settings(path).model_dump() == Settings().model_dump()


# --- which file ----------------------------------------------------------------------------


def test_config_yaml_in_the_working_directory_is_used_by_default(tmp_path: Path) -> None:
    _write(tmp_path / "config.yaml", "kafka:\n  bootstrap_servers: local-dir:9092\n")
    assert load_settings().kafka.bootstrap_servers == "local-dir:9092"


def test_streamrnn_config_env_var_picks_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "config.yaml", "kafka:\n  bootstrap_servers: local-dir:9092\n")
    chosen = _write(tmp_path / "chosen.yaml", "kafka:\n  bootstrap_servers: from-env-file:9092\n")
    monkeypatch.setenv("STREAMRNN_CONFIG", str(chosen))
    assert load_settings().kafka.bootstrap_servers == "from-env-file:9092"


def test_explicit_path_beats_streamrnn_config_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = _write(tmp_path / "env.yaml", "kafka:\n  bootstrap_servers: env-file:9092\n")
    explicit = _write(tmp_path / "explicit.yaml", "kafka:\n  bootstrap_servers: explicit:9092\n")
    monkeypatch.setenv("STREAMRNN_CONFIG", str(env_file))
    assert load_settings(explicit).kafka.bootstrap_servers == "explicit:9092"


# --- environment overrides -----------------------------------------------------------------


def test_env_var_overrides_a_nested_scalar_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        tmp_path / "c.yaml", "kafka:\n  bootstrap_servers: file:9092\nmodel:\n  hidden_size: 8\n"
    )
    monkeypatch.setenv("STREAMRNN_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("STREAMRNN_MODEL__HIDDEN_SIZE", "32")
    settings = load_settings(path)
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.model.hidden_size == 32


def test_env_var_list_is_given_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMRNN_TOPICS__INPUT", '["a","b"]')
    assert load_settings(REPO_CONFIG).topics.input == ["a", "b"]


def test_env_var_map_merges_key_by_key_into_the_files_client_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        tmp_path / "c.yaml",
        "kafka:\n  client:\n    security.protocol: SASL_SSL\n    sasl.mechanism: SCRAM-SHA-512\n",
    )
    monkeypatch.setenv("STREAMRNN_KAFKA__CLIENT", '{"sasl.password":"x"}')
    assert load_settings(path).kafka.client == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.password": "x",
    }


def test_env_var_consumer_map_keeps_the_files_other_consumer_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMRNN_KAFKA__CONSUMER", '{"fetch.min.bytes": 1}')
    consumer = load_settings(REPO_CONFIG).kafka.consumer
    assert consumer == {**KafkaConfig().consumer, "fetch.min.bytes": 1}
    assert consumer["auto.offset.reset"] == "earliest"


def test_env_var_consumer_map_keeps_the_default_consumer_keys_without_a_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMRNN_KAFKA__CONSUMER", '{"fetch.min.bytes": 1}')
    consumer = load_settings().kafka.consumer
    assert consumer == {**KafkaConfig().consumer, "fetch.min.bytes": 1}


def test_keyword_overrides_beat_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMRNN_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    settings = load_settings(REPO_CONFIG, kafka={"bootstrap_servers": "kw:9092"})
    assert settings.kafka.bootstrap_servers == "kw:9092"


def test_settings_are_frozen() -> None:
    settings = load_settings(REPO_CONFIG)
    with pytest.raises(ValueError, match="frozen"):
        settings.model.hidden_size = 3  # type: ignore[misc]


# --- librdkafka passthrough ----------------------------------------------------------------


@pytest.fixture
def sasl_settings(tmp_path: Path) -> Settings:
    path = _write(
        tmp_path / "sasl.yaml",
        "kafka:\n"
        "  bootstrap_servers: b1:9093,b2:9093\n"
        "  group_id: detectors\n"
        "  client:\n"
        "    security.protocol: SASL_SSL\n"
        "    sasl.mechanism: SCRAM-SHA-512\n"
        "  consumer:\n"
        "    fetch.min.bytes: 10\n"
        "  producer:\n"
        "    linger.ms: 20\n",
    )
    return load_settings(path)


@pytest.mark.parametrize("role", ["consumer", "producer", "admin"])
def test_every_client_gets_the_client_block_and_the_bootstrap_servers(
    sasl_settings: Settings, role: str
) -> None:
    conf = client_config(sasl_settings, role)  # type: ignore[arg-type]
    assert conf["bootstrap.servers"] == "b1:9093,b2:9093"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"


def test_consumer_gets_its_block_the_group_and_no_auto_commit(sasl_settings: Settings) -> None:
    conf = client_config(sasl_settings, "consumer")
    assert conf["group.id"] == "detectors"
    assert conf["enable.auto.commit"] is False
    assert conf["fetch.min.bytes"] == 10
    assert "linger.ms" not in conf


def test_producer_gets_its_block_and_no_consumer_settings(sasl_settings: Settings) -> None:
    conf = client_config(sasl_settings, "producer")
    assert conf["linger.ms"] == 20
    assert "group.id" not in conf
    assert "fetch.min.bytes" not in conf


def test_admin_gets_only_the_shared_settings(sasl_settings: Settings) -> None:
    assert client_config(sasl_settings, "admin") == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
    }


# --- invalid configuration -----------------------------------------------------------------


def test_config_error_names_the_field_in_process(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.yaml", "kafka:\n  bootstrap_server: x\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_server"):
        load_settings(path)


def _run_cli(cwd: Path, config: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "streamrnn", "run", "--config", config],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("yaml_text", "env", "expected"),
    [
        pytest.param(
            "kafka:\n  bootstrap_server: x\n",
            {},
            ["kafka.bootstrap_server", "not permitted"],
            id="unknown-key",
        ),
        pytest.param(
            "model:\n  hidden_size: abc\n",
            {},
            ["model.hidden_size", "integer", "'abc'"],
            id="wrong-type",
        ),
        pytest.param(
            "scoring:\n  alert:\n    warning_threshold: 1.5\n",
            {},
            ["scoring.alert.warning_threshold", "less than or equal to 1", "1.5"],
            id="out-of-range",
        ),
        pytest.param(
            "scoring:\n  alert:\n    warning_threshold: 0.99\n    critical_threshold: 0.9\n",
            {},
            ["scoring.alert.critical_threshold", "must be >= warning_threshold (0.99)", "0.9"],
            id="critical-below-warning",
        ),
        pytest.param(
            "kafka: [unclosed\n  : : x\n",
            {},
            ["bad.yaml", "not valid YAML"],
            id="not-yaml",
        ),
        pytest.param(
            None,
            {},
            ["bad.yaml", "does not exist"],
            id="missing-file",
        ),
        pytest.param(
            "- a\n- b\n",
            {},
            ["bad.yaml", "mapping"],
            id="top-level-not-a-mapping",
        ),
        pytest.param(
            "model:\n  hidden_size: 8\n",
            {"STREAMRNN_MODEL__HIDDEN_SIZE": "abc"},
            ["model.hidden_size", "'abc'", "STREAMRNN_"],
            id="bad-env-scalar",
        ),
        pytest.param(
            "model:\n  hidden_size: 8\n",
            {"STREAMRNN_TOPICS__INPUT": "[not json"},
            ["topics.input", "STREAMRNN_"],
            id="bad-env-json",
        ),
        pytest.param(
            "kafka:\n  consumer:\n    group.id: other\n",
            {},
            ["kafka.consumer", "group.id", "kafka.group_id"],
            id="managed-key",
        ),
    ],
)
def test_invalid_config_exits_2_with_one_line_naming_the_problem(
    tmp_path: Path, yaml_text: str | None, env: dict[str, str], expected: list[str]
) -> None:
    if yaml_text is not None:
        _write(tmp_path / "bad.yaml", yaml_text)
    proc = _run_cli(tmp_path, "bad.yaml", env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamrnn: ")
    for fragment in expected:
        assert fragment in lines[0]
    assert proc.stdout == ""


def test_not_yaml_file_exits_2_with_a_message_naming_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "bad.yaml", "kafka: [unclosed\n  : : x\n")
    proc = _run_cli(tmp_path, "bad.yaml", {})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("streamrnn: config file bad.yaml is not valid YAML")


def test_config_error_never_shows_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "bad.yaml", "kafka:\n  consumer:\n    group.id: other\n")
    monkeypatch.setenv("STREAMRNN_KAFKA__CLIENT", '{"sasl.password": "s3cret"}')
    with pytest.raises(ConfigError, match=r"group\.id") as excinfo:
        load_settings(path)
    assert "s3cret" not in str(excinfo.value)


# --- consume: input bounds --------------------------------------------------------------------


def test_decode_rules_default_to_the_consume_defaults_and_of_carries_every_limit() -> None:
    """A DecodeRules built without the configuration (tests, tools) applies the same limits
    as the daemon's defaults; DecodeRules.of passes each consume setting on."""
    import dataclasses

    from streamrnn.config import ConsumeConfig
    from streamrnn.decode import DecodeRules

    defaults = ConsumeConfig()
    limits = {f.name for f in dataclasses.fields(DecodeRules) if f.init} - {
        "max_bytes",
        "earliest",
        "latest",
        "reject_unknown_fields",
    }
    plain = DecodeRules(max_bytes=1)
    assert {name: getattr(plain, name) for name in limits} == {
        name: getattr(defaults, name) for name in limits
    }

    custom: dict[str, Any] = {
        "max_abs_value": None,
        "max_labels": 3,
        "max_label_key_chars": 4,
        "max_label_value_chars": 5,
        "max_labels_bytes": 6,
    }
    assert set(custom) == limits
    consume = ConsumeConfig(
        max_message_bytes=4096,
        max_future_s=60,
        max_age_s=120,
        reject_unknown_fields=True,
        **custom,
    )
    assert DecodeRules.of(consume, now=1_000.0) == DecodeRules(
        max_bytes=4096, earliest=880.0, latest=1_060.0, reject_unknown_fields=True, **custom
    )
    assert DecodeRules.of(ConsumeConfig(), now=1_000.0).earliest is None


def test_consume_bounds_defaults_and_validation() -> None:
    from streamrnn.config import ConsumeConfig

    consume = ConsumeConfig()
    assert consume.max_abs_value == 1e15
    assert (consume.max_labels, consume.max_label_key_chars) == (32, 128)
    assert (consume.max_label_value_chars, consume.max_labels_bytes) == (1024, 4096)
    assert ConsumeConfig(max_abs_value=None).max_abs_value is None
    for bad in (
        {"max_abs_value": 0},
        {"max_labels": -1},
        {"max_label_key_chars": 0},
        {"max_label_value_chars": 0},
        {"max_labels_bytes": 1},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ConsumeConfig(**bad)


def test_consume_bounds_can_be_set_in_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.yaml", "consume:\n  max_abs_value: null\n  max_labels_bytes: 8192\n"
    )
    consume = load_settings(path).consume
    assert consume.max_abs_value is None and consume.max_labels_bytes == 8192

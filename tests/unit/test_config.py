"""StreamConfig and what is derived from each setting's one declaration: the
environment reading, the checks and their messages, the masking of secrets,
the ``stream-hub`` flags, the README table, ``ENVIRONMENT`` and the warning
about unknown ``STREAM_HUB_*`` variables. Pure: no sockets, threads or sleeps."""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import re
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from stream_hub.config import SETTINGS, StreamConfig, environment, is_production, settings
from stream_hub.config.fields import mask_url
from stream_hub.config.settings import OTHER_VARIABLES, warn_unknown_variables
from stream_hub.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[2]
VARIABLES = {name: declared.variable for name, declared in SETTINGS.items()}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No STREAM_HUB_* or ENVIRONMENT from the shell, and unknown-variable
    warnings as in a fresh process."""
    for key in list(os.environ):
        # (STREAM_HUB_HOME stays: the tests' own data directory, never the real one.)
        if (key.startswith("STREAM_HUB_") and key != "STREAM_HUB_HOME") or key == "ENVIRONMENT":
            monkeypatch.delenv(key)
    monkeypatch.setattr(settings, "_warned", set())
    yield


def env_text(value: Any) -> str:
    """How a value is written in a variable."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type ``hint`` (the types StreamConfig uses)."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, float)
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


# -- defaults and the declarations --------------------------------------------------------


def test_defaults() -> None:
    cfg = StreamConfig()
    assert (cfg.host, cfg.sse_port, cfg.ws_port, cfg.rest_port) == ("127.0.0.1", 8888, 8889, 8890)
    assert cfg.history_size == 10_000 and cfg.heartbeat_interval == 15.0
    assert cfg.port_conflict == "auto" and cfg.admin_token is None and cfg.read_token is None
    assert cfg.cors_origins == () and cfg.ws_origins is None and cfg.allowed_hosts is None
    assert cfg.store is None and cfg.backend is None and cfg.system_metrics is None
    assert cfg.namespace == "stream_hub" and cfg.replica is True
    assert cfg.max_prometheus_series == 1000
    assert {name: getattr(cfg, name) for name in SETTINGS} == {n: s.default for n, s in SETTINGS.items()}


def test_every_dataclass_field_is_declared_once_with_a_variable_and_help() -> None:
    import dataclasses

    assert [f.name for f in dataclasses.fields(StreamConfig)] == list(SETTINGS)
    assert len(set(VARIABLES.values())) == len(VARIABLES)
    for name, declared in SETTINGS.items():
        assert declared.variable == "STREAM_HUB_" + name.upper()
        assert declared.help and declared.help[-1] not in ".;", name
    assert not set(OTHER_VARIABLES) & set(VARIABLES.values())


def test_each_annotation_agrees_with_its_declaration() -> None:
    hints = typing.get_type_hints(StreamConfig)
    for name, declared in SETTINGS.items():
        default = declared.check(declared.default)
        assert conforms(default, hints[name]), (name, default, hints[name])
        # What the variable's text gives is of the annotated type too.
        assert conforms(declared.read({declared.variable: env_text(default)}), hints[name]), name


# -- reading the environment --------------------------------------------------------------


def test_the_store_variable_unset_means_the_default_store_and_empty_or_off_means_none() -> None:
    store = SETTINGS["store"]
    assert store.read({}) is None  # the default store under STREAM_HUB_HOME
    for off in ("", "off", "OFF", "false", "no", "0", "  "):
        assert store.read({"STREAM_HUB_STORE": off}) is False, off
    assert store.read({"STREAM_HUB_STORE": "/tmp/x.db"}) == "/tmp/x.db"
    assert StreamConfig(store=False).store is False
    assert StreamConfig(store=True).store is None  # "a store, please": the default one
    with pytest.raises(ConfigError, match=r"store.*None \(the default store\) or False"):
        StreamConfig(store=3)  # type: ignore[arg-type]


def test_store_max_bytes_is_at_least_a_mebibyte() -> None:
    assert StreamConfig(store_max_bytes=1 << 20).store_max_bytes == 1 << 20
    assert SETTINGS["store_max_bytes"].read({"STREAM_HUB_STORE_MAX_BYTES": "2147483648"}) == 1 << 31
    with pytest.raises(ConfigError, match="store_max_bytes"):
        StreamConfig(store_max_bytes=1000)


def test_a_variable_written_as_its_default_reads_back_the_default() -> None:
    for name, declared in SETTINGS.items():
        if name == "store":
            continue  # its default (the default store) is an unset variable: see the next test
        assert declared.read({declared.variable: env_text(declared.default)}) == declared.default, name


@pytest.mark.parametrize(
    ("variable", "text", "field", "expected"),
    [
        ("STREAM_HUB_HOST", " ::1 ", "host", "::1"),
        ("STREAM_HUB_HOST", "[::1]", "host", "::1"),
        ("STREAM_HUB_SSE_PORT", " 9000\n", "sse_port", 9000),
        ("STREAM_HUB_REST_PORT", "0", "rest_port", 0),
        ("STREAM_HUB_HISTORY_SIZE", "500", "history_size", 500),
        ("STREAM_HUB_HEARTBEAT_INTERVAL", "2.5", "heartbeat_interval", 2.5),
        ("STREAM_HUB_SEND_TIMEOUT", "3", "send_timeout", 3.0),
        ("STREAM_HUB_ADMIN_TOKEN", "s3cret-s3cret-s3cret", "admin_token", "s3cret-s3cret-s3cret"),
        ("STREAM_HUB_READ_TOKEN", "", "read_token", None),
        ("STREAM_HUB_PORT_CONFLICT", "next", "port_conflict", "next"),
        ("STREAM_HUB_STORE", "", "store", False),  # empty: no store, as in v2
        ("STREAM_HUB_STORE_MAX_EVENTS", "", "store_max_events", None),
        ("STREAM_HUB_STORE_MAX_EVENTS", "1000", "store_max_events", 1000),
        ("STREAM_HUB_STORE_MAX_DAYS", "1.5", "store_max_days", 1.5),
        ("STREAM_HUB_BACKEND", "rediss://h:6380/1", "backend", "rediss://h:6380/1"),
        ("STREAM_HUB_BACKEND", "", "backend", None),
        ("STREAM_HUB_NAMESPACE", "team:a.b-c_d", "namespace", "team:a.b-c_d"),
        ("STREAM_HUB_REPLICA", "Off", "replica", False),
        ("STREAM_HUB_REPLICA", "YES", "replica", True),
        ("STREAM_HUB_SYSTEM_METRICS", "true", "system_metrics", 5.0),
        ("STREAM_HUB_SYSTEM_METRICS", "0", "system_metrics", None),
        ("STREAM_HUB_SYSTEM_METRICS", "", "system_metrics", None),
        ("STREAM_HUB_SYSTEM_METRICS", "2.5", "system_metrics", 2.5),
        ("STREAM_HUB_CORS_ORIGINS", "http://a, http://b,,", "cors_origins", ("http://a", "http://b")),
        ("STREAM_HUB_CORS_ORIGINS", "", "cors_origins", ()),
        ("STREAM_HUB_WS_ORIGINS", "", "ws_origins", None),
        ("STREAM_HUB_WS_ORIGINS", "*", "ws_origins", ("*",)),
        ("STREAM_HUB_ALLOWED_HOSTS", "Example.COM,box", "allowed_hosts", ("example.com", "box")),
    ],
)
def test_each_kind_is_read_from_the_text_of_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, field: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, text)
    value = getattr(StreamConfig(), field)
    assert value == expected and type(value) is type(expected)


def test_a_store_path_from_the_environment_is_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STREAM_HUB_STORE", "runs.db")
    assert StreamConfig().store == str(tmp_path / "runs.db")


@pytest.mark.parametrize(
    ("variable", "text", "field", "reason"),
    [
        ("STREAM_HUB_SSE_PORT", "x", "sse_port", "is not an integer"),
        ("STREAM_HUB_HISTORY_SIZE", "lots", "history_size", "is not an integer"),
        ("STREAM_HUB_HEARTBEAT_INTERVAL", "soon", "heartbeat_interval", "is not a number"),
        ("STREAM_HUB_STORE_MAX_EVENTS", "1e3", "store_max_events", "is not an integer"),
        ("STREAM_HUB_STORE_MAX_DAYS", "week", "store_max_days", "is not a number of days"),
        ("STREAM_HUB_REPLICA", "maybe", "replica", "is not a boolean (true/false)"),
        ("STREAM_HUB_SYSTEM_METRICS", "often", "system_metrics", "is not a number of seconds or a boolean"),
    ],
)
def test_unreadable_text_names_the_field_and_quotes_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, field: str, reason: str
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(ConfigError) as info:
        StreamConfig()
    assert info.value.field == field
    assert str(info.value) == f"StreamConfig.{field}: {variable}={text!r} {reason}"


@pytest.mark.parametrize(
    ("variable", "text", "field", "accepted"),
    [
        ("STREAM_HUB_MAX_CLIENTS", "-1", "max_clients", "an integer from 1 to 1 000 000"),
        ("STREAM_HUB_PORT_CONFLICT", "whatever", "port_conflict", "expected one of 'auto', 'join'"),
        ("STREAM_HUB_SERIES_POINTS", "1", "series_points", "an integer from 16 to 1 000 000"),
        ("STREAM_HUB_HOST", "no such host!", "host", "an IP address or host name"),
        ("STREAM_HUB_WS_PORT", "70000", "ws_port", "a TCP port 0-65535 (0 = any free port)"),
    ],
)
def test_a_readable_but_bad_value_from_the_environment_names_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, field: str, accepted: str
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(ConfigError, match=f"^StreamConfig.{field}: .*{re.escape(accepted)}") as info:
        StreamConfig()
    assert info.value.field == field


def test_a_field_given_wins_over_its_variable_which_wins_over_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAM_HUB_SSE_PORT", "9000")
    monkeypatch.setenv("STREAM_HUB_ADMIN_TOKEN", "from-env-0123456789")
    assert StreamConfig().sse_port == 9000
    assert StreamConfig(sse_port=9100).sse_port == 9100
    assert StreamConfig(admin_token=None).admin_token is None  # None given is a value, not "unset"
    assert StreamConfig().ws_port == 8889
    # A bad variable of a field given is never read.
    monkeypatch.setenv("STREAM_HUB_HISTORY_SIZE", "lots")
    assert StreamConfig(history_size=5).history_size == 5


@given(port=st.integers(0, 65535), pad=st.sampled_from(["", " ", "\t", "\n "]))
def test_any_port_reads_back_from_its_text(port: int, pad: str) -> None:
    declared = SETTINGS["sse_port"]
    assert declared.read({declared.variable: f"{pad}{port}{pad}"}) == port


@given(port=st.one_of(st.integers(max_value=-1), st.integers(min_value=65536)))
def test_any_port_out_of_range_is_refused_naming_the_field(port: int) -> None:
    with pytest.raises(ConfigError, match=r"^StreamConfig\.rest_port: expected a TCP port") as info:
        StreamConfig(rest_port=port)
    assert info.value.field == "rest_port"


@given(value=st.floats(min_value=1e-6, max_value=1e9, allow_nan=False))
def test_any_positive_number_of_seconds_reads_back_from_its_text(value: float) -> None:
    declared = SETTINGS["handshake_timeout"]
    assert declared.read({declared.variable: repr(value)}) == value


@given(
    origins=st.lists(
        st.text(st.characters(blacklist_characters=",", blacklist_categories=["Cs", "Cc", "Zs"]), min_size=1),
        max_size=5,
    )
)
def test_any_list_of_origins_reads_back_from_its_comma_separated_text(origins: list[str]) -> None:
    declared = SETTINGS["cors_origins"]
    assert declared.read({declared.variable: ", ".join(origins)}) == tuple(o.strip() for o in origins)


@given(text=st.text(st.characters(blacklist_categories=["Cs"]), max_size=20))
@example(text="~\x00")  # a home lookup of a NUL byte: ValueError from expanduser
def test_no_text_of_any_variable_escapes_as_anything_but_a_config_error(text: str) -> None:
    for declared in SETTINGS.values():
        try:
            declared.read({declared.variable: text})
        except ConfigError as exc:
            assert exc.field == declared.name


# -- checks of values given in code ---------------------------------------------------------


def test_every_field_refuses_a_value_of_no_kind_naming_itself() -> None:
    for name in SETTINGS:
        with pytest.raises(ConfigError) as info:
            StreamConfig(**{name: object()})
        assert info.value.field == name and str(info.value).startswith(f"StreamConfig.{name}: ")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sse_port": -1}, "sse_port: expected a TCP port 0-65535 (0 = any free port), got -1"),
        ({"history_size": True}, "history_size: expected an integer from 1 to 10 000 000, got True"),
        ({"max_body_size": 10}, "max_body_size: expected a size in bytes from 1024 to 2**31, got 10"),
        ({"heartbeat_interval": "1"}, "heartbeat_interval: expected a number of seconds, got '1'"),
        ({"shutdown_timeout": float("inf")}, "shutdown_timeout: expected a positive number of seconds"),
        ({"admin_token": ""}, "admin_token: expected a secret of at least 16 characters (or None), got 0"),
        (
            {"read_token": "s3cret"},
            "read_token: expected a secret of at least 16 characters (or None), got 6",
        ),
        ({"publish_token": 12345678901234567}, "publish_token: expected a secret of at least 16 characters"),
        (
            {"backend": "redis://"},
            "backend: expected a redis:// or rediss:// URL (or None), got 'redis://': it names no",
        ),
        (
            {"backend": "redis://:pw@/0"},
            "backend: expected a redis:// or rediss:// URL (or None), got 'redis://:***@/0'",
        ),
        (
            {"backend": "rediss://h:port/0"},
            "backend: expected a redis:// or rediss:// URL (or None), got 'rediss://h:port/0': ",
        ),
        (
            {"backend": "redis://h:99999"},
            "backend: expected a redis:// or rediss:// URL (or None), got 'redis://h:99999': ",
        ),
        (
            {"backend": "redis://h:6379/zero"},
            "backend: expected a redis:// or rediss:// URL (or None), got 'redis://h:6379/zero': the",
        ),
        (
            {"store": "/proc/self/runs.db"},
            "store: expected the path of a SQLite file on a real file system, got '/proc/self/runs.db'",
        ),
        ({"store": "/sys/runs.db"}, "store: expected the path of a SQLite file on a real file system"),
        ({"store": "/dev/runs.db"}, "store: expected the path of a SQLite file on a real file system"),
        (
            {"store": "a\x00b"},
            "store: expected the path of a SQLite file (or None), got 'a\\x00b': a NUL byte",
        ),
        ({"rest_port": 8888}, "rest_port: port 8888 is also sse_port; each transport needs its own port"),
        ({"sse_port": 9000, "ws_port": 9000}, "ws_port: port 9000 is also sse_port; each transport"),
        ({"max_runs": 0}, "max_runs: expected an integer from 1 to 10 000 000, got 0"),
        ({"port_conflict": "sometimes"}, "port_conflict: expected one of 'auto', 'join', 'fail', 'free'"),
        ({"store": " "}, "store: expected the path of a SQLite file (or None)"),
        ({"store_max_events": 0}, "store_max_events: expected a number of events (at least 1)"),
        ({"store_max_days": -1}, "store_max_days: expected a positive number of days, or None"),
        (
            {"backend": "http://u:pw@h"},
            "backend: expected a redis:// or rediss:// URL (or None), got 'http://u:***@h'",
        ),
        ({"replica": "yes"}, "replica: expected True (publish into the backend and serve it) or False"),
        ({"namespace": "a b"}, "namespace: expected a short name of letters, digits, '_-.:'"),
        ({"system_metrics": -1}, "system_metrics: expected True, False/None or an interval in seconds"),
        ({"allowed_hosts": [""]}, "allowed_hosts: expected a list of host names"),
        ({"cors_origins": None}, "cors_origins: expected a list of origin strings"),
        ({"max_prometheus_series": -1}, "max_prometheus_series: expected an integer from 0 (no training"),
    ],
)
def test_bad_values_are_refused_with_what_is_accepted(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        StreamConfig(**changes)
    assert str(info.value).startswith(f"StreamConfig.{message}")


def test_values_are_kept_normalized() -> None:
    cfg = StreamConfig(
        heartbeat_interval=2,
        system_metrics=True,
        cors_origins=["http://a "],
        allowed_hosts="Box.Example",
        host=" [::1] ",
    )
    assert cfg.heartbeat_interval == 2.0 and isinstance(cfg.heartbeat_interval, float)
    assert cfg.system_metrics == 5.0 and StreamConfig(system_metrics=False).system_metrics is None
    assert cfg.cors_origins == ("http://a",) and cfg.allowed_hosts == ("box.example",)
    assert cfg.host == "::1"


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_are_masked_in_to_dict_and_repr() -> None:
    cfg = StreamConfig(
        admin_token="adm-s3cret-0123456789",
        read_token="read-s3cret-0123456789",
        publish_token="pub-s3cret-0123456789",
        backend="redis://user:redis-s3cret@h:6379/0",
    )
    shown = cfg.to_dict()
    assert shown["admin_token"] == shown["read_token"] == shown["publish_token"] == "***"
    assert shown["backend"] == "redis://user:***@h:6379/0"
    assert "s3cret-s3cret-s3cret" not in repr(cfg) + str(shown)
    assert repr(cfg).startswith("StreamConfig(host='127.0.0.1', sse_port=8888,")
    assert StreamConfig().to_dict()["admin_token"] is None
    assert shown["cors_origins"] == [] and set(shown) == set(SETTINGS)
    assert {name for name, s in SETTINGS.items() if s.secret} == {
        "admin_token",
        "read_token",
        "publish_token",
        "backend",
        "alert_webhook",
    }


def test_the_alert_webhook_is_an_http_url_kept_secret() -> None:
    url = "https://hooks.example.com/services/T000/B000/s3cretpath"
    cfg = StreamConfig(alert_webhook=url)
    assert cfg.alert_webhook == url and StreamConfig().alert_webhook is None
    assert cfg.to_dict()["alert_webhook"] == "***" and "s3cretpath" not in repr(cfg)
    for bad in ("ftp://h/x", "hooks.example.com/x", "https:///nohost", "http://h:99999/x", 42):
        with pytest.raises(ConfigError, match="alert_webhook") as caught:
            StreamConfig(alert_webhook=bad)
        assert "s3cret" not in str(caught.value)
    with pytest.raises(ConfigError, match="http:// or https://") as caught:
        StreamConfig(alert_webhook="htps://hooks.example.com/services/s3cretpath")
    assert "s3cretpath" not in str(caught.value)


@given(password=st.text("ABCDEFGHJKLMNPQRSTUVWXYZ!$&*+", min_size=6, max_size=30))
def test_no_password_of_a_backend_url_is_shown(password: str) -> None:
    for url in (f"redis://:{password}@redis.example:6379/0", f"rediss://me:{password}@redis.example/1"):
        assert password not in mask_url(url)
        assert password not in repr(StreamConfig(backend=url))


# -- replace, reading, from_mapping, differences ----------------------------------------------


def test_replace_changes_and_checks_some_fields_and_reads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = StreamConfig(sse_port=9000)
    monkeypatch.setenv("STREAM_HUB_WS_PORT", "9999")  # set after: a copy keeps the original's values
    copy = cfg.replace(history_size=5)
    assert (copy.sse_port, copy.ws_port, copy.history_size) == (9000, 8889, 5)
    assert cfg.history_size == 10_000
    assert cfg.differences(copy) == ["history_size"] and copy.differences(copy) == []
    with pytest.raises(ConfigError, match="history_size"):
        cfg.replace(history_size=0)
    with pytest.raises(ConfigError, match=r"^StreamConfig\.histroy_size: no such field"):
        cfg.replace(histroy_size=5)


def test_reading_reads_only_the_fields_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_HUB_HISTORY_SIZE", "lots")
    monkeypatch.setenv("STREAM_HUB_REST_PORT", "9001")
    monkeypatch.setenv("STREAM_HUB_SSE_PORT", "9002")
    cfg = StreamConfig.reading(["rest_port"], host="::1")
    assert (cfg.rest_port, cfg.sse_port, cfg.history_size, cfg.host) == (9001, 8888, 10_000, "::1")
    with pytest.raises(ConfigError, match="history_size"):
        StreamConfig.reading(["history_size"])
    assert StreamConfig.reading([], rest_port=1).rest_port == 1


def test_from_mapping_names_an_unknown_key_and_lists_the_known_ones() -> None:
    assert StreamConfig.from_mapping({"sse_port": 1}).sse_port == 1
    with pytest.raises(ConfigError, match=r"^StreamConfig\.sse: no such field; known fields: .*sse_port"):
        StreamConfig.from_mapping({"sse": 1})


# -- variables that are not settings ---------------------------------------------------------


def test_an_unknown_variable_is_warned_about_once_naming_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STREAM_HUB_READTOKEN", "t")
    monkeypatch.setenv("STREAM_HUB_REQUIRE_ALL", "1")  # legitimate, not a setting
    with caplog.at_level(logging.WARNING, logger="stream_hub.config"):
        cfg = StreamConfig()
        StreamConfig()
    assert cfg.read_token is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "STREAM_HUB_READTOKEN is not a stream_hub setting and is ignored; did you mean STREAM_HUB_READ_TOKEN?"
    ]


def test_the_warning_never_raises_and_says_where_the_settings_are(caplog: pytest.LogCaptureFixture) -> None:
    environ: Mapping[str, str] = {"STREAM_HUB_ZZZZZZZZZZZ": "1", "STREAM_HUB_SSE_PORT": "x", "HOME": "/"}
    with caplog.at_level(logging.WARNING, logger="stream_hub.config"):
        warn_unknown_variables(SETTINGS.values(), environ)
    (record,) = caplog.records
    assert "STREAM_HUB_ZZZZZZZZZZZ is not a stream_hub setting" in record.getMessage()
    assert "README" in record.getMessage()


def test_environment_is_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_hub.ports.policy import is_production as policy_is_production

    assert environment() == "development" and not is_production() and not policy_is_production()
    monkeypatch.setenv("ENVIRONMENT", " Production ")
    assert environment() == "production" and is_production() and policy_is_production()
    monkeypatch.setenv("ENVIRONMENT", "staging")
    assert not is_production()
    assert is_production("PRODUCTION") and not is_production("") and not policy_is_production("dev")


# -- what is derived: the CLI flags and the README table ----------------------------------------


def _subcommand(name: str) -> argparse.ArgumentParser:
    from stream_hub.cli import _build_parser

    parser = _build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    chosen: argparse.ArgumentParser = sub.choices[name]
    return chosen


def test_the_cli_flags_of_settings_come_from_their_declarations() -> None:
    serve = _subcommand("serve")
    helps = {a.dest: a.help or "" for a in serve._actions}
    for name in ("host", "sse_port", "ws_port", "rest_port", "port_conflict", "namespace", "store"):
        assert SETTINGS[name].variable in helps[name], name
    assert "default 8888" in helps["sse_port"] and "default 127.0.0.1" in helps["host"]
    assert "STREAM_HUB_ADMIN_TOKEN" in helps["token"]
    args = serve.parse_args(["--sse-port", "9000", "--store-max-days", "1.5", "--port-conflict", "next"])
    assert (args.sse_port, args.store_max_days, args.port_conflict) == (9000, 1.5, "next")
    assert serve.parse_args([]).sse_port is None  # unset: the variable, then the default, decide
    status = {a.dest: a.help or "" for a in _subcommand("status")._actions}
    assert "STREAM_HUB_READ_TOKEN" in status["token"] and "store" not in status


def test_a_switch_flag_sets_its_setting_without_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_hub.cli.common import server_config

    serve = _subcommand("serve")
    assert serve.parse_args([]).allow_other_users is None  # unset: the variable, then the default
    assert server_config(serve.parse_args(["--allow-other-users"])).allow_other_users is True
    assert server_config(serve.parse_args([])).allow_other_users is False
    monkeypatch.setenv("STREAM_HUB_ALLOW_OTHER_USERS", "yes")
    assert server_config(serve.parse_args([])).allow_other_users is True
    assert "STREAM_HUB_ALLOW_OTHER_USERS" in {a.dest: a.help for a in serve._actions}["allow_other_users"]


def test_serve_takes_the_alert_webhook_from_a_file_and_warns_about_argv(tmp_path: pathlib.Path) -> None:
    from stream_hub.cli.common import server_config, take_secrets

    serve = _subcommand("serve")
    secret = tmp_path / "webhook"
    secret.write_text("https://hooks.example.com/services/s3cret\n", encoding="utf-8")
    args = serve.parse_args(["--alert-webhook-file", str(secret)])
    assert take_secrets(args) == []
    assert server_config(args).alert_webhook == "https://hooks.example.com/services/s3cret"
    [warning] = take_secrets(serve.parse_args(["--alert-webhook", "https://hooks.example.com/s3cret"]))
    assert "STREAM_HUB_ALERT_WEBHOOK" in warning and "--alert-webhook-file" in warning


def test_the_readme_table_is_the_generated_one() -> None:
    from stream_hub.config import settings_table

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    begin = "<!-- settings table: generated by scripts/settings_table.py, do not edit by hand -->\n"
    end = "\n<!-- end of settings table -->"
    assert begin in readme and end in readme
    in_readme = readme.split(begin, 1)[1].split(end, 1)[0]
    assert in_readme == settings_table(), "run: python scripts/settings_table.py --write"
    for name in SETTINGS:
        assert f"| `{name}` |" in in_readme

"""``STREAM_HUB_REGISTRY``: the registry's own override (before, the only way
to move it was ``XDG_RUNTIME_DIR``, which other programs read too)."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from stream_hub.errors import StreamHubError
from stream_hub.processes.registry import REGISTRY_VARIABLE, Registry, default_directory, registry_variable

from ..processes import PYTHON, child_env, free_ports, run


def test_unset_or_empty_is_the_usual_places(monkeypatch: pytest.MonkeyPatch) -> None:
    assert registry_variable({}) is None and registry_variable({REGISTRY_VARIABLE: "  "}) is None
    monkeypatch.delenv(REGISTRY_VARIABLE, raising=False)
    assert default_directory().name in ("stream_hub", f"stream_hub-{os.geteuid()}") or "registry" in str(
        default_directory()
    )


def test_a_relative_path_is_refused_naming_the_variable() -> None:
    with pytest.raises(StreamHubError, match=f"{REGISTRY_VARIABLE} must be an absolute path"):
        registry_variable({REGISTRY_VARIABLE: "hubs"})
    home = Path(os.path.expanduser("~"))
    assert registry_variable({REGISTRY_VARIABLE: "~/hubs"}) == home / "hubs"


def test_the_named_directory_is_where_hubs_meet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    place = tmp_path / "meet here"
    monkeypatch.setenv(REGISTRY_VARIABLE, str(place))
    assert default_directory() == place
    assert Registry().directory == place
    assert stat.S_IMODE(place.stat().st_mode) == 0o700
    # A process of its own (a process keeps the registry it first found),
    # on configured ports: its hub's record is there.
    sse, ws, rest = free_ports(3)
    code = f"""
        import os, sys
        from stream_hub import StreamConfig, TrainingStreamServer
        config = StreamConfig(sse_port={sse}, ws_port={ws}, rest_port={rest}, store=False)
        server = TrainingStreamServer(config)
        server.start()
        print(sorted(os.listdir(sys.argv[1])))
        server.stop()
    """
    done = run(
        ["-c", textwrap.dedent(code), str(place)],
        prefix=PYTHON,
        env=child_env(**{REGISTRY_VARIABLE: str(place), "STREAM_HUB_PORT_CONFLICT": "auto"}),
    )
    assert done.returncode == 0, done.stderr
    assert ".json" in done.stdout and "hub-" in done.stdout, done.stdout


def test_a_named_place_that_is_not_ours_is_refused_not_passed_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    monkeypatch.setenv(REGISTRY_VARIABLE, str(link))
    with pytest.raises(StreamHubError, match="link"):
        Registry()

"""The data directory (where it is, created owner-only on first use) and the
claims that make a default run name one launch's (stream_hub/home.py)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from stream_hub.errors import StreamHubError
from stream_hub.home import (
    CLAIM_MAX_AGE_S,
    Claim,
    RunClaims,
    default_home,
    ensure_home,
    home_directory,
)

from ..conftest import TEST_HOME, _snapshot

# -- where -----------------------------------------------------------------------------


def test_linux_follows_xdg_data_home_and_ignores_a_relative_one() -> None:
    assert default_home({"HOME": "/h", "XDG_DATA_HOME": "/data"}, "linux") == Path("/data/stream_hub")
    assert default_home({"HOME": "/h"}, "linux") == Path("/h/.local/share/stream_hub")
    assert default_home({"HOME": "/h", "XDG_DATA_HOME": "rel"}, "linux") == Path("/h/.local/share/stream_hub")


def test_macos_and_windows_use_their_own_places() -> None:
    assert default_home({"HOME": "/Users/a"}, "darwin") == Path(
        "/Users/a/Library/Application Support/stream_hub"
    )
    assert default_home({"LOCALAPPDATA": "/appdata", "HOME": "/h"}, "win32") == Path("/appdata/stream_hub")
    assert default_home({"USERPROFILE": "/u"}, "win32") == Path("/u/AppData/Local/stream_hub")


def test_stream_hub_home_wins_and_expands_the_tilde() -> None:
    assert home_directory({"STREAM_HUB_HOME": "/x/y", "HOME": "/h"}) == Path("/x/y")
    assert home_directory({"STREAM_HUB_HOME": "  ", "HOME": "/h"}, "linux") == Path(
        "/h/.local/share/stream_hub"
    )
    assert home_directory({"STREAM_HUB_HOME": "~/sh"}) == Path(os.path.expanduser("~/sh"))


def test_asking_where_creates_nothing_and_first_use_creates_it_owner_only(tmp_path: Path) -> None:
    env = {"STREAM_HUB_HOME": str(tmp_path / "a" / "home")}
    assert home_directory(env) == tmp_path / "a" / "home"
    assert not (tmp_path / "a").exists()
    assert ensure_home(env) == tmp_path / "a" / "home"
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "home").st_mode) == 0o700
    assert ensure_home(env) == tmp_path / "a" / "home"  # again: as it is


def test_a_file_where_the_home_should_be_is_refused_naming_the_variable(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(StreamHubError, match="STREAM_HUB_HOME"):
        ensure_home({"STREAM_HUB_HOME": str(tmp_path / "f")})


def test_the_tests_run_in_a_home_of_their_own() -> None:
    """conftest.py: every test process has its own data directory, never the user's."""
    assert os.environ["STREAM_HUB_HOME"] == str(TEST_HOME)
    assert home_directory() == TEST_HOME != default_home()
    assert TEST_HOME.is_dir()


def test_the_guard_sees_a_write(tmp_path: Path) -> None:
    before = _snapshot(tmp_path)
    (tmp_path / "store.db").write_text("x")
    assert _snapshot(tmp_path) != before
    assert _snapshot(tmp_path / "absent") is None


# -- claims ----------------------------------------------------------------------------


@pytest.fixture
def claims(tmp_path: Path) -> RunClaims:
    return RunClaims.in_home({"STREAM_HUB_HOME": str(tmp_path / "home")})


def test_claims_live_owner_only_under_the_home(claims: RunClaims, tmp_path: Path) -> None:
    assert claims.directory == tmp_path / "home" / "runs" / "claims"
    claims.claim("train-20261129-221503", "host:1:10.00")
    for directory in (tmp_path / "home", tmp_path / "home" / "runs", claims.directory):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(claims.directory / "train-20261129-221503").st_mode) == 0o600


def test_two_launches_get_two_names_and_a_launch_finds_its_own(claims: RunClaims) -> None:
    base = "train-20261129-221503"
    assert claims.claim(base, "host:1:10.00") == base
    assert claims.claim(base, "host:2:10.50") == f"{base}-2"
    assert claims.claim(base, "host:3:10.70") == f"{base}-3"
    # Another rank of the second launch, later: the same name.
    assert claims.claim(base, "host:2:10.50") == f"{base}-2"
    held = claims.holder(f"{base}-2")
    assert held is not None and held.launch == "host:2:10.50" and held.run == f"{base}-2"
    assert claims.holder("nothing") is None


def test_concurrent_claims_give_distinct_names_to_launches_and_one_to_a_launch(claims: RunClaims) -> None:
    base = "train-20261129-221503"
    names: dict[str, list[str]] = {f"launch{i}": [] for i in range(8)}
    start = threading.Barrier(32)

    def claim(launch: str) -> None:
        start.wait()
        names[launch].append(claims.claim(base, launch))

    threads = [threading.Thread(target=claim, args=(f"launch{i % 8}",)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    per_launch = {launch: set(got) for launch, got in names.items()}
    assert all(len(got) == 1 for got in per_launch.values()), per_launch
    assert len({next(iter(got)) for got in per_launch.values()}) == 8
    assert {next(iter(got)) for got in per_launch.values()} == {base, *(f"{base}-{n}" for n in range(2, 9))}


def test_a_claim_still_being_written_is_waited_for(claims: RunClaims) -> None:
    """Another rank of this launch has created the file and not yet written it."""
    base = "train-20261129-221503"
    (claims.directory / base).touch()

    def write() -> None:
        time.sleep(0.05)  # the other rank, an instant later
        (claims.directory / base).write_bytes(Claim(base, "mine", 7, 1.0).to_bytes())

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert claims.claim(base, "mine") == base
    finally:
        writer.join()


def test_an_unreadable_or_planted_claim_is_someone_elses(claims: RunClaims, tmp_path: Path) -> None:
    base = "train-20261129-221503"
    (claims.directory / base).symlink_to(tmp_path / "elsewhere")
    assert claims.claim(base, "mine") == f"{base}-2"
    assert not (tmp_path / "elsewhere").exists()  # never followed


def test_old_claims_are_pruned_and_fresh_ones_kept(claims: RunClaims) -> None:
    now = time.time()
    claims.claim("old-20200101-000000", "a")
    claims.claim("new-20261129-221503", "b")
    stale = now - CLAIM_MAX_AGE_S - 60
    os.utime(claims.directory / "old-20200101-000000", (stale, stale))
    assert claims.prune(now) == 1
    assert sorted(os.listdir(claims.directory)) == ["new-20261129-221503"]
    # A launch that finds its claim refreshes it.
    os.utime(claims.directory / "new-20261129-221503", (stale, stale))
    assert claims.claim("new-20261129-221503", "b", now=stale + 1) == "new-20261129-221503"
    assert claims.prune(now) == 0


def test_a_claim_file_that_is_not_a_claim_reads_as_none() -> None:
    assert Claim.from_bytes(b"") is None
    assert Claim.from_bytes(b"{}") is None
    assert Claim.from_bytes(b'{"run": "r", "launch": "l", "pid": 1, "at": 2}') == Claim("r", "l", 1, 2.0)

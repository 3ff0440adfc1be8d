"""The Redis Streams backend, with a real ``redis-server`` per test: replicas
in their own processes (``stream-hub serve --backend``), publishers in
theirs (``tests/trainer.py`` with ``STREAM_HUB_REPLICA=false``), clients
moving between replicas; Redis killed, restarted empty and paused."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_hub import StreamConfig, TrainingStreamServer

from ..clients import Frame, SSEStream
from ..conftest import free_config, wait_for
from ..processes import PYTHON, Proc, Served, Spawner, child_env
from ..redis_server import RedisServer

TRAINER = Path(__file__).resolve().parent.parent / "trainer.py"


def replica(spawn: Spawner, redis: RedisServer, *args: str) -> Served:
    """A ``stream-hub serve --backend`` of its own (ports 0), once it serves."""
    served = spawn.serve("--backend", redis.url, *args)
    wait_for(lambda: (served.status() or {}).get("backend") == "up", what="the replica reads Redis")
    return served


def publisher(spawn: Spawner, redis: RedisServer, rank: int, steps: int, interval: float) -> Proc:
    """A training process publishing straight into Redis (no replica of its own)."""
    env = child_env(
        STREAM_HUB_BACKEND=redis.url,
        STREAM_HUB_REPLICA="false",
        RANK=str(rank),
        WORLD_SIZE="3",
        TORCHELASTIC_RUN_ID="job42",
    )
    proc = spawn.start(
        [str(TRAINER), "--steps", str(steps), "--interval", str(interval)], env=env, prefix=PYTHON
    )
    ready = json.loads(proc.out.first(timeout=30))
    assert ready["ready"] == "publisher" and ready["ports"] == {}, ready
    return proc


def finished(proc: Proc) -> dict[str, Any]:
    assert proc.wait(60) == 0, proc.err.text[-3000:]
    return dict(json.loads(proc.out.lines[-1]))


def read_frames(stream: SSEStream, until: Any) -> list[Frame]:
    """Frames until ``until(frames)`` says enough (the stream must not end first)."""
    frames: list[Frame] = []
    while not until(frames):
        frame = stream.next()
        assert frame is not None, f"the stream ended after {len(frames)} frames"
        frames.append(frame)
    return frames


def run_ends(frames: list[Frame]) -> int:
    return sum(1 for f in frames if f.event == "run_end")


def assert_whole_job(events: list[dict[str, Any]], steps: int) -> None:
    """Every rank's steps once, seqs 1.. consecutive, one epoch, no gap."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["epoch"] for e in events}) == 1
    assert not [e for e in events if e["type"] == "gap"]
    metric = Counter((e["rank"], e["step"]) for e in events if e["type"] == "metric")
    assert metric == Counter((rank, step) for rank in range(3) for step in range(steps))
    assert {e["run"] for e in events} == {"job42"}


@pytest.mark.parametrize("switch", ["reconnect", "sigkill"])
def test_a_client_moves_between_replicas_and_gets_every_event_once(
    spawn: Spawner, redis_server: RedisServer, switch: str
) -> None:
    """Two replicas, three ranks publishing: a client reads part of the job on
    replica 1, then (it reconnects, or replica 1 is killed) resumes on replica
    2 with its Last-Event-ID, and ends with every event exactly once."""
    first, second = replica(spawn, redis_server), replica(spawn, redis_server)
    steps = 300
    ranks = [publisher(spawn, redis_server, rank, steps, 0.003) for rank in range(3)]
    total = 3 * steps + 3  # three run_end events at exit

    stream = SSEStream(f"http://127.0.0.1:{first.ports['sse']}/events", headers={"Last-Event-ID": "0"})
    try:
        head = read_frames(stream, lambda frames: len(frames) >= total // 2)
    finally:
        stream.close()
    if switch == "sigkill":
        first.signal(signal.SIGKILL)
        first.wait()
    last = head[-1].id
    assert last is not None
    stream = SSEStream(f"http://127.0.0.1:{second.ports['sse']}/events", headers={"Last-Event-ID": last})
    try:
        tail = read_frames(stream, lambda frames: run_ends(head) + run_ends(frames) == 3)
    finally:
        stream.close()
    for proc in ranks:
        assert finished(proc)["role"] == "publisher"

    events = [frame.json for frame in head + tail]
    assert len(events) == total
    assert_whole_job(events, steps)
    # The same event, byte for byte, on the replica that is left.
    replay = httpx.get(f"{second.rest}/api/history", params={"since": 0, "limit": 10_000}, timeout=10).json()
    assert replay["events"] == events
    runs = httpx.get(f"{second.rest}/api/runs", timeout=10).json()["runs"]
    assert [(r["run"], sorted(r["ranks"])) for r in runs] == [("job42", [0, 1, 2])]


def test_redis_losing_its_data_is_a_gap_and_a_new_epoch(redis_server: RedisServer, make_server: Any) -> None:
    """Redis killed and restarted empty: subscribers get a gap (reason epoch),
    then the new epoch from seq 1; publishing goes on; nothing crashes."""
    server: TrainingStreamServer = make_server(backend=redis_server.url, heartbeat_interval=1.0)
    assert server.role == "host"
    for step in range(50):
        assert server.log({"loss": 1.0 / (step + 1)}, step=step, run="r") is None
    wait_for(lambda: server.hub.head >= 50, what="50 events through Redis")
    old_epoch = server.hub.epoch
    stream = SSEStream(f"{server.urls['sse']}/events", headers={"Last-Event-ID": "0"})
    try:
        before = read_frames(stream, lambda frames: len(frames) >= 50)
        redis_server.kill()
        wait_for(lambda: server.status()["backend"] == "down", what="the replica notices Redis is gone")
        for step in range(50, 60):
            server.log({"loss": 0.5}, step=step, run="r")  # waits in the publisher's buffer
        assert server.status()["running"]
        redis_server.start()
        wait_for(lambda: server.status()["backend"] == "up", what="the replica reads Redis again")
        after = read_frames(stream, lambda frames: sum(f.event == "metric" for f in frames) >= 10)
    finally:
        stream.close()
    assert [f.seq for f in before] == list(range(1, 51))
    gap = after[0].json
    assert gap["type"] == "gap" and gap["data"]["reason"] == "epoch", gap
    assert gap["data"]["from_epoch"] == old_epoch
    new_epoch = server.hub.epoch
    assert new_epoch != old_epoch
    metrics = [f.json for f in after if f.event == "metric"]
    assert [e["step"] for e in metrics] == list(range(50, 60))
    assert [e["seq"] for e in metrics] == list(range(1, 11))
    assert {e["epoch"] for e in metrics} == {new_epoch}
    assert server.status()["redis"]["replica"]["epoch_changes"] == 1
    # A client that resumes with the old epoch's seq gets the same news.
    with httpx.Client(timeout=10) as client:
        page = client.get(
            f"{server.urls['rest']}/api/history", params={"since": 50, "epoch": old_epoch}
        ).json()
    assert page["events"][0]["type"] == "gap" and page["epoch"] == new_epoch


def test_redis_paused_never_holds_up_log_and_nothing_is_lost_silently(
    redis_server: RedisServer, make_server: Any
) -> None:
    """Redis SIGSTOPped for 3 s while a training thread logs: log() never
    waits for it, and afterwards every event is in the stream or counted
    as dropped."""
    server: TrainingStreamServer = make_server(backend=redis_server.url)
    slowest = 0.0
    logged = 0
    stop = threading.Event()
    paused = threading.Event()

    def train() -> None:
        nonlocal slowest, logged
        step = 0
        while not stop.is_set():
            started = time.perf_counter()
            server.log({"loss": 1.0, "acc": 0.5}, step=step, run="paused")
            slowest = max(slowest, time.perf_counter() - started)
            logged += 1
            step += 1
            stop.wait(0.001)

    trainer = threading.Thread(target=train)
    trainer.start()
    try:
        wait_for(lambda: server.hub.head >= 100, what="events flowing")
        redis_server.pause()
        paused.wait(3.0)  # Redis stays stopped for 3 s: that is the scenario, not a wait for an event
        redis_server.resume()
        wait_for(lambda: server.status()["backend"] == "up", what="Redis answering again")
    finally:
        stop.set()
        trainer.join(10)
    redis = server.status()["redis"]["publisher"]
    dropped = redis["dropped"] + server.hub.intake.shed
    wait_for(lambda: server.hub.head + dropped >= logged, timeout=30, what="every event in the stream")
    status = server.status()
    assert status["redis"]["publisher"]["sent"] + dropped == logged
    assert server.hub.head == status["redis"]["publisher"]["sent"]
    # The training thread was never held up by Redis: nowhere near the 3 s it was stopped.
    print(f"slowest log() while Redis was stopped: {slowest * 1000:.2f} ms over {logged} calls")
    assert slowest < 1.0, slowest


def test_events_beyond_the_buffer_are_dropped_and_counted(tmp_path: Path, redis_server: RedisServer) -> None:
    """Redis unreachable: the publisher's buffer keeps the newest events,
    counts the ones it drops, and sends the rest once Redis answers."""
    redis_server.kill()
    server = TrainingStreamServer(free_config(backend=redis_server.url, replica=False))
    server._backend.publisher.buffer_events = 2_000  # type: ignore[union-attr]
    server.start()
    try:
        assert server.role == "publisher" and server.ports == {}
        for step in range(10_000):
            assert server.log({"x": float(step)}, step=step, run="buffered") is None
        publisher = server._backend.publisher  # type: ignore[union-attr]
        wait_for(lambda: publisher.dropped >= 8_000, what="the oldest dropped")
        redis_server.start()
        wait_for(lambda: publisher.status()["queued"] == 0, timeout=20, what="the rest sent")
        assert publisher.sent + publisher.dropped + server.hub.intake.shed == 10_000
        with redis_server.client() as client:
            entries = client.xrange("stream_hub:stream")
        steps = [json.loads(b'{"seq":0,' + fields[b"e"])["step"] for _id, fields in entries]
        assert steps == list(range(10_000 - publisher.sent, 10_000))  # the newest, in order
    finally:
        server.stop()


def test_backend_down_keeps_serving_and_says_so(redis_server: RedisServer, make_server: Any) -> None:
    """A replica whose Redis is gone serves what it has: /health is 200 with
    backend down; status and Prometheus say the same; it comes back up."""
    server: TrainingStreamServer = make_server(backend=redis_server.url)
    server.log({"a": 1.0}, step=1, run="r")
    wait_for(lambda: server.hub.head == 1, what="one event through Redis")
    rest = server.urls["rest"]
    assert httpx.get(f"{rest}/health").json()["backend"] == "up"
    redis_server.kill()
    wait_for(lambda: httpx.get(f"{rest}/health").json().get("backend") == "down", what="backend down")
    health = httpx.get(f"{rest}/health")
    assert health.status_code == 200
    assert "stream_hub_backend_up 0.0" in httpx.get(f"{rest}/metrics").text
    assert [e["seq"] for e in httpx.get(f"{rest}/api/history", params={"since": 0}).json()["events"]] == [1]
    redis_server.start()
    wait_for(lambda: httpx.get(f"{rest}/health").json().get("backend") == "up", what="backend up again")
    assert "stream_hub_backend_up 1.0" in httpx.get(f"{rest}/metrics").text


def test_a_password_in_the_url_works_and_is_never_shown(
    tmp_path: Path, make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from ..conftest import need_executable

    caplog.set_level(logging.DEBUG)
    redis = RedisServer(need_executable("redis-server"), tmp_path, password="hunter2-secret").start()
    try:
        server: TrainingStreamServer = make_server(backend=redis.url)
        server.log({"a": 1.0})
        wait_for(lambda: server.hub.head == 1, what="an event through a password-protected Redis")
        status = httpx.get(f"{server.urls['rest']}/api/status").text
        assert "hunter2-secret" not in status and "***" in status
        assert "hunter2-secret" not in repr(server.config) + json.dumps(server.config.to_dict())
        redis.kill()  # the replica and the publisher log that Redis is gone, and where
        server.log({"a": 2.0})
        wait_for(lambda: server.status()["backend"] == "down", what="backend down")
        wait_for(lambda: "buffering events" in caplog.text, what="the publisher's warning")
        assert "127.0.0.1" in caplog.text and "hunter2-secret" not in caplog.text
    finally:
        redis.stop()


def test_rediss_tls_url(tmp_path: Path, make_server: Any) -> None:
    from ..conftest import need_executable
    from ..redis_server import make_tls_files

    tls = make_tls_files(tmp_path, need_executable("openssl"))
    redis = RedisServer(need_executable("redis-server"), tmp_path, tls=tls).start()
    try:
        assert redis.url.startswith("rediss://")
        server: TrainingStreamServer = make_server(backend=redis.url)
        for step in range(20):
            server.log({"a": float(step)}, step=step)
        wait_for(lambda: server.hub.head == 20, what="events through TLS")
        assert server.status()["backend"] == "up"
    finally:
        redis.stop()


def test_namespaces_are_separate_streams(redis_server: RedisServer, make_server: Any) -> None:
    a: TrainingStreamServer = make_server(backend=redis_server.url, namespace="team-a")
    b: TrainingStreamServer = make_server(backend=redis_server.url, namespace="team-b")
    a.log({"x": 1.0}, run="a")
    b.log({"x": 2.0}, run="b")
    b.log({"x": 3.0}, run="b")
    wait_for(lambda: a.hub.head == 1 and b.hub.head == 2, what="each namespace its own seqs")
    assert a.hub.epoch != b.hub.epoch
    assert [r["run"] for r in httpx.get(f"{a.urls['rest']}/api/runs").json()["runs"]] == ["a"]


def test_post_publish_into_a_replica_goes_through_redis(redis_server: RedisServer, make_server: Any) -> None:
    first: TrainingStreamServer = make_server(backend=redis_server.url)
    second: TrainingStreamServer = make_server(backend=redis_server.url)
    answer = httpx.post(
        f"{first.urls['rest']}/api/publish",
        json={"events": [{"type": "note", "data": {"text": "hi"}}, {"type": "metric", "metrics": {"m": 1}}]},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2 and answer.json()["seqs"] is None
    wait_for(lambda: second.hub.head == 2, what="the other replica has them")


def test_backend_config_is_checked() -> None:
    from stream_hub import ConfigError

    with pytest.raises(ConfigError, match="backend"):
        StreamConfig(backend="http://localhost:6379")
    with pytest.raises(ConfigError, match="replica"):
        StreamConfig(replica="yes")  # type: ignore[arg-type]


def test_processes_of_one_machine_still_meet_in_one_local_hub(
    spawn: Spawner, redis_server: RedisServer
) -> None:
    """Two training processes with the same backend and ports: one hosts (a
    replica, publishing for both), the other joins it; Redis gets every
    event of both once."""
    from ..processes import free_ports
    from .test_processes import done, hub_env, release, start

    env = hub_env(free_ports(3), STREAM_HUB_BACKEND=redis_server.url)
    host, host_ready = start(spawn, env, "--steps", "200", "--interval", "0.002", "--run", "a", "--hold")
    joined, joined_ready = start(spawn, env, "--steps", "200", "--interval", "0.002", "--run", "b", "--hold")
    assert (host_ready["ready"], joined_ready["ready"]) == ("host", "joined")
    rest = host_ready["urls"]["rest"]

    def metric_steps() -> Counter[tuple[str, int]]:
        with redis_server.client() as client:
            entries = client.xrange("stream_hub:stream")
        events = [json.loads(b'{"seq":0,' + fields[b"e"]) for _id, fields in entries]
        return Counter((e["run"], e["step"]) for e in events if e["type"] == "metric")

    expected = Counter((run, step) for run in "ab" for step in range(200))
    wait_for(lambda: metric_steps() == expected, timeout=30, what="both processes' events in Redis")
    assert httpx.get(f"{rest}/api/status", timeout=5).json()["backend"] == "up"
    release(joined)
    release(host)
    assert done(joined)["role"] == "joined"
    assert done(host)["role"] == "host"
    assert metric_steps() == expected


def test_a_resume_older_than_the_ring_is_served_from_redis_then_a_gap(
    redis_server: RedisServer, make_server: Any
) -> None:
    """The ring keeps 100 events, Redis more: a resume from seq 10 gets 11.. all
    from the stream, no gap; once Redis has trimmed them too, a gap says how
    many are lost."""
    server: TrainingStreamServer = make_server(backend=redis_server.url, history_size=100)
    for step in range(1000):
        server.log({"x": float(step)}, step=step, run="long")
    wait_for(lambda: server.hub.head == 1000, what="1000 events through Redis")
    assert server.hub.oldest > 500  # the ring has only the newest
    with SSEStream(f"{server.urls['sse']}/events", headers={"Last-Event-ID": "10"}) as stream:
        frames = stream.read_until_seq(1000)
    assert [f.seq for f in frames] == list(range(11, 1001))
    assert all(f.event == "metric" for f in frames)
    page = httpx.get(f"{server.urls['rest']}/api/history", params={"since": 10, "limit": 5}).json()
    assert [e["seq"] for e in page["events"]] == [11, 12, 13, 14, 15]

    with redis_server.client() as client:  # as MAXLEN would, sooner
        client.xtrim("stream_hub:stream", minid="500-0", approximate=False)
    # From another seq than before: what the first resume read is kept for the
    # next client resuming from seq 10 (Hub.backfill_chunk), trimmed or not.
    with SSEStream(f"{server.urls['sse']}/events", headers={"Last-Event-ID": "20"}) as stream:
        frames = stream.read_until_seq(1000)
    gap = frames[0].json
    assert gap["type"] == "gap" and gap["data"]["lost"] == 479, gap
    assert [f.seq for f in frames[1:]] == list(range(500, 1001))


def test_an_append_sent_again_is_taken_once(redis_server: RedisServer) -> None:
    """The append script remembers each publisher's last batch: a retry after
    a lost answer is answered, not appended again."""
    from stream_hub.backend.stream import APPEND, StreamKeys

    keys = StreamKeys("idem")
    with redis_server.client() as client:
        script = client.register_script(APPEND)
        args = ["epoch-1", 1000, 1, 60, b'"ts":1.0,"type":"note","run":"r","step":null,"data":1}']
        key_list = [keys.stream, keys.epoch, keys.seq, keys.source("p1")]
        first = script(keys=key_list, args=args)
        again = script(keys=key_list, args=args)
        other = script(keys=[*key_list[:3], keys.source("p2")], args=args)
        assert first == [b"epoch-1", 1, 1]
        assert again == [b"epoch-1", 0, 0]
        assert other == [b"epoch-1", 2, 2]
        assert client.xlen(keys.stream) == 2


def test_a_replica_starts_while_redis_is_down(redis_server: RedisServer, make_server: Any) -> None:
    """Redis not answering is no reason not to serve: the replica starts,
    says backend down, and follows the stream once Redis is there."""
    redis_server.kill()
    server: TrainingStreamServer = make_server(backend=redis_server.url)
    rest = server.urls["rest"]
    assert httpx.get(f"{rest}/health").json()["backend"] == "down"
    for step in range(5):
        server.log({"a": float(step)}, step=step)  # buffered meanwhile
    redis_server.start()
    wait_for(lambda: server.hub.head == 5, timeout=20, what="the buffered events served once Redis is up")
    assert httpx.get(f"{rest}/health").json()["backend"] == "up"


# -- entries written by someone else ----------------------------------------------------------------

#: Entries in our numbering (the counter taken, the ID ``<seq>-0``) that no
#: publisher of ours writes.
MALFORMED: dict[str, dict[bytes, bytes]] = {
    "not-json": {b"e": b"not json at all"},
    "no-template": {b"x": b"1"},
    "ts-text": {b"e": b'"ts":"soon","type":"metric","run":"r","step":5,"metrics":{"a":1.0}}'},
    "metrics-list": {b"e": b'"ts":1.0,"type":"metric","run":"r","step":5,"metrics":[1,2]}'},
    "metric-text": {b"e": b'"ts":1.0,"type":"metric","run":"r","step":5,"metrics":{"a":"high"}}'},
    "raw-newline": {b"e": b'"ts":1.0,"type":"note",\n"run":"r","step":null,"data":1}'},
    "seq-again": {b"e": b'"ts":1.0,"type":"note","run":"r","step":null,"data":1,"seq":99}'},
}


def numbered_entry(redis: RedisServer, fields: dict[bytes, bytes], namespace: str = "stream_hub") -> int:
    """An entry added the way a publisher adds one (the counter taken, the ID
    ``<seq>-0``), but written by someone else. Returns its seq."""
    with redis.client() as client:
        seq = int(client.incr(f"{namespace}:seq"))
        client.xadd(f"{namespace}:stream", fields, id=f"{seq}-0")
    return seq


def sse_history(server: TrainingStreamServer, last: int) -> list[Frame]:
    with SSEStream(f"{server.urls['sse']}/events", headers={"Last-Event-ID": "0"}) as stream:
        return stream.read_until_seq(last)


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_entry_between_two_good_ones_is_a_gap_not_a_wedge(
    redis_server: RedisServer, make_server: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed entry between two good ones: the replica serves both good
    ones (SSE and REST), the malformed one as a one-event gap (reason
    ``rejected``: the seqs stay consecutive, every replica says the same),
    counts it and warns once; it keeps following the stream."""
    caplog.set_level(logging.WARNING, logger="stream_hub.backend.replica")
    server: TrainingStreamServer = make_server(backend=redis_server.url)
    server.log({"a": 1.0}, step=1, run="r")
    wait_for(lambda: server.hub.head == 1, what="the first good event")
    assert numbered_entry(redis_server, MALFORMED[kind]) == 2
    server.log({"a": 3.0}, step=3, run="r")
    wait_for(lambda: server.hub.head == 3, what="the second good event, past the malformed one")

    frames = sse_history(server, 3)
    assert [(f.seq, f.event) for f in frames] == [(1, "metric"), (2, "gap"), (3, "metric")]
    assert [f.json["step"] for f in (frames[0], frames[2])] == [1, 3]
    gap = frames[1].json
    assert gap["data"]["reason"] == "rejected" and (gap["data"]["from"], gap["data"]["to"]) == (2, 2), gap
    history = httpx.get(f"{server.urls['rest']}/api/history", params={"since": 0}, timeout=10).json()
    assert [e["seq"] for e in history["events"]] == [1, 2, 3]
    assert [e["type"] for e in history["events"]] == ["metric", "gap", "metric"]
    status = server.status()
    assert status["backend"] == "up"
    assert status["redis"]["replica"]["rejected"] == 1
    assert "stream_hub_replica_rejected_total 1.0" in httpx.get(f"{server.urls['rest']}/metrics").text
    assert "Redis at" not in caplog.text  # never reported as Redis not answering
    assert caplog.text.count("rejected") == 1, caplog.text


@pytest.mark.parametrize("type_", ["shutdown", "gap", "error", "status"])
def test_a_reserved_type_from_redis_is_not_relayed(
    redis_server: RedisServer, make_server: Any, type_: str
) -> None:
    """An entry of a type only a hub emits (``shutdown``, ``gap``, ...) written
    into the stream by someone else is never sent to a client: a one-event
    gap takes its seq, and it is counted."""
    server: TrainingStreamServer = make_server(backend=redis_server.url)
    server.log({"a": 1.0}, step=1, run="r")
    wait_for(lambda: server.hub.head == 1, what="the first good event")
    data = b'{"lost":7,"from":1,"to":7,"reason":"fake"}'
    template = b'"ts":1.0,"type":"%s","run":null,"step":null,"data":%s}' % (type_.encode(), data)
    numbered_entry(redis_server, {b"e": template})
    server.log({"a": 3.0}, step=3, run="r")
    wait_for(lambda: server.hub.head == 3, what="the event after the reserved one")

    frames = sse_history(server, 3)
    assert [(f.seq, f.event) for f in frames] == [(1, "metric"), (2, "gap"), (3, "metric")]
    assert frames[1].json["data"]["reason"] == "rejected", frames[1].json
    assert "reserved" in frames[1].json["data"]["error"]
    history = httpx.get(f"{server.urls['rest']}/api/history", params={"since": 0}, timeout=10).json()
    assert [e["type"] for e in history["events"]] == ["metric", "gap", "metric"]
    assert server.status()["redis"]["replica"]["reserved"] == 1


@pytest.mark.parametrize("entry_id", ["18446744073709551615-0", "*", "2-7"])
def test_publishers_survive_an_entry_with_a_huge_id(
    redis_server: RedisServer, make_server: Any, entry_id: str
) -> None:
    """An entry whose ID is past the namespace's counter (the largest ID there
    is, a timestamp ID, a sequence part of its own) does not stop publishers:
    it is removed, a publisher's later events reach a replica under the next
    seqs, and no client ever sees it."""
    replica: TrainingStreamServer = make_server(backend=redis_server.url)
    publisher = TrainingStreamServer(free_config(backend=redis_server.url, replica=False))
    publisher.start()
    try:
        publisher.log({"a": 1.0}, step=1, run="r")
        wait_for(lambda: replica.hub.head == 1, what="the first event")
        note = b'"ts":1.0,"type":"note","run":"x","step":null,"data":1}'
        with redis_server.client() as client:
            client.xadd("stream_hub:stream", {b"e": note}, id=entry_id)
        for step in range(2, 7):
            publisher.log({"a": float(step)}, step=step, run="r")
        wait_for(lambda: replica.hub.head == 6, what="the publisher's later events")
        frames = sse_history(replica, 6)
        assert [(f.seq, f.event, f.json["step"]) for f in frames] == [(s, "metric", s) for s in range(1, 7)]
        assert publisher.status()["redis"]["publisher"]["sent"] == 6
        with redis_server.client() as client:
            ids = [entry[0] for entry in client.xrange("stream_hub:stream")]
        assert ids == [f"{s}-0".encode() for s in range(1, 7)]  # the foreign entry is gone
        assert replica.hub.head == 6
    finally:
        publisher.stop()


def test_a_replica_removes_a_foreign_entry_nobody_publishes_after(
    redis_server: RedisServer, make_server: Any
) -> None:
    """An entry past the counter with no publisher to come: the replica removes
    it itself (it would otherwise read it again and again), counts it, and
    serves what comes next."""
    server: TrainingStreamServer = make_server(backend=redis_server.url)
    server.log({"a": 1.0}, step=1, run="r")
    wait_for(lambda: server.hub.head == 1, what="the first event")
    with redis_server.client() as client:
        client.xadd("stream_hub:stream", {b"e": b"junk"}, id="18446744073709551615-0")
        wait_for(lambda: client.xlen("stream_hub:stream") == 1, what="the replica removes the foreign entry")
    wait_for(lambda: server.status()["redis"]["replica"]["foreign"] == 1, what="counted")
    server.log({"a": 2.0}, step=2, run="r")
    wait_for(lambda: server.hub.head == 2, what="the next event")
    assert [(f.seq, f.event) for f in sse_history(server, 2)] == [(1, "metric"), (2, "metric")]
    assert server.status()["backend"] == "up"


def test_a_counter_lost_while_its_stream_stays_is_a_new_epoch(
    redis_server: RedisServer, make_server: Any
) -> None:
    """The namespace's counter gone (deleted, evicted) while its stream stays:
    the next seqs would be ones already served, so the next append starts a
    new epoch (subscribers get a gap), and publishing goes on."""
    server: TrainingStreamServer = make_server(backend=redis_server.url)
    for step in range(3):
        server.log({"a": float(step)}, step=step, run="r")
    wait_for(lambda: server.hub.head == 3, what="three events")
    old_epoch = server.hub.epoch
    with redis_server.client() as client:
        client.delete("stream_hub:seq")
    server.log({"a": 3.0}, step=3, run="r")
    wait_for(lambda: server.hub.epoch != old_epoch and server.hub.head == 1, what="a new epoch from seq 1")
    frames = sse_history(server, 1)
    assert [(f.seq, f.event, f.json["step"]) for f in frames] == [(1, "metric", 3)]
    assert frames[0].json["epoch"] == server.hub.epoch
    assert server.status()["redis"]["replica"]["epoch_changes"] == 1

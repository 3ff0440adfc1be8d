"""Bad input at volume over REST, while a training thread logs: schemathesis
against the app's own OpenAPI schema, arbitrary ``POST /api/publish``
bodies, arbitrary ``since`` values. (The quick WebSocket and SSE fuzzing is
in ``tests/integration/test_fuzz.py``.)

The invariant: a client error is a 4xx and the server keeps serving; never a
500, never an effect on the training thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
)

from stream_hub import TrainingStreamServer

from ..clients import FUZZ, assert_still_serving, json_values, strict_json, valid_seq

# -- REST: schemathesis against the app's own OpenAPI schema ---------------------------------


@pytest.fixture
def rest_schema(fuzzed: TrainingStreamServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed.urls['rest']}/openapi.json")


schema = schemathesis.pytest.from_fixture("rest_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_rest_api_conforms_to_its_openapi_schema(case: Any) -> None:
    """No 500 anywhere; content types, headers and bodies match what is declared.

    Status-code conformance and "schema-valid request accepted" are not
    checked: the endpoints answer 400/401/403/404/413 that FastAPI's generated
    schema does not list, and ``since`` is declared as any string.
    """
    case.call_and_validate(
        checks=[
            not_a_server_error,
            response_schema_conformance,
            content_type_conformance,
            response_headers_conformance,
        ]
    )


# -- GET /api/history: any since ------------------------------------------------------------


@FUZZ
@given(since=st.text(max_size=25) | st.sampled_from(["²", "١٢", " 5 ", "-1", "9" * 19, "0"]))
def test_rest_history_since_is_200_or_400(fuzzed: TrainingStreamServer, since: str) -> None:
    response = httpx.get(f"{fuzzed.urls['rest']}/api/history", params={"since": since}, timeout=5)
    expected = 200 if valid_seq(since) else 400
    assert response.status_code == expected, (since, response.status_code, response.text[:200])
    strict_json(response.content)


# -- POST /api/publish: arbitrary bodies ---------------------------------------------------------

metric_values = (
    st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.booleans()
    | st.text(max_size=5)
    | st.none()
    | st.lists(st.integers(), max_size=2)
)
event_bodies = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["metric", "note", "log", "gap", "status", "shutdown", "", "a b"])
        | st.text(max_size=10)
        | json_values,
        "run": st.text(max_size=10) | json_values,
        "step": st.integers() | json_values,
        "metrics": st.dictionaries(st.text(max_size=10), metric_values, max_size=4) | json_values,
        "data": json_values,
        "ts": st.floats(allow_nan=False) | json_values,
        "extra": json_values,
    },
)
publish_bodies = st.one_of(
    event_bodies.map(lambda e: json.dumps(e).encode()),
    st.lists(event_bodies, max_size=4).map(lambda es: json.dumps({"events": es}).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=100),
    st.just(b"[" * 2000 + b"]" * 2000),
    st.just(json.dumps({"type": "note", "data": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}).encode()),
)


@pytest.fixture(scope="module")
def trainer(fuzzed: TrainingStreamServer) -> Iterator[list[Any]]:
    """A training thread logging all along the publish fuzzing."""
    stop = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        step = 0
        try:
            while not stop.is_set():
                fuzzed.log({"loss": 1.0 / (step + 1)}, step=step, run="trainer")
                step += 1
                time.sleep(0.002)  # pacing of the training loop
        except BaseException as exc:
            outcome.append(exc)
        outcome.append(step)

    thread = threading.Thread(target=run, name="fuzz-trainer")
    thread.start()
    yield outcome
    stop.set()
    thread.join(10)


@FUZZ
@given(body=publish_bodies)
def test_publish_any_body_is_200_or_4xx(
    fuzzed: TrainingStreamServer, trainer: list[Any], body: bytes
) -> None:
    response = httpx.post(
        f"{fuzzed.urls['rest']}/api/publish",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code in (200, 400, 413, 422), (body[:200], response.status_code, response.text)
    answer = strict_json(response.content)
    if response.status_code == 200:
        assert answer["seqs"] and all(isinstance(s, int) for s in answer["seqs"])
    else:
        assert isinstance(answer["error"], str) and answer["error"]


def test_after_publish_fuzzing_history_is_valid_json_and_training_was_unaffected(
    fuzzed: TrainingStreamServer, trainer: list[Any]
) -> None:
    """Whatever was accepted encodes as strict JSON; the training thread never saw an error."""
    assert not [x for x in trainer if isinstance(x, BaseException)], trainer
    body = httpx.get(
        f"{fuzzed.urls['rest']}/api/history", params={"since": 0, "limit": 10_000}, timeout=10
    ).content
    events = strict_json(body)["events"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    steps = [e["step"] for e in events if e.get("run") == "trainer" and e["type"] == "metric"]
    assert steps == sorted(set(steps)) and len(steps) > 0
    assert_still_serving(fuzzed)

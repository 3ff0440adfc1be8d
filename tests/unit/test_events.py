"""The event model's checks (stream_hub/events.py): only values JSON can carry
get in (issue 22 M6), decided in the caller's thread."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream_hub.events import (
    INT64_MAX,
    INT64_MIN,
    alert_data,
    encode_event,
    validate_alert,
    validate_metrics,
    validate_step,
)


class Index:
    """An object with ``__index__`` (a numpy integer, say)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


@pytest.mark.parametrize("step", [0, -1, INT64_MIN, INT64_MAX, Index(INT64_MAX)])
def test_a_step_in_the_signed_64_bit_range_is_kept(step: Any) -> None:
    assert validate_step(step) == int(step.__index__())


@pytest.mark.parametrize("step", [INT64_MAX + 1, INT64_MIN - 1, 2**64, -(2**200), Index(2**63)])
def test_a_step_outside_the_signed_64_bit_range_is_refused_naming_it(step: Any) -> None:
    with pytest.raises(ValueError, match="step must be within the signed 64-bit range"):
        validate_step(step)


def test_ints_within_64_bits_stay_ints() -> None:
    metrics = {"a": INT64_MAX, "b": INT64_MIN, "c": 0.5}
    assert validate_metrics(metrics) == metrics
    assert all(type(v) is int for v in list(validate_metrics(metrics).values())[:2])


@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1, 2**70, -(2**1000)])
def test_an_int_beyond_64_bits_that_a_float_holds_is_sent_as_a_float(value: int) -> None:
    out = validate_metrics({"x": 1, "nested": {"big": value}})
    assert out == {"x": 1, "nested/big": float(value)}
    assert type(out["nested/big"]) is float
    # and it encodes: the event the ring makes of it is valid JSON
    body = encode_event(1, "e", 1.0, "metric", "r", 1, out)
    assert orjson.loads(body)["metrics"]["nested/big"] == float(value)


@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024])
def test_an_int_too_large_for_a_float_is_refused_naming_the_metric(value: int) -> None:
    with pytest.raises(ValueError, match=r"'train/huge'.*too large for a float"):
        validate_metrics({"loss": 0.5, "train": {"huge": value}})


def test_the_fast_path_still_takes_plain_floats_and_ints_as_they_are() -> None:
    metrics = {"loss": 0.5, "acc": 1, "neg": -3}
    out = validate_metrics(metrics)
    assert out == metrics and out is not metrics


def test_an_object_whose_float_overflows_is_a_type_error_naming_the_metric() -> None:
    class Overflowing:
        def __float__(self) -> float:
            raise OverflowError("too big")

    with pytest.raises(TypeError, match="'x' could not be converted"):
        validate_metrics({"x": Overflowing()})


# -- alerts (contract v3, "New event types") -----------------------------------------------------


def test_an_alerts_data_is_checked_and_names_its_source() -> None:
    assert alert_data("loss is NaN", "at step 3", "error", "loss", source="hub") == {
        "level": "error",
        "title": "loss is NaN",
        "text": "at step 3",
        "metric": "loss",
        "source": "hub",
    }
    assert alert_data("slow", "") == {"level": "warning", "title": "slow", "text": "", "source": "user"}


@pytest.mark.parametrize(
    ("args", "error", "words"),
    [
        (("t", "x", "fatal"), ValueError, "info, warning, error"),
        (("", "x"), ValueError, "non-empty"),
        (("t" * 201, "x"), ValueError, "200"),
        (("t", "x" * 4001), ValueError, "4000"),
        ((None, "x"), TypeError, "title must be a str"),
        (("t", 3), TypeError, "text must be a str"),
        (("t", "x", "info", 7), TypeError, "metric"),
        (("t", "x", "info", ""), ValueError, "metric"),
    ],
)
def test_a_bad_alert_is_refused_saying_what_is_wrong(args: tuple[Any, ...], error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        alert_data(*args)


def test_a_published_alert_is_the_users_and_only_its_fields() -> None:
    data = validate_alert({"title": "t", "text": "x", "level": "info", "source": "user"})
    assert data == {"level": "info", "title": "t", "text": "x", "source": "user"}
    assert validate_alert({"title": "t", "text": "x"})["source"] == "user"
    with pytest.raises(TypeError, match='source is "user"'):
        validate_alert({"title": "t", "text": "x", "source": "hub"})
    with pytest.raises(TypeError, match="unknown field"):
        validate_alert({"title": "t", "text": "x", "colour": "red"})
    with pytest.raises(TypeError, match="needs"):
        validate_alert({"title": "t"})
    with pytest.raises(TypeError, match="object"):
        validate_alert("boom")

"""The dashboard in a notebook's output (stream_hub/inline.py): its address
filtered to a run with the page's own URL state, and plain HTML."""

from __future__ import annotations

import pytest

from stream_hub.inline import InlineDashboard, dashboard_url


@pytest.mark.parametrize(
    ("run", "url"),
    [
        (None, "http://127.0.0.1:8890/"),
        ("exp1", "http://127.0.0.1:8890/#only=exp1&logrun=exp1"),
        (
            "lr=3e-4/a b,c#d",
            "http://127.0.0.1:8890/#only=lr%3D3e-4/a%20b%2Cc%23d&logrun=lr%3D3e-4/a%20b%2Cc%23d",
        ),
    ],
)
def test_the_address_shows_only_the_run(run: str | None, url: str) -> None:
    assert dashboard_url("http://127.0.0.1:8890", run) == url
    assert dashboard_url("http://127.0.0.1:8890/", run) == url


def test_the_frame_is_plain_escaped_html() -> None:
    frame = InlineDashboard('http://h:1/#only="x"<y>&logrun=z', "x", height=300)._repr_html_()
    assert frame.startswith('<iframe src="http://h:1/#only=&quot;x&quot;&lt;y&gt;&amp;logrun=z"')
    assert 'height="300"' in frame and "<script" not in frame


@pytest.mark.parametrize("height", [0, 99, True, 1.5, "600"])
def test_a_bad_height_is_refused(height: object) -> None:
    with pytest.raises(ValueError, match="height"):
        InlineDashboard("http://h:1/", None, height=height)  # type: ignore[arg-type]

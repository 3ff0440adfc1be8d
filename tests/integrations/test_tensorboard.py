"""``SummaryWriter`` as a drop-in for torch's, against the real thing: every
public name of ``torch.utils.tensorboard.SummaryWriter`` decided, TensorBoard's
meanings kept (step 0, ``add_scalars``' runs), histograms and images streamed
and still written to real event files. Events are checked over REST.

Marked ``integrations`` (see tests/conftest.py); torch, tensorboard and
matplotlib come with ``pip install 'stream_hub[tensorboard]' torch``.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_hub import TrainingStreamServer
from stream_hub.integrations.tensorboard import ATTRIBUTES, IMPLEMENTED, WARNED, SummaryWriter

from ..conftest import committed
from .test_frameworks import framework

README = Path(__file__).resolve().parents[2] / "README.md"


def history(server: TrainingStreamServer, kind: str, run: str | None = None) -> list[dict[str, Any]]:
    committed(server, server.hub.last_seq)
    params: dict[str, Any] = {"since": 0, "limit": 1000, "types": kind}
    if run is not None:
        params["run"] = run
    response = httpx.get(server.urls["rest"] + "/api/history", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return [e for e in response.json()["events"] if e["type"] == kind]


def torch_writer_class() -> Any:
    framework("torch")
    framework("tensorboard")
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    return TorchWriter


def tensorboardx_writer_class() -> Any:
    return framework("tensorboardX").SummaryWriter


def event_files(logdir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    return events


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "stream_hub.integrations.tensorboard"
    ]


# -- every name decided ---------------------------------------------------------------------


def test_every_public_name_of_torchs_and_tensorboardxs_writers_is_implemented_or_warned(
    server: TrainingStreamServer, tmp_path: Path
) -> None:
    names: set[str] = set()
    for kind, writer_class in (
        ("torch", torch_writer_class()),
        ("tensorboardX", tensorboardx_writer_class()),
    ):
        instance = writer_class(str(tmp_path / kind))
        instance.close()
        names |= {n for n in dir(writer_class) if not n.startswith("_")}
        names |= {n for n in vars(instance) if not n.startswith("_")}
    decided = IMPLEMENTED.keys() | WARNED.keys() | ATTRIBUTES
    assert names - decided == set(), "a name of TensorBoard's SummaryWriter this bridge has not decided"
    assert not (IMPLEMENTED.keys() & WARNED.keys())
    ours = SummaryWriter(tmp_path / "ours", server=server)
    for name in names:
        assert hasattr(ours, name), name
        assert name in dir(ours), name
    # The README lists each, method by method.
    readme = README.read_text()
    for name in IMPLEMENTED.keys() | WARNED.keys():
        assert f"`{name}`" in readme, f"README does not list SummaryWriter.{name}"


def test_an_unknown_name_raises_attribute_error_with_or_without_event_files(
    server: TrainingStreamServer, tmp_path: Path
) -> None:
    torch_writer_class()
    for writer in (
        SummaryWriter(tmp_path / "a", server=server),
        SummaryWriter(tmp_path / "b", server=server, also_tensorboard=True),
    ):
        with pytest.raises(AttributeError, match="add_scaler"):
            writer.add_scaler("loss", 1.0, 0)  # type: ignore[attr-defined]
        with pytest.raises(AttributeError):
            writer.no_such_thing  # type: ignore[attr-defined]  # noqa: B018
        writer.close()
    assert history(server, "metric") == []


def test_file_writer_and_all_writers_exist_as_in_tensorboard(
    server: TrainingStreamServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch_writer_class()
    from torch.utils.tensorboard.writer import FileWriter

    with SummaryWriter(tmp_path / "files", server=server, also_tensorboard=True) as writer:
        assert isinstance(writer.file_writer, FileWriter)
        assert writer.file_writer.get_logdir() == str(tmp_path / "files")
        assert writer.all_writers[str(tmp_path / "files")] is writer.file_writer
    plain = SummaryWriter(tmp_path / "plain", server=server)
    assert plain.file_writer.get_logdir() == str(tmp_path / "plain")
    assert plain.all_writers == {str(tmp_path / "plain"): plain.file_writer}
    plain.file_writer.flush()
    plain.file_writer.add_summary(object(), 1)
    plain.file_writer.add_summary(object(), 2)
    assert len([m for m in warnings_of(caplog) if "file_writer.add_summary" in m]) == 1
    assert (plain.purge_step, plain.max_queue, plain.flush_secs, plain.default_bins) == (
        None,
        10,
        120,
        "tensorflow",
    )


# -- TensorBoard's meanings -------------------------------------------------------------------


def test_add_scalar_without_a_step_records_step_0_as_tensorboard_does(
    server: TrainingStreamServer, tmp_path: Path
) -> None:
    torch = framework("torch")
    torch_writer_class()
    import numpy as np

    for n in range(3):
        server.log({"other": float(n)}, step=n, run="exp0")  # the hub has counted events already
    with SummaryWriter(tmp_path / "exp0", server=server, also_tensorboard=True) as writer:
        writer.add_scalar("loss", 0.5)
        writer.add_text("note", "no step")
        writer.add_scalar("one", np.array([0.25]), 1)  # a one-element array, as TensorBoard takes it
        writer.add_scalar("one", torch.tensor([0.5], requires_grad=True) * 1, 2)
    steps = [e["step"] for e in history(server, "metric", "exp0") if "loss" in e["metrics"]]
    assert steps == [0]
    assert [e["step"] for e in history(server, "log", "exp0")] == [0]
    ones = [
        (e["step"], e["metrics"]["one"]) for e in history(server, "metric", "exp0") if "one" in e["metrics"]
    ]
    assert ones == [(1, 0.25), (2, 0.5)]
    assert [s.step for s in event_files(tmp_path / "exp0").Scalars("loss")] == [0]


def test_a_step_is_taken_as_tensorboard_takes_it(server: TrainingStreamServer, tmp_path: Path) -> None:
    """TensorBoard's writer records ``int(global_step)``: a float (``epoch +
    i / n``), a numpy number or a tensor is a step there; every method here
    records the same step as TensorBoard's event files (it raised TypeError)."""
    torch = framework("torch")
    torch_writer_class()
    import numpy as np

    given = [5.7, np.float64(6.0), np.int64(7), torch.tensor(8), torch.tensor([9.0])]
    logdir = tmp_path / "steps"
    with SummaryWriter(logdir, server=server, also_tensorboard=True) as writer:
        for step in given:
            writer.add_scalar("loss", 0.5, step)
            writer.add_scalars("pair", {"a": 1.0}, step)
            writer.add_text("note", "text", step)
            writer.add_histogram("w", np.arange(4.0), step)
            writer.add_image("img", np.zeros((3, 2, 2)), step)
            writer.add_hparams({"lr": 0.1}, {"hp/acc": 0.5}, global_step=step)
    written = [s.step for s in event_files(logdir).Scalars("loss")]
    assert written == [5, 6, 7, 8, 9]
    assert [e["step"] for e in history(server, "metric", "steps") if "loss" in e["metrics"]] == written
    assert [e["step"] for e in history(server, "metric", "steps/pair_a")] == written
    for kind in ("log", "histogram", "image"):
        assert [e["step"] for e in history(server, kind, "steps")] == written, kind
    with SummaryWriter(tmp_path / "nan", server=server) as writer, pytest.raises(ValueError):
        writer.add_scalar("loss", 0.5, float("nan"))  # TensorBoard's int() refuses it too


def test_tags_and_values_tensorboard_takes(server: TrainingStreamServer, tmp_path: Path) -> None:
    """numpy's strings as tags (an array of names) and numbers written as
    text: TensorBoard's writer takes them; here they raised TypeError."""
    torch_writer_class()
    import numpy as np

    names = np.array(["loss", "w", "img", "pair"])
    logdir = tmp_path / "tags"
    with SummaryWriter(logdir, server=server, also_tensorboard=True) as writer:
        writer.add_scalar(names[0], "0.5", 1)
        writer.add_scalars(names[3], {"a": np.float32(1.0)}, 1)
        writer.add_histogram(names[1], np.arange(4.0), 1)
        writer.add_image(names[2], np.zeros((3, 2, 2)), 1)
        with pytest.raises(ValueError):
            writer.add_scalar("loss", "not a number", 2)
    assert [s.value for s in event_files(logdir).Scalars("loss")] == [0.5]
    assert [e["metrics"] for e in history(server, "metric", "tags")] == [{"loss": 0.5}]
    assert [e["metrics"] for e in history(server, "metric", "tags/pair_a")] == [{"pair": 1.0}]
    assert [e["data"]["tag"] for e in history(server, "histogram", "tags")] == ["w"]
    assert [e["data"]["tag"] for e in history(server, "image", "tags")] == ["img"]


def test_add_scalars_makes_tensorboards_runs_and_never_collides_with_add_scalar(
    server: TrainingStreamServer, tmp_path: Path
) -> None:
    torch_writer_class()
    logdir = tmp_path / "exp2"
    with SummaryWriter(logdir, server=server, also_tensorboard=True) as writer:
        for step in range(2):
            writer.add_scalars("loss", {"train": 1.0 - step, "val": 2.0 - step}, step)
            writer.add_scalar("loss/train", 9.0 + step, step)
    # TensorBoard's runs: one directory per key, beside the writer's own.
    assert {"loss_train", "loss_val"} <= set(os.listdir(logdir))
    assert [s.value for s in event_files(logdir / "loss_train").Scalars("loss")] == [1.0, 0.0]
    runs = {e["run"] for e in history(server, "metric")}
    assert runs == {"exp2", "exp2/loss_train", "exp2/loss_val"}
    train = [(e["step"], e["metrics"]) for e in history(server, "metric", "exp2/loss_train")]
    assert train == [(0, {"loss": 1.0}), (1, {"loss": 0.0})]
    own = [(e["step"], e["metrics"]) for e in history(server, "metric", "exp2")]
    assert own == [(0, {"loss/train": 9.0}), (1, {"loss/train": 10.0})]
    listed = httpx.get(server.urls["rest"] + "/api/runs", timeout=10).json()["runs"]
    metrics = {r["run"]: r["metrics"] for r in listed}
    assert metrics["exp2/loss_val"] == ["loss"] and metrics["exp2"] == ["loss/train"]


# -- histograms and images --------------------------------------------------------------------


def test_add_histogram_streams_a_histogram_per_step_and_still_writes_event_files(
    server: TrainingStreamServer, tmp_path: Path
) -> None:
    torch = framework("torch")
    torch_writer_class()
    import numpy as np

    logdir = tmp_path / "hist"
    with SummaryWriter(logdir, server=server, also_tensorboard=True) as writer:
        writer.add_histogram("w", torch.randn(1000) + 0, 0)
        writer.add_histogram("w", np.random.default_rng(0).normal(1.0, 1.0, 1000), 1)
        writer.add_histogram("w", [float(v) for v in range(100)], 2, bins=10)
        writer.add_histogram("w", torch.ones(5))  # no step: 0
        writer.add_histogram("half", torch.randn(100, dtype=torch.bfloat16), 4)  # numpy has no bfloat16
        writer.add_histogram("many", np.arange(10_000.0), 3, bins=2000)  # more than 512: merged
    events = history(server, "histogram", "hist")
    w = [e for e in events if e["data"]["tag"] == "w"]
    assert [e["step"] for e in w] == [0, 1, 2, 0]
    assert [sum(e["data"]["counts"]) for e in w] == [1000, 1000, 100, 5]
    assert (
        len(w[2]["data"]["counts"]) == 10
        and w[2]["data"]["edges"][0] == 0
        and w[2]["data"]["edges"][-1] == 99
    )
    assert w[3]["data"] == {"tag": "w", "edges": [1.0, 1.0], "counts": [5.0]}
    many = next(e for e in events if e["data"]["tag"] == "many")["data"]
    assert sum(next(e for e in events if e["data"]["tag"] == "half")["data"]["counts"]) == 100
    assert len(many["counts"]) <= 512 and sum(many["counts"]) == 10_000
    assert [h.step for h in event_files(logdir).Histograms("w")] == [0, 1, 2, 0]


def png_pixels(b64: str) -> Any:
    import numpy as np
    from PIL import Image  # matplotlib's dependency

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_add_image_add_images_and_add_figure_stream_pngs(
    server: TrainingStreamServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch = framework("torch")
    torch_writer_class()
    framework("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    logdir = tmp_path / "img"
    gradient = torch.linspace(0, 1, 32).repeat(3, 16, 1)  # CHW floats in [0, 1]
    with SummaryWriter(logdir, server=server, also_tensorboard=True) as writer:
        writer.add_image("gradient", gradient, 1)
        writer.add_image("gray", np.full((8, 4), 255, dtype=np.uint8), 2, dataformats="HW")
        writer.add_images("batch", torch.rand(10, 3, 6, 5), 3)
        figure, axes = plt.subplots(figsize=(2, 1.5), dpi=50)
        axes.plot([0, 1, 2], [0, 1, 0])
        writer.add_figure("figure", figure, 4)
        assert not plt.fignum_exists(figure.number)  # closed, as TensorBoard does
        noise = np.random.default_rng(1).integers(0, 255, (3, 1024, 1024), dtype=np.uint8)
        writer.add_image("noise", noise, 5)  # about 4 MB as PNG: halved until it fits
        writer.add_image("noise", noise, 6)
    images = {e["data"]["tag"]: e for e in history(server, "image", "img")}
    gradient_event = images["gradient"]
    assert gradient_event["step"] == 1 and gradient_event["data"]["mime"] == "image/png"
    pixels = png_pixels(gradient_event["data"]["b64"])
    assert pixels.shape == (16, 32, 3) and pixels[0, 0, 0] == 0 and pixels[0, -1, 0] == 255
    assert png_pixels(images["gray"]["data"]["b64"]).shape == (8, 4)
    batch = images["batch"]["data"]
    assert (batch["width"], batch["height"]) == (8 * 5, 2 * 6)  # a grid of 8 columns
    assert (images["figure"]["data"]["width"], images["figure"]["data"]["height"]) == (100, 75)
    noisy = images["noise"]["data"]
    assert len(noisy["b64"]) <= 256 * 1024 and noisy["width"] < 1024
    said = [m for m in warnings_of(caplog) if "'noise'" in m]
    assert len(said) == 1 and "1024x1024" in said[0]
    files = event_files(logdir)
    assert {"gradient", "gray", "batch", "figure", "noise"} <= set(files.Tags()["images"])
    assert files.Images("noise")[0].width == 1024  # the event files keep it whole


def test_warned_methods_warn_once_each_and_are_still_forwarded(
    server: TrainingStreamServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch = framework("torch")
    torch_writer_class()
    model = torch.nn.Linear(4, 2)
    logdir = tmp_path / "warned"
    with SummaryWriter(logdir, server=server, also_tensorboard=True) as writer:
        writer.add_graph(model, torch.randn(1, 4))
        writer.add_graph(model, torch.randn(1, 4))
        writer.add_pr_curve("pr", torch.tensor([0, 1, 1]), torch.tensor([0.1, 0.8, 0.6]), 0)
        writer.add_pr_curve("pr", torch.tensor([0, 1, 1]), torch.tensor([0.1, 0.8, 0.6]), 1)
    said = warnings_of(caplog)
    assert len([m for m in said if "add_graph" in m]) == 1
    assert len([m for m in said if "add_pr_curve" in m]) == 1
    assert any("model graphs" in m and str(logdir) in m for m in said)
    files = event_files(logdir)
    assert files.Graph() is not None  # forwarded to the real event files
    caplog.clear()
    plain = SummaryWriter(tmp_path / "plain", server=server)
    for name in WARNED:  # every warned method accepts anything and returns None
        assert getattr(plain, name)("x", 1, global_step=2) is None
        getattr(plain, name)("x", 1)
    said = warnings_of(caplog)
    assert len(said) == len(WARNED) and all("also_tensorboard=" in m for m in said)
    assert history(server, "metric") == []


def test_a_tensorboardx_script_runs_unchanged_use_metadata_logdir_and_its_arguments(
    server: TrainingStreamServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch_writer_class()
    tensorboardx_writer_class()
    logdir = tmp_path / "tbx"
    with SummaryWriter(
        logdir=str(logdir), server=server, also_tensorboard=True, event_files="tensorboardX"
    ) as writer:
        assert type(writer._tensorboard).__module__.startswith("tensorboardX")
        assert writer.logdir == writer.log_dir == str(logdir) and writer.run == "tbx"
        with writer.use_metadata(global_step=7):
            writer.add_scalar("a", 1.0)  # the step of the with
        writer.add_scalar("b", 2.0, 1, display_name="B", summary_description="the b")
        writer.add_hparams({"lr": 0.1}, {"m": 1.0}, name="h", global_step=3)
        writer.add_image_with_boxes(
            "boxed", zeros_image(), boxes(), 4, None, "CHW", ["box"]
        )  # tensorboardX's order: no rescale
        writer.export_scalars_to_json(str(tmp_path / "scalars.json"))
        writer.export_scalars_to_json(str(tmp_path / "scalars.json"))
    steps = {name: e["step"] for e in history(server, "metric", "tbx") for name in e["metrics"]}
    assert steps == {"a": 7, "b": 1, "m": 3}
    assert [e["step"] for e in history(server, "image", "tbx")] == [4]
    assert (tmp_path / "scalars.json").exists()  # forwarded to tensorboardX
    said = warnings_of(caplog)
    assert len([m for m in said if "export_scalars_to_json" in m]) == 1
    assert len([m for m in said if "boxes are not drawn" in m]) == 1
    assert [s.step for s in event_files(logdir).Scalars("a")] == [7]


def zeros_image() -> Any:
    import numpy as np

    return np.zeros((3, 4, 4), dtype=np.float32)


def boxes() -> Any:
    import numpy as np

    return np.array([[0, 0, 2, 2]], dtype=np.float32)

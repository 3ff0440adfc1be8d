"""A drop-in for TensorBoard's ``SummaryWriter`` that streams to the hub.

    # from torch.utils.tensorboard import SummaryWriter
    from stream_hub.integrations.tensorboard import SummaryWriter

    writer = SummaryWriter("runs/exp1")               # the run is "exp1"
    writer.add_scalar("Loss/train", loss, global_step=step)

Every public name of ``torch.utils.tensorboard.SummaryWriter`` and of
tensorboardX's ``SummaryWriter`` is decided once, here: :data:`IMPLEMENTED`
(streamed with TensorBoard's meaning) or :data:`WARNED` (accepted, one
WARNING per method and writer naming what the dashboard does not show, and
still written to event files with ``also_tensorboard=``); :data:`ATTRIBUTES`
are there as in TensorBoard. Any other name raises ``AttributeError`` (a
typo such as ``add_scaler`` is not swallowed), unless the event-file writer
has it (a name a newer TensorBoard added): then it is forwarded, with the
same one warning. The arguments only one of the two writers takes (torch's
``new_style``, tensorboardX's ``display_name``, ``logdir=``, ...) are
accepted and handed to the event-file writer.

TensorBoard's meanings kept: ``global_step=None`` records step 0, any other
step ``int(global_step)`` (a float, a numpy number, a tensor);
``add_scalars("loss", {"train": a, "val": b})`` makes one chart ``loss``
with a run per key, named as TensorBoard names them: ``<run>/loss_train``,
``<run>/loss_val`` (the metric is ``loss`` in each) — never the metric
``loss/train`` of the writer's own run, which ``add_scalar("loss/train", ...)``
writes. Histograms are ``histogram`` events, images and figures ``image``
events (a PNG of at most 256 KiB encoded: halved until it fits, with a
warning).

With ``also_tensorboard=logdir`` (or ``True``: the same ``log_dir``) every call
is also written to real TensorBoard event files, by ``torch.utils.tensorboard``
(torch and tensorboard installed: ``pip install 'stream_hub[tensorboard]'``)
or by tensorboardX, so nothing is lost by switching. ``walltime`` goes into
those files; streamed events carry the time they were logged.

Nothing here needs torch or tensorboard unless ``also_tensorboard`` is asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from .. import job
from ..config import StreamConfig
from ..server import TrainingStreamServer
from . import media
from ._hub import HubHandle, flat, require

__all__ = ["ATTRIBUTES", "IMPLEMENTED", "WARNED", "SummaryWriter"]

logger = logging.getLogger(__name__)

#: TensorBoard's methods streamed to the hub, and how.
IMPLEMENTED: dict[str, str] = {
    "add_scalar": "a `metric` event: the tag is the metric's name",
    "add_scalars": "a `metric` event per key, in the run `<run>/<main_tag>_<key>`, metric `<main_tag>`",
    "add_text": "a `log` event (the tag as its `logger`)",
    "use_metadata": "tensorboardX's: the step (and walltime) of the `add_*` calls inside the `with`",
    "add_hparams": "a `config` event, and `metric_dict` as a `metric` event",
    "add_histogram": "a `histogram` event (at most 512 bins)",
    "add_histogram_raw": "a `histogram` event from the buckets given",
    "add_image": "an `image` event (PNG)",
    "add_images": "an `image` event: the batch as one grid, as TensorBoard shows it",
    "add_figure": "an `image` event: the figure rendered to PNG (a list of figures: one grid)",
    "add_image_with_boxes": "an `image` event of the image; its boxes are not drawn (warned once)",
    "flush": "flushes the event files (streamed events need no flushing)",
    "close": "closes the event files and gives the shared server's reference back",
    "get_logdir": "the event files' directory",
}

#: TensorBoard's methods the dashboard does not show: accepted, warned once
#: per writer, and written to the event files with ``also_tensorboard=``.
WARNED: dict[str, str] = {
    "add_audio": "audio",
    "add_custom_scalars": "custom scalar layouts",
    "add_custom_scalars_marginchart": "custom scalar layouts",
    "add_custom_scalars_multilinechart": "custom scalar layouts",
    "add_embedding": "embeddings (the projector)",
    "add_graph": "model graphs",
    "add_mesh": "meshes",
    "add_onnx_graph": "ONNX graphs",
    "add_pr_curve": "precision-recall curves",
    "add_pr_curve_raw": "precision-recall curves",
    "add_tensor": "raw tensors",
    "add_video": "videos",
    "add_openvino_graph": "OpenVINO graphs",
    "export_scalars_to_json": "tensorboardX's JSON export of scalars (`stream-hub export` exports a run)",
}

#: TensorBoard's attributes, present on every writer.
ATTRIBUTES = frozenset(
    {
        "log_dir",
        "purge_step",
        "max_queue",
        "flush_secs",
        "filename_suffix",
        "file_writer",
        "all_writers",
        "default_bins",
        # tensorboardX's
        "logdir",
        "kwargs",
        "scalar_dict",
    }
)

_DEFAULT_BINS = "tensorflow"


class SummaryWriter:
    """``torch.utils.tensorboard.SummaryWriter``'s interface, streaming to the hub.

    Args:
        log_dir, comment, purge_step, max_queue, flush_secs, filename_suffix:
            as TensorBoard's; ``log_dir``'s last part names the run (unless
            ``run`` does), and all of them go to the event-file writer.
        run: the run to log to (default: from ``log_dir``, else the job's run).
        server: the server to publish to (default: the process's shared
            server, taken on first use and given back by :meth:`close`).
        config: the config of the shared server, when it is started here.
        also_tensorboard: also write TensorBoard event files, to this
            directory (``True``: to ``log_dir``, or TensorBoard's default).
        event_files: which writer writes the event files: ``"torch"``
            (``torch.utils.tensorboard``), ``"tensorboardX"``, or ``"auto"``:
            torch's when it is installed and no tensorboardX-only argument is
            given, else tensorboardX's.
        **kwargs: tensorboardX's other arguments (``logdir=`` is ``log_dir``;
            ``write_to_disk``, ``comet_config``, ...), handed to the event-file
            writer.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: int = 120,
        filename_suffix: str = "",
        *,
        run: str | None = None,
        server: TrainingStreamServer | None = None,
        config: StreamConfig | None = None,
        also_tensorboard: bool | str | os.PathLike[str] | None = None,
        event_files: str = "auto",
        **kwargs: Any,
    ) -> None:
        if log_dir is None and kwargs.get("logdir") is not None:  # tensorboardX's name of it
            log_dir = kwargs["logdir"]
        kwargs.pop("logdir", None)
        self.kwargs = kwargs
        self.scalar_dict: dict[str, Any] = {}
        self._metadata: tuple[int | None, float | None] = (None, None)
        self.run = run or _run_name(log_dir, comment)
        self._hub = HubHandle(server, config)
        self._warned: set[str] = set()
        self._tensorboard: Any = None
        self.purge_step = purge_step
        self.max_queue = max_queue
        self.flush_secs = flush_secs
        self.filename_suffix = filename_suffix
        self.default_bins = _DEFAULT_BINS
        if also_tensorboard:
            target = log_dir if also_tensorboard is True else also_tensorboard
            writer_class = _event_file_writer(event_files, bool(kwargs))
            self._tensorboard = writer_class(
                None if target is None else os.fspath(target),
                comment=comment,
                purge_step=purge_step,
                max_queue=max_queue,
                flush_secs=flush_secs,
                filename_suffix=filename_suffix,
                **kwargs,
            )
        self.log_dir = _fspath(log_dir) if self._tensorboard is None else _logdir_of(self._tensorboard)
        self._no_files = _NoEventFiles(self)

    @property
    def logdir(self) -> str | None:
        """tensorboardX's name of :attr:`log_dir`."""
        return self.log_dir

    @property
    def server(self) -> TrainingStreamServer:
        """The server this writer publishes to."""
        return self._hub.server

    @property
    def file_writer(self) -> Any:
        """TensorBoard's ``FileWriter`` of ``log_dir`` (with ``also_tensorboard=``),
        else a stand-in whose methods write nothing (said once)."""
        if self._tensorboard is not None:
            return self._tensorboard.file_writer
        return self._no_files

    @property
    def all_writers(self) -> dict[str, Any]:
        """Every ``FileWriter`` by directory (TensorBoard's: ``add_scalars``
        makes one per key); without event files, ``{log_dir: file_writer}``."""
        if self._tensorboard is not None:
            return self._tensorboard.all_writers  # type: ignore[no-any-return]
        return {self.log_dir or "": self._no_files}

    def get_logdir(self) -> str | None:
        """The event files' directory (``log_dir`` when none are written)."""
        return self.log_dir

    # -- what streams --------------------------------------------------------------------

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        *args: Any,
        **options: Any,
    ) -> None:
        """One value of the metric ``tag`` at ``global_step`` (None: step 0).
        ``args``/``options``: torch's ``new_style``, ``double_precision`` or
        tensorboardX's ``display_name``, ``summary_description``, for the event files."""
        self.server.log({_name(tag): _scalar(scalar_value)}, step=self._step(global_step), run=self.run)
        if self._tensorboard is not None:
            self._tensorboard.add_scalar(tag, scalar_value, global_step, walltime, *args, **options)

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: Mapping[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Several values in one chart ``main_tag``, as TensorBoard shows them:
        each key ``k`` its own run ``<run>/<main_tag>_<k>`` (``/`` in
        ``main_tag`` made ``_``), its metric ``main_tag``."""
        step = self._step(global_step)
        prefix = f"{self.run}/{main_tag.replace('/', '_')}_"
        for tag, value in tag_scalar_dict.items():
            self.server.log({_name(main_tag): _scalar(value)}, step=step, run=prefix + str(tag))
        if self._tensorboard is not None:
            self._tensorboard.add_scalars(main_tag, dict(tag_scalar_dict), global_step, walltime)

    def add_text(
        self, tag: str, text_string: str, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        """A text, as a ``log`` event whose ``logger`` is ``tag``."""
        data = {"message": str(text_string), "level": "INFO", "logger": tag}
        self.server.publish("log", data, run=self.run, step=self._step(global_step))
        if self._tensorboard is not None:
            self._tensorboard.add_text(tag, text_string, global_step, walltime)

    def add_hparams(
        self, hparam_dict: Mapping[str, Any], metric_dict: Mapping[str, Any], *args: Any, **options: Any
    ) -> None:
        """Hyper-parameters as the run's ``config`` event; ``metric_dict`` as
        metrics at ``global_step``. The other arguments are torch's
        (``hparam_domain_discrete, run_name, global_step``) or tensorboardX's
        (``name, global_step``), as the event-file writer takes them."""
        global_step = options.get("global_step")
        if global_step is None and args:  # given by position: its place in the writer's order
            position = 1 if _is_tensorboardx(self._tensorboard) else 2
            global_step = args[position] if len(args) > position else None
        self.server.publish("config", flat(hparam_dict), run=self.run)
        if metric_dict:
            metrics = {name: _scalar(value) for name, value in metric_dict.items()}
            self.server.log(metrics, step=self._step(global_step), run=self.run)
        if self._tensorboard is not None:
            self._tensorboard.add_hparams(dict(hparam_dict), dict(metric_dict), *args, **options)

    def add_histogram(
        self,
        tag: str,
        values: Any,
        global_step: int | None = None,
        bins: Any = "tensorflow",
        walltime: float | None = None,
        max_bins: int | None = None,
    ) -> None:
        """The distribution of ``values`` (a tensor, an array, a list) as a
        ``histogram`` event: ``bins`` equal bins (``"tensorflow"``: 64), or
        numpy's method of that name; never more than 512. Non-finite values
        are left out; none finite: nothing is streamed (said once)."""
        data = media.histogram_data(_name(tag), values, bins, max_bins)
        if data is None:
            self._warn_once(
                f"add_histogram:{tag}", "%r has no finite value: no histogram streamed for it", tag
            )
        else:
            self.server.publish("histogram", data, run=self.run, step=self._step(global_step))
        if self._tensorboard is not None:
            # TensorBoard's writer takes arrays and tensors only: a list is given as an array.
            given = media.as_array(values) if isinstance(values, (list, tuple)) else values
            self._tensorboard.add_histogram(tag, given, global_step, bins, walltime, max_bins)

    def add_histogram_raw(
        self,
        tag: str,
        min: float,
        max: float,
        num: int,
        sum: float,
        sum_squares: float,
        bucket_limits: Sequence[float],
        bucket_counts: Sequence[float],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """A histogram TensorBoard's way (each bucket's right edge and count)."""
        data = media.raw_histogram_data(_name(tag), min, max, bucket_limits, bucket_counts)
        if data is None:
            self._warn_once(
                f"add_histogram_raw:{tag}", "%r: bucket_limits and bucket_counts differ in length", tag
            )
        else:
            self.server.publish("histogram", data, run=self.run, step=self._step(global_step))
        if self._tensorboard is not None:
            self._tensorboard.add_histogram_raw(
                tag, min, max, num, sum, sum_squares, bucket_limits, bucket_counts, global_step, walltime
            )

    def add_image(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "CHW",
    ) -> None:
        """An image (``dataformats`` CHW, HWC or HW; floats in [0, 1] or uint8)
        as an ``image`` event."""
        self._publish_image(tag, media.image_pixels(img_tensor, dataformats), global_step)
        if self._tensorboard is not None:
            self._tensorboard.add_image(tag, img_tensor, global_step, walltime, dataformats=dataformats)

    def add_images(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "NCHW",
    ) -> None:
        """A batch of images, shown as one grid (as TensorBoard does)."""
        self._publish_image(tag, media.image_grid(img_tensor, dataformats), global_step)
        if self._tensorboard is not None:
            self._tensorboard.add_images(tag, img_tensor, global_step, walltime, dataformats=dataformats)

    def add_figure(
        self,
        tag: str,
        figure: Any,
        global_step: int | None = None,
        close: bool = True,
        walltime: float | None = None,
    ) -> None:
        """A matplotlib figure (or a list of them: one grid) as an ``image``
        event; closed afterwards when ``close``, as TensorBoard does."""
        figures = list(figure) if isinstance(figure, (list, tuple)) else [figure]
        rendered = [media.figure_pixels(one) for one in figures]
        if len(rendered) == 1:
            pixels = rendered[0]
        else:
            pixels = media.image_grid(_stacked(rendered), "NHWC")
        self._publish_image(tag, pixels, global_step)
        if self._tensorboard is not None:
            self._tensorboard.add_figure(tag, figure, global_step, close, walltime)
        elif close:
            pyplot = sys.modules.get("matplotlib.pyplot")
            if pyplot is not None:
                for one in figures:
                    pyplot.close(one)

    def add_image_with_boxes(
        self,
        tag: str,
        img_tensor: Any,
        box_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        *args: Any,
        **options: Any,
    ) -> None:
        """The image as an ``image`` event; its boxes are not drawn (said once).
        The other arguments are torch's (``rescale, dataformats, labels``) or
        tensorboardX's (``dataformats, labels``)."""
        dataformats = options.get("dataformats") or next((a for a in args if isinstance(a, str)), "CHW")
        self._warn_once(
            "add_image_with_boxes",
            "SummaryWriter.add_image_with_boxes: the image streams, its boxes are not drawn%s",
            self._where(),
        )
        self._publish_image(tag, media.image_pixels(img_tensor, dataformats), global_step)
        if self._tensorboard is not None:
            self._tensorboard.add_image_with_boxes(
                tag, img_tensor, box_tensor, global_step, walltime, *args, **options
            )

    @contextlib.contextmanager
    def use_metadata(self, *, global_step: int | None = None, walltime: float | None = None) -> Iterator[Any]:
        """tensorboardX's: the ``add_*`` calls inside the ``with`` that give no
        step record ``global_step`` (and ``walltime`` in the event files)."""
        before = self._metadata
        self._metadata = (global_step, walltime)
        try:
            if self._tensorboard is not None and hasattr(self._tensorboard, "use_metadata"):
                with self._tensorboard.use_metadata(global_step=global_step, walltime=walltime):
                    yield self
            else:
                yield self
        finally:
            self._metadata = before

    def _step(self, global_step: Any) -> int:
        """TensorBoard's step: ``int(global_step)``, as its event files take it
        (a float such as ``epoch + i / n``, a numpy number, a one-element
        tensor); None records step 0 (or ``use_metadata``'s).

        Raises:
            ValueError, TypeError: ``int()`` refuses it (NaN), as TensorBoard's writer does.
        """
        if global_step is None:
            global_step = self._metadata[0]
            if global_step is None:
                return 0
        return global_step if type(global_step) is int else int(global_step)

    def _publish_image(self, tag: str, pixels: Any, global_step: int | None) -> None:
        encoded = media.png_image(pixels)
        if encoded.downscaled:
            self._warn_once(
                f"image:{tag}",
                "image %r of %dx%d is over 256 KiB as PNG or 32768 pixels on a side: streamed at %dx%d "
                "(event files keep it whole)",
                tag,
                *encoded.original,
                encoded.width,
                encoded.height,
            )
        self.server.publish("image", encoded.data(_name(tag)), run=self.run, step=self._step(global_step))

    # -- the rest of TensorBoard's interface --------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """A method of :data:`WARNED` (or one only the event-file writer has):
        warned once, then written to the event files when there are any."""
        if name.startswith("_"):
            raise AttributeError(name)
        tensorboard = self.__dict__.get("_tensorboard")
        if name in WARNED:
            if tensorboard is not None:
                return self._warned_call(name, getattr(tensorboard, name))
            return self._warned_call(name, None)
        if tensorboard is not None and callable(getattr(tensorboard, name, None)):
            return self._warned_call(name, getattr(tensorboard, name))
        raise AttributeError(
            f"{type(self).__name__} has no attribute {name!r} (TensorBoard's SummaryWriter has none either)"
        )

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | WARNED.keys())

    def _warned_call(self, name: str, forward: Callable[..., Any] | None) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            what = WARNED.get(name, "its data")
            self._warn_once(
                name,
                "SummaryWriter.%s: the stream_hub dashboard does not show %s%s",
                name,
                what,
                self._where(),
            )
            return None if forward is None else forward(*args, **kwargs)

        call.__name__ = name
        return call

    def _where(self) -> str:
        if self._tensorboard is not None:
            return f"; written to the TensorBoard event files in {self.log_dir}"
        return "; dropped (pass also_tensorboard= to keep it in TensorBoard event files)"

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    def flush(self) -> None:
        """Flush the event files (streamed events need no flushing)."""
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def close(self) -> None:
        """Close the event files and give the shared server's reference back."""
        if self._tensorboard is not None:
            self._tensorboard.close()
        self._hub.release()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _NoEventFiles:
    """``SummaryWriter.file_writer`` when no event files are written:
    TensorBoard's ``FileWriter`` methods, writing nothing (said once)."""

    def __init__(self, writer: SummaryWriter) -> None:
        self._writer = writer

    def get_logdir(self) -> str | None:
        return self._writer.log_dir

    def _nothing(self, name: str) -> None:
        self._writer._warn_once(
            f"file_writer.{name}",
            "SummaryWriter.file_writer.%s: nothing written (no event files; pass also_tensorboard=)",
            name,
        )

    def add_event(self, *args: Any, **kwargs: Any) -> None:
        self._nothing("add_event")

    def add_summary(self, *args: Any, **kwargs: Any) -> None:
        self._nothing("add_summary")

    def add_graph(self, *args: Any, **kwargs: Any) -> None:
        self._nothing("add_graph")

    def add_onnx_graph(self, *args: Any, **kwargs: Any) -> None:
        self._nothing("add_onnx_graph")

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close."""

    def reopen(self) -> None:
        """Nothing to reopen."""


def _is_tensorboardx(writer: Any) -> bool:
    return writer is not None and type(writer).__module__.startswith("tensorboardX")


def _name(tag: Any) -> str:
    """A tag as the hub's name: a subclass of str (numpy's ``np.str_``, from
    an array of names, which TensorBoard takes) as a plain str."""
    return tag if type(tag) is str else str(tag)


def _scalar(value: Any) -> Any:
    """A value as TensorBoard reads it: a tensor detached from autograd (no
    warning); a one-element array or tensor (``np.array([0.5])``) as its value;
    a number written as text (``"0.5"``) as that number.

    Raises:
        ValueError: text that is not a number (as in TensorBoard's writer).
    """
    if isinstance(value, str):
        return float(value)
    detach = getattr(value, "detach", None)
    if callable(detach):
        value = detach()
    item = getattr(value, "item", None)
    if getattr(value, "ndim", 0) and callable(item):
        try:
            return item()
        except (ValueError, RuntimeError):  # more elements: log() refuses it, naming the metric
            return value
    return value


def _stacked(images: list[Any]) -> Any:
    """Figures of different sizes as one NHWC batch (padded to the largest)."""
    np = require("numpy", "tensorboard", "SummaryWriter.add_figure")
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    batch = np.zeros((len(images), height, width, 4), dtype=np.uint8)
    for k, image in enumerate(images):
        batch[k, : image.shape[0], : image.shape[1]] = image
    return batch


def _logdir_of(writer: Any) -> str | None:
    """The directory of an event-file writer (tensorboardX's has no ``get_logdir``)."""
    get_logdir = getattr(writer, "get_logdir", None)
    return get_logdir() if callable(get_logdir) else writer.logdir  # type: ignore[no-any-return]


def _fspath(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)


def _run_name(log_dir: str | os.PathLike[str] | None, comment: str) -> str:
    """``runs/exp1`` -> ``exp1``; no log_dir: the job's run (plus ``comment``)."""
    if log_dir is not None:
        name = os.path.basename(os.path.normpath(os.fspath(log_dir)))
        if name not in ("", ".", "..", os.sep):
            return name
    return job.current().run + comment


def _event_file_writer(which: str = "auto", tensorboardx_arguments: bool = False) -> Any:
    """TensorBoard's own writer: torch's (when installed, unless tensorboardX's
    own arguments were given), else tensorboardX's; or the one ``which`` names."""
    if which not in ("auto", "torch", "tensorboardX"):
        raise ValueError(f"event_files must be 'auto', 'torch' or 'tensorboardX', got {which!r}")
    what = "also_tensorboard="
    if which == "tensorboardX" or (which == "auto" and tensorboardx_arguments):
        try:
            return require("tensorboardX", "tensorboard", what).SummaryWriter
        except ImportError:
            if which == "tensorboardX":
                raise
    try:
        module = require("torch.utils.tensorboard", "tensorboard", what)
    except ImportError as torch_missing:
        if which == "torch":
            raise
        try:
            module = require("tensorboardX", "tensorboard", what)
        except ImportError:
            raise ImportError(
                "also_tensorboard= writes TensorBoard event files with torch.utils.tensorboard "
                "(pip install 'stream_hub[tensorboard]' torch) or tensorboardX (pip install "
                f"tensorboardX); neither is installed ({torch_missing})"
            ) from torch_missing
    return module.SummaryWriter

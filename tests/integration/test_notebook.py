"""Notebooks, with a real kernel (ipykernel) running a real notebook (nbformat,
nbclient): the default run takes the notebook's name, and the server shown
as a cell's value — or ``stream_hub.show()`` — is the live dashboard in an
``<iframe>`` filtered to that run, plain HTML that the dashboard lets a
notebook page frame.

Before, the run was ``python-<time>`` and a server showed as its ``repr``.
The kernel is started from a kernel spec in a temporary directory (this
interpreter, ``-m ipykernel_launcher``): nothing is installed for the user.
"""

from __future__ import annotations

import html
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import need
from ..processes import child_env

try:
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
except ImportError:  # pragma: no cover - the [test] extra installs them
    nbformat = None

KERNEL = "stream-hub-test"

FIRST = """
import json, stream_hub
from stream_hub import job
server = stream_hub.get_stream_server()
server.log({"loss": 0.5}, step=1)
print(json.dumps({"run": job.current().run, "rest": server.urls["rest"]}))
"""


@pytest.fixture
def kernel_dir(tmp_path: Path) -> Path:
    need(nbformat is not None, "nbclient, nbformat and ipykernel (the [test] extra)")
    spec = tmp_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    return spec.parent


class Notebook:
    """A notebook on disk, run cell by cell in a live kernel."""

    def __init__(self, path: Path, kernels: Path, cells: list[str], env: dict[str, str]) -> None:
        self.nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        nbformat.write(self.nb, path)
        manager = KernelManager(
            kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
        )
        self.client = NotebookClient(
            self.nb, km=manager, timeout=120, resources={"metadata": {"path": str(path.parent)}}
        )
        self.env = env

    def run(self) -> Iterator[list[dict[str, Any]]]:
        """In a live kernel: every cell's outputs (the kernel stops after)."""
        with self.client.setup_kernel(env=self.env):
            for index, cell in enumerate(self.nb.cells):
                self.client.execute_cell(cell, index)
            yield [list(cell.outputs) for cell in self.nb.cells]


def _printed(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    text = "".join(
        o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )
    return json.loads(text.strip().splitlines()[-1])


def _frame(outputs: list[dict[str, Any]]) -> str:
    """The ``src`` of the one iframe in a cell's HTML output."""
    htmls = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(htmls) == 1, outputs
    assert "<script" not in htmls[0].lower()  # plain HTML: every renderer shows it
    found = re.findall(r'<iframe src="([^"]+)"', htmls[0])
    assert len(found) == 1, htmls[0]
    return html.unescape(found[0])


def _env(**extra: str) -> dict[str, str]:
    env = child_env(**extra)
    env.pop("JPY_SESSION_NAME", None)
    env.update(extra)
    return env


def test_a_notebooks_run_is_named_after_it_and_its_dashboard_shows_inline(
    kernel_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "my-experiment.ipynb"
    # Jupyter Server sets JPY_SESSION_NAME to the notebook's path in its kernels.
    notebook = Notebook(
        path, kernel_dir, [FIRST, "server", "stream_hub.show()"], _env(JPY_SESSION_NAME=str(path))
    )
    for first, shown, helper in notebook.run():
        printed = _printed(first)
        run = printed["run"]
        assert re.fullmatch(r"my-experiment-\d{8}-\d{6}(-\d+)?", run), run
        rest = printed["rest"]
        assert _frame(shown) == f"{rest}/#only={run}&logrun={run}"
        assert _frame(helper) == _frame(shown)  # show() displays it wherever it is called

        # The frame's page is the dashboard, which a Jupyter page on this machine may frame.
        page = httpx.get(_frame(shown).split("#")[0], timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        policy = page.headers["content-security-policy"]
        ancestors = next(p for p in policy.split(";") if p.strip().startswith("frame-ancestors"))
        assert "http://localhost:*" in ancestors and "vscode-webview:" in ancestors
        runs = httpx.get(f"{rest}/api/runs", timeout=10).json()
        names = [r.get("run") for r in (runs["runs"] if isinstance(runs, dict) else runs)]
        assert run in names


def test_vs_codes_notebook_file_names_the_run(kernel_dir: Path, tmp_path: Path) -> None:
    # What VS Code's Jupyter extension runs in a kernel it starts for a notebook.
    cells = ["__vsc_ipynb_file__ = '/home/me/work/vsc notebook.ipynb'", FIRST]
    notebook = Notebook(tmp_path / "other.ipynb", kernel_dir, cells, _env())
    for _, first in notebook.run():
        assert re.fullmatch(r"vsc-notebook-\d{8}-\d{6}(-\d+)?", _printed(first)["run"])


def test_a_kernel_that_knows_no_notebook_keeps_the_program_name(kernel_dir: Path, tmp_path: Path) -> None:
    notebook = Notebook(tmp_path / "nb.ipynb", kernel_dir, [FIRST], _env())
    for (first,) in notebook.run():
        assert re.fullmatch(r"python-\d{8}-\d{6}(-\d+)?", _printed(first)["run"])

"""The one place the version is written: pyproject.toml reads it from here
([tool.hatch.version]), the package re-exports it, ``stream-hub --version``
and the REST face's OpenAPI document print it. A module of its own so a
submodule can read it without importing the package's ``__init__``."""

__version__ = "0.1.0"

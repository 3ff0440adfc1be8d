"""Tests that exist to stress rather than to check one behaviour; all marked
``stress`` and left out of a plain ``pytest`` (see ``tests/conftest.py``)."""

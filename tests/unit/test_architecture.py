"""ARCHITECTURE.md names only what exists: every file or folder it names is
in the package, and every ``Class.member`` or ``function()`` it names is
defined there. A rename that forgets the map fails here."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "stream_hub"
DOC = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
MODULES = {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}
SOURCE = "\n".join(MODULES.values())
FILES = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*")} | {
    p.relative_to(PACKAGE).as_posix() + "/" for p in PACKAGE.rglob("*") if p.is_dir()
}

# `name` spans in the text (not in the fenced picture).
SPANS = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", DOC, flags=re.S))
PATH = re.compile(r"^[\w/]+(\.py|/)$")
# Class.member, Class.member(), module.function(), function(): names of code.
DOTTED = re.compile(r"^([A-Z]\w*|[a-z_]\w*)\.(_?\w+)(\(.*\))?$")
CALL = re.compile(r"^(_?[a-z]\w*)\((.*)\)$")
# a bare snake_case name (a function, attribute or setting): take_over, stale_timeout
BARE = re.compile(r"^_?[a-z]+(_[a-z0-9]+)+$")


# Names of other libraries' code that the map mentions.
EXTERNAL = {"dumps", "call_soon_threadsafe"}


def _defined(name: str, source: str = SOURCE) -> bool:
    if name in EXTERNAL:
        return True
    pattern = rf"(def|class) {re.escape(name)}\b|^\s*(self\.)?{re.escape(name)}\s*[:=]|^{re.escape(name)} ="
    return re.search(pattern, source, flags=re.M) is not None


def _member_defined(cls: str, member: str) -> bool:
    """``member`` is defined in the module that defines class ``cls``."""
    homes = [text for text in MODULES.values() if re.search(rf"^class {cls}\b", text, flags=re.M)]
    return any(_defined(member, text) for text in homes)


def test_every_file_named_exists() -> None:
    paths = [span for span in SPANS if PATH.match(span) and not span.startswith(("tests/", "scripts/"))]
    assert paths, "the map names no file"
    paths = [p.removeprefix("stream_hub/") for p in paths]
    missing = [p for p in paths if not any(f == p or f.endswith("/" + p) for f in FILES)]
    assert not missing, f"ARCHITECTURE.md names files that do not exist: {missing}"


def test_every_code_name_named_is_defined() -> None:
    names: list[str] = []
    missing: set[str] = set()
    for span in SPANS:
        dotted, call = DOTTED.match(span), CALL.match(span)
        if dotted and not span.endswith(".py"):
            owner, member = dotted.group(1), dotted.group(2)
            names.append(member)
            if owner[0].isupper() and not _member_defined(owner, member):
                missing.add(f"{owner}.{member}")
        elif call:
            names.append(call.group(1))
        elif BARE.match(span):
            names.append(span)
    assert len(names) > 20, "the map names too little code to be a map"
    missing |= {n for n in names if not _defined(n)}
    missing = sorted(missing)
    assert not missing, f"ARCHITECTURE.md names code that is not defined: {missing}"

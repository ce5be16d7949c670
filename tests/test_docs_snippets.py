"""The python blocks of docs/*.md and of README.md (but its "Library use", which
tests/test_evaluate_library.py runs with checks of its own), run as written: in
order, one namespace per file, in a temporary working directory, so the docs cannot
rot silently. A block states what it claims with ``assert``; a policy it registers is
dropped afterwards; docs/DESIGN.md, the brief, is never run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(fence line, code)`` of every ```python block of ``path``, README's "## Library
    use" section left out."""
    text = path.read_text()
    if path.name == "README.md":
        start = text.index("\n## Library use\n")
        end = text.index("\n## ", start + 1)
        text = text[:start] + "\n" * text[start:end].count("\n") + text[end:]
    return [(text[:m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]


DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md")
                                    if p.name != "DESIGN.md")]
WITH_BLOCKS = [p for p in DOCS if python_blocks(p)]


def test_the_docs_hold_the_blocks_this_test_runs():
    """The extraction finds the blocks (a changed fence would otherwise skip them all)."""
    names = {p.relative_to(ROOT).as_posix() for p in WITH_BLOCKS}
    assert {"README.md", "docs/audit-trail.md", "docs/configuration.md", "docs/model.md",
            "docs/policies.md"} <= names
    readme = [code for _, code in python_blocks(ROOT / "README.md")]
    assert len(readme) == 1 and "gridswarm_env.parallel_env(" in readme[0]   # *Use*


@pytest.mark.parametrize("path", WITH_BLOCKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_doc_python_blocks_run_as_written(path, tmp_path, monkeypatch):
    import policies

    monkeypatch.chdir(tmp_path)
    policies.policy_names()   # the built-ins loaded; a block's register() dropped after
    monkeypatch.setattr(policies, "_REGISTRY", dict(policies._REGISTRY))
    namespace: dict = {"__name__": "__docs__"}
    for line, code in python_blocks(path):   # tracebacks give the doc's line numbers
        exec(compile("\n" * line + code, str(path.relative_to(ROOT)), "exec"), namespace)

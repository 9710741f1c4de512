"""The project's documents are its own: every one is linked from the README, and none points
outside the repository."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_readme_links_every_document():
    readme = (ROOT / "README.md").read_text()
    docs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    assert "docs/STATES.md" in docs
    missing = [d for d in docs if f"]({d})" not in readme]
    assert not missing, f"README.md does not link {missing}"
    for target in re.findall(r"\]\(([^)#:]+)\)", readme):  # every relative link resolves
        assert (ROOT / target).exists(), target


def test_no_document_or_test_points_outside_the_repository():
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "tests").rglob("*.py"),
             *(ROOT / "dfsync").rglob("*.py")]
    outside = re.compile(r"\.\./shared|/work[/](?:shared|main|wt)\b")
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in files if p.name != "test_docs.py"
           for i, line in enumerate(p.read_text().splitlines(), 1) if outside.search(line)]
    assert not bad, bad

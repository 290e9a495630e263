"""The documentation stays usable: links resolve, the README stays short, nothing points outside the repository.

A link or image in README.md or docs/*.md that names a missing file (or a heading
that no longer exists) is a broken promise to a reader, and a moved or renamed file
makes one silently. The README is product documentation with a length budget; the
experiment record lives in docs/experiments.md. The design notes the project was
started from are not part of the repository, so no file may send a reader to them.
"""

from __future__ import annotations

import os
import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted([README, *(REPO / "docs").glob("*.md")])
README_MAX_LINES = 260
# Spelled in pieces so this file does not contain what it forbids.
FORBIDDEN = ("../" + "shared", "shared" + "/design", "deq-fusion" + "-spec")

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def _prose(text: str) -> list[str]:
    """The lines of a Markdown file outside fenced and indented code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if fenced or line.startswith("    ") or line.startswith("\t"):
            continue
        lines.append(line)
    return lines


def _without_inline_code(line: str) -> str:
    return re.sub(r"`[^`]*`", "", line)


def links(path: Path) -> list[str]:
    """Every link and image target in the file's prose (code spans and blocks left out)."""
    return [m.group(1) for line in _prose(path.read_text(encoding="utf-8")) for m in LINK.finditer(_without_inline_code(line))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for line in _prose(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        result.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return result


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{target}: {resolved} does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    return problems


def repository_files() -> list[Path]:
    """Tracked and untracked, not ignored files; without git, every file outside hidden folders."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, check=True,
        ).stdout.decode("utf-8", "surrogateescape")  # fmt: skip
        return [REPO / name for name in listed.split("\0") if name and (REPO / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for root, dirs, names in os.walk(REPO):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
            files.extend(Path(root) / n for n in names)
        return files


def test_the_helpers_find_links_anchors_and_breakage(tmp_path):
    (tmp_path / "there.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# A `code` title: yes\n\n## Tests\n\n## Tests\n\n"
        "![shot](there.png) [gone](missing.md) [ok](#a-code-title-yes) [twice](#tests-1) [bad](#nowhere)\n"
        "`[not a link](nowhere.md)` [web](https://example.org/x)\n\n    [indented](code.md)\n",
        encoding="utf-8",
    )  # fmt: skip
    assert links(page) == ["there.png", "missing.md", "#a-code-title-yes", "#tests-1", "#nowhere", "https://example.org/x"]
    assert anchors(page) == {"a-code-title-yes", "tests", "tests-1"}
    problems = broken_links(page)
    assert len(problems) == 2 and problems[0].startswith("missing.md") and problems[1].startswith("#nowhere")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_links_and_images_resolve(path):
    assert broken_links(path) == []


def test_readme_shows_every_screenshot_it_names_and_stays_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    images = [t for t in links(README) if t.endswith(".png")]
    assert images and all((REPO / t).is_file() for t in images)


def test_no_file_points_outside_the_repository():
    offenders = []
    for path in repository_files():
        try:
            text = path.read_bytes().decode("utf-8", "ignore")
        except OSError:
            continue
        offenders.extend(f"{path.relative_to(REPO)}: {word}" for word in FORBIDDEN if word in text)
    assert offenders == []

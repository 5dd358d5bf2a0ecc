"""Every Markdown link and anchor in README.md and docs/ resolves: the file exists, and a
`#fragment` names a heading of it by GitHub's rules (github-slugger: lowercase, punctuation
other than `-` and `_` dropped, spaces to `-`, a repeated heading gets `-1`, `-2`, ...).
markdown-it-py (already installed with rich) parses the pages, so links in code are not links.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def _tokens(page: Path) -> list[Token]:
    return MarkdownIt("commonmark").enable("table").parse(page.read_text(encoding="utf-8"))


def slug(text: str) -> str:
    """GitHub's anchor for a heading's text."""
    kept = (c for c in text.lower() if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return "".join(kept).replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    tokens = _tokens(page)
    for opening, inline in itertools.pairwise(tokens):
        if opening.type != "heading_open":
            continue
        text = "".join(
            child.content
            for child in inline.children or []
            if child.type in ("text", "code_inline")
        )
        base = slug(text)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found.update(_HTML_ANCHOR.findall(page.read_text(encoding="utf-8")))
    return frozenset(found)


def links(page: Path) -> list[str]:
    found = []
    for token in _tokens(page):
        for child in token.children or []:
            target = child.attrGet("href") if child.type == "link_open" else None
            if child.type == "image":
                target = child.attrGet("src")
            if isinstance(target, str):
                found.append(target)
    return found


def broken(page: Path) -> list[str]:
    problems = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        where = (page.parent / unquote(path)).resolve() if path else page
        if not where.exists():
            problems.append(
                f"{target}: no {where.relative_to(REPO) if where.is_relative_to(REPO) else where}"
            )
        elif fragment and where.suffix == ".md" and unquote(fragment) not in anchors(where):
            problems.append(f"{target}: no heading #{fragment} in {_shown(where)}")
    return problems


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_and_anchor_resolves(page: Path) -> None:
    assert broken(page) == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Key custody: where the token key lives", "key-custody-where-the-token-key-lives"),
        ("Recovery (`logins reveal`)", "recovery-logins-reveal"),
        ("Secrets from AWS Secrets Manager and SSM", "secrets-from-aws-secrets-manager-and-ssm"),
        ("1. How would you deploy it?", "1-how-would-you-deploy-it"),
        ("Throughput of 1, 2 and 3 processes", "throughput-of-1-2-and-3-processes"),
        ("steps[validate].fields.*", "stepsvalidatefields"),
        ("Ümlaut & co_de", "ümlaut--co_de"),
    ],
)
def test_anchors_follow_githubs_rules(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_broken_anchor_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nope) [gone](missing.md) `[code](#x)`\n")
    assert broken(page) == [
        "#nope: no heading #nope in " + str(page),
        f"missing.md: no {tmp_path / 'missing.md'}",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_test_a_page_names_exists(page: Path) -> None:
    """A claim names the test that proves it: `tests/x.py` or `tests/x.py::test_name`."""
    missing = []
    for path, name in re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", page.read_text()):
        source = REPO / path
        if not source.is_file():
            missing.append(path)
        elif name and f"def {name}(" not in source.read_text():
            missing.append(f"{path}::{name}")
    assert missing == []

"""The documentation site: the generated pages are current, the strict build passes, every
public name is documented, and the optax comparison covers every optax name.

The pages are written by ``docs/gen_pages.py`` from the registry and the docstrings and
committed; ``make docs`` rewrites them and builds the site.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import types

import pytest

import gradtx

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GENERATOR = DOCS / "gen_pages.py"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _pages() -> dict[str, str]:
    return {p.relative_to(DOCS).as_posix(): p.read_text() for p in DOCS.rglob("*.md")}


def _public(module: types.ModuleType) -> list[str]:
    return [n for n in dir(module) if not n.startswith("_") and not isinstance(getattr(module, n), types.ModuleType)]


def test_generated_pages_are_current():
    result = _run(str(GENERATOR), "--check")
    assert result.returncode == 0, result.stderr.strip()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("site")
    result = _run("-m", "mkdocs", "build", "--strict", "--site-dir", str(out))
    assert result.returncode == 0, "mkdocs build --strict failed:\n" + result.stderr[-4000:]
    return out


def test_site_builds_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "coming_from_optax" / "index.html").is_file()


def test_every_public_name_is_documented_once(site):
    directives = re.findall(r"^::: gradtx\.(\w+)\s*$", "\n".join(_pages().values()), flags=re.M)
    assert sorted(n for n in set(directives) if directives.count(n) > 1) == [], "documented twice"
    assert sorted(set(gradtx.__all__) - set(directives)) == [], "no ::: gradtx.<name> entry"
    html = "\n".join(p.read_text() for p in site.rglob("*.html"))
    assert sorted(n for n in gradtx.__all__ if f'id="gradtx.{n}"' not in html) == [], "no rendered entry"


def test_coming_from_optax_lists_every_optax_name():
    import optax
    import optax.contrib

    page = _pages()["coming_from_optax.md"]
    listed = set(re.findall(r"^\| `(optax(?:\.contrib)?\.\w+)` \|", page, flags=re.M))
    expected = {f"optax.{n}" for n in _public(optax)} | {f"optax.contrib.{n}" for n in _public(optax.contrib)}
    assert sorted(expected - listed) == []
    assert sorted(listed - expected) == []
    assert f"of optax's {len(_public(optax))} public names" in page


def test_coming_from_optax_provides_95_percent_of_the_optimizer_kinds_and_says_why_not():
    page = _pages()["coming_from_optax.md"]
    share = float(re.search(r"gradtx provides \d+ \(([\d.]+)%\)", page).group(1))
    assert share >= 95.0
    tables = re.split(r"^### ", page, flags=re.M)
    counted = [t for t in tables if t.split("\n", 1)[0] in ("Optimizers", "Transformations",
                                                           "Combinators and wrappers", "Schedules")]
    unexplained = [line for t in counted for line in t.splitlines() if line.endswith("| not yet |  |")]
    assert unexplained == []


def test_guarantees_name_tests_that_exist():
    """Reference: the test files themselves. Each ``tests/<file>.py::<test>`` the Guarantees
    page cites is a test function of that file (the page cannot outlive its tests)."""
    page = _pages()["guarantees.md"]
    cited = set(re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", page))
    assert len(cited) >= 30, cited
    missing = sorted(f"{path}::{name}" for path, name in cited
                     if not re.search(rf"^\s*def {name}\(", (ROOT / path).read_text(), flags=re.M))
    assert missing == []

"""docs/security.md names the test that proves each defence: every test it names exists, so the
threat model cannot quietly point at a test that was renamed or removed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECURITY = ROOT / "docs" / "security.md"


def named_tests(doc: str) -> set[str]:
    """Test names in backticks: ``module::name``, ``…::name`` or ``test_file.py::name``."""
    names = set()
    for quoted in re.findall(r"`([^`\n]+)`", doc):
        if "::" not in quoted:
            continue
        name = quoted.rsplit("::", 1)[-1]
        if re.fullmatch(r"[a-z][a-z0-9_]*_[a-z0-9_]+", name):
            names.add(name)
    return names


def defined_tests() -> set[str]:
    sources = [*ROOT.glob("src/**/*.rs"), *ROOT.glob("tests/*.rs"), *ROOT.glob("tests/python/*.py")]
    pattern = re.compile(
        r"^\s*(?:pub(?:\([a-z]+\))?\s+)?(?:async\s+)?(?:fn|def)\s+([a-z][a-z0-9_]*)", re.M
    )
    return {name for path in sources for name in pattern.findall(path.read_text())}


def test_every_test_the_threat_model_names_exists():
    names = named_tests(SECURITY.read_text())
    assert len(names) > 40, f"the parser found only {len(names)} test names"
    missing = sorted(names - defined_tests())
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_the_parser_notices_a_missing_test():
    doc = "proved by `writes::a_test_that_was_never_written` and `x::y`"
    assert named_tests(doc) == {"a_test_that_was_never_written"}
    assert "a_test_that_was_never_written" not in defined_tests()

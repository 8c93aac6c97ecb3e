"""Golden `check` reports: for every architectures/*.arch, the text report must equal
tests/golden/reports/NAME.txt byte for byte.

The text report is what a person reads, so any change to it shows up here as a diff a person
can review. (The `--json` report, schema cnndsl.check/1, has no golden file: it is checked by
structure and against the torch module in tests/test_report_json.py.) After an intended change,
regenerate and review:

    python -m pytest tests/test_report_golden.py --update-golden
    git diff tests/golden/reports
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "reports"
ARCH_FILES = sorted((ROOT / "architectures").glob("*.arch"))  # not invalid/: those must fail
UPDATE_HINT = "python -m pytest tests/test_report_golden.py --update-golden"


def _check_output(cli, path: Path) -> str:
    """stdout of `cnndsl check architectures/NAME.arch`, run from the repo root
    (the report names the file as given, so the path must not depend on where pytest runs)."""
    result = cli("check", str(path.relative_to(ROOT)))
    assert result.code == 0, f"cnndsl check {path.name} exited {result.code}:\n{result.err}"
    assert result.err == ""
    return result.out


def _compare(actual: str, golden: Path, update: bool) -> None:
    if update:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    if not golden.is_file():
        pytest.fail(f"no golden file {golden.relative_to(ROOT)}; create it with `{UPDATE_HINT}`, "
                    "then review it and add it to git", pytrace=False)
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            str(golden.relative_to(ROOT)), "cnndsl check (now)", n=1))
        pytest.fail(f"report differs from {golden.relative_to(ROOT)} "
                    f"(if the change is intended, run `{UPDATE_HINT}`):\n{diff}", pytrace=False)


@pytest.mark.parametrize("path", ARCH_FILES, ids=lambda p: p.stem)
def test_text_report_matches_golden(path, cli, update_golden):
    _compare(_check_output(cli, path), GOLDEN / f"{path.stem}.txt", update_golden)


def test_corpus_is_not_empty():
    assert len(ARCH_FILES) >= 5, "architectures/*.arch went missing: the golden tests would check nothing"

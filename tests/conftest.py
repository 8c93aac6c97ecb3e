"""Shared test helpers: `--update-golden`, running the CLI in-process, and the hypothesis
profiles that keep the suite bounded.

Hypothesis profiles:
- `ci` (the default, and always when CI=true): derandomized, so every run draws the same
  examples; each example must finish within a 2 s deadline; a bounded number of examples.
- `fuzz` (HYPOTHESIS_PROFILE=fuzz, for fuzzing locally): random, 50x the examples, the same
  deadline; a failure prints its reproduction blob.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]

DEADLINE = timedelta(seconds=2)
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", derandomize=True, deadline=DEADLINE, max_examples=200, print_blob=True,
                          database=None, suppress_health_check=_QUIET)
settings.register_profile("fuzz", derandomize=False, deadline=DEADLINE, max_examples=10_000, print_blob=True,
                          suppress_health_check=_QUIET)
PROFILE = "ci" if os.environ.get("CI", "").lower() == "true" else os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """`n` examples under the ci profile, scaled up as much as the loaded profile is (50x in `fuzz`)."""
    return n * settings.default.max_examples // settings.get_profile("ci").max_examples


def pytest_report_header(config) -> str:
    return f"hypothesis profile: {PROFILE} (HYPOTHESIS_PROFILE=fuzz for a long random run; CI=true forces ci)"


def pytest_collection_modifyitems(items) -> None:
    """Longer timeouts where the run is meant to be long: a packaging test builds and installs a
    wheel; under the `fuzz` profile a hypothesis test draws 50x the examples."""
    for item in items:
        if item.get_closest_marker("timeout"):
            continue
        if item.get_closest_marker("packaging"):
            item.add_marker(pytest.mark.timeout(300))
        elif PROFILE != "ci" and getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.timeout(3600))


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the golden files under tests/golden/ from the current output")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str) -> CliResult:
    """`cnndsl ARGS` in this process, with stdout and stderr captured."""
    from cnndsl.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(monkeypatch):
    """run_cli from the repository root, so relative paths (and golden output) are stable."""
    monkeypatch.chdir(ROOT)
    return run_cli

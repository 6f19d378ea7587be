"""Command-line options of the test suite."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--refresh-screenshots",
        action="store_true",
        help="write the browser tests' screenshots of the bundled model into docs/ (the README shows them); "
        "without it they go to a temporary folder and no tracked file changes",
    )

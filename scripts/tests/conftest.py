"""pytest options of scripts/tests.

`--embedstream-bin BIN` (or EMBEDSTREAM_BIN): the binary the tests marked
`multihost` start. They are deselected by default (scripts/pytest.ini);
scripts/ci_crosschecks.sh runs them with `-m multihost --embedstream-bin BIN`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--embedstream-bin", default=os.environ.get("EMBEDSTREAM_BIN"),
                     help="the embedstream binary the multihost tests run")


@pytest.fixture(scope="session")
def embedstream_bin(request) -> Path:
    value = request.config.getoption("--embedstream-bin")
    if not value:
        pytest.fail("the multihost tests need --embedstream-bin BIN (or EMBEDSTREAM_BIN)")
    path = Path(value).resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"--embedstream-bin {value}: not an executable")
    return path

"""embedstream's Python helpers: test data, cross-checks, reference servers, benchmarks.

Every module runs as `python -m embedstream_py.<module>` with `scripts/` on the
module path, from the repository root:

    PYTHONPATH=scripts .venv-check/bin/python -m embedstream_py.grpc_check --help

(scripts/README.md lists every module). This file is standard library only:
create_test_data and bench.startup run with the system python3.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent
REPO = SCRIPTS.parent
PROTO = REPO / "proto" / "embedding_stream.proto"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ with scripts/ first on PYTHONPATH (and `extra`): the
    environment in which a child runs `python -m embedstream_py.…`."""
    env = dict(os.environ)
    rest = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(SCRIPTS) + (os.pathsep + rest if rest else "")
    if extra:
        env.update(extra)
    return env


def module_cmd(module: str, *args, python: str | os.PathLike = sys.executable) -> list[str]:
    """The argv that runs `embedstream_py.<module>` (run it with child_env())."""
    return [str(python), "-m", f"embedstream_py.{module}", *map(str, args)]

"""The Python gRPC stubs of proto/embedding_stream.proto, compiled once.

    pb2, pb2_grpc = stubs()

grpcio-tools (from the running venv) compiles the .proto into a cache
directory named after the proto's content and the grpcio-tools version; later
calls, and later processes, import from there. The cache lives inside the
venv (`<venv>/embedstream-stubs/`), so it goes with the venv that made it;
outside a venv it is `~/.cache/embedstream/stubs/`; EMBEDSTREAM_STUB_CACHE
overrides both. A compile goes to a temporary directory that is renamed into
place, so concurrent first runs never see half a cache.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from embedstream_py import PROTO

_LOADED: dict[Path, tuple[ModuleType, ModuleType]] = {}


def cache_root() -> Path:
    env = os.environ.get("EMBEDSTREAM_STUB_CACHE")
    if env:
        return Path(env)
    if sys.prefix != sys.base_prefix:  # a venv
        return Path(sys.prefix) / "embedstream-stubs"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "embedstream" / "stubs"


def _compile(proto: Path, into: Path) -> None:
    import importlib.resources

    from grpc_tools import protoc

    inc = str(importlib.resources.files("grpc_tools") / "_proto")
    rc = protoc.main(["protoc", f"-I{proto.parent}", f"-I{inc}", f"--python_out={into}",
                      f"--grpc_python_out={into}", str(proto)])
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed ({rc}) on {proto}")


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    # The generated *_pb2_grpc imports `<stem>_pb2` by its top-level name.
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def stubs(proto: Path = PROTO) -> tuple[ModuleType, ModuleType]:
    """(<stem>_pb2, <stem>_pb2_grpc) of `proto`, compiled on first use."""
    proto = proto.resolve()
    if proto in _LOADED:
        return _LOADED[proto]
    from importlib.metadata import PackageNotFoundError, version

    try:
        tools = version("grpcio-tools")
    except PackageNotFoundError:
        raise SystemExit(f"grpcio-tools is not installed in {sys.prefix}: the stubs of {proto} "
                         "are compiled with it (scripts/requirements-check.txt)") from None
    digest = hashlib.sha256(proto.read_bytes()).hexdigest()[:16]
    out = cache_root() / f"{proto.stem}-{digest}-grpcio-tools-{tools}"
    if not out.is_dir():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".compiling-", dir=out.parent))
        try:
            _compile(proto, tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is not
            try:
                tmp.rename(out)
            except OSError:  # another process put it there first
                if not out.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    pb2 = _load(f"{proto.stem}_pb2", out / f"{proto.stem}_pb2.py")
    pb2_grpc = _load(f"{proto.stem}_pb2_grpc", out / f"{proto.stem}_pb2_grpc.py")
    _LOADED[proto] = (pb2, pb2_grpc)
    return pb2, pb2_grpc

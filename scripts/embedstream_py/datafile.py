"""A converted file (src/format.rs) as the Python side reads it, and its rows
as the wire carries them (RecruitRow): one reading for the checkers, the
reference servers, the receiver and the benchmarks.

Needs numpy and pyarrow (the check or bench venv).
"""
from __future__ import annotations

import bisect
import re
import uuid
from pathlib import Path

import numpy as np

# The wire (proto/embedding_stream.proto, src/format.rs).
MAX_MESSAGE = 100 * 1024 * 1024  # the Batch Server's message limit, both directions
GRPC_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE)]
DEFAULT_CHUNK = 300  # rows per RowChunk when the request says 0
I32_MAX = 2**31 - 1
PACKAGES = ("embedding", "com.alpha.backend.grpc")  # the service under both names
SERVICE = "EmbeddingStreamService"
DEFAULT_KEY = "uuid"
META_KEY_COLUMN = "embedstream.key_column"
META_VECTOR_COLUMN = "embedstream.vector_column"

_LEADING_DIGITS = re.compile(r"[0-9]*")


def read_table(path: Path | str):
    """The whole IPC file as a pyarrow Table (memory-mapped, zero-copy)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as src:
        return pa.ipc.open_file(src).read_all()


def metadata(table) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}


def plain(column):
    """One array without extension type or dictionary encoding."""
    import pyarrow as pa

    c = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(c.type, pa.BaseExtensionType):
        c = c.storage
    if pa.types.is_dictionary(c.type):
        c = c.dictionary_decode()
    return c


def key_column(table, override: str | None = None) -> str:
    return override or metadata(table).get(META_KEY_COLUMN, DEFAULT_KEY)


def key_bytes(table, override: str | None = None) -> list[bytes]:
    """The key column's 16-byte values, in file order."""
    return plain(table.column(key_column(table, override))).to_pylist()


def parse_years(s) -> int:
    """exp_years as serve sends it: the leading digits of `Ny` (0 without
    digits or for null), clamped to i32; an integer column as is."""
    if s is None:
        return 0
    if isinstance(s, (int, np.integer)):
        return int(s)
    digits = _LEADING_DIGITS.match(s.lstrip()).group(0)
    return min(int(digits), I32_MAX) if digits else 0


class DefaultMapping:
    """The RecruitRow mapping `serve` and `upload` use when given no flags
    (key and vector from the file's metadata)."""

    key_column = vector_column = None
    company_name_column = "Company Name"
    exp_years_column = "Exp Years"
    english_level_column = "English Level"
    primary_keyword_column = "Primary Keyword"


class Expected:
    """The file's rows as the server must send them (and upload upload them)."""

    def __init__(self, path: Path, mapping=DefaultMapping):
        import pyarrow as pa

        table = read_table(path)
        vec = mapping.vector_column or metadata(table).get(META_VECTOR_COLUMN)
        if vec is None:
            vec = next((f.name for f in table.schema
                        if pa.types.is_fixed_size_list(f.type)), None)
        if vec is None:
            raise SystemExit(f"{path}: no vector column")

        def col(name):
            if name not in table.schema.names:
                raise SystemExit(f"{path}: no column {name!r} (columns: {table.schema.names})")
            return plain(table.column(name))

        keys = col(key_column(table, mapping.key_column)).to_pylist()
        self.ids = [str(uuid.UUID(bytes=k)) for k in keys]
        self.key_bytes = keys
        self.company = [v or "" for v in col(mapping.company_name_column).to_pylist()]
        self.exp = [parse_years(v) for v in col(mapping.exp_years_column).to_pylist()]
        self.english = [v or "" for v in col(mapping.english_level_column).to_pylist()]
        self.keyword = [v or "" for v in col(mapping.primary_keyword_column).to_pylist()]
        v = col(vec)
        self.dim = v.type.list_size
        flat = v.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        self.vectors = flat.reshape(len(v), self.dim)
        self.vector_null = v.is_null().to_numpy(zero_copy_only=False)
        self.rows = len(keys)

    def fields(self, r: int) -> tuple:
        """Row r's scalar RecruitRow fields: (id, company_name, exp_years,
        english_level, primary_keyword)."""
        return self.ids[r], self.company[r], self.exp[r], self.english[r], self.keyword[r]

    def after(self, key_text: str) -> int:
        """Index of the first row whose key is greater than `key_text`."""
        return bisect.bisect_right(self.key_bytes, uuid.UUID(key_text).bytes)

"""Cross-check a converted embedstream file with four independent readers.

    python -m embedstream_py.check_output CONVERTED.arrow SOURCE.pkl [--expected X.expected.json]
        [--format ipc|parquet] [--key-column uuid] [--readers pyarrow,polars,duckdb,pandas]

Run it in the venv made from scripts/requirements-check.txt. The source pickle
is trusted here (it is loaded with pandas.read_pickle, which runs code: never
point this at a pickle you did not make). With --expected, the file is also
compared with what the fixture's expected.json says pandas held when it wrote
the pickle.

Each reader loads CONVERTED itself:
  pyarrow  pyarrow.ipc / pyarrow.parquet
  polars   polars.read_ipc / read_parquet (its own Rust reader)
  duckdb   read_parquet for Parquet; DuckDB has no built-in Arrow IPC file
           reader (that is a community extension it would download), so for
           IPC it scans the file's record batches through the Arrow C stream
           (pyarrow opens the file, DuckDB converts every value itself)
  pandas   pandas.read_feather / read_parquet
and every column is compared with the pickle: column order and names, strings,
nulls, categories, integers, floats (bit for bit), datetimes (nanoseconds, tz),
vectors (as float32 unless the file keeps float64). The key column must be
FixedSizeBinary(16) (arrow.uuid), version-7 UUIDs, strictly increasing, and the
schema metadata must carry the `embedstream.*` keys of src/format.rs.

Prints one line per reader; exits 1 with the mismatches on stderr if any.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

META_PREFIX = "embedstream."
META_KEY_COLUMN = "embedstream.key_column"
META_VECTOR_COLUMN = "embedstream.vector_column"
META_VECTOR_DIM = "embedstream.vector_dim"
META_ROWS = "embedstream.rows"
META_SOURCE = "embedstream.source"
META_VERSION = "embedstream.version"
META_KEYS_SORTED = "embedstream.keys_sorted"
DEFAULT_KEY = "uuid"
MAX_REPORTED = 5


class Mismatch(Exception):
    pass


@dataclass
class Col:
    """A column in a reader-independent form.

    kind: string | int | uint | float | bool | category | datetime | vector | empty
    values: list for string/int/uint/bool/category/datetime (None = missing);
            float -> np.float64 array + `missing` mask;
            vector -> 2-D np array (rows x dim) + `missing` rows.
    """
    name: str
    kind: str
    values: object
    missing: np.ndarray | None = None
    tz: str | None = None
    unit_ns: int = 1               # datetime: nanoseconds per unit the reader kept
    categories: list | None = None
    float_width: int = 64          # float/vector: width the file holds
    nan_is_missing: bool = False   # expected side: pandas NaN is "missing"
    note: str = ""


# ---------------------------------------------------------------------------
# Expected side: pandas objects and expected.json
# ---------------------------------------------------------------------------

def _pd_missing(v) -> bool:
    import pandas as pd

    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, (float, np.floating)) and math.isnan(v):
        return True
    return False


def col_from_pandas(name: str, s) -> Col:
    """What pandas holds in Series `s`."""
    import pandas as pd
    from pandas.api import types as t

    if isinstance(s.dtype, pd.CategoricalDtype):
        return Col(name, "category", [None if _pd_missing(v) else str(v) for v in s],
                   categories=[str(c) for c in s.cat.categories])
    if t.is_datetime64_any_dtype(s.dtype):
        tz = getattr(s.dtype, "tz", None)
        vals = [None if _pd_missing(v) else int(pd.Timestamp(v).value) for v in s]
        return Col(name, "datetime", vals, tz=None if tz is None else str(tz))
    if t.is_bool_dtype(s.dtype) and not t.is_object_dtype(s.dtype):
        return Col(name, "bool", [None if _pd_missing(v) else bool(v) for v in s])
    if t.is_integer_dtype(s.dtype):
        kind = "uint" if t.is_unsigned_integer_dtype(s.dtype) else "int"
        return Col(name, kind, [None if _pd_missing(v) else int(v) for v in s])
    if t.is_float_dtype(s.dtype):
        masked = isinstance(s.dtype, pd.api.extensions.ExtensionDtype)
        arr = s.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = s.isna().to_numpy()
        width = 32 if str(s.dtype).lower() == "float32" else 64
        return Col(name, "float", arr, missing=missing, float_width=width,
                   nan_is_missing=not masked)
    if t.is_string_dtype(s.dtype) and not t.is_object_dtype(s.dtype):
        return Col(name, "string", [None if _pd_missing(v) else str(v) for v in s])
    if t.is_object_dtype(s.dtype):
        vals = list(s)
        present = [v for v in vals if not _pd_missing(v)] if len(vals) < 10_000 else \
            [v for v in vals[:10_000] if not _pd_missing(v)]
        if not vals:
            return Col(name, "empty", [])
        if present and all(isinstance(v, str) for v in present):
            return Col(name, "string", [None if _pd_missing(v) else v for v in vals])
        if present and all(isinstance(v, (list, np.ndarray)) for v in present):
            return vector_col(name, vals)
        if present and all(isinstance(v, (bool, np.bool_)) for v in present):
            return Col(name, "bool", [None if _pd_missing(v) else bool(v) for v in vals])
        raise Mismatch(f"column {name!r}: cannot classify pandas object values {present[:2]!r}")
    raise Mismatch(f"column {name!r}: unhandled pandas dtype {s.dtype}")


def vector_col(name: str, cells: list) -> Col:
    rows = len(cells)
    missing = np.array([c is None for c in cells], dtype=bool)
    lengths = {len(c) for c in cells if c is not None}
    if len(lengths) > 1:
        raise Mismatch(f"column {name!r}: vectors of different lengths {sorted(lengths)[:5]}")
    dim = lengths.pop() if lengths else 0
    width = 64
    first = next((c for c in cells if c is not None), None)
    if isinstance(first, np.ndarray) and first.dtype == np.float32:
        width = 32
    out = np.zeros((rows, dim), dtype=np.float64)
    for i, c in enumerate(cells):
        if c is not None:
            out[i] = np.asarray(c, dtype=np.float64)
    return Col(name, "vector", out, missing=missing, float_width=width)


def cols_from_pickle(path: Path) -> tuple[int, list[Col]]:
    import pandas as pd

    obj = pd.read_pickle(path)
    df = obj if isinstance(obj, pd.DataFrame) else pd.DataFrame(obj)
    return len(df), [col_from_pandas(str(c), df.iloc[:, i]) for i, c in enumerate(df.columns)]


def cols_from_expected(path: Path) -> tuple[int, list[Col], str | None]:
    d = json.loads(path.read_text(encoding="utf-8"))
    if d.get("error"):
        return d["rows"], [], d["error"]
    cols = []
    for c in d["columns"]:
        kind, vals = c["kind"], c["values"]
        if kind == "float":
            missing = np.array([v is None for v in vals], dtype=bool)
            arr = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
            width = 32 if c["dtype"].lower() == "float32" else 64
            cols.append(Col(c["name"], kind, arr, missing=missing, float_width=width,
                            nan_is_missing=c["dtype"] != "Float64"))
        elif kind == "vector":
            col = vector_col(c["name"], vals)
            col.float_width = 32 if c["name"] and _looks_f32(vals) else 64
            cols.append(col)
        else:
            cols.append(Col(c["name"], kind, vals, tz=c.get("tz"),
                            categories=c.get("categories")))
    return d["rows"], cols, d.get("error")


def _looks_f32(vals) -> bool:
    """Whether every vector value is exactly a float32 (a float32 source)."""
    for v in vals:
        if v is None:
            continue
        a = np.asarray(v, dtype=np.float64)
        if not np.array_equal(a.astype(np.float32).astype(np.float64), a, equal_nan=True):
            return False
    return True


# ---------------------------------------------------------------------------
# File side: Arrow data from any reader, normalised to Col
# ---------------------------------------------------------------------------

def col_from_arrow(name: str, arr, reader: str) -> Col:
    """`arr`: a pyarrow Array/ChunkedArray as the reader produced it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    typ = arr.type
    if isinstance(typ, pa.BaseExtensionType):
        arr = arr.storage
        typ = arr.type
    if pa.types.is_dictionary(typ):
        cats = [None if v is None else str(v) for v in arr.dictionary.to_pylist()]
        decoded = arr.dictionary_decode()
        return Col(name, "category", [None if v is None else str(v) for v in decoded.to_pylist()],
                   categories=cats)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ):
        return Col(name, "string", arr.to_pylist())
    if pa.types.is_boolean(typ):
        return Col(name, "bool", arr.to_pylist())
    if pa.types.is_integer(typ):
        return Col(name, "uint" if pa.types.is_unsigned_integer(typ) else "int", arr.to_pylist(),
                   note=str(typ))
    if pa.types.is_floating(typ):
        missing = arr.is_null().to_numpy(zero_copy_only=False)
        vals = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
        return Col(name, "float", vals, missing=missing, float_width=typ.bit_width, note=str(typ))
    if pa.types.is_timestamp(typ):
        per = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[typ.unit]
        ints = arr.cast(pa.int64()).to_pylist()
        return Col(name, "datetime", ints, tz=typ.tz, unit_ns=per, note=str(typ))
    if pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ):
        item = typ.value_type
        if not pa.types.is_floating(item):
            raise Mismatch(f"{reader}: column {name!r} is a list of {item}, expected floats")
        missing = arr.is_null().to_numpy(zero_copy_only=False)
        rows = len(arr)
        if pa.types.is_fixed_size_list(typ):
            dim = typ.list_size
            flat = arr.flatten() if arr.offset == 0 and arr.null_count == 0 else \
                pc.list_flatten(arr.fill_null(pa.scalar([0.0] * dim, type=typ)))
        else:
            lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
            present = lengths[~missing]
            dim = int(present[0]) if len(present) else 0
            if len(present) and not np.all(present == dim):
                raise Mismatch(f"{reader}: column {name!r}: list lengths differ")
            flat = pc.list_flatten(arr)
            if missing.any():
                raise Mismatch(f"{reader}: column {name!r}: null rows in a variable list "
                               "vector column cannot be compared")
        vals = flat.to_numpy(zero_copy_only=False)
        if len(vals) != rows * dim:
            raise Mismatch(f"{reader}: column {name!r}: {len(vals)} values for {rows}x{dim}")
        return Col(name, "vector", vals.reshape(rows, dim), missing=missing,
                   float_width=item.bit_width, note=str(typ))
    if pa.types.is_null(typ):
        return Col(name, "empty", [None] * len(arr), note=str(typ))
    if pa.types.is_fixed_size_binary(typ) or pa.types.is_binary(typ) or \
            pa.types.is_large_binary(typ) or pa.types.is_binary_view(typ):
        return Col(name, "binary", arr.to_pylist(), note=str(typ))
    raise Mismatch(f"{reader}: column {name!r} has type {typ}, which no pandas column becomes")


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------

def _first_diffs(a: list, b: list) -> str:
    out = []
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            out.append(f"row {i}: file {x!r} != pandas {y!r}")
            if len(out) >= MAX_REPORTED:
                break
    return "; ".join(out)


def compare(got: Col, want: Col, reader: str) -> list[str]:
    """Differences between the file's column (`got`) and pandas' (`want`)."""
    p = f"{reader}: column {want.name!r}"
    if want.kind == "empty":
        return [] if len(got.values) == 0 else [f"{p}: expected 0 rows, got {len(got.values)}"]
    kinds_ok = {want.kind} | ({"string"} if want.kind == "category" else set())
    if want.kind in ("int", "uint"):
        kinds_ok |= {"int", "uint"}
    if got.kind not in kinds_ok:
        return [f"{p}: pandas has {want.kind}, the file has {got.kind} ({got.note})"]
    n_got = len(got.values)
    n_want = len(want.values)
    if n_got != n_want:
        return [f"{p}: {n_got} rows in the file, {n_want} in pandas"]
    errs = []
    if want.kind in ("string", "int", "uint", "bool", "category"):
        if got.values != want.values:
            errs.append(f"{p}: values differ: {_first_diffs(got.values, want.values)}")
        if want.kind == "category" and got.kind == "category" and reader == "pyarrow" \
                and got.categories != want.categories:
            errs.append(f"{p}: categories {got.categories} != pandas {want.categories}")
    elif want.kind == "datetime":
        if (got.tz is None) != (want.tz is None):
            errs.append(f"{p}: time zone {got.tz!r} != pandas {want.tz!r}")
        elif got.tz != want.tz and reader != "duckdb":
            # DuckDB hands TIMESTAMPTZ back in its session zone: same instants,
            # another name. Everyone else must keep the zone.
            if not ({got.tz, want.tz} <= {"UTC", "Etc/UTC", "+00:00"}):
                errs.append(f"{p}: time zone {got.tz!r} != pandas {want.tz!r}")
        unit = got.unit_ns
        want_vals = [None if v is None else v // unit for v in want.values]
        if got.values != want_vals:
            errs.append(f"{p}: timestamps differ (in units of {unit} ns): "
                        f"{_first_diffs(got.values, want_vals)}")
    elif want.kind == "float":
        gm, wm = got.missing, want.missing
        gv, wv = got.values, want.values
        if want.nan_is_missing:
            # pandas float64 NaN means missing; the file may hold null or NaN.
            gm = gm | np.isnan(gv)
        bad = np.flatnonzero(gm != wm)
        if len(bad):
            errs.append(f"{p}: missing at rows {bad[:MAX_REPORTED].tolist()} differ")
        both = ~gm & ~wm
        if got.float_width < want.float_width:
            errs.append(f"{p}: the file narrowed float{want.float_width} to float{got.float_width}")
        gbits = gv[both].view(np.int64)
        wbits = wv[both].view(np.int64)
        diff = np.flatnonzero(gbits != wbits)
        if len(diff):
            rows = np.flatnonzero(both)[diff[:MAX_REPORTED]]
            errs.append(f"{p}: values differ at rows {rows.tolist()}: "
                        f"file {gv[rows].tolist()} != pandas {wv[rows].tolist()}")
    elif want.kind == "vector":
        if got.values.shape != want.values.shape:
            return [f"{p}: shape {got.values.shape} != pandas {want.values.shape}"]
        bad = np.flatnonzero(got.missing != want.missing)
        if len(bad):
            errs.append(f"{p}: null rows differ at {bad[:MAX_REPORTED].tolist()}")
        if got.float_width == 32:
            g = got.values.astype(np.float32)
            w = want.values.astype(np.float32)
        else:
            g, w = got.values, want.values
        ok = (g == w) | (np.isnan(g) & np.isnan(w))
        ok[got.missing | want.missing] = True
        rows = np.flatnonzero(~ok.all(axis=1))
        if len(rows):
            r = int(rows[0])
            j = int(np.flatnonzero(~ok[r])[0])
            errs.append(f"{p}: vectors differ in {len(rows)} rows, first row {r} "
                        f"component {j}: file {g[r, j]!r} != pandas {w[r, j]!r} "
                        f"(compared as float{got.float_width})")
    return errs


def check_key(col: Col, reader: str) -> tuple[list[str], str]:
    """Key column: 16-byte, version 7, variant RFC 9562, strictly increasing."""
    p = f"{reader}: key column {col.name!r}"
    vals = col.values
    if col.kind == "string":  # DuckDB hands UUIDs back as text
        import uuid

        try:
            vals = [None if v is None else uuid.UUID(v).bytes for v in vals]
        except ValueError as e:
            return [f"{p}: not UUID text: {e}"], ""
    elif col.kind != "binary":
        return [f"{p}: type {col.note or col.kind}, expected 16-byte binary UUIDs"], ""
    if any(v is None for v in vals):
        return [f"{p}: contains nulls"], ""
    if any(len(v) != 16 for v in vals):
        return [f"{p}: values are not 16 bytes"], ""
    if not vals:
        return [], "no keys"
    raw = np.frombuffer(b"".join(vals), dtype=np.uint8).reshape(-1, 16)
    errs = []
    bad_ver = np.flatnonzero(raw[:, 6] >> 4 != 7)
    if len(bad_ver):
        errs.append(f"{p}: rows {bad_ver[:MAX_REPORTED].tolist()} are not version 7")
    bad_var = np.flatnonzero(raw[:, 8] >> 6 != 0b10)
    if len(bad_var):
        errs.append(f"{p}: rows {bad_var[:MAX_REPORTED].tolist()} do not have the RFC variant")
    words = raw.view(">u8").reshape(-1, 2)
    hi, lo = words[:, 0], words[:, 1]
    inc = (hi[1:] > hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] > lo[:-1]))
    not_inc = np.flatnonzero(~inc)
    if len(not_inc):
        errs.append(f"{p}: not strictly increasing at rows "
                    f"{(not_inc[:MAX_REPORTED] + 1).tolist()}")
    return errs, "uuid v7 strictly increasing"


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------

def read_pyarrow(path: Path, fmt: str):
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    else:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    return table


def read_polars(path: Path, fmt: str):
    import polars as pl

    df = pl.read_parquet(path) if fmt == "parquet" else pl.read_ipc(path)
    # polars' own export; every value went through polars' reader first.
    return df.to_arrow()


def read_duckdb(path: Path, fmt: str):
    import duckdb

    con = duckdb.connect()
    if fmt == "parquet":
        rel = con.sql("SELECT * FROM read_parquet(?)", params=[str(path)])
    else:
        import pyarrow as pa

        source = pa.memory_map(str(path))
        reader = pa.ipc.open_file(source)
        stream = pa.RecordBatchReader.from_batches(
            reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches)))
        rel = con.from_arrow(stream)
    table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.fetch_arrow_table()
    return table


def read_pandas(path: Path, fmt: str):
    import pandas as pd

    # numpy_nullable keeps integer and boolean columns with nulls as Int64 /
    # boolean instead of widening them to float64 / object.
    if fmt == "parquet":
        return pd.read_parquet(path, dtype_backend="numpy_nullable")
    return pd.read_feather(path, dtype_backend="numpy_nullable")


def file_cols_from_pandas_df(df, key: str) -> tuple[list[Col], Col | None]:
    cols, key_col = [], None
    for i, name in enumerate(df.columns):
        s = df.iloc[:, i]
        if str(name) == key:
            vals = [None if v is None else (v.bytes if hasattr(v, "bytes") else bytes(v))
                    for v in s]
            key_col = Col(key, "binary", vals, note=str(s.dtype))
            continue
        cols.append(col_from_pandas(str(name), s))
    return cols, key_col


# ---------------------------------------------------------------------------

@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def check_metadata(table, path_source: Path, key: str, rows: int, want: list[Col],
                   rep: Report) -> None:
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    p = "metadata"
    if meta.get(META_KEY_COLUMN, DEFAULT_KEY) != key:
        rep.errors.append(f"{p}: {META_KEY_COLUMN} is {meta.get(META_KEY_COLUMN)!r}, "
                          f"the key column checked is {key!r}")
    for k in (META_KEY_COLUMN, META_ROWS, META_SOURCE, META_VERSION):
        if not meta.get(k):
            rep.errors.append(f"{p}: {k} is missing")
    if meta.get(META_ROWS) and meta[META_ROWS] != str(rows):
        rep.errors.append(f"{p}: {META_ROWS} = {meta[META_ROWS]} but the file has {rows} rows")
    if meta.get(META_SOURCE) and os.path.basename(meta[META_SOURCE]) != path_source.name:
        rep.errors.append(f"{p}: {META_SOURCE} = {meta[META_SOURCE]!r}, "
                          f"the source is {path_source.name!r}")
    if META_KEYS_SORTED in meta and meta[META_KEYS_SORTED] not in ("true", "false"):
        rep.errors.append(f"{p}: {META_KEYS_SORTED} = {meta[META_KEYS_SORTED]!r}")
    vectors = [c for c in want if c.kind == "vector"]
    if vectors:
        vname = meta.get(META_VECTOR_COLUMN)
        if vname is None:
            rep.errors.append(f"{p}: {META_VECTOR_COLUMN} is missing but pandas has a vector "
                              f"column {vectors[0].name!r}")
        elif vname not in [c.name for c in vectors]:
            rep.errors.append(f"{p}: {META_VECTOR_COLUMN} = {vname!r} is not one of the vector "
                              f"columns {[c.name for c in vectors]}")
        else:
            dim = next(c for c in vectors if c.name == vname).values.shape[1]
            if meta.get(META_VECTOR_DIM) != str(dim):
                rep.errors.append(f"{p}: {META_VECTOR_DIM} = {meta.get(META_VECTOR_DIM)!r}, "
                                  f"the vectors have {dim}")
    unknown = [k for k in meta if k.startswith(META_PREFIX) and k not in (
        META_KEY_COLUMN, META_VECTOR_COLUMN, META_VECTOR_DIM, META_ROWS, META_SOURCE,
        META_VERSION, META_KEYS_SORTED)]
    if unknown:
        rep.lines.append(f"note: unknown embedstream metadata keys {unknown}")
    # The key field must carry the arrow.uuid extension.
    field_ = table.schema.field(key) if key in table.schema.names else None
    if field_ is not None:
        import pyarrow as pa

        ext = isinstance(field_.type, pa.BaseExtensionType) and \
            getattr(field_.type, "extension_name", "") == "arrow.uuid"
        md = {k.decode(): v.decode() for k, v in (field_.metadata or {}).items()}
        if not ext and md.get("ARROW:extension:name") != "arrow.uuid":
            rep.errors.append(f"{p}: key field {key!r} is not tagged arrow.uuid")
        storage = field_.type.storage_type if ext else field_.type
        if storage != pa.binary(16):
            rep.errors.append(f"{p}: key field {key!r} is {storage}, expected fixed_size_binary[16]")


def check_reader(reader: str, path: Path, fmt: str, key: str, want: list[Col],
                 want_rows: int, rep: Report, source: Path) -> None:
    try:
        if reader == "pandas":
            df = read_pandas(path, fmt)
            names = [str(c) for c in df.columns]
            got_cols, key_col = file_cols_from_pandas_df(df, key)
            rows = len(df)
        else:
            table = {"pyarrow": read_pyarrow, "polars": read_polars,
                     "duckdb": read_duckdb}[reader](path, fmt)
            if reader == "pyarrow":
                check_metadata(table, source, key, table.num_rows, want, rep)
            names = table.schema.names
            rows = table.num_rows
            got_cols, key_col = [], None
            for name in names:
                c = col_from_arrow(name, table.column(name), reader)
                if name == key:
                    key_col = c
                else:
                    got_cols.append(c)
    except Mismatch as e:
        rep.errors.append(str(e))
        rep.lines.append(f"{reader}: FAILED")
        return
    except Exception as e:  # a reader that cannot open the file is a finding
        rep.errors.append(f"{reader}: cannot read {path}: {type(e).__name__}: {e}")
        rep.lines.append(f"{reader}: FAILED")
        return
    errs: list[str] = []
    if key_col is None:
        errs.append(f"{reader}: no key column {key!r} (columns: {names})")
        key_note = ""
    else:
        kerrs, key_note = check_key(key_col, reader)
        errs += kerrs
    if rows != want_rows:
        errs.append(f"{reader}: {rows} rows, pandas has {want_rows}")
    got_names = [c.name for c in got_cols]
    want_names = [c.name for c in want]
    if got_names != want_names:
        errs.append(f"{reader}: columns {got_names} != pandas {want_names} (key column excluded)")
    else:
        for g, w in zip(got_cols, want):
            errs += compare(g, w, reader)
    rep.errors += errs
    status = "OK" if not errs else f"{len(errs)} MISMATCHES"
    rep.lines.append(f"{reader}: {status}: {rows} rows, {len(got_cols)} columns + key "
                     f"{key!r} ({key_note})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("converted", type=Path)
    ap.add_argument("source", type=Path, help="the (trusted) pickle it was converted from")
    ap.add_argument("--expected", type=Path, help="the fixture's expected.json")
    ap.add_argument("--format", choices=["ipc", "parquet"], default=None,
                    help="default: parquet for .parquet files, else ipc")
    ap.add_argument("--key-column", default=None,
                    help="default: the file's embedstream.key_column metadata, else uuid")
    ap.add_argument("--readers", default="pyarrow,polars,duckdb,pandas")
    a = ap.parse_args()
    fmt = a.format or ("parquet" if a.converted.suffix == ".parquet" else "ipc")
    readers = [r.strip() for r in a.readers.split(",") if r.strip()]
    for r in readers:
        if r not in ("pyarrow", "polars", "duckdb", "pandas"):
            ap.error(f"unknown reader {r!r}")
    if not a.converted.is_file():
        print(f"error: {a.converted} does not exist", file=sys.stderr)
        return 2

    key = a.key_column
    if key is None:
        import pyarrow as pa

        if fmt == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(a.converted)
        else:
            with pa.memory_map(str(a.converted)) as s:
                schema = pa.ipc.open_file(s).schema
        meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
        key = meta.get(META_KEY_COLUMN, DEFAULT_KEY)

    rep = Report()
    wants: list[tuple[str, int, list[Col]]] = []
    try:
        rows, cols = cols_from_pickle(a.source)
        wants.append(("pickle", rows, cols))
    except Mismatch as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.expected:
        erows, ecols, error = cols_from_expected(a.expected)
        if error:
            print(f"error: {a.expected} says the converter must refuse this pickle "
                  f"({error!r}); there is nothing to compare", file=sys.stderr)
            return 2
        wants.append(("expected.json", erows, ecols))

    for label, rows, cols in wants:
        sub = Report()
        for reader in readers:
            check_reader(reader, a.converted, fmt, key, cols, rows, sub, a.source)
        for line in sub.lines:
            print(f"[vs {label}] {line}" if len(wants) > 1 else line)
        rep.errors += [f"[vs {label}] {e}" for e in sub.errors]
        if label == "expected.json":
            break
    if rep.errors:
        print(f"\n{len(rep.errors)} problem(s) in {a.converted}:", file=sys.stderr)
        for e in rep.errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"all readers agree with pandas: {a.converted}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A reference converter in Python: pandas.read_pickle + pyarrow -> a file in
embedstream's format (src/format.rs). For testing the checkers and for
side-by-side measurements only.

    python -m embedstream_py.py_convert SOURCE.pkl OUT.arrow [--format ipc|parquet]
        [--key-column uuid] [--keep-float64] [--batch-rows 65536]

UNSAFE ON UNTRUSTED INPUT: pandas.read_pickle runs whatever the pickle names.
embedstream's own converter exists precisely so that this is never needed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def uuid7_array(ms: np.ndarray, rand_a: np.ndarray, rand_b: np.ndarray) -> np.ndarray:
    """RFC 9562 version-7 UUIDs as an (n, 16) uint8 array, from uint64 arrays:
    48-bit unix ms, 12 bits of rand_a, 62 bits of rand_b (version and variant
    bits are set here)."""
    hi = (ms << np.uint64(16)) | np.uint64(0x7000) | (rand_a & np.uint64(0xFFF))
    lo = (rand_b & np.uint64(0x3FFFFFFFFFFFFFFF)) | np.uint64(0x8000000000000000)
    words = np.empty((len(ms), 2), dtype=">u8")
    words[:, 0] = hi
    words[:, 1] = lo
    return words.view(np.uint8).reshape(len(ms), 16)


def uuid7_keys(n: int, seed: int | None = 0, start_ms: int | None = None) -> np.ndarray:
    """n strictly increasing v7 UUIDs (uuid7_array): ms timestamp from now (or
    start_ms), a 12-bit counter in rand_a (4096 keys a millisecond), random
    rand_b (numpy's generator with `seed`; None = fresh entropy)."""
    rng = np.random.default_rng(seed)
    ms0 = int(time.time() * 1000) if start_ms is None else start_ms
    i = np.arange(n, dtype=np.uint64)
    return uuid7_array(np.uint64(ms0) + i // np.uint64(4096), i % np.uint64(4096),
                       rng.integers(0, 2**62, size=n, dtype=np.uint64))


def to_table(obj, source_name: str, key: str, keep_float64: bool, keys: np.ndarray | None = None):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401  (pa.compute)

    df = obj if isinstance(obj, pd.DataFrame) else pd.DataFrame(obj)
    n = len(df)
    fields, arrays = [], []
    vector_col, vector_dim = None, None
    for i, label in enumerate(df.columns):
        name = str(label)
        s = df.iloc[:, i]
        if s.dtype == object and n and all(
                isinstance(v, (list, np.ndarray)) for v in s.iloc[: min(n, 100)]):
            lengths = {len(v) for v in s}
            if len(lengths) != 1:
                raise SystemExit(f"column {name!r}: ragged vectors {sorted(lengths)[:5]}")
            dim = lengths.pop()
            mat = np.stack([np.asarray(v) for v in s])
            item = pa.float64() if keep_float64 else pa.float32()
            flat = pa.array(mat.reshape(-1).astype(np.float64 if keep_float64 else np.float32))
            arr = pa.FixedSizeListArray.from_arrays(flat,
                                                    type=pa.list_(pa.field("item", item, False), dim))
            if vector_col is None:
                vector_col, vector_dim = name, dim
            fields.append(pa.field(name, arr.type, False))
            arrays.append(arr)
            continue
        arr = pa.Array.from_pandas(s)
        if pa.types.is_dictionary(arr.type) and arr.null_count:
            # pandas' code for a missing category is -1; Arrow leaves the slot
            # undefined but polars refuses negative keys, so write 0 there.
            idx = arr.indices
            clean = pa.compute.if_else(idx.is_null(), pa.scalar(0, idx.type), idx)
            clean = pa.Array.from_buffers(idx.type, len(idx), [idx.buffers()[0], clean.buffers()[1]])
            arr = pa.DictionaryArray.from_arrays(clean, arr.dictionary)
        if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
            arr = arr.cast(pa.string())
        fields.append(pa.field(name, arr.type, True))
        arrays.append(arr)
    if keys is None:
        keys = uuid7_keys(n)
    key_arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(keys.tobytes())])
    fields.append(pa.field(key, pa.binary(16), False, metadata={
        "ARROW:extension:name": "arrow.uuid", "ARROW:extension:metadata": ""}))
    arrays.append(key_arr)
    meta = {
        "embedstream.key_column": key,
        "embedstream.rows": str(n),
        "embedstream.source": source_name,
        "embedstream.version": "py_convert",
        "embedstream.keys_sorted": "true",
    }
    if vector_col is not None:
        meta["embedstream.vector_column"] = vector_col
        meta["embedstream.vector_dim"] = str(vector_dim)
    schema = pa.schema(fields, metadata=meta)
    return pa.Table.from_arrays(arrays, schema=schema)


def write(table, out: Path, fmt: str, batch_rows: int) -> None:
    import pyarrow as pa

    tmp = out.with_name(out.name + ".tmp")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, tmp, row_group_size=batch_rows)
    else:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            for batch in table.to_batches(max_chunksize=batch_rows):
                w.write_batch(batch)
    os.replace(tmp, out)


def main() -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--format", choices=["ipc", "parquet"], default="ipc")
    ap.add_argument("--key-column", default="uuid")
    ap.add_argument("--keep-float64", action="store_true")
    ap.add_argument("--batch-rows", type=int, default=65536)
    a = ap.parse_args()
    table = to_table(pd.read_pickle(a.source), a.source.name, a.key_column, a.keep_float64)
    write(table, a.out, a.format, a.batch_rows)
    print(f"{a.out}: {table.num_rows} rows, {table.num_columns} columns")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The peer of `embedstream convert`: pandas.read_pickle + pyarrow.

    python -m embedstream_py.bench.peer_convert IN.pkl OUT.arrow [--vector-column job_post_vectors]

What a Python user writes to get the same file: read the pickle with pandas,
`pa.Table.from_pandas`, narrow the vector column to FixedSizeList<float32, dim>
(embedstream's default output type, so both files hold the same data), add a
UUID v7 key column (`arrow.uuid` extension type, strictly increasing) and
write an Arrow IPC file with `pa.ipc.new_file` in ~3 MiB record batches
(as convert does). The v7 keys are generated vectorised with numpy
(py_convert.uuid7_keys: timestamp ms + 12-bit counter in rand_a + random
rand_b), the fastest way Python offers, so the peer is not handicapped by a
per-row Python loop.
"""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd
import pyarrow as pa

from embedstream_py.py_convert import uuid7_keys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--vector-column", default="job_post_vectors")
    a = ap.parse_args()

    df = pd.read_pickle(a.input)
    table = pa.Table.from_pandas(df, preserve_index=False)
    vi = table.schema.get_field_index(a.vector_column)
    if vi >= 0:
        col = table.column(vi)
        dim = len(df[a.vector_column].iloc[0]) if len(df) else 0
        col = col.cast(pa.list_(pa.field("item", pa.float32(), nullable=False), dim))
        table = table.set_column(vi, pa.field(a.vector_column, col.type, nullable=False), col)
    del df
    keys = uuid7_keys(table.num_rows, seed=None)
    key_arr = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), table.num_rows, [None, pa.py_buffer(keys.tobytes())]
    )
    key_arr = pa.ExtensionArray.from_storage(pa.uuid(), key_arr)
    table = table.append_column(pa.field("uuid", pa.uuid(), nullable=False), key_arr)
    table = table.replace_schema_metadata({
        "embedstream.key_column": "uuid",
        "embedstream.vector_column": a.vector_column,
        "embedstream.rows": str(table.num_rows),
        "embedstream.keys_sorted": "true",
    })
    tmp = a.output + ".tmp"
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        # ~3 MiB record batches, like `embedstream convert` writes (one giant
        # batch would make a file unlike the ones serve is meant for).
        row_bytes = max(1, table.nbytes // max(1, table.num_rows))
        w.write_table(table, max_chunksize=max(1, (3 << 20) // row_bytes))
    os.replace(tmp, a.output)
    print(f"peer wrote {table.num_rows} rows to {a.output}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Stand-in for the Python data server that embedstream replaces (the peer).

    PKL_PATH=bench-data/x.pkl GRPC_PORT=50062 python scripts/bench/python_data_server.py

Faithful to what batch-server.md / anchors.md describe of the old server:
  - configuration from the environment: GRPC_PORT (50051), MAX_WORKERS (10),
    PKL_PATH, CHUNK_SIZE (300);
  - per StreamEmbedding request it reloads the pickle with `pandas.read_pickle`
    (so every request pays the load, and holds its own DataFrame);
  - a checkpoint (`last_processed_uuid`) is found by a linear scan of the `id`
    column (UUID v5 content hashes, unordered); an unknown id silently restarts
    from row 0;
  - it iterates the rows (`DataFrame.iterrows`) building a RecruitRow per row
    (`exp_years` parsed from strings like `2y`, the vector via `.tolist()`)
    and yields a RowChunk every CHUNK_SIZE rows (the request's chunk_size wins
    when > 0).
The ids it sends are the pickle's v5 strings (same length as embedstream's v7
ids, so the bytes on the wire are comparable).
"""

from __future__ import annotations

import os
import re
import sys
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

import grpc  # noqa: E402
import pandas as pd  # noqa: E402

_DIGITS = re.compile(r"\d+")


def _exp(v) -> int:
    m = _DIGITS.match(str(v))
    return int(m.group(0)) if m else 0


def main() -> None:
    pb2, pb2_grpc = C.stubs()
    port = int(os.environ.get("GRPC_PORT", "50051"))
    workers = int(os.environ.get("MAX_WORKERS", "10"))
    pkl = os.environ["PKL_PATH"]
    default_chunk = int(os.environ.get("CHUNK_SIZE", "300"))

    class Servicer(pb2_grpc.EmbeddingStreamServiceServicer):
        def StreamEmbedding(self, request, context):
            df = pd.read_pickle(pkl)
            chunk_size = request.chunk_size if request.chunk_size > 0 else default_chunk
            start = 0
            if request.last_processed_uuid:
                for i, id_ in enumerate(df["id"]):
                    if id_ == request.last_processed_uuid:
                        start = i + 1
                        break
            rows = []
            for _, row in df.iloc[start:].iterrows():
                rows.append(pb2.RecruitRow(
                    id=str(row["id"]),
                    company_name=str(row["Company Name"]),
                    exp_years=_exp(row["Exp Years"]),
                    english_level=str(row["English Level"]),
                    primary_keyword=str(row["Primary Keyword"]),
                    vector=row["job_post_vectors"].tolist(),
                ))
                if len(rows) >= chunk_size:
                    yield pb2.RowChunk(rows=rows)
                    rows = []
            if rows:
                yield pb2.RowChunk(rows=rows)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=C.GRPC_OPTIONS)
    pb2_grpc.add_EmbeddingStreamServiceServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"python data server: {pkl} on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

"""A minimal Batch Server stand-in for `embedstream upload`: IngestDataStream only.

    python scripts/bench/ingest_receiver.py --port 50064 [--parse-json]

Registers IngestDataStream under both package names upload may use
(`com.alpha.backend.grpc` and `embedding`). Each request message is decoded
(IngestDataRequest); the first must be metadata. Data chunks are counted in
bytes; rows are counted either without parsing JSON (default: occurrences of
the `"id":` key, a C-speed bytes.count) or, with --parse-json, by json.loads
of every chunk (exact, and what a real receiver must at least do). After each
stream it prints one JSON line: metadata, chunks, bytes, rows, seconds from
the first message to the last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

import grpc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--parse-json", action="store_true")
    a = ap.parse_args()
    pb2, _ = C.stubs()

    def ingest(request_iterator, context):
        chunks = nbytes = rows = 0
        meta = None
        t0 = None
        for req in request_iterator:
            if t0 is None:
                t0 = time.perf_counter()
            kind = req.WhichOneof("request_type")
            if kind == "metadata":
                meta = {"domain": req.metadata.domain, "file_name": req.metadata.file_name,
                        "vector_dimension": req.metadata.vector_dimension}
                continue
            data = req.data_chunk
            chunks += 1
            nbytes += len(data)
            if a.parse_json:
                rows += len(json.loads(data))
            else:
                rows += data.count(b'"id":')
        dt = time.perf_counter() - (t0 or time.perf_counter())
        print(json.dumps({"metadata": meta, "chunks": chunks, "bytes": nbytes, "rows": rows,
                          "seconds": dt, "parse_json": a.parse_json}), flush=True)
        return pb2.IngestDataResponse(success=True, received_chunks=chunks,
                                      message=f"received {rows} rows")

    handlers = [grpc.method_handlers_generic_handler(
        f"{pkg}.EmbeddingStreamService",
        {"IngestDataStream": grpc.stream_unary_rpc_method_handler(
            ingest, request_deserializer=pb2.IngestDataRequest.FromString,
            response_serializer=pb2.IngestDataResponse.SerializeToString)})
        for pkg in ("com.alpha.backend.grpc", "embedding")]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=C.GRPC_OPTIONS)
    server.add_generic_rpc_handlers(handlers)
    server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    print(f"ingest receiver on 127.0.0.1:{a.port} (parse_json={a.parse_json})", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

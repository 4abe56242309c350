#!/usr/bin/env python3
"""A reference StreamEmbedding server in Python (grpcio + pyarrow), used to
test scripts/grpc_check.py itself: it serves a converted file by the contract
in proto/embedding_stream.proto, under both package names. `--bug` makes it
break the contract in one way, so the checker can be shown to catch it.

    python scripts/py_server.py --data CONVERTED.arrow --port 50061
        [--bug skip-row|wrong-vector|ignore-resume|no-invalid|default-chunk]
    python scripts/py_server.py --data CONVERTED.arrow --flight-port 50071 [--bug ...]
        (an Arrow Flight server with the tickets of src/serve/flight.rs instead)

Not a product: embedstream's Rust server is the real one.
"""
from __future__ import annotations

import argparse
import bisect
import sys
import tempfile
import uuid
from concurrent import futures
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpc_check import DefaultMapping, Expected, load_stubs, REPO  # noqa: E402

MAX_CHUNK = 50_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--port", type=int)
    ap.add_argument("--flight-port", type=int)
    ap.add_argument("--bug", default=None,
                    choices=["skip-row", "wrong-vector", "ignore-resume", "no-invalid",
                             "default-chunk"])
    a = ap.parse_args()
    if a.flight_port:
        return flight_main(a)

    import grpc

    exp = Expected(a.data, DefaultMapping)
    tmp = tempfile.TemporaryDirectory(prefix="embedstream-stubs-")
    pb2, _ = load_stubs(REPO / "proto" / "embedding_stream.proto", Path(tmp.name))

    def stream(request, context):
        chunk = request.chunk_size
        if chunk < 0 or chunk > MAX_CHUNK:
            if a.bug != "no-invalid":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"chunk_size {chunk} is out of range: use 1..={MAX_CHUNK}")
            chunk = 300
        if chunk == 0:
            chunk = 301 if a.bug == "default-chunk" else 300
        start = 0
        if request.last_processed_uuid:
            try:
                key = uuid.UUID(request.last_processed_uuid).bytes
            except ValueError:
                if a.bug != "no-invalid":
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a UUID")
                key = b""
            if a.bug != "ignore-resume":
                start = bisect.bisect_right(exp.key_bytes, key)
        for s in range(start, exp.rows, chunk):
            rows = []
            for r in range(s, min(s + chunk, exp.rows)):
                if a.bug == "skip-row" and r == exp.rows // 2:
                    continue
                vec = exp.vectors[r]
                if a.bug == "wrong-vector" and r == exp.rows - 1:
                    vec = vec.copy()
                    vec[-1] = np.nextafter(vec[-1], np.float32(np.inf))
                rows.append(pb2.RecruitRow(
                    id=exp.ids[r], company_name=exp.company[r], exp_years=exp.exp[r],
                    english_level=exp.english[r], primary_keyword=exp.keyword[r],
                    vector=[] if exp.vector_null[r] else vec.tolist()))
            yield pb2.RowChunk(rows=rows)

    handler = grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=pb2.StreamEmbeddingRequest.FromString,
        response_serializer=pb2.RowChunk.SerializeToString)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_send_message_length", 100 * 1024 * 1024)])
    for service in ("embedding.EmbeddingStreamService",
                    "com.alpha.backend.grpc.EmbeddingStreamService"):
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            service, {"StreamEmbedding": handler})])
    server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    print(f"py_server: serving {a.data} ({exp.rows} rows) on 127.0.0.1:{a.port}", flush=True)
    server.wait_for_termination()
    return 0


def flight_main(a) -> int:
    import pyarrow as pa
    import pyarrow.flight as flight

    with pa.memory_map(str(a.data)) as src:
        table = pa.ipc.open_file(src).read_all()
    keys = table.column("uuid").combine_chunks()
    if isinstance(keys.type, pa.BaseExtensionType):
        keys = keys.storage
    key_bytes = keys.to_pylist()

    class Server(flight.FlightServerBase):
        def _info(self, descriptor):
            endpoint = flight.FlightEndpoint(b"all", [])
            return flight.FlightInfo(table.schema, descriptor, [endpoint], table.num_rows, -1)

        def list_flights(self, context, criteria):
            yield self._info(flight.FlightDescriptor.for_path(a.data.stem))

        def get_flight_info(self, context, descriptor):
            return self._info(descriptor)

        def get_schema(self, context, descriptor):
            return flight.SchemaResult(table.schema)

        def do_get(self, context, ticket):
            t = ticket.ticket.decode("utf-8", "replace")
            if t in ("", "all"):
                start = 0
            elif t.startswith("after:"):
                try:
                    k = uuid.UUID(t[6:]).bytes
                except ValueError:
                    raise pa.ArrowInvalid("not a UUID") from None
                start = 0 if a.bug == "ignore-resume" else bisect.bisect_right(key_bytes, k)
            else:
                if a.bug == "no-invalid":
                    start = 0
                else:
                    raise pa.ArrowInvalid(f"unknown ticket {t!r}")
            out = table.slice(start)
            if a.bug == "skip-row" and out.num_rows > 2:
                out = pa.concat_tables([out.slice(0, 1), out.slice(2)])
            if a.bug == "wrong-vector":
                out = out.replace_schema_metadata({})
            return flight.RecordBatchStream(out)

    server = Server(f"grpc://127.0.0.1:{a.flight_port}")
    print(f"py_server: Flight for {a.data} on 127.0.0.1:{a.flight_port}", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

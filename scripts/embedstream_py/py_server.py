"""Python servers that stand beside embedstream's Rust server: references for
testing the checkers, and the peers of the benchmarks. Not a product.

    python -m embedstream_py.py_server stream --data CONVERTED.arrow --port P [--bug BUG]
    python -m embedstream_py.py_server flight --data CONVERTED.arrow --port P [--bug BUG]
    python -m embedstream_py.py_server replay --data CONVERTED.arrow --port P [--chunk 300]
    PKL_PATH=X.pkl GRPC_PORT=P python -m embedstream_py.py_server legacy

stream  StreamEmbedding by the contract of proto/embedding_stream.proto, under
        both package names, from the file (grpcio + pyarrow): tests grpc_check.
flight  Arrow Flight with the tickets of src/serve/flight.rs (`all`,
        `after:<uuid>`; anything else INVALID_ARGUMENT), the file
        memory-mapped once; `all` streams the file's own record batches
        zero-copy. Tests flight_check; the Flight peer of bench.serve (b).
replay  the grpcio client's ceiling (bench.serve (a)): every RowChunk of
        --chunk rows built once at start, checked against protobuf's own
        encoding, and each call writes those bytes as they are (identity
        serializer: no per-request encoding). The request is ignored (always
        the whole file).
legacy  the Python data server embedstream replaces (bench.serve (a), (c)),
        as the Batch Server's notes describe it: configured from the
        environment (GRPC_PORT 50051, MAX_WORKERS 10, PKL_PATH, CHUNK_SIZE
        300); per request it reloads the pickle with pandas.read_pickle, finds
        a checkpoint by a linear scan of the `id` column (an unknown id
        restarts from row 0), iterates the rows (DataFrame.iterrows) and
        yields a RowChunk every CHUNK_SIZE rows (the request's chunk_size wins
        when > 0). It sends the pickle's v5 ids.

--bug makes `stream` or `flight` break the contract in one way, so the
checker can be shown to catch it: skip-row, wrong-vector, ignore-resume,
no-invalid, default-chunk (stream only).
Each prints one line starting with `py_server:` once it listens.
"""
from __future__ import annotations

import argparse
import bisect
import os
import sys
import time
import uuid
from concurrent import futures
from pathlib import Path

import numpy as np

from embedstream_py.datafile import (DEFAULT_CHUNK, GRPC_OPTIONS, PACKAGES, SERVICE, Expected,
                                     key_bytes, parse_years)
from embedstream_py.stubs import stubs

MAX_CHUNK = 50_000
BUGS = ["skip-row", "wrong-vector", "ignore-resume", "no-invalid", "default-chunk"]


def grpc_serve(methods: dict, packages, port: int, workers: int, host: str = "127.0.0.1"):
    """A started grpcio server with `methods` ({name: handler}) under
    `<package>.EmbeddingStreamService` for each package."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        f"{package}.{SERVICE}", methods) for package in packages])
    if server.add_insecure_port(f"{host}:{port}") == 0:
        print(f"error: cannot listen on {host}:{port}", file=sys.stderr)
        raise SystemExit(2)
    server.start()
    return server


def stream_main(a) -> int:
    import grpc

    exp = Expected(a.data)
    pb2, _ = stubs()

    def stream(request, context):
        chunk = request.chunk_size
        if chunk < 0 or chunk > MAX_CHUNK:
            if a.bug != "no-invalid":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"chunk_size {chunk} is out of range: use 1..={MAX_CHUNK}")
            chunk = DEFAULT_CHUNK
        if chunk == 0:
            chunk = DEFAULT_CHUNK + 1 if a.bug == "default-chunk" else DEFAULT_CHUNK
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

    server = grpc_serve({"StreamEmbedding": grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=pb2.StreamEmbeddingRequest.FromString,
        response_serializer=pb2.RowChunk.SerializeToString)}, PACKAGES, a.port, 4)
    print(f"py_server: serving {a.data} ({exp.rows} rows) on 127.0.0.1:{a.port}", flush=True)
    server.wait_for_termination()
    return 0


def flight_main(a) -> int:
    import pyarrow as pa
    import pyarrow.flight as flight

    class Server(flight.FlightServerBase):
        def __init__(self, location: str):
            # Map the file before the base class starts listening: a do_get
            # that arrives as soon as the port opens must find the batches.
            reader = pa.ipc.open_file(pa.memory_map(str(a.data), "r"))
            self.schema = reader.schema
            self.batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
            self.table = pa.Table.from_batches(self.batches, self.schema)
            self.keys = key_bytes(self.table)
            super().__init__(location)

        def _info(self, descriptor):
            endpoint = flight.FlightEndpoint(b"all", [])
            return flight.FlightInfo(self.schema, descriptor, [endpoint], self.table.num_rows, -1)

        def list_flights(self, context, criteria):
            yield self._info(flight.FlightDescriptor.for_path(a.data.stem))

        def get_flight_info(self, context, descriptor):
            return self._info(descriptor)

        def get_schema(self, context, descriptor):
            return flight.SchemaResult(self.schema)

        def do_get(self, context, ticket):
            t = ticket.ticket.decode("utf-8", "replace")
            if t in ("", "all"):
                if a.bug is None:  # the file's own batches, zero-copy from the map
                    return flight.RecordBatchStream(
                        pa.RecordBatchReader.from_batches(self.schema, self.batches))
                start = 0
            elif t.startswith("after:"):
                try:
                    k = uuid.UUID(t[6:]).bytes
                except ValueError:
                    raise pa.ArrowInvalid("not a UUID") from None
                start = 0 if a.bug == "ignore-resume" else bisect.bisect_right(self.keys, k)
            elif a.bug == "no-invalid":
                start = 0
            else:
                raise pa.ArrowInvalid(f"unknown ticket {t!r}")
            out = self.table.slice(start)
            if a.bug == "skip-row" and out.num_rows > 2:
                out = pa.concat_tables([out.slice(0, 1), out.slice(2)])
            if a.bug == "wrong-vector":
                out = out.replace_schema_metadata({})
            return flight.RecordBatchStream(out)

    server = Server(f"grpc://127.0.0.1:{a.port}")
    print(f"py_server: Flight for {a.data} ({len(server.batches)} batches) on "
          f"127.0.0.1:{a.port}", flush=True)
    server.serve()
    return 0


# -- replay: pre-encoded RowChunks --------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _str_field(tag: int, s: str) -> bytes:
    if not s:
        return b""  # proto3 omits empty strings
    b = s.encode()
    return bytes((tag,)) + _varint(len(b)) + b


def encode_row(id_: str, comp: str, exp: int, eng: str, kw: str, vec_bytes: bytes) -> bytes:
    """One RecruitRow in protobuf wire format (field order 1..6, as protobuf writes it)."""
    parts = [_str_field(0x0A, id_), _str_field(0x12, comp)]
    if exp:
        parts.append(b"\x18" + _varint(exp & 0xFFFFFFFFFFFFFFFF))
    parts += [_str_field(0x22, eng), _str_field(0x2A, kw)]
    if vec_bytes:
        parts.append(b"\x32" + _varint(len(vec_bytes)) + vec_bytes)
    return b"".join(parts)


def encode_chunks(path: Path, chunk: int) -> list[bytes]:
    """Every RowChunk of `chunk` rows, encoded by hand (fast); the first one
    is checked byte for byte against the protobuf library's encoding."""
    pb2, _ = stubs()
    exp = Expected(path)
    out = []
    for s in range(0, exp.rows, chunk):
        rows = range(s, min(s + chunk, exp.rows))
        vecs = [b"" if exp.vector_null[r] else exp.vectors[r].astype("<f4").tobytes()
                for r in rows]
        body = []
        for r, v in zip(rows, vecs):
            row = encode_row(*exp.fields(r), v)
            body.append(b"\x0a" + _varint(len(row)) + row)
        out.append(b"".join(body))
        if s == 0:
            ref = pb2.RowChunk(rows=[
                pb2.RecruitRow(id=exp.ids[r], company_name=exp.company[r], exp_years=exp.exp[r],
                               english_level=exp.english[r], primary_keyword=exp.keyword[r],
                               vector=[] if exp.vector_null[r] else exp.vectors[r].tolist())
                for r in rows]).SerializeToString()
            if ref != out[0]:
                raise SystemExit("replay: hand encoding differs from protobuf's; fix encode_row")
    return out


def replay_main(a) -> int:
    import grpc

    pb2, _ = stubs()
    t0 = time.perf_counter()
    chunks = encode_chunks(a.data, a.chunk)
    total = sum(map(len, chunks))
    print(f"replay: {len(chunks)} chunks, {total / 1e6:.1f} MB pre-encoded in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)

    def stream(request, context):
        yield from chunks

    server = grpc_serve({"StreamEmbedding": grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=pb2.StreamEmbeddingRequest.FromString,
        response_serializer=lambda b: b)}, ["embedding"], a.port, a.workers)
    print(f"py_server: replay on 127.0.0.1:{a.port}", flush=True)
    server.wait_for_termination()
    return 0


# -- legacy: the Python data server embedstream replaces -----------------------

def legacy_main(a) -> int:
    import grpc
    import pandas as pd

    pb2, _ = stubs()
    port = int(os.environ.get("GRPC_PORT", "50051"))
    workers = int(os.environ.get("MAX_WORKERS", "10"))
    pkl = os.environ["PKL_PATH"]
    default_chunk = int(os.environ.get("CHUNK_SIZE", str(DEFAULT_CHUNK)))

    def stream(request, context):
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
                exp_years=parse_years(str(row["Exp Years"])),
                english_level=str(row["English Level"]),
                primary_keyword=str(row["Primary Keyword"]),
                vector=row["job_post_vectors"].tolist(),
            ))
            if len(rows) >= chunk_size:
                yield pb2.RowChunk(rows=rows)
                rows = []
        if rows:
            yield pb2.RowChunk(rows=rows)

    server = grpc_serve({"StreamEmbedding": grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=pb2.StreamEmbeddingRequest.FromString,
        response_serializer=pb2.RowChunk.SerializeToString)}, ["embedding"], port, workers)
    print(f"py_server: legacy Python data server, {pkl} on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    sub = ap.add_subparsers(dest="mode", required=True)
    for mode, bugs in (("stream", BUGS), ("flight", BUGS[:-1])):
        p = sub.add_parser(mode)
        p.add_argument("--data", required=True, type=Path)
        p.add_argument("--port", required=True, type=int)
        p.add_argument("--bug", default=None, choices=bugs)
    p = sub.add_parser("replay")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    p.add_argument("--workers", type=int, default=10)
    sub.add_parser("legacy")
    a = ap.parse_args()
    return {"stream": stream_main, "flight": flight_main, "replay": replay_main,
            "legacy": legacy_main}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())

"""The one grpcio StreamEmbedding client used against every server.

    python -m embedstream_py.bench.stream_client --addr 127.0.0.1:50051 full [--chunk 300] [--raw]
    python -m embedstream_py.bench.stream_client --addr ... ttfc --keys-file K.txt [--warmup 5]

`full`: pulls the whole stream once and prints JSON {rows, bytes, chunks,
seconds, first_chunk_s, started_at, ended_at} (the last two: Unix time of the
call and of its end, for bench.swap to tell whether a rename fell inside).
Default decoding: every RowChunk is parsed by the generated protobuf class (upb) and `len(chunk.rows)` is touched, so the client's cost is
the same for all servers. `--raw` skips decoding (identity deserializer, counts
bytes only): used when the client must stay cheap (concurrent RSS test).
`ttfc`: for each UUID in --keys-file (one a line), one call with
last_processed_uuid = that key, timed from the call to the first RowChunk
received, then cancelled; prints JSON {ttfc_ms: [...], errors}.
All traffic goes to the given loopback address; one channel per process.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import grpc

from embedstream_py.datafile import GRPC_OPTIONS
from embedstream_py.stubs import stubs

METHOD = "/embedding.EmbeddingStreamService/StreamEmbedding"


def channel(addr: str) -> grpc.Channel:
    ch = grpc.insecure_channel(addr, options=GRPC_OPTIONS)
    grpc.channel_ready_future(ch).result(timeout=30)
    return ch


def full(addr: str, chunk: int, raw: bool, timeout: float) -> dict:
    pb2, _ = stubs()
    ch = channel(addr)
    call = ch.unary_stream(METHOD, request_serializer=pb2.StreamEmbeddingRequest.SerializeToString,
                           response_deserializer=None if raw else pb2.RowChunk.FromString)
    rows = nbytes = chunks = 0
    t0 = time.perf_counter()
    first = None
    started_at = time.time()
    for msg in call(pb2.StreamEmbeddingRequest(chunk_size=chunk), timeout=timeout):
        if first is None:
            first = time.perf_counter() - t0
        chunks += 1
        if raw:
            nbytes += len(msg)
        else:
            rows += len(msg.rows)
    dt = time.perf_counter() - t0
    ended_at = time.time()
    ch.close()
    return {"rows": rows, "bytes": nbytes, "chunks": chunks, "seconds": dt,
            "first_chunk_s": first, "raw": raw, "started_at": started_at, "ended_at": ended_at}


def ttfc(addr: str, keys: list[str], chunk: int, warmup: int, timeout: float) -> dict:
    pb2, _ = stubs()
    ch = channel(addr)
    call = ch.unary_stream(METHOD, request_serializer=pb2.StreamEmbeddingRequest.SerializeToString,
                           response_deserializer=pb2.RowChunk.FromString)
    out, errors, rows_first = [], [], []
    for i, k in enumerate(keys[:warmup] + keys):
        t0 = time.perf_counter()
        it = call(pb2.StreamEmbeddingRequest(last_processed_uuid=k, chunk_size=chunk),
                  timeout=timeout)
        try:
            msg = next(it)
            dt = time.perf_counter() - t0
            if i >= warmup:
                out.append(dt * 1000)
                rows_first.append(len(msg.rows))
        except (grpc.RpcError, StopIteration) as e:
            errors.append(str(e)[:200])
        finally:
            it.cancel()
    ch.close()
    return {"ttfc_ms": out, "errors": errors, "first_chunk_rows": rows_first[:5]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--chunk", type=int, default=300)
    ap.add_argument("--timeout", type=float, default=600)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("full")
    f.add_argument("--raw", action="store_true")
    t = sub.add_parser("ttfc")
    t.add_argument("--keys-file", required=True)
    t.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    if a.cmd == "full":
        r = full(a.addr, a.chunk, a.raw, a.timeout)
    else:
        keys = [k for k in Path(a.keys_file).read_text().split() if k]
        r = ttfc(a.addr, keys, a.chunk, a.warmup, a.timeout)
    print(json.dumps(r))


if __name__ == "__main__":
    main()

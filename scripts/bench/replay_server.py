"""The grpcio client's ceiling: a StreamEmbedding server that replays pre-encoded bytes.

    python scripts/bench/replay_server.py --data FILE.arrow --port 50061 [--chunk 300]

At start it reads the converted Arrow file with pyarrow, builds every RowChunk
of `--chunk` rows once (the same fields embedstream sends: id = the UUID v7
key, the four strings/ints, the float vector), serializes them and keeps the
bytes in memory. Each StreamEmbedding call then writes those bytes as they
are: a generic handler with an identity response serializer, so the server
does no per-request encoding work at all. The request is parsed but ignored
(always the whole file from row 0).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

import grpc  # noqa: E402
import pyarrow as pa  # noqa: E402

_DIGITS = re.compile(r"\d+")


def exp_years(s) -> int:
    if s is None:
        return 0
    m = _DIGITS.match(str(s))
    return int(m.group(0)) if m else 0


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


def _str_field(tag: int, s) -> bytes:
    if not s:
        return b""  # proto3 omits empty strings
    b = s.encode()
    return bytes((tag,)) + _varint(len(b)) + b


def encode_row(id_, comp, exp, eng, kw, vec_bytes: bytes) -> bytes:
    """One RecruitRow in protobuf wire format (field order 1..6, as protobuf writes it)."""
    e = exp_years(exp)
    parts = [_str_field(0x0A, id_), _str_field(0x12, comp)]
    if e:
        parts.append(b"\x18" + _varint(e & 0xFFFFFFFFFFFFFFFF))
    parts += [_str_field(0x22, eng), _str_field(0x2A, kw)]
    if vec_bytes:
        parts.append(b"\x32" + _varint(len(vec_bytes)) + vec_bytes)
    return b"".join(parts)


def encode_chunks(path: str, chunk: int) -> list[bytes]:
    """Every RowChunk of `chunk` rows, encoded by hand (fast) and the first one
    checked byte for byte against the protobuf library's encoding."""
    import uuid as _uuid

    import numpy as np

    pb2, _ = C.stubs()
    table = pa.ipc.open_file(pa.memory_map(path)).read_all()
    meta = table.schema.metadata or {}
    key = meta.get(b"embedstream.key_column", b"uuid").decode()
    vec = meta.get(b"embedstream.vector_column", b"job_post_vectors").decode()
    out = []
    for s in range(0, table.num_rows, chunk):
        t = table.slice(s, chunk)
        kcol = t.column(key).combine_chunks()
        if isinstance(kcol, pa.ExtensionArray):
            kcol = kcol.storage
        keys = [str(_uuid.UUID(bytes=b)) for b in kcol.to_pylist()]
        comp = t.column("Company Name").to_pylist()
        exp = t.column("Exp Years").to_pylist()
        eng = t.column("English Level").to_pylist()
        kw = t.column("Primary Keyword").to_pylist()
        v = t.column(vec).combine_chunks()
        dim = v.type.list_size
        flat = np.ascontiguousarray(
            v.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype("<f4"))
        body = []
        for i in range(t.num_rows):
            r = encode_row(keys[i], comp[i], exp[i], eng[i], kw[i], flat[i].tobytes())
            body.append(b"\x0a" + _varint(len(r)) + r)
        out.append(b"".join(body))
        if s == 0:
            ref = pb2.RowChunk(rows=[
                pb2.RecruitRow(id=keys[i], company_name=comp[i] or "",
                               exp_years=exp_years(exp[i]), english_level=eng[i] or "",
                               primary_keyword=kw[i] or "", vector=flat[i].tolist())
                for i in range(t.num_rows)]).SerializeToString()
            if ref != out[0]:
                raise SystemExit("replay: hand encoding differs from protobuf's; fix encode_row")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunk", type=int, default=300)
    ap.add_argument("--workers", type=int, default=10)
    a = ap.parse_args()
    pb2, _ = C.stubs()
    t0 = time.perf_counter()
    chunks = encode_chunks(a.data, a.chunk)
    total = sum(map(len, chunks))
    print(f"replay: {len(chunks)} chunks, {total / 1e6:.1f} MB pre-encoded in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)

    def stream(request, context):
        yield from chunks

    handler = grpc.method_handlers_generic_handler(
        "embedding.EmbeddingStreamService",
        {"StreamEmbedding": grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=pb2.StreamEmbeddingRequest.FromString,
            response_serializer=lambda b: b)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=a.workers),
                         options=C.GRPC_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    print(f"replay: listening on 127.0.0.1:{a.port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

"""Check a running embedstream server's StreamEmbedding with a real grpcio client.

    python -m embedstream_py.grpc_check --server HOST:PORT --data CONVERTED.arrow
        [--proto proto/embedding_stream.proto] [--key-column uuid]
        [--company-name-column "Company Name"] [--exp-years-column "Exp Years"]
        [--english-level-column "English Level"] [--primary-keyword-column "Primary Keyword"]
        [--vector-column NAME] [--max-chunk N] [--timeout 600]

Python stubs are compiled from the .proto with grpcio-tools, once
(embedstream_py.stubs). The file is read with pyarrow, and every check compares
what the server sends with it, row by row:
  full stream, chunk_size 0 (server default: chunks of 300), 1, 7 and the
  server's maximum (i32::MAX first: accepted, or refused with INVALID_ARGUMENT
  naming the maximum, which is then used); resume after the first, a middle
  and the last key, after absent keys (one between two keys, one below and one
  above all keys: the rows whose key is greater); malformed UUIDs and a
  negative chunk size -> INVALID_ARGUMENT; the same service under the package
  `com.alpha.backend.grpc`, called by its method path with a generic stub.
Row fields: id = the key as a hyphenated lowercase UUID, company_name /
english_level / primary_keyword = the string ("" for null), exp_years = the
leading digits of `Ny` (0 without digits; an integer column as is), vector =
the vector as float32. chunk_size 1 streams at most the last 3,000 rows (a
resume), so the check stays quick on the reference-sized file.

Prints one line per check; exits 1 if any check failed.
"""
from __future__ import annotations

import argparse
import re
import sys
import uuid
from pathlib import Path

import numpy as np

from embedstream_py import PROTO
from embedstream_py.checklib import Checks
from embedstream_py.datafile import (DEFAULT_CHUNK, GRPC_OPTIONS, I32_MAX, DefaultMapping,
                                    Expected)
from embedstream_py.stubs import stubs

ALIAS_PATH = "/com.alpha.backend.grpc.EmbeddingStreamService/StreamEmbedding"


class Failure(Exception):
    pass


def compare_stream(exp: Expected, chunks, start: int, chunk_size: int | None) -> tuple[int, list[int]]:
    """Consume `chunks`, compare with rows start.. of the file; return (rows, sizes)."""
    i = start
    sizes = []
    for chunk in chunks:
        n = len(chunk.rows)
        sizes.append(n)
        if n == 0:
            continue
        if i + n > exp.rows:
            raise Failure(f"the server sent more than the {exp.rows - start} rows expected")
        vecs = np.empty((n, exp.dim), dtype=np.float32)
        for j, row in enumerate(chunk.rows):
            r = i + j
            got = (row.id, row.company_name, row.exp_years, row.english_level, row.primary_keyword)
            want = exp.fields(r)
            if got != want:
                raise Failure(f"row {r}: server sent {got!r}, the file has {want!r}")
            if exp.vector_null[r]:
                if len(row.vector):
                    raise Failure(f"row {r}: null vector in the file, {len(row.vector)} values sent")
                vecs[j] = exp.vectors[r]
                continue
            if len(row.vector) != exp.dim:
                raise Failure(f"row {r}: vector has {len(row.vector)} values, expected {exp.dim}")
            vecs[j] = np.asarray(row.vector, dtype=np.float32)
        want_v = exp.vectors[i:i + n]
        ok = (vecs == want_v) | (np.isnan(vecs) & np.isnan(want_v))
        if not ok.all():
            r, c = (int(x[0]) for x in np.nonzero(~ok))
            raise Failure(f"row {i + r} component {c}: server sent {vecs[r, c]!r}, "
                          f"the file has {want_v[r, c]!r}")
        i += n
    if i != exp.rows:
        raise Failure(f"stream ended after {i - start} rows; expected {exp.rows - start} "
                      f"(rows {start}..{exp.rows})")
    if chunk_size is not None and sizes:
        nonempty = [s for s in sizes if s]
        if any(s > chunk_size for s in nonempty):
            raise Failure(f"chunks larger than {chunk_size}: {sorted(set(nonempty))[-3:]}")
        if any(s != chunk_size for s in nonempty[:-1]):
            raise Failure(f"chunk sizes {sorted(set(nonempty[:-1]))} before the last, "
                          f"expected all {chunk_size}")
    return i - start, sizes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--server", required=True, help="HOST:PORT")
    ap.add_argument("--data", required=True, type=Path, help="the converted .arrow file served")
    ap.add_argument("--proto", type=Path, default=PROTO)
    ap.add_argument("--key-column", default=None)
    ap.add_argument("--company-name-column", default=DefaultMapping.company_name_column)
    ap.add_argument("--exp-years-column", default=DefaultMapping.exp_years_column)
    ap.add_argument("--english-level-column", default=DefaultMapping.english_level_column)
    ap.add_argument("--primary-keyword-column",
                    default=DefaultMapping.primary_keyword_column)
    ap.add_argument("--vector-column", default=None)
    ap.add_argument("--max-chunk", type=int, default=None,
                    help="the server's maximum chunk size, if known")
    ap.add_argument("--timeout", type=float, default=600.0, help="per call, seconds")
    a = ap.parse_args()

    import grpc

    exp = Expected(a.data, a)
    pb2, pb2_grpc = stubs(a.proto)
    channel = grpc.insecure_channel(a.server, options=GRPC_OPTIONS)
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
    except grpc.FutureTimeoutError:
        print(f"error: no server at {a.server}", file=sys.stderr)
        return 2
    stub = pb2_grpc.EmbeddingStreamServiceStub(channel)
    alias = channel.unary_stream(ALIAS_PATH,
                                 request_serializer=pb2.StreamEmbeddingRequest.SerializeToString,
                                 response_deserializer=pb2.RowChunk.FromString)
    checks = Checks((Failure, grpc.RpcError),
                    lambda e: f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError)
                    else str(e))
    check = checks.check

    def req(last: str = "", chunk: int = 0):
        return pb2.StreamEmbeddingRequest(last_processed_uuid=last, chunk_size=chunk)

    def stream(name: str, last: str, chunk: int, start: int, expect_size: int | None,
               call=None):
        def run():
            it = (call or stub.StreamEmbedding)(req(last, chunk), timeout=a.timeout)
            n, sizes = compare_stream(exp, it, start, expect_size)
            return f"{n} rows in {len([s for s in sizes if s])} chunks"
        check(name, run)

    def refused(name: str, last: str, chunk: int, code) -> None:
        def run():
            try:
                for _ in stub.StreamEmbedding(req(last, chunk), timeout=a.timeout):
                    pass
            except grpc.RpcError as e:
                if e.code() != code:
                    raise Failure(f"expected {code.name}, got {e.code().name}: {e.details()}")
                if not e.details():
                    raise Failure(f"{code.name} without a message")
                return f"{code.name}: {e.details()[:100]}"
            raise Failure(f"expected {code.name}, the stream completed")
        check(name, run)

    n = exp.rows
    stream("full stream, chunk_size 0 (default 300)", "", 0, 0, DEFAULT_CHUNK)
    stream("chunk_size 7", "", 7, 0, 7)
    tail = max(0, n - 3000)
    if tail == 0:
        stream("chunk_size 1", "", 1, 0, 1)
    elif n:
        stream(f"chunk_size 1 (resume after row {tail - 1})", exp.ids[tail - 1], 1, tail, 1)

    # The maximum chunk size.
    max_chunk = a.max_chunk
    if max_chunk is None:
        try:
            it = stub.StreamEmbedding(req("", I32_MAX), timeout=a.timeout)
            got, sizes = compare_stream(exp, it, 0, None)
            checks.ok(f"chunk_size {I32_MAX}",
                      f"accepted, {got} rows in chunks of up to {max(sizes, default=0)}")
        except grpc.RpcError as e:
            m = re.search(r"1\.\.=?(\d+)", e.details() or "")
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT and m:
                max_chunk = int(m.group(1))
                checks.ok(f"chunk_size {I32_MAX}",
                          f"INVALID_ARGUMENT, the server's maximum is {max_chunk}")
            else:
                checks.fail(f"chunk_size {I32_MAX}", checks.describe(e))
        except Failure as e:
            checks.fail(f"chunk_size {I32_MAX}", str(e))
    if max_chunk is not None:
        stream(f"chunk_size {max_chunk} (max)", "", max_chunk, 0, max_chunk)
        refused(f"chunk_size {max_chunk + 1} (max + 1)", "", max_chunk + 1,
                grpc.StatusCode.INVALID_ARGUMENT)

    if n:
        stream("resume after the first key", exp.ids[0], 0, 1, DEFAULT_CHUNK)
        mid = n // 2
        stream(f"resume after a middle key (row {mid})", exp.ids[mid], 0, mid + 1, DEFAULT_CHUNK)
        stream("resume after the last key", exp.ids[-1], 0, n, DEFAULT_CHUNK)
        # Absent keys: between two keys (the middle key + 1 in its last byte,
        # if that is still below the next key), below and above every key.
        k = bytearray(exp.key_bytes[mid])
        k[15] = (k[15] + 1) % 256
        between = str(uuid.UUID(bytes=bytes(k)))
        if (k[15] != 0 and exp.key_bytes[mid] < bytes(k)
                and (mid + 1 >= n or bytes(k) < exp.key_bytes[mid + 1])):
            stream("resume after an absent key between two rows", between, 0, mid + 1,
                   DEFAULT_CHUNK)
    low = "00000000-0000-7000-8000-000000000000"
    high = "ffffffff-ffff-7fff-bfff-ffffffffffff"
    stream("resume after an absent key below all keys", low, 0, exp.after(low), DEFAULT_CHUNK)
    stream("resume after an absent key above all keys", high, 0, exp.after(high), DEFAULT_CHUNK)

    for bad in ["not-a-uuid", "1234", "0189a5d-ac96-774b-bcce-b302099a8057",
                "0189a5de-ac96-774b-bcce-b302099a8057-00", "x" * 5000]:
        refused(f"malformed last_processed_uuid {bad[:40]!r}", bad, 0,
                grpc.StatusCode.INVALID_ARGUMENT)
    refused("negative chunk_size -1", "", -1, grpc.StatusCode.INVALID_ARGUMENT)
    refused(f"negative chunk_size {-I32_MAX - 1}", "", -I32_MAX - 1,
            grpc.StatusCode.INVALID_ARGUMENT)

    stream("package com.alpha.backend.grpc (generic unary_stream), full stream", "", 0, 0,
           DEFAULT_CHUNK, call=alias)
    if n:
        stream("package com.alpha.backend.grpc, resume after the middle key", exp.ids[n // 2],
               7, n // 2 + 1, 7, call=alias)

    channel.close()
    return checks.finish("grpc_check", f"{a.server} ({n} rows, dim {exp.dim})")


if __name__ == "__main__":
    sys.exit(main())

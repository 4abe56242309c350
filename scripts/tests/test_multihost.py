"""Three replicas of `embedstream serve` on 127.0.0.2, 127.0.0.3 and 127.0.0.4
(issue 12), checked by pyarrow.flight and grpcio clients
(embedstream_py.replicas) against the pandas pickles the data set was made of.

The data set: three pickles written by pandas (create_test_data's reference
layout, distinct ids and seeds, so each shard has its own dictionaries),
converted with `convert A.pkl B.pkl C.pkl -o DIR/ --shard-rows M --batch-rows 100`; each
replica runs `serve --data DIR --host 127.0.0.N --port P --advertise <all
three> --partition-rows K`.

Run by scripts/ci_crosschecks.sh (deselected otherwise, scripts/pytest.ini):

    pytest scripts/tests/test_multihost.py -m multihost --embedstream-bin BIN

Kills happen from the clients' progress hooks (after the first rows arrive
from the victim), never after a sleep; every wait has a deadline.
"""
from __future__ import annotations

import json
import math
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from embedstream_py.create_test_data import write_reference_like
from embedstream_py.datafile import key_column, parse_years, plain, read_table
from embedstream_py.replica_set import LOOPBACKS, ReplicaSet
from embedstream_py.replicas import ResumingStream, read_partitions

pytestmark = pytest.mark.multihost

PICKLE_ROWS = (9000, 7000, 8000)  # A, B, C
DIM = 384
SHARD_ROWS = 5000                 # -> shards of 5000+4000, 5000+2000, 5000+3000 rows
PARTITION_ROWS = 3000             # -> endpoints of at most 3000 rows within a shard
# Small batches, and HTTP/2 BDP probing off in the clients that see a kill:
# the receive window then stays near gRPC's default (64 KiB, plus the message
# being read), so a replica cannot have sent much more than a batch ahead of
# what the client has read. A replica killed when its first batch of a
# partition (or chunk of a stream) arrives has most of it still unsent: the
# partition fails part-way and the stream is cut, by flow control, not timing.
# (With probing on, loopback's window grows to megabytes and a 3000-row
# partition can arrive whole, trailers included, after the kill.)
BATCH_ROWS = 100
NO_BDP = [("grpc.http2.bdp_probe", 0)]
PICKLE_COLUMNS = ["id", "Company Name", "Exp Years", "English Level", "Primary Keyword"]
VECTOR = "job_post_vectors"


class DataSet:
    """The data set directory and what it must serve: the pickles' rows in
    order, and the keys of its shards."""

    def __init__(self, root: Path, exe: Path):
        import pandas as pd

        self.dir = root / "set"
        pickles = []
        for n, (name, rows) in enumerate(zip("ABC", PICKLE_ROWS)):
            p = root / f"{name}.pkl"
            write_reference_like(p, rows, DIM, seed=100 + n, companies=40 + 10 * n,
                                 id_prefix=f"pickle-{name}")
            pickles.append(p)
        out = subprocess.run([str(exe), "convert", *map(str, pickles), "-o", f"{self.dir}/",
                              "--shard-rows", str(SHARD_ROWS), "--batch-rows", str(BATCH_ROWS),
                              "--no-progress"],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"convert failed ({out.returncode}):\n{out.stderr}"
        frame = pd.concat([pd.read_pickle(p) for p in pickles], ignore_index=True)
        self.rows = len(frame)
        self.columns = {c: frame[c].tolist() for c in PICKLE_COLUMNS}
        self.vectors = np.stack(frame[VECTOR].to_numpy())
        manifest = json.loads((self.dir / "manifest.json").read_text())
        self.manifest = manifest
        keys: list[bytes] = []
        self.shard_rows: list[int] = []
        for shard in manifest["shards"]:
            t = read_table(self.dir / shard["file"])
            keys += plain(t.column(key_column(t))).to_pylist()
            self.shard_rows.append(t.num_rows)
        self.keys = keys
        self.key_text = [str(uuid.UUID(bytes=k)) for k in keys]
        self.key_name = key_column(t)

    def expected_endpoints(self) -> int:
        return sum(math.ceil(n / PARTITION_ROWS) for n in self.shard_rows if n)

    def check_table(self, table) -> None:
        """`table` holds every row exactly once, in key order, equal to the pickles'."""
        keys = plain(table.column(self.key_name)).to_pylist()
        assert len(keys) == self.rows, f"{len(keys)} rows read, the pickles have {self.rows}"
        assert len(set(keys)) == len(keys), f"{len(keys) - len(set(keys))} keys read twice"
        assert set(keys) == set(self.keys), "the keys read differ from the shards' keys"
        assert keys == self.keys, "rows not in key order"
        for c in PICKLE_COLUMNS:
            got = plain(table.column(c)).to_pylist()
            if got != self.columns[c]:
                r = next(i for i, (g, w) in enumerate(zip(got, self.columns[c])) if g != w)
                raise AssertionError(f"column {c!r} row {r}: {got[r]!r}, the pickle has "
                                     f"{self.columns[c][r]!r}")
        v = plain(table.column(VECTOR))
        got = v.flatten().to_numpy(zero_copy_only=False).reshape(len(v), v.type.list_size)
        want = self.vectors.astype(got.dtype)
        assert got.shape == want.shape, f"vectors {got.shape}, the pickles' {want.shape}"
        bad = np.nonzero((got != want).any(axis=1))[0]
        assert not len(bad), f"{len(bad)} vectors differ from the pickles', first row {bad[0]}"

    def check_stream_rows(self, rows: list) -> None:
        """StreamEmbedding rows: every row exactly once, in order, equal to the pickles'."""
        ids = [r.id for r in rows]
        assert len(ids) == self.rows, f"{len(ids)} rows streamed, the pickles have {self.rows}"
        assert len(set(ids)) == len(ids), f"{len(ids) - len(set(ids))} rows streamed twice"
        assert ids == self.key_text, "the streamed keys differ from the shards' keys, in order"
        cols = self.columns
        for i, r in enumerate(rows):
            want = (cols["Company Name"][i], parse_years(cols["Exp Years"][i]),
                    cols["English Level"][i], cols["Primary Keyword"][i])
            got = (r.company_name, r.exp_years, r.english_level, r.primary_keyword)
            assert got == want, f"row {i}: streamed {got!r}, the pickle has {want!r}"
        got = np.array([np.asarray(r.vector, dtype=np.float32) for r in rows])
        want = self.vectors.astype(np.float32)
        bad = np.nonzero((got != want).any(axis=1))[0]
        assert not len(bad), f"{len(bad)} streamed vectors differ, first row {bad[0]}"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, embedstream_bin) -> DataSet:
    return DataSet(tmp_path_factory.mktemp("multihost"), embedstream_bin)


@pytest.fixture
def replicas(dataset, embedstream_bin, tmp_path):
    with ReplicaSet(embedstream_bin, dataset.dir, hosts=LOOPBACKS, logs=tmp_path,
                    extra=["--partition-rows", PARTITION_ROWS]) as rs:
        yield rs


def test_parallel_read_of_every_endpoint_round_robin(dataset, replicas):
    result = read_partitions([replicas.uris[0]], workers=4, timeout=120)
    eps = result.info.endpoints
    assert len(eps) == dataset.expected_endpoints() > len(replicas.uris)
    assert result.info.total_records == dataset.rows
    for i, ep in enumerate(eps):
        assert [loc.uri.decode() for loc in ep.locations] == replicas.uris, f"endpoint {i}"
        ticket = ep.ticket.ticket.decode()
        assert ticket.startswith("range:"), ticket
        first, last = ticket[len("range:"):].split(":")
        part = plain(result.parts[i].column(dataset.key_name)).to_pylist()
        meta = json.loads(ep.app_metadata)
        assert len(part) == meta["rows"] <= PARTITION_ROWS, f"endpoint {i}: {meta}"
        assert (str(uuid.UUID(bytes=part[0])), str(uuid.UUID(bytes=part[-1]))) == (first, last)
        # round robin: endpoint i from location i mod 3, nothing failed
        assert result.served_by[i] == replicas.uris[i % len(replicas.uris)]
    assert not result.failed, result.failed
    dataset.check_table(result.table())


def test_replica_killed_mid_read_partitions_retried_elsewhere(dataset, replicas):
    victim = replicas.uris[1]
    killed = []

    def on_batch(endpoint: int, location: str, rows: int) -> None:
        if location == victim and not killed:
            replicas.kill(1)  # SIGKILL, reaped: nothing more comes from it
            killed.append((endpoint, rows))

    result = read_partitions([replicas.uris[0]], workers=3, timeout=120, on_batch=on_batch,
                             generic_options=NO_BDP)
    assert killed, "no batch came from the victim"
    failed = result.failed
    assert failed and all(a.location == victim for a in failed), failed
    in_flight = killed[0][0]
    partial = [a for a in failed if a.endpoint == in_flight]
    assert partial and partial[0].rows > 0, (
        f"the partition being read from the victim did not fail after some rows: {failed}")
    # Every endpoint of the victim's round-robin share (it had finished none
    # when it was killed at its first batch) came from another replica:
    # retried after a failure there, or sent elsewhere first once the client
    # knew the victim was down.
    share = [i for i in range(len(result.parts)) if i % 3 == 1]
    assert len(share) > 1 and victim not in result.served_by, result.served_by
    dataset.check_table(result.table())


def test_stream_resumes_on_another_replica_after_kill(dataset, replicas):
    stream = ResumingStream(replicas.addrs, timeout=120, connect_timeout=5, options=NO_BDP)
    rows = []
    for chunk in stream:
        rows.extend(chunk.rows)
        if stream.served == [] and replicas.procs[0].poll() is None:
            replicas.kill(0)  # after A's first chunk
    assert replicas.procs[0].poll() is not None, "replica A was never killed"
    (a, a_rows), (b, b_rows) = stream.served
    assert (a, b) == tuple(replicas.addrs[:2]), stream.served
    assert 0 < a_rows < dataset.rows and b_rows == dataset.rows - a_rows, stream.served
    assert len(stream.errors) == 1 and stream.errors[0].startswith(replicas.addrs[0]), stream.errors
    dataset.check_stream_rows(rows)

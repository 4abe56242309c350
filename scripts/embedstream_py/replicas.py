"""Clients for several embedstream replicas: what a user copies.

Replicas of `embedstream serve` over the same data set are stateless: any of
them answers any Flight ticket and any StreamEmbedding checkpoint with the
same rows. Two clients build on that:

    from embedstream_py.replicas import read_partitions, ResumingStream

    # Arrow Flight: every endpoint of GetFlightInfo in parallel, endpoint i
    # first from its location i mod len(locations) (round robin), a failed
    # partition re-read whole from the next location.
    result = read_partitions(["grpc://10.0.0.2:50051", "grpc://10.0.0.3:50051"],
                             workers=6)
    table = result.table()          # every partition, in endpoint (key) order

    # StreamEmbedding: resumes after the last row it yielded, on the next
    # replica, when a replica goes away mid-stream.
    for chunk in ResumingStream(["10.0.0.2:50051", "10.0.0.3:50051"]):
        for row in chunk.rows: ...

Neither keeps more state than a real consumer would: the Flight reader keeps
a partition's batches until its stream ends cleanly and drops them if it
fails (so a partition is never half counted); the streamer's whole state is
the id of the last row it handed over (the checkpoint the Batch Server
stores). Every wait has a deadline (`timeout`, seconds, per call).

Needs pyarrow (read_partitions) and grpcio + the stubs (ResumingStream): the
check or bench venv.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

from embedstream_py.datafile import GRPC_OPTIONS


# ---------------------------------------------------------------------------
# Arrow Flight: partitioned endpoints, read in parallel, with failover
# ---------------------------------------------------------------------------

@dataclass
class Attempt:
    """One DoGet of one endpoint at one location."""
    endpoint: int
    location: str
    rows: int            # rows received before it ended
    error: str | None    # None: the stream ended cleanly, its rows were kept


@dataclass
class PartitionResult:
    info: object                      # the pyarrow.flight.FlightInfo read
    parts: list                       # one pyarrow.Table per endpoint, endpoint order
    served_by: list[str]              # the location each kept partition came from
    attempts: list[Attempt] = field(default_factory=list)

    def table(self):
        """Every partition concatenated, in endpoint order."""
        import pyarrow as pa

        return pa.concat_tables(self.parts) if self.parts else self.info.schema.empty_table()

    @property
    def failed(self) -> list[Attempt]:
        return [a for a in self.attempts if a.error is not None]


class PartitionError(Exception):
    """An endpoint no location could serve."""


def _uri(location) -> str:
    return location.uri.decode() if hasattr(location, "uri") else str(location)


def flight_info(bootstrap: list[str], descriptor=None, timeout: float = 60.0):
    """GetFlightInfo from the first of `bootstrap` (Flight URIs) that answers;
    without a descriptor, of the one flight ListFlights names."""
    import pyarrow as pa
    import pyarrow.flight as flight

    errors = []
    opts = flight.FlightCallOptions(timeout=timeout)
    for uri in bootstrap:
        client = flight.connect(uri)
        try:
            d = descriptor
            if d is None:
                flights = list(client.list_flights(options=opts))
                if len(flights) != 1:
                    raise PartitionError(f"{uri} lists {len(flights)} flights; name one")
                d = flights[0].descriptor
            return client.get_flight_info(d, options=opts)
        except (flight.FlightError, pa.ArrowException, OSError) as e:
            errors.append(f"{uri}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        finally:
            client.close()
    raise PartitionError("GetFlightInfo failed everywhere: " + "; ".join(errors))


def read_partitions(bootstrap: list[str], descriptor=None, workers: int = 4,
                    timeout: float = 120.0,
                    on_batch: Callable[[int, str, int], None] | None = None,
                    info=None, generic_options=None) -> PartitionResult:
    """Every endpoint of the flight, in parallel on `workers` threads.

    Endpoint i is read first from `locations[i % len(locations)]` (round
    robin), then, if that fails, from the following locations in turn; a
    location that failed once is tried last by every later partition. A
    partition's rows count only once its stream has ended cleanly: the
    batches of a failed attempt are discarded and the partition is read
    again, whole, elsewhere. `on_batch(endpoint, location, rows_so_far)` is
    called after each batch (a progress hook; the tests kill a replica
    from it). `generic_options`: gRPC channel arguments for every DoGet
    connection, e.g. [("grpc.http2.bdp_probe", 0)]. Raises PartitionError if
    an endpoint fails at every location.
    """
    import pyarrow as pa
    import pyarrow.flight as flight

    info = info or flight_info(bootstrap, descriptor, timeout)
    endpoints = list(info.endpoints)
    down: set[str] = set()
    lock = threading.Lock()
    attempts: list[Attempt] = []
    opts = flight.FlightCallOptions(timeout=timeout)

    def order(i: int, ep) -> list[str]:
        locs = [_uri(loc) for loc in ep.locations]
        if not locs:  # the spec: no location means "the server you asked"
            locs = list(bootstrap)
        locs = locs[i % len(locs):] + locs[:i % len(locs)]
        with lock:  # known-bad locations last, order kept otherwise
            return [u for u in locs if u not in down] + [u for u in locs if u in down]

    def read_one(i: int):
        ep = endpoints[i]
        errors = []
        for uri in order(i, ep):
            batches, rows = [], 0
            client = flight.connect(uri, generic_options=generic_options)
            try:
                reader = client.do_get(ep.ticket, options=opts)
                for chunk in reader:
                    batches.append(chunk.data)
                    rows += chunk.data.num_rows
                    if on_batch:
                        on_batch(i, uri, rows)
                part = pa.Table.from_batches(batches, schema=reader.schema)
            except (flight.FlightError, pa.ArrowException, OSError) as e:
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                with lock:
                    down.add(uri)
                    attempts.append(Attempt(i, uri, rows, msg))
                errors.append(f"{uri}: {msg}")
                continue  # discard this attempt's batches, try the next location
            finally:
                client.close()
            with lock:
                attempts.append(Attempt(i, uri, rows, None))
            return part, uri
        raise PartitionError(f"endpoint {i} ({ep.ticket.ticket!r}): " + "; ".join(errors))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = list(pool.map(read_one, range(len(endpoints))))
    return PartitionResult(info, [p for p, _ in done], [u for _, u in done], attempts)


# ---------------------------------------------------------------------------
# StreamEmbedding: one ordered stream, resumed on another replica
# ---------------------------------------------------------------------------

# Codes after which another replica may do better; anything else (a bad
# request, DATA_LOSS naming a damaged shard on every replica…) is raised.
RETRYABLE = ("UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL", "DEADLINE_EXCEEDED",
             "RESOURCE_EXHAUSTED", "DATA_LOSS")


class ResumingStream:
    """StreamEmbedding over replicas `targets` (HOST:PORT): yields RowChunks
    in order; on a retryable error it moves to the next target and asks for
    the rows after the last row it yielded (`checkpoint`). Gives up after
    `max_failovers` failovers, or when every target failed in a row.
    `options`: more gRPC channel arguments.

    `served`: [(target, rows)] per attempt, for reports and tests.
    """

    def __init__(self, targets: list[str], checkpoint: str = "", chunk_size: int = 0,
                 timeout: float = 600.0, max_failovers: int = 10, connect_timeout: float = 10.0,
                 options=()):
        if not targets:
            raise ValueError("no targets")
        self.targets = list(targets)
        self.checkpoint = checkpoint
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_failovers = max_failovers
        self.options = GRPC_OPTIONS + list(options)  # more gRPC channel arguments
        self.served: list[tuple[str, int]] = []
        self.errors: list[str] = []

    def __iter__(self) -> Iterator:
        import grpc

        from embedstream_py.stubs import stubs

        pb2, pb2_grpc = stubs()
        t = 0
        failed_in_a_row = 0
        while True:
            target = self.targets[t % len(self.targets)]
            rows = 0
            channel = grpc.insecure_channel(target, options=self.options)
            try:
                grpc.channel_ready_future(channel).result(timeout=self.connect_timeout)
                stub = pb2_grpc.EmbeddingStreamServiceStub(channel)
                req = pb2.StreamEmbeddingRequest(last_processed_uuid=self.checkpoint,
                                                 chunk_size=self.chunk_size)
                for chunk in stub.StreamEmbedding(req, timeout=self.timeout):
                    if chunk.rows:
                        rows += len(chunk.rows)
                        failed_in_a_row = 0
                        # The checkpoint moves before the chunk is handed
                        # over: a consumer that stores it after processing
                        # the chunk (the Batch Server) gets each row once.
                        self.checkpoint = chunk.rows[-1].id
                        yield chunk
                self.served.append((target, rows))
                return
            except grpc.FutureTimeoutError:
                self.errors.append(f"{target}: not reachable in {self.connect_timeout} s")
            except grpc.RpcError as e:
                if e.code().name not in RETRYABLE:
                    raise
                self.errors.append(f"{target}: {e.code().name}: {e.details()}")
            finally:
                channel.close()
            self.served.append((target, rows))
            failed_in_a_row = 0 if rows else failed_in_a_row + 1
            if len(self.errors) > self.max_failovers or failed_in_a_row >= len(self.targets):
                raise ConnectionError("StreamEmbedding failed: " + "; ".join(self.errors))
            t += 1
            time.sleep(0.05 * failed_in_a_row)  # a short back-off when nothing answers

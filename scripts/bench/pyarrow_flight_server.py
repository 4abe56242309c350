"""The Flight peer: pyarrow's C++ Flight server over the same Arrow file.

    python scripts/bench/pyarrow_flight_server.py --data FILE.arrow --port 50063

The file is memory-mapped (`pa.memory_map` + `pa.ipc.open_file`) once; every
`do_get` (whatever the ticket) returns a `RecordBatchStream` of all its record
batches, i.e. the whole file, zero-copy from the map.
"""

from __future__ import annotations

import argparse

import pyarrow as pa
import pyarrow.flight as flight


class Server(flight.FlightServerBase):
    def __init__(self, location: str, path: str):
        # Map the file before the base class starts listening: a do_get that
        # arrives as soon as the port opens must find the batches.
        self.reader = pa.ipc.open_file(pa.memory_map(path, "r"))
        self.schema = self.reader.schema
        self.batches = [self.reader.get_batch(i) for i in range(self.reader.num_record_batches)]
        super().__init__(location)

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(pa.RecordBatchReader.from_batches(self.schema, self.batches))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    s = Server(f"grpc://127.0.0.1:{a.port}", a.data)
    print(f"pyarrow flight: {a.data} ({len(s.batches)} batches) on 127.0.0.1:{a.port}", flush=True)
    s.serve()


if __name__ == "__main__":
    main()

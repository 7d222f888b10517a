"""Child process for the kill -9 test: ingests batches forever, each with a collector position naming it, and
acknowledges each commit on stdout."""

import sys

from infrabrain.client.records import SampleBatch
from infrabrain.client.store import TelemetryStore

path, per_batch = sys.argv[1], int(sys.argv[2])
store = TelemetryStore(path, retention_s=10**9)
i = 0
while True:
    batch = SampleBatch()
    t = 1_700_000_000 + 60 * i
    for j in range(per_batch):
        batch.add(t, f"c{j % 500}", "gpu", f"m{j // 500}", float(i))
    store.ingest(batch, positions={"writer": {"batch": i}})
    print(i, flush=True)
    i += 1

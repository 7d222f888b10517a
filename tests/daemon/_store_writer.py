"""Child process for the kill -9 test: ingests batches forever, acknowledging each commit on stdout."""

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
    store.ingest(batch)
    print(i, flush=True)
    i += 1

"""Fast encoding of the many `JobStartRecord`s of one release, byte-identical to
`ota.records.encode`.

Every record of a task's release carries the same `JobSpec`; encoding it once and
splicing the per-device fields around it makes a 100,000-device release spend its time
in Kafka rather than in JSON. The layout is taken from `encode` itself at construction
and checked there, so a change of the record format cannot slip through silently.
"""

from __future__ import annotations

import orjson

from ota.records import JobSpec, JobStartRecord, encode


class StartEncoder:
    def __init__(self, spec: JobSpec) -> None:
        sample = encode(JobStartRecord(device_id="d", job=spec, attempt=1, id="i", at_ms=0))
        head = b'{"v":1,"kind":"job_start","device_id":"d","job":'
        tail = b',"attempt":1,"id":"i","at_ms":0}'
        if not (sample.startswith(head) and sample.endswith(tail)):
            raise RuntimeError("the JobStartRecord layout changed; update StartEncoder")
        self._job = sample[len(head) : -len(tail)]
        self._spec = spec

    def encode(self, device_id: str, attempt: int, record_id: str, at_ms: int) -> bytes:
        return b"".join(
            (
                b'{"v":1,"kind":"job_start","device_id":',
                orjson.dumps(device_id),
                b',"job":',
                self._job,
                b',"attempt":%d,"id":' % attempt,
                orjson.dumps(record_id),
                b',"at_ms":%d}' % at_ms,
            )
        )

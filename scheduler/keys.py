"""Redis key names of the scheduler (all under `ota:{sched}:`), in one place.

Packages, devices and tasks are materialised views of the compacted topics and the
inbox/job-event logs; per-task runtime (cursor, counts, lease) lives next to them.

Every key shares the hash tag `{sched}`, so on a Redis Cluster the scheduler's state is
on one slot: every script and transaction may take any of its keys, as on a standalone
Redis (the cluster gives it failover, not more cores; docs/deploy.md, "Redis Cluster").
The device credential store is apart (scheduler/credentials.py, `STORE_P`).
"""

from __future__ import annotations

P = "ota:{sched}:"

PACKAGES = P + "pkgs"  # zset id -> created_ms
DEVICES = P + "devs"  # zset of every known device id (score 0: lexical paging)
ONLINE = P + "online"  # set of online device ids
GROUPS = P + "groups"  # set of group names
TASKS = P + "tasks"  # zset id -> created_ms
ACTIVE_TASKS = P + "active"  # set of task ids the reconciler paces
LOST_TASKS = P + "lost"  # set of running task ids restored without their runtime, to stop
RESTORED = P + "restored"  # set once a start restored what Redis lacked: gone means flushed
CREATING = P + "creating"  # hash task id -> "<start ms> <package id>" while being created
WEBHOOKS = P + "hooks"  # hash id -> JSON
API_KEYS = P + "apikeys"  # hash id -> JSON of a stored API key (its SHA-256, never the key)
NOTIFY_STREAM = P + "notify"  # stream of notifications for webhook delivery


def package(pid: str) -> str:
    return f"{P}pkg:{pid}"


def package_dedupe(sha256: str, kind: str, version: str, product: str) -> str:
    return f"{P}pkgdedupe:{sha256}:{kind}:{product}:{version}"


def package_blob_refs(sha256: str) -> str:
    return f"{P}pkgrefs:{sha256}"  # set of package ids sharing one stored file


def package_users(pid: str) -> str:
    return f"{P}pkguse:{pid}"  # set of unfinished task ids using the package


def device(device_id: str) -> str:
    return f"{P}dev:{device_id}"  # hash: fw, sw, online, seen_ms, groups, tags, task, state, ...


def timeline(device_id: str) -> str:
    return f"{P}dev:{device_id}:tl"  # list of timeline entries, newest first (capped)


def group(name: str) -> str:
    return f"{P}group:{name}"


def tag(name: str) -> str:
    return f"{P}tag:{name}"


def version(kind: str, value: str) -> str:
    return f"{P}ver:{kind}:{value}"  # kind fw|sw


def known_versions(kind: str) -> str:
    return f"{P}vers:{kind}"  # set of every version of `kind` a device reported


def task(tid: str) -> str:
    return f"{P}task:{tid}"  # JSON document


def task_list(tid: str) -> str:
    return f"{P}task:{tid}:list"  # list: device ids in release order (retries appended)


def task_runtime(tid: str) -> str:
    return f"{P}task:{tid}:rt"  # hash: cursor, wave, hold, tokens, bucket_ms, stopping


def task_devices(tid: str) -> str:
    return f"{P}task:{tid}:devs"  # hash device -> "state|attempt|job_version|cause|wave"


def task_counts(tid: str) -> str:
    return f"{P}task:{tid}:counts"  # hash: state -> n, "cause:<code>" -> n, "w<k>:<bucket>" -> n


def task_state_index(tid: str, state: str) -> str:
    return f"{P}task:{tid}:st:{state}"  # zset (score 0) of devices in one state


def task_rebuild_lock(tid: str) -> str:
    return f"{P}task:{tid}:rebuilding"  # the replica rebuilding the task's runtime, with a TTL


def lease(tid: str) -> str:
    return f"{P}lease:{tid}"  # "<owner>|<fence>" with a TTL


def fence(tid: str) -> str:
    return f"{P}fence:{tid}"  # monotonic fencing counter


def target_list(lid: str) -> str:
    return f"{P}tlist:{lid}"  # uploaded device-id list (set), expires


def webhook_log(hid: str) -> str:
    return f"{P}hook:{hid}:log"  # capped list of delivery attempts


def webhook_deleted(hid: str) -> str:
    return f"{P}hook:{hid}:deleted"  # set for a while after a delete (scheduler/webhooks.py)


TAGS = P + "tags"  # set of every tag name in use
AUDIT_STREAM = P + "audit"  # stream of audit records, newest last (scheduler/audit.py)
AUDIT_DEBT = P + "audit-budget:debt"  # the shared audit budget (scheduler/shared_budget.py)
AUDIT_UNTOLD = P + "audit-budget:untold"
LOGIN_DEBT = P + "login-debt:"  # + digest of an address (scheduler/console/login_throttle.py)
LAYOUT = P + "layout"  # the key layout's version, set once the start moved older keys

DEAD_LETTER_OFFSETS = P + "dl:applied"  # hash "<topic>/<partition>" -> last counted offset


def dead_letter_hour(hour: int) -> str:
    return f"{P}dl:{hour}"  # hash "source|reason" -> dead letters in that epoch hour


def dry_run(did: str, part: str) -> str:
    return f"{P}dry:{did}:{part}"  # part: summary (hash) or a list (targeted, skipped, conflict)


# Continuous tasks (scheduler/joins.py): which open tasks follow a group or a filter, and
# per task the devices whose labels (or, for a filter naming them, versions or presence)
# changed since its last look, scored by change number.
CONTINUOUS_FILTER = P + "cont:filter"  # set of open continuous task ids with a filter
# the subset whose filter names versions or presence: re-checked when those change
CONTINUOUS_FACTS = P + "cont:facts"
CONTINUOUS_SEQ = P + "cont:seq"  # counter: the change number of a label or fact change


def continuous_group(name: str) -> str:
    return f"{P}cont:group:{name}"  # set of open continuous task ids targeting the group


def task_joins(tid: str) -> str:
    return f"{P}task:{tid}:joins"  # zset device -> change number, to re-check against targets

"""Queues tasks with Python TaskTiger's own `delay`, in the shapes a Python producer writes
them, and prints their ids as JSON. Used by tests/tests/inspect.rs.

    python produce_tasks.py <port> <prefix>

With `read <queue> <id>` after the prefix it instead prints what Python's
`Task.from_id(..., 'scheduled', ...)` sees of that task: its JSON and its due time.
"""
import datetime
import json
import sys

import redis
from tasktiger import Task, TaskTiger
from tasktiger.retry import fixed


def report(user_id, amount):
    """The task function: never run here, only named (`legacy.reports:report`)."""


# TaskTiger refuses functions of `__main__`; this one poses as a module's.
report.__module__ = "legacy.reports"


def main():
    port, prefix = sys.argv[1], sys.argv[2]
    conn = redis.Redis(host="127.0.0.1", port=int(port), decode_responses=True)
    tiger = TaskTiger(connection=conn, config={"REDIS_PREFIX": prefix})
    if len(sys.argv) > 3 and sys.argv[3] == "read":
        queue, task_id = sys.argv[4], sys.argv[5]
        task = Task.from_id(tiger, queue, "scheduled", task_id)
        due = task.ts.replace(tzinfo=datetime.timezone.utc).timestamp()
        print(json.dumps({"data": task.data, "ts": due, "user_id": repr(task.kwargs.get("user_id"))}))
        return
    scheduled = tiger.delay(
        report,
        kwargs={"user_id": 12345678901234567890123, "amount": 0.1},
        queue="py.reports",
        unique=True,
        hard_timeout=30,
        retry_method=fixed(60, 3),
        when=datetime.timedelta(hours=1),
    )
    queued = tiger.delay(report, args=[7, 2.5], queue="py", hard_timeout=2.5)
    print(json.dumps({"scheduled": scheduled.id, "queued": queued.id}))


if __name__ == "__main__":
    main()

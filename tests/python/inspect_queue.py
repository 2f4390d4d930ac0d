"""Reads one queue of a tiger/TaskTiger Redis with Python TaskTiger's own API and prints
what it sees as JSON. Used by tests/tests/python.rs.

    python inspect_queue.py <port> <prefix> <queue>
"""
import json
import sys

import redis
from tasktiger import Task, TaskTiger


def describe(task):
    return {
        "id": task.id,
        "func": task.serialized_func,
        "args": task.args,
        "kwargs": task.kwargs,
        "state": task.state,
        "queue": task.queue,
        "ts": task.ts.timestamp() if task.ts else None,
        "executions": task.executions,
        "n_executions": task.n_executions(),
    }


def main():
    port, prefix, queue = sys.argv[1], sys.argv[2], sys.argv[3]
    conn = redis.Redis(host="127.0.0.1", port=int(port), decode_responses=True)
    tiger = TaskTiger(connection=conn, config={"REDIS_PREFIX": prefix})
    out = {"stats": tiger.get_queue_stats()}
    for state in ("queued", "error"):
        total, tasks = Task.tasks_from_queue(tiger, queue, state, load_executions=10)
        out[state] = {"total": total, "tasks": [describe(t) for t in tasks]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

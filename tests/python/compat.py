"""Drives Python TaskTiger for the mixed-fleet tests (tests/tests/compat.rs):

    python compat.py <port> <prefix> <command> '<json>'

Commands (each prints JSON):
    delay  [{"func", "args", "kwargs", "queue", "unique", "unique_key", "lock_key",
             "retry_method": ["fixed"|"linear"|"exponential", [args]],
             "retry_on": ["builtins:Exception", ...], "when": seconds}, ...]
           -> the ids, in order
    work   {"executor": "sync"|"fork", "queues": [...], "max_workers_per_queue": n,
            "seconds": s}  -> runs a Python worker until drained (or for s seconds)
    tasks  {"queue", "state"} -> Task.tasks_from_queue(..., load_executions=10)
    retry  {"queue", "id"} -> Task.from_id(..., 'error', ...).retry()
    ids    [{"func", "args", "kwargs", "lock_key"}, ...] -> Python's unique and lock ids
"""
import json
import os
import signal
import sys

os.environ["COMPAT_PORT"], os.environ["COMPAT_PREFIX"] = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compat_tasks  # noqa: E402
from inspect_queue import describe  # noqa: E402
from tasktiger import Task, Worker  # noqa: E402
from tasktiger._internal import gen_unique_id  # noqa: E402
from tasktiger.executor import ForkExecutor, SyncExecutor  # noqa: E402
from tasktiger.retry import exponential, fixed, linear  # noqa: E402

tiger = compat_tasks.tiger
METHODS = {"fixed": fixed, "linear": linear, "exponential": exponential}


def delay(specs):
    ids = []
    for spec in specs:
        options = {}
        for name in ("queue", "unique", "unique_key", "lock_key"):
            if name in spec:
                options[name] = spec[name]
        if "retry_on" in spec:
            import builtins

            options["retry_on"] = [getattr(builtins, name.split(":")[1]) for name in spec["retry_on"]]
        if "retry_method" in spec:
            method, args = spec["retry_method"]
            options["retry_method"] = METHODS[method](*args)
        if "when" in spec:
            import datetime

            options["when"] = datetime.timedelta(seconds=spec["when"])
        task = tiger.delay(
            getattr(compat_tasks, spec["func"]),
            args=spec.get("args"),
            kwargs=spec.get("kwargs"),
            **options,
        )
        ids.append(task.id)
    return ids


def work(spec):
    executor = {"sync": SyncExecutor, "fork": ForkExecutor}[spec.get("executor", "sync")]
    worker = Worker(
        tiger,
        queues=spec.get("queues"),
        max_workers_per_queue=spec.get("max_workers_per_queue"),
        executor_class=executor,
    )
    if "seconds" in spec:
        # Run like a long-lived worker, stopped by SIGALRM after the given time.
        def stop(*_):
            raise SystemExit(0)

        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, spec["seconds"])
        try:
            worker.run()
        except SystemExit:
            pass
    else:
        worker.run(once=True, force_once=False)
    return {"ok": True}


def tasks(spec):
    total, found = Task.tasks_from_queue(tiger, spec["queue"], spec["state"], load_executions=10)
    return {"total": total, "tasks": [describe(t) for t in found]}


def retry(spec):
    Task.from_id(tiger, spec["queue"], "error", spec["id"]).retry()
    return {"ok": True}


def ids(specs):
    out = []
    for spec in specs:
        func = "compat_tasks:" + spec["func"]
        args, kwargs = spec.get("args") or [], spec.get("kwargs") or {}
        unique = gen_unique_id(func, args, kwargs)
        lock_key = spec.get("lock_key")
        lock = gen_unique_id(func, None, {k: kwargs.get(k) for k in lock_key}) if lock_key else unique
        out.append({"unique": unique, "lock": lock})
    return out


def main():
    command, argument = sys.argv[3], json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
    result = {"delay": delay, "work": work, "tasks": tasks, "retry": retry, "ids": ids}[command](argument)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

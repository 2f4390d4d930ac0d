"""The Python half of the mixed-fleet tests (tests/tests/compat.rs): tasks whose names the
Rust tasks in that file share (`compat_tasks:<name>`), on a TaskTiger set up from the
environment: COMPAT_PORT (a loopback redis-server) and COMPAT_PREFIX (the test's prefix).

Every run of a task appends a JSON line to the Redis list `<prefix>:compat:<token>`, saying
who ran it and with which arguments, so the Rust test sees what Python did.
"""
import json
import logging
import os
import time

import sys

import redis
import structlog
from tasktiger import TaskTiger
from tasktiger.schedule import periodic

# The worker's log goes to stderr (warnings and up): stdout carries the driver's JSON.
logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
structlog.configure(
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
)

PREFIX = os.environ["COMPAT_PREFIX"]
CONN = redis.Redis(host="127.0.0.1", port=int(os.environ["COMPAT_PORT"]), decode_responses=True)
# The same short timers as tiger's tests (tiger::testing::test_config).
tiger = TaskTiger(
    connection=CONN,
    config={
        "REDIS_PREFIX": PREFIX,
        "ACTIVE_TASK_UPDATE_TIMER": 0.2,
        "ACTIVE_TASK_UPDATE_TIMEOUT": 2,
        "LOCK_RETRY": 0.3,
        "SELECT_TIMEOUT": 0.1,
        "QUEUE_SCHEDULED_TASKS_TIME": 0,
        "REQUEUE_EXPIRED_TASKS_INTERVAL": 0.4,
        "BATCH_QUEUES": {"compat.batch": 10},
    },
    setup_structlog=False,
)


def _note(token, **what):
    CONN.rpush(f"{PREFIX}:compat:{token}", json.dumps(dict(who="python", **what)))


@tiger.task()
def record(token, n, label=None):
    _note(token, task="record", n=n, label=label)


@tiger.task()
def fails(token, n):
    _note(token, task="fails", n=n)
    raise ValueError(f"python refused {n}")


@tiger.task()
def exclusive(token, user):
    """Counts runs for one user that overlap another, whichever language runs them."""
    running = f"{PREFIX}:compat:{token}:running:{user}"
    if CONN.incr(running) > 1:
        CONN.incr(f"{PREFIX}:compat:{token}:overlaps")
    time.sleep(0.05)
    CONN.decr(running)
    _note(token, task="exclusive", user=user)


@tiger.task()
def any(token, n):
    _note(token, task="any", n=n)


@tiger.task()
def kind(token, type):
    """A parameter whose name is a Rust keyword (`r#type` there)."""
    _note(token, task="kind", type=type)


@tiger.task(batch=True)
def batch(params):
    for p in params:
        _note(p["args"][0], task="batch", n=p["args"][1])


@tiger.task(schedule=periodic(hours=1), queue="compat.periodic")
def hourly():
    _note("hourly", task="hourly")


@tiger.task(schedule=periodic(hours=1), queue="compat.periodic-py")
def elsewhere():
    """Declared by tiger too, on another queue."""
    _note("elsewhere", task="elsewhere")

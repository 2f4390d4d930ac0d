"""Python TaskTiger's side of tiger-bench's comparison.

The worker imports this module (`tasktiger -m tasktiger_peer`) to find `noop`; tiger-bench
runs it as a script to enqueue through TaskTiger's own API:

    python tasktiger_peer.py enqueue COUNT   # S1: one `delay` at a time; prints tasks/s
    python tasktiger_peer.py latency COUNT   # S4: one `delay` every millisecond

The Redis port comes from BENCH_REDIS_PORT; every task goes to the queue `bench`.
"""

import json
import os
import sys
import time

import redis
import tasktiger

# Above this, the argument is the enqueue time in microseconds since the epoch (S4).
STAMPED = 10**15
DELAYS = "bench:delays"

connection = redis.Redis(
    host="127.0.0.1",
    port=int(os.environ.get("BENCH_REDIS_PORT", "6379")),
    decode_responses=True,
)
tiger = tasktiger.TaskTiger(connection=connection)


def micros():
    return time.time_ns() // 1000


@tiger.task(queue="bench")
def noop(n):
    """Does nothing; for a stamped argument, records the delay from enqueue to start."""
    if n > STAMPED:
        connection.rpush(DELAYS, micros() - n)


def enqueue(count):
    started = time.perf_counter()
    for n in range(count):
        noop.delay(n % 1000)
    return count / (time.perf_counter() - started)


def latency(count):
    started = time.perf_counter()
    for i in range(count):
        # Paced on a fixed grid, so a slow enqueue does not push the rest back.
        wait = started + i / 1000 - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        noop.delay(micros())
    return count


def main(argv):
    scenario, count = argv[0], int(argv[1])
    value = {"enqueue": enqueue, "latency": latency}[scenario](count)
    print(json.dumps({"values": [value]}))


if __name__ == "__main__":
    # Through the module's own name: TaskTiger refuses functions of `__main__`.
    import tasktiger_peer

    tasktiger_peer.main(sys.argv[1:])

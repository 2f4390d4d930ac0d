"""Generates tests/data/unique_ids.json: task ids computed by the real TaskTiger (the version
in tests/python/requirements.txt) for a corpus of arguments, so tiger's Rust ids can be
checked against them byte for byte.

    $(scripts/python-env) tests/python/gen_unique_vectors.py > tests/data/unique_ids.json

Values are written tagged, so nothing is lost on the way to Rust: {"i": "<digits>"} int,
{"f": "<repr>"} float, {"s": ...} str, {"b": ...} bool, {"n": null}, {"l": [...]} list,
{"d": [[key, value], ...]} dict (keys tagged too).
"""
import json
import math
import random
import sys
import types

import tasktiger
from tasktiger import Task, TaskTiger


def tag(value):
    if value is None:
        return {"n": None}
    if isinstance(value, bool):
        return {"b": value}
    if isinstance(value, int):
        return {"i": str(value)}
    if isinstance(value, float):
        return {"f": repr(value)}
    if isinstance(value, str):
        return {"s": value}
    if isinstance(value, (list, tuple)):
        return {"l": [tag(v) for v in value]}
    if isinstance(value, dict):
        return {"d": [[tag(k), tag(v)] for k, v in value.items()]}
    raise TypeError(type(value))


def make_func(serialized):
    module, _, qualname = serialized.rpartition(":")
    func = types.FunctionType((lambda: None).__code__, {}, qualname.rsplit(".", 1)[-1])
    func.__module__ = module
    func.__qualname__ = qualname
    return func


TIGER = TaskTiger(connection=None, lazy_init=True)

FLOATS = [
    0.0, -0.0, 1.0, -1.0, 0.1, 0.5, 1.5, 2.5, 1e-4, 1e-5, 1.5e-5, 1e-7, 123.456, 1e15, 1e16,
    1.25e16, 9007199254740993.0, 1e22, 1e100, 1e-100, 1e300, 5e-324, 2.2250738585072014e-308,
    1.7976931348623157e308, math.pi, -math.e, 1 / 3, 2 / 3, 100.0, 1234567.0, 0.001, 0.0001234,
    12345678901234567890.0, float("inf"), float("-inf"), float("nan"),
]
INTS = [0, 1, -1, 255, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**100, -(2**100), 10**30]
STRINGS = [
    "", "plain", "with space", "quote\"s", "back\\slash", "slash/", "tab\tnew\nline\r",
    "\x00\x01\x1f\x7f", "é", "naïve café", "日本語", "Ω≈ç√", "🐯", "👩‍👩‍👧‍👦", "a\u0301", "\ufeff",
    "\U0001F600 mixed ascii", "\u2028\u2029", "<script>", "{\"json\": [1]}",
]


def random_value(rng, depth=0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice(INTS + [rng.randrange(-10**6, 10**6)])
    if kind == 3:
        return rng.choice(FLOATS[:-3] + [rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randrange(-30, 30)])
    if kind in (4, 5):
        return rng.choice(STRINGS + ["".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(8)))])
    if kind in (6, 7):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = rng.sample(["z", "a", "m", "é", "10", "2", "B", "b", "_", "🐯"], rng.randrange(5))
    return {k: random_value(rng, depth + 1) for k in keys}


def case(func, args, kwargs, unique_key=None, note=""):
    task = Task(TIGER, make_func(func), args=args, kwargs=kwargs, queue="default", unique=True, unique_key=unique_key)
    return {
        "note": note,
        "func": func,
        "args": tag(args) if args is not None else None,
        "kwargs": tag(kwargs) if kwargs is not None else None,
        "unique_key": unique_key,
        "id": task.id,
    }


def cases():
    out = [
        case("tasks:empty", [], {}, note="empty args and kwargs"),
        case("tasks:empty", None, None, note="None args and kwargs normalise to empty"),
        case("pkg.mod:Class.method", [1], {}, note="qualname with a class"),
        case("tasks:kw", [], {"b": 1, "a": 2}, note="unsorted kwargs"),
        case("tasks:nested", [{"z": {"y": [1, {"b": 2, "a": 1}]}, "a": []}], {}, note="nested unsorted"),
        case("tasks:key", [1, 2], {"user": 5, "other": 9}, unique_key=["user"], note="unique_key"),
        case("tasks:key", [], {"user": 5}, unique_key=["user", "missing"], note="unique_key naming a missing kwarg"),
        case("tasks:key", [], {"b": [1.5], "a": "é"}, unique_key=["b", "a"], note="unique_key order"),
        case("tasks:key", [7], {}, unique_key=["user"], note="unique_key with only positional args"),
    ]
    for f in FLOATS:
        out.append(case("tasks:float", [f], {}, note="float " + repr(f)))
    for i in INTS:
        out.append(case("tasks:int", [i, -i], {}, note="int " + str(i)))
    for s in STRINGS:
        out.append(case("tasks:str", [s], {"k": s}, note="string " + ascii(s)))
    rng = random.Random(20261203)
    for n in range(160):
        args = [random_value(rng) for _ in range(rng.randrange(4))]
        kwargs = {k: random_value(rng) for k in rng.sample(["a", "user_id", "x", "é", "Z"], rng.randrange(3))}
        key = rng.sample(sorted(kwargs) + ["absent"], rng.randrange(2)) or None
        out.append(case("random.mod:f%d" % n, args, kwargs, unique_key=key, note="random %d" % n))
    # Values the Rust test also builds from typed Rust values.
    out.append(case("typed:a", [1, "é", 1e-05, 2**127, [True, None], {"b": 1.0, "a": 2.5}], {}, note="typed a"))
    out.append(case("typed:b", [], {"user_id": 42, "address": "ü@example.org"}, unique_key=["user_id"], note="typed b"))
    return out


if __name__ == "__main__":
    vectors = cases()
    json.dump(
        {"tasktiger": tasktiger.__version__ if hasattr(tasktiger, "__version__") else "0.26.3", "cases": vectors},
        sys.stdout,
        ensure_ascii=True,
        indent=1,
        allow_nan=False,
    )
    sys.stdout.write("\n")
    print(len(vectors), "cases", file=sys.stderr)

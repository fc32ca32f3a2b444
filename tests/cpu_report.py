"""Per-test CPU accounting, on only when ``EVO_ENGINE_TEST_CPU`` names a file.

Each test (setup, call and teardown) appends one JSON line to that file: its node id, wall
seconds, and the user+sys CPU seconds of the test process (``self``) and of the children it
waited for (``children``: subprocess and mpiexec runs). Under xdist every worker appends to the
same file. Summarise with ``python -m tests.cpu_report FILE [N]``. Used to find what to cut
when the suite nears its 10-minute budget on two cores.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Generator

import pytest

ENV = "EVO_ENGINE_TEST_CPU"


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    path = os.environ.get(ENV)
    if not path:
        yield
        return
    wall, me, kids = time.perf_counter(), _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    yield
    line = json.dumps({
        "test": item.nodeid,
        "wall": round(time.perf_counter() - wall, 3),
        "self": round(_cpu(resource.RUSAGE_SELF) - me, 3),
        "children": round(_cpu(resource.RUSAGE_CHILDREN) - kids, 3),
    })
    with open(path, "a") as out:
        out.write(line + "\n")


def main(argv: list[str]) -> None:
    with open(argv[0]) as lines:
        rows = [json.loads(line) for line in lines]
    top = int(argv[1]) if len(argv) > 1 else 30
    for row in rows:
        row["cpu"] = row["self"] + row["children"]
    total = sum(row["cpu"] for row in rows)
    print(f"{len(rows)} tests, {total:.1f} CPU s, {sum(r['wall'] for r in rows):.1f} test-wall s")
    print(f"{'cpu':>7} {'self':>7} {'child':>7} {'wall':>7}  test")
    for row in sorted(rows, key=lambda r: -r["cpu"])[:top]:
        print(f"{row['cpu']:7.1f} {row['self']:7.1f} {row['children']:7.1f} {row['wall']:7.1f}  {row['test']}")
    by_file: dict[str, float] = {}
    for row in rows:
        name = row["test"].split("::")[0]
        by_file[name] = by_file.get(name, 0.0) + row["cpu"]
    print("\nby file:")
    for name, cpu in sorted(by_file.items(), key=lambda kv: -kv[1]):
        print(f"{cpu:7.1f}  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The time-limited process pool: order, time-outs and crashes never stop the batch."""

import os
import time

from labutils.pool import TimedPool


def square(n):
    return n * n


def slow_or_square(n):
    if n == 2:
        time.sleep(60)
    return n * n


def fail_or_square(n):
    if n == 1:
        raise ValueError("one is not welcome\nsecond line")
    if n == 3:
        os._exit(1)  # the worker dies
    return n * n


def test_results_come_in_order_whatever_the_workers():
    for workers in (1, 2):
        with TimedPool(workers, timeout=30) as pool:
            outcomes = list(pool.map_ordered(square, ((n,) for n in range(20)), key=lambda args: args[0] % 3))
        assert [o.value for o in outcomes] == [n * n for n in range(20)]


def test_a_task_over_its_time_limit_is_reported_and_the_rest_go_on():
    start = time.monotonic()
    with TimedPool(1, timeout=3) as pool:
        outcomes = list(pool.map_ordered(slow_or_square, ((n,) for n in range(5))))
    assert outcomes[2].error == "timed out" and outcomes[2].value is None
    assert [o.value for i, o in enumerate(outcomes) if i != 2] == [0, 1, 9, 16]
    assert time.monotonic() - start < 50


def test_errors_and_crashes_are_outcomes():
    with TimedPool(2, timeout=30) as pool:
        outcomes = list(pool.map_ordered(fail_or_square, ((n,) for n in range(6))))
    assert outcomes[1].error == "one is not welcome"
    assert outcomes[3].error == "worker crashed"
    assert [outcomes[i].value for i in (0, 2, 4, 5)] == [0, 4, 16, 25]

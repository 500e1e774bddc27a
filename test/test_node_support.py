"""The newest-wins worker both nodes use: bounded, newest item processed, drops reported."""

import threading
import time

import pytest

pytest.importorskip("rclpy")

from dig2dig_ros.ros.node_support import NewestWorker  # noqa: E402


def test_items_submitted_while_busy_are_replaced_by_the_newest():
    release, started = threading.Event(), threading.Event()
    handled = []

    def handle(item):
        started.set()
        release.wait(5)
        handled.append(item)

    worker = NewestWorker(handle, "test")
    try:
        assert worker.submit(1) is False
        assert started.wait(5)  # 1 is in progress
        assert worker.submit(2) is False  # waits
        assert worker.submit(3) is True  # replaces 2: a drop
        assert worker.submit(4) is True  # replaces 3
        release.set()
        for _ in range(100):
            if len(handled) == 2:
                break
            threading.Event().wait(0.05)
        assert handled == [1, 4]
    finally:
        release.set()
        worker.stop()


def test_stop_ends_the_thread():
    worker = NewestWorker(lambda item: None, "test")
    worker.submit("x")
    worker.stop(timeout=5)
    assert not worker._thread.is_alive()


def test_a_failing_item_does_not_end_the_worker():
    handled = []

    def handle(item):
        if item == "bad":
            raise RuntimeError("boom")
        handled.append(item)

    worker = NewestWorker(handle, "test")
    try:
        worker.submit("bad")
        for _ in range(100):
            if not worker._waiting:
                break
            threading.Event().wait(0.02)
        threading.Event().wait(0.1)
        worker.submit("good")
        for _ in range(100):
            if handled:
                break
            threading.Event().wait(0.05)
        assert handled == ["good"]
    finally:
        worker.stop()


def test_an_escaping_error_reaches_on_error_and_the_worker_goes_on():
    errors, done = [], threading.Event()

    def handle(item):
        if item == "bad":
            raise RuntimeError("publisher exploded")
        done.set()

    worker = NewestWorker(handle, "test", on_error=errors.append)
    worker.submit("bad")
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.submit("good")
    assert done.wait(5)
    assert [str(e) for e in errors] == ["publisher exploded"]
    assert worker.stop()


def test_stop_says_when_the_item_in_progress_did_not_return():
    release = threading.Event()
    started = threading.Event()

    def handle(item):
        started.set()
        release.wait(10)

    worker = NewestWorker(handle, "test")
    worker.submit(1)
    assert started.wait(5)
    assert worker.stop(timeout=0.1) is False  # still inside handle
    release.set()
    assert worker.stop(timeout=5) is True

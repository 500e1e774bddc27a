"""The newest-wins worker both nodes use: bounded, newest item processed, drops reported."""

import threading

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

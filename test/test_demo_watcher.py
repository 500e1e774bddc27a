"""The demo starts the replay only once the recorder has subscribed to every image output."""

from __future__ import annotations

import subprocess
import sys
import time

from dig2dig_ros.bags.demo import RecorderWatcher


def _fake_recorder(script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_waits_for_a_slow_recorder_to_subscribe_to_every_topic():
    proc = _fake_recorder(
        "import time\n"
        "print('waiting for /a, /b', flush=True)\n"
        "time.sleep(0.5); print('recording /a (sensor_msgs/msg/Image)', flush=True)\n"
        "time.sleep(1.0); print('recording /b (sensor_msgs/msg/Image)', flush=True)\n"
        "time.sleep(30)\n")
    try:
        started = time.monotonic()
        watcher = RecorderWatcher(proc, ["/a", "/b"])
        assert watcher.wait(20)
        assert 1.4 <= time.monotonic() - started < 15  # not before the second topic is subscribed
        assert watcher.missing == []
    finally:
        proc.kill()
        proc.wait()
    assert "recording /b" in watcher.log()


def test_a_recorder_that_ends_without_subscribing_is_not_ready():
    proc = _fake_recorder("print('recording /a (x/msg/Y)'); print('error: topic /b: published as x/msg/Z')")
    started = time.monotonic()
    watcher = RecorderWatcher(proc, ["/a", "/b"])
    assert not watcher.wait(20)
    assert time.monotonic() - started < 10  # it stops waiting when the recorder ends
    assert watcher.missing == ["/b"]
    proc.wait()
    assert "published as x/msg/Z" in watcher.log()


def test_a_prefix_of_a_topic_name_does_not_count():
    proc = _fake_recorder("print('recording /fused/image_raw (x/msg/Y)', flush=True); import time; time.sleep(30)")
    try:
        watcher = RecorderWatcher(proc, ["/fused/image"])
        assert not watcher.wait(1.5)
    finally:
        proc.kill()
        proc.wait()

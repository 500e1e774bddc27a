"""`play` and `record` as real processes: every message crosses the graph byte-identical; bad bags fail clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dig2dig_ros.bags import bag
from dig2dig_ros.bags.bag import BagError
from dig2dig_ros.ros.graph import PROFILE_VARIABLES

pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
START = 1_700_000_000 * 10**9


def ros_env() -> dict[str, str]:
    """Environment for child ROS processes: a domain of our own, localhost discovery, the Fast DDS profile."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(os.getpid() % 100 + 1), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    profile = REPO / "config" / "fastdds_profile.xml"
    if profile.is_file():
        env.update(dict.fromkeys(PROFILE_VARIABLES, str(profile)))
    return env


def start(module: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", f"dig2dig_ros.bags.{module}", *args], env=ros_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    """Wait for a child; SIGINT (then SIGKILL as a last resort) if it outlives `timeout`."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    return proc.returncode, out, err


def test_play_then_record_delivers_every_message(tmp_path: Path) -> None:
    source, recorded = tmp_path / "source", tmp_path / "recorded"
    bag.write_sample_bag(source, frames=10, rate=20, start_ns=START)
    recorder = start("recorder", str(recorded), "ir/image", "/visible/image:sensor_msgs/msg/Image",
                     "/clock:rosgraph_msgs/msg/Clock", "--storage", "mcap", "--duration", "60")
    player = None
    try:
        time.sleep(0.5)
        player = start("player", str(source), "--clock", "--wait-for-subscribers", "20", "--delay", "0.3")
        rc, out, err = finish(player, 60)
        assert rc == 0, err
        assert "published 20 messages" in out and "/ir/image 10, /visible/image 10" in out
        time.sleep(0.3)
        recorder.send_signal(signal.SIGINT)  # Ctrl-C must close the bag properly
        rc, out, err = finish(recorder, 20)
        assert rc == 0, err
        assert "/ir/image 10, /visible/image 10" in out
    finally:
        for proc in (player, recorder):
            if proc is not None and proc.poll() is None:
                finish(proc, 0)

    def by_topic(path: Path, topic: str) -> list[bytes]:
        return [m.raw for m in bag.read_messages(path, [topic])]

    for topic in (bag.IR_TOPIC, bag.VIS_TOPIC):
        assert by_topic(recorded, topic) == by_topic(source, topic)  # same bytes, so same stamps and pixels
    stamps = [r.stamp_ns for r in bag.read_images(recorded, [bag.IR_TOPIC])]
    assert stamps == [START + k * 50_000_000 for k in range(10)]
    recorded_topics = {t.name: t for t in bag.bag_topics(recorded)}
    assert recorded_topics[bag.IR_TOPIC].qos[0].reliability.name == "RELIABLE"

    clock = [bag.typestore().deserialize_cdr(m.raw, "rosgraph_msgs/msg/Clock").clock
             for m in bag.read_messages(recorded, ["/clock"])]
    clock_ns = [c.sec * 10**9 + c.nanosec for c in clock]
    assert clock_ns == sorted(clock_ns) and clock_ns[0] >= START and 0 <= clock_ns[-1] - stamps[-1] < 50_000_000
    playing = [t for t in clock_ns if t < stamps[-1]]
    assert len(playing) >= 0.9 * 100 * (stamps[-1] - START) / 1e9  # at least ~100 Hz while playing


def test_player_reports_truncated_and_unknown_bags(tmp_path: Path) -> None:
    from test_bag import write_breaking_bag, write_unknown_type_bag

    write_unknown_type_bag(tmp_path / "unknown")
    write_breaking_bag(tmp_path / "cut")  # opens, then breaks off after some messages are published
    procs = [start("player", str(tmp_path / "unknown")),
             start("player", str(tmp_path / "cut"), "--delay", "0", "--linger", "0", "--rate", "50")]
    (rc_unknown, _, err_unknown), (rc_cut, out_cut, err_cut) = (finish(p, 30) for p in procs)
    assert rc_unknown == 2 and err_unknown.count("\n") == 1
    assert "acme_msgs/msg/Thing is not installed" in err_unknown and "Traceback" not in err_unknown
    assert rc_cut == 2 and "Traceback" not in err_cut
    assert err_cut.startswith("error: cannot read bag") and err_cut.endswith("(truncated or corrupt?)\n")
    assert err_cut.count("\n") == 1 and "published" in out_cut and "published 0 " not in out_cut


def test_player_helpers_and_recorder_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from dig2dig_ros.bags import player, recorder

    qos = player.playback_qos([])
    assert qos.reliability == ReliabilityPolicy.RELIABLE and qos.depth == 10
    assert qos.durability == DurabilityPolicy.VOLATILE
    best_effort = bag.RELIABLE_QOS._replace(reliability=type(bag.RELIABLE_QOS.reliability).BEST_EFFORT, depth=1)
    assert player.playback_qos([bag.RELIABLE_QOS, best_effort]).reliability == ReliabilityPolicy.BEST_EFFORT
    with pytest.raises(BagError, match="not in the bag"):
        player.select_topics(bag.bag_topics(bag.write_sample_bag(tmp_path / "s", frames=1) and tmp_path / "s"),
                             ["/nope"])
    assert recorder.parse_topic("fused/image:sensor_msgs/msg/Image").msgtype == "sensor_msgs/msg/Image"
    assert recorder.main([str(tmp_path / "r"), "x:acme_msgs/msg/Thing"]) == 2
    assert "acme_msgs/msg/Thing is not installed" in capsys.readouterr().err
    assert recorder.main([str(tmp_path / "s"), "ir/image"]) == 2
    assert "exists already" in capsys.readouterr().err


def test_recorder_learns_types_from_installed_msg_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dig2dig_ros.bags import recorder

    share = tmp_path / "share"
    (share / "zz_msgs" / "msg").mkdir(parents=True)
    (share / "zz_msgs" / "msg" / "Inner.msg").write_text("float32 v\n")
    (share / "zz_msgs" / "msg" / "Outer.msg").write_text("std_msgs/Header header\nzz_msgs/Inner[] items\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    recorder.ensure_type("zz_msgs/msg/Outer")
    msgdef, _ = bag.typestore().generate_msgdef("zz_msgs/msg/Outer", ros_version=2)
    assert "zz_msgs/Inner" in msgdef and "float32 v" in msgdef
    with pytest.raises(BagError, match="no zz_msgs/msg/Missing.msg installed"):
        recorder.ensure_type("zz_msgs/msg/Missing")

"""rosbag2 writing and reading without ROS: sample and LLVIP images survive a bag; broken bags fail clearly."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Writer

from dig2dig_ros.bags import bag
from dig2dig_ros.bags.bag import BagError
from dig2dig_ros.core.frame.imaging import read_image
from dig2dig_ros.core.sample_scene import make_sample_pair

START = 1_700_000_000 * 10**9


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_sample_bag_round_trip(tmp_path: Path, storage: str) -> None:
    out = tmp_path / "sample"
    assert bag.write_sample_bag(out, frames=4, rate=10, storage=storage, start_ns=START) == 4
    records = list(bag.read_images(out))
    assert [r.topic for r in records] == [bag.IR_TOPIC, bag.VIS_TOPIC] * 4
    for k in range(4):
        ir, vis = records[2 * k], records[2 * k + 1]
        expected_ir, expected_vis = make_sample_pair(k)
        assert ir.stamp_ns == vis.stamp_ns == ir.timestamp == START + k * 100_000_000
        assert (ir.encoding, ir.frame_id) == ("mono8", "ir_camera")
        assert (vis.encoding, vis.frame_id) == ("bgr8", "visible_camera")
        np.testing.assert_array_equal(ir.image, expected_ir)
        np.testing.assert_array_equal(vis.image, expected_vis)
    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == storage and meta["message_count"] == 8
    topics = {t.name: t for t in bag.bag_topics(out)}
    assert set(topics) == {bag.IR_TOPIC, bag.VIS_TOPIC}
    assert all(t.count == 4 and t.qos == (bag.RELIABLE_QOS,) for t in topics.values())


def test_visible_offset_and_frame_ids(tmp_path: Path) -> None:
    out = tmp_path / "offset"
    pairs = [make_sample_pair(k, size=(16, 20)) for k in range(3)]
    bag.write_image_bag(out, pairs, rate=5, start_ns=START, vis_offset=-0.01, frame_id_ir="a", frame_id_vis="b")
    records = list(bag.read_images(out))
    vis = [r for r in records if r.topic == bag.VIS_TOPIC]
    ir = [r for r in records if r.topic == bag.IR_TOPIC]
    assert [r.stamp_ns for r in ir] == [START + k * 200_000_000 for k in range(3)]
    assert [r.stamp_ns for r in vis] == [START + k * 200_000_000 - 10_000_000 for k in range(3)]
    assert records[0].topic == bag.VIS_TOPIC  # receive times are in order, the earlier visible first
    assert {r.frame_id for r in ir} == {"a"} and {r.frame_id for r in vis} == {"b"}


def test_llvip_pairs_round_trip(shared_data: Path, tmp_path: Path) -> None:
    ir_dir, vis_dir = shared_data / "vif/llvip/ir", shared_data / "vif/llvip/vis"
    out = tmp_path / "llvip"
    rc = bag.main(["--ir", str(ir_dir), "--vis", str(vis_dir), "--out", str(out), "--limit", "3",
                   "--rate", "5", "--start", "1700000000", "--storage", "mcap"])
    assert rc == 0
    stems = [s for s, _, _ in bag.image_pairs(ir_dir, vis_dir)][:3]
    records = list(bag.read_images(out))
    assert len(records) == 6
    for k, stem in enumerate(stems):
        ir, vis = records[2 * k], records[2 * k + 1]
        source_ir = read_image(ir_dir / f"{stem}.jpg")
        assert source_ir.ndim == 3  # LLVIP stores IR as 3-channel gray JPEG: it must become mono8
        assert ir.encoding == "mono8" and ir.image.shape == (1024, 1280)
        np.testing.assert_array_equal(ir.image, source_ir[..., 0])
        assert vis.encoding == "bgr8" and vis.image.shape == (1024, 1280, 3)
        np.testing.assert_array_equal(vis.image, read_image(vis_dir / f"{stem}.jpg"))
        assert ir.stamp_ns == vis.stamp_ns == START + k * 200_000_000


def test_16_bit_infrared_stays_mono16(tmp_path: Path) -> None:
    for name in ("ir", "vis"):
        (tmp_path / name).mkdir()
    ir16 = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "ir" / "0001.png"), ir16)
    cv2.imwrite(str(tmp_path / "vis" / "0001.png"), np.full((12, 10, 3), 9, np.uint8))
    cv2.imwrite(str(tmp_path / "vis" / "0002.png"), np.full((12, 10, 3), 9, np.uint8))  # unpaired: ignored
    assert bag.bag_from_images(tmp_path / "ir", tmp_path / "vis", tmp_path / "b", start_ns=START) == 1
    ir = next(r for r in bag.read_images(tmp_path / "b") if r.topic == bag.IR_TOPIC)
    assert ir.encoding == "mono16" and ir.image.dtype == np.uint16 and ir.image.max() > 255
    np.testing.assert_array_equal(ir.image, ir16)


def test_write_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ir").mkdir()
    (tmp_path / "vis").mkdir()
    rc = bag.main(["--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "no image pairs" in capsys.readouterr().err
    bag.write_sample_bag(tmp_path / "s", frames=1)
    with pytest.raises(BagError, match="exists already"):
        bag.write_sample_bag(tmp_path / "s", frames=1)
    with pytest.raises(BagError, match="rate must be positive"):
        bag.write_sample_bag(tmp_path / "r", frames=1, rate=0)
    assert not (tmp_path / "r").exists()


def _truncate(folder: Path, fraction: float) -> None:
    data = next(p for p in folder.iterdir() if p.suffix in (".db3", ".mcap"))
    os.truncate(data, int(data.stat().st_size * fraction))


@pytest.mark.parametrize(("storage", "fraction"), [("mcap", 0.5), ("sqlite3", 0.5), ("sqlite3", 0.9)])
def test_truncated_bag_gives_clear_error(tmp_path: Path, storage: str, fraction: float) -> None:
    out = tmp_path / "t"
    bag.write_sample_bag(out, frames=8, storage=storage)
    _truncate(out, fraction)
    with pytest.raises(BagError, match=r"cannot read bag .*\(truncated") as info:
        list(bag.read_messages(out))
    assert "\n" not in str(info.value)


def write_breaking_bag(out: Path) -> None:
    """A sqlite3 bag (60 small pairs) cut so that it opens but breaks off while its messages are read."""
    bag.write_image_bag(out, [make_sample_pair(k, size=(8, 8)) for k in range(60)], start_ns=START)
    _truncate(out, 0.95)


def test_bag_breaking_off_midway_gives_clear_error(tmp_path: Path) -> None:
    write_breaking_bag(tmp_path / "b")
    read = []
    with pytest.raises(BagError, match=r"cannot read bag .*\(truncated or corrupt\?\)$"):
        for message in bag.read_messages(tmp_path / "b"):
            read.append(message)
    assert 0 < len(read) < 120


def write_unknown_type_bag(out: Path) -> None:
    """A bag with one message of a type that is installed nowhere (acme_msgs/msg/Thing)."""
    with Writer(out, version=9) as writer:
        conn = writer.add_connection("/thing", "acme_msgs/msg/Thing", msgdef="int32 x\n", rihs01="RIHS01_" + "0" * 64)
        writer.write(conn, START, b"\x00\x01\x00\x00\x07\x00\x00\x00")


def test_unknown_type_bag_gives_clear_error(tmp_path: Path) -> None:
    write_unknown_type_bag(tmp_path / "u")
    assert [t.msgtype for t in bag.bag_topics(tmp_path / "u")] == ["acme_msgs/msg/Thing"]
    with pytest.raises(BagError, match="topic /thing has type acme_msgs/msg/Thing, not sensor_msgs/msg/Image"):
        list(bag.read_images(tmp_path / "u"))


def test_missing_bag_and_topic(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="no such file"):
        bag.bag_topics(tmp_path / "nothing")
    bag.write_sample_bag(tmp_path / "s", frames=1)
    with pytest.raises(BagError, match="has none of the topics"):
        list(bag.read_messages(tmp_path / "s", ["/fused/image"]))

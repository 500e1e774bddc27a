"""The encodings cameras send (Bayer, YUV 4:2:2, NV12/NV21, 16-bit colour, big-endian): decoded against an
independent construction of the same image, and fused by the node like cv_bridge-decoded bgr8.

Every message here is packed by hand from a known BGR frame, without dig2dig_ros.ros.conversions: the Bayer
mosaic picks the channel each pixel's colour filter passes, the YUV planes come from the BT.601 limited-range
formula OpenCV's COLOR_YUV2BGR_* decoders invert, 16-bit data is value·257 (plus a dither that makes the two
bytes differ), big-endian data is byteswapped.
"""

from __future__ import annotations

import array
import os
import re
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dig2dig_ros.core.sample_scene import make_sample_pair  # noqa: E402
from dig2dig_ros.ros import conversions  # noqa: E402
from dig2dig_ros.ros.conversions import ConversionError, decode_image, layout_problem, to_bgr8  # noqa: E402
from dig2dig_ros.ros.fusion_node import FusionNode  # noqa: E402

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
BGR = {"b": 0, "g": 1, "r": 2}
BAYER = [f"bayer_{p}{bits}" for bits in (8, 16) for p in ("rggb", "bggr", "gbrg", "grbg")]
YUV = ["yuv422", "uyvy", "yuv422_yuy2", "yuyv", "nv12", "nv21"]
COLOUR16 = ["rgb16", "bgr16", "rgba16", "bgra16", "16UC3"]
# (encoding, big-endian): every encoding of the issue, and big-endian data for every multi-byte one
CASES = [(e, False) for e in YUV + BAYER + COLOUR16] + \
        [(e, True) for e in BAYER[4:] + COLOUR16 + ["mono16", "16UC1", "32FC1"]]
IDS = [f"{e}-be" if be else e for e, be in CASES]


# -- independent construction of the wire bytes ------------------------------------------------------------
def smooth_bgr(h: int, w: int) -> np.ndarray:
    """A smooth BGR frame whose three channels differ everywhere: (H,W,3) uint8 in [30, 225]."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    b = 40 + 170 * x / w
    g = 200 - 150 * y / h
    r = 128 + 80 * np.sin(2 * np.pi * (x / w + 0.5 * y / h)) * 0.9
    return np.rint(np.dstack([b, g, r])).clip(0, 255).astype(np.uint8)


def bayer_mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """(H,W) mosaic: each pixel keeps the channel its filter passes; pattern reads row 0 then row 1 ("rggb")."""
    h, w = bgr.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    cell = np.array([BGR[c] for c in pattern]).reshape(2, 2)  # channel index per (row % 2, col % 2)
    return np.take_along_axis(bgr, cell[yy % 2, xx % 2][..., None], axis=2)[..., 0]


def bt601(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V (float, (H,W) each) of a BGR frame: BT.601 limited range (Y 16..235, U/V 16..240)."""
    b, g, r = (bgr[..., k].astype(np.float64) for k in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return y, u, v


def _u8(x: np.ndarray) -> np.ndarray:
    return np.rint(x).clip(0, 255).astype(np.uint8)


def yuv422_bytes(bgr: np.ndarray, order: str) -> np.ndarray:
    """(H, 2W) packed 4:2:2 bytes, chroma averaged over each horizontal pixel pair; order "UYVY" or "YUYV"."""
    y, u, v = bt601(bgr)
    u2, v2 = (c.reshape(c.shape[0], -1, 2).mean(axis=2) for c in (u, v))  # (H, W/2)
    y0, y1 = y[:, 0::2], y[:, 1::2]
    planes = {"UYVY": (u2, y0, v2, y1), "YUYV": (y0, u2, y1, v2)}[order]
    return _u8(np.stack(planes, axis=2).reshape(y.shape[0], -1))  # (H, 2W)


def yuv420sp_bytes(bgr: np.ndarray, u_first: bool) -> np.ndarray:
    """(H·3/2, W) semi-planar 4:2:0: the Y plane, then H/2 rows of interleaved chroma (2x2 averages)."""
    y, u, v = bt601(bgr)
    h, w = y.shape
    u4, v4 = (c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (u, v))  # (H/2, W/2)
    first, second = (u4, v4) if u_first else (v4, u4)
    chroma = np.stack([first, second], axis=2).reshape(h // 2, w)  # (H/2, W)
    return _u8(np.concatenate([y, chroma], axis=0))  # (H·3/2, W)


def sixteen_bit(values: np.ndarray) -> np.ndarray:
    """8-bit values as 16-bit data: value·257, plus a fixed dither of up to ±100 so the two bytes differ (value·257
    alone reads the same in either byte order); scaled back by 255/65535 and rounded it is the value again."""
    dither = np.random.default_rng(5).integers(-100, 101, size=values.shape)
    return np.clip(values.astype(np.int32) * 257 + dither, 0, 65535).astype(np.uint16)


def wire_rows(bgr: np.ndarray, encoding: str, bigendian: bool, gray: np.ndarray | None = None) -> np.ndarray:
    """The encoding's pixel rows as they travel, without padding: (rows, row_bytes) uint8."""
    h, w = bgr.shape[:2]
    if encoding in ("yuv422", "uyvy"):
        return yuv422_bytes(bgr, "UYVY")
    if encoding in ("yuv422_yuy2", "yuyv"):
        return yuv422_bytes(bgr, "YUYV")
    if encoding in ("nv12", "nv21"):
        return yuv420sp_bytes(bgr, u_first=encoding == "nv12")
    if encoding.startswith("bayer_"):
        values = bayer_mosaic(bgr, encoding[6:10])  # (H,W)
    elif encoding in ("rgb16", "rgba16"):
        values = bgr[..., ::-1]
    else:
        values = bgr
    if encoding.endswith(("rgba16", "bgra16")):
        values = np.dstack([values, np.full((h, w), 77, np.uint8)])  # alpha, dropped on decoding
    if encoding in ("mono16", "16UC1", "32FC1"):
        values = gray
    if encoding == "32FC1":
        arr = (values.astype(np.float32) / 255.0).astype(">f4" if bigendian else "<f4")
    elif encoding.endswith("16") or encoding in ("16UC3", "mono16", "16UC1"):
        arr = sixteen_bit(values).astype(">u2" if bigendian else "<u2")
    else:
        arr = values.astype(np.uint8)
    return np.ascontiguousarray(arr).reshape(arr.shape[0], -1).view(np.uint8)


def message(encoding: str, rows: np.ndarray, width: int, height: int, pad: int = 0, bigendian: bool = False
            ) -> Image:
    """An Image of the given rows, each followed by pad junk bytes (step = row bytes + pad)."""
    junk = np.full((rows.shape[0], pad), 0xCD, np.uint8)
    data = np.concatenate([rows, junk], axis=1)  # (rows, step)
    return Image(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian), step=data.shape[1],
                 data=array.array("B", data.tobytes()))


def build(bgr: np.ndarray, encoding: str, bigendian: bool = False, pad: int = 0,
          gray: np.ndarray | None = None) -> Image:
    h, w = bgr.shape[:2]
    return message(encoding, wire_rows(bgr, encoding, bigendian, gray), w, h, pad, bigendian)


# -- decode_image against the known frame ------------------------------------------------------------------
H, W = 96, 128
FRAME = smooth_bgr(H, W)
GRAY = cv2.cvtColor(FRAME, cv2.COLOR_BGR2GRAY)
# (mean, max) absolute error allowed over the pixels compared. Measured on FRAME: YUV 4:2:2 0.68 / 3, NV12/NV21
# 0.80 / 4 (rounding, and chroma averaged over 2 or 4 pixels of a gradient); Bayer interior 0.11 / 1 (bilinear
# demosaicing). A wrong pattern, chroma order or channel order is off by 38 or more on average
# (test_a_wrong_order_fails).
TOLERANCE = {"yuv": (1.2, 6), "bayer": (0.5, 3)}


def family(encoding: str) -> str:
    if encoding.startswith("bayer_"):
        return "bayer"
    return "yuv" if encoding in YUV else "exact"


def decode_error(decoded: np.ndarray, encoding: str) -> tuple[float, int]:
    """(mean, max) absolute error of a decoded frame against FRAME (Bayer: interior pixels only)."""
    err = np.abs(decoded.astype(np.int32) - FRAME.astype(np.int32))
    if family(encoding) == "bayer":
        err = err[2:-2, 2:-2]  # demosaicing has no neighbours to interpolate from at the border
    return float(err.mean()), int(err.max())


@pytest.mark.parametrize(("encoding", "bigendian"), CASES, ids=IDS)
def test_decode_matches_the_known_frame(encoding, bigendian):
    msg = build(FRAME, encoding, bigendian, pad=3, gray=GRAY)  # odd padding: step is not a multiple of 2
    assert layout_problem(msg) is None
    out = decode_image(msg)
    if encoding in ("mono16", "16UC1"):
        assert out.dtype == np.uint16 and out.shape == (H, W)
        np.testing.assert_array_equal(out, sixteen_bit(GRAY))
        return
    if encoding == "32FC1":
        assert out.dtype == np.float32 and out.shape == (H, W)
        np.testing.assert_array_equal(out, GRAY.astype(np.float32) / 255.0)
        return
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    if family(encoding) == "exact":  # value·257 ± 100 scaled by 255/65535 is the value again
        np.testing.assert_array_equal(out, FRAME)
        return
    mean, worst = decode_error(out, encoding)
    limit_mean, limit_max = TOLERANCE[family(encoding)]
    assert mean <= limit_mean and worst <= limit_max, (mean, worst)


@pytest.mark.parametrize(("encoding", "wrong"), [
    ("bayer_rggb8", "bayer_bggr8"), ("bayer_rggb8", "bayer_gbrg8"), ("bayer_rggb8", "bayer_grbg8"),
    ("bayer_gbrg16", "bayer_grbg16"), ("uyvy", "yuyv"), ("nv12", "nv21"), ("rgb16", "bgr16")])
def test_a_wrong_order_fails(encoding, wrong):
    """The same bytes read with a sibling encoding are far outside the tolerance: the tests above would see it."""
    msg = build(FRAME, encoding)
    msg.encoding = wrong
    mean, _ = decode_error(decode_image(msg), encoding)
    assert mean > 10 * TOLERANCE["yuv"][0], mean


def test_16_bit_colour_is_scaled_as_cv_bridge_does():
    # cv::Mat::convertTo(CV_8U, 255/65535) rounds to nearest: 128 → 0.498 → 0, 129 → 1, 65535 → 255
    values = np.array([[[0, 128, 129], [385, 386, 65535]]], np.uint16)  # (1,2,3) BGR
    msg = message("bgr16", values.astype("<u2").reshape(1, -1).view(np.uint8), 2, 1)
    assert decode_image(msg).tolist() == [[[0, 0, 1], [1, 2, 255]]]


def test_to_bgr8_gives_three_8_bit_channels_for_any_encoding():
    for encoding, bigendian in CASES:
        out = to_bgr8(build(FRAME, encoding, bigendian, gray=GRAY))
        assert out.shape == (H, W, 3) and out.dtype == np.uint8, encoding
    out = to_bgr8(build(FRAME, "mono16", gray=GRAY))
    np.testing.assert_array_equal(out[..., 1], GRAY)


@pytest.mark.parametrize(("encoding", "width", "height", "pattern"), [
    ("uyvy", 63, 96, r"uyvy image 63x96: YUV 4:2:2 needs an even width"),
    ("bayer_grbg16", 128, 95, r"bayer_grbg16 image 128x95: a Bayer mosaic needs an even width and height"),
    ("nv21", 127, 96, r"nv21 image 127x96: YUV 4:2:0 needs an even width and height"),
])
def test_odd_sizes_are_refused(encoding, width, height, pattern):
    msg = build(FRAME, encoding)
    msg.width, msg.height = width, height
    assert layout_problem(msg) is not None and re.fullmatch(pattern, layout_problem(msg))
    with pytest.raises(ConversionError, match=pattern):
        decode_image(msg)


def test_nv12_needs_step_times_one_and_a_half_rows():
    msg = build(FRAME, "nv12", pad=4)
    step = W + 4
    assert msg.step == step and len(msg.data) == step * H * 3 // 2
    msg.data = msg.data[: step * H]  # the Y plane only
    assert layout_problem(msg) == f"nv12 image {W}x{H}: data has {step * H} bytes, step·height·3/2 needs " \
                                  f"{step * H * 3 // 2}"
    msg.step = W - 1
    assert layout_problem(msg) == f"nv12 image {W}x{H}: step {W - 1} is smaller than one row ({W} bytes)"


def test_unsupported_encoding_names_every_supported_one():
    msg = build(FRAME, "bgr8")
    msg.encoding = "nv24"
    problem = layout_problem(msg)
    assert problem == "unsupported encoding 'nv24'; supported: " + ", ".join(conversions.SUPPORTED)
    for name in ("mono16", "bgr8", "32FC1", "rgb16", "16UC3", "bayer_grbg16", "yuv422", "uyvy", "yuyv",
                 "yuv422_yuy2", "nv12", "nv21"):
        assert name in conversions.SUPPORTED
    with pytest.raises(ConversionError, match="unsupported encoding 'nv24'"):
        decode_image(msg)


# -- through the fusion node ------------------------------------------------------------------------------
# cv_bridge's cvtColor(msg, "bgr8"): the colour conversion getConversionCode gives, then 16-bit → 8-bit by
# convertTo(CV_8U, 255/65535). Written out here from cv_bridge.cpp, independently of conversions.py.
CV_BRIDGE_CODES = {
    "yuv422": cv2.COLOR_YUV2BGR_UYVY, "uyvy": cv2.COLOR_YUV2BGR_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUY2, "yuyv": cv2.COLOR_YUV2BGR_YUY2,
    "nv12": cv2.COLOR_YUV2BGR_NV12, "nv21": cv2.COLOR_YUV2BGR_NV21,
    **{f"bayer_rggb{b}": cv2.COLOR_BayerBG2BGR for b in (8, 16)},
    **{f"bayer_bggr{b}": cv2.COLOR_BayerRG2BGR for b in (8, 16)},
    **{f"bayer_gbrg{b}": cv2.COLOR_BayerGR2BGR for b in (8, 16)},
    **{f"bayer_grbg{b}": cv2.COLOR_BayerGB2BGR for b in (8, 16)},
    "rgb16": cv2.COLOR_RGB2BGR, "rgba16": cv2.COLOR_RGBA2BGR, "bgra16": cv2.COLOR_BGRA2BGR,
    "bgr16": None, "16UC3": None,  # already BGR: only the depth changes
}


def cv_bridge_bgr8(bgr: np.ndarray, encoding: str) -> np.ndarray:
    """The encoding's pixels (before they are packed: native order, no padding) decoded as cv_bridge does."""
    rows = wire_rows(bgr, encoding, bigendian=False)
    h, w = bgr.shape[:2]
    if encoding.startswith("bayer_") or encoding in ("nv12", "nv21"):
        raw = rows.view(np.uint16) if encoding.endswith("16") else rows  # (H,W) or (H·3/2,W)
    elif encoding in YUV:
        raw = rows.reshape(h, w, 2)
    else:
        raw = rows.view(np.uint16).reshape(h, w, -1)
    code = CV_BRIDGE_CODES[encoding]
    out = raw if code is None else cv2.cvtColor(raw, code)
    if out.dtype == np.uint16:
        out = np.clip(np.rint(out * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    return out  # (H,W,3) uint8


@pytest.fixture(scope="module")
def rig():
    """One fusion node for every encoding, at the issue's 320x256, with a peer publishing and subscribing."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() + 80) % 99))
        rclpy.init()
        # The default method (dig-blend) at the default working size (320: the frames' own size), wiener prior
        # (no network): a real fusion that still takes 0.1-0.2 s per encoding (two pairs) on one core, about 6 s
        # for all 31. Video mode off: every frame is fused on its own, so the two compared share no state.
        overrides = [Parameter("prior", value="wiener"), Parameter("device", value="cpu"),
                     Parameter("working_size", value=320), Parameter("sampler.steps", value=3),
                     Parameter("video.enabled", value=False), Parameter("sync.max_wait", value=0.0)]
        fusion = FusionNode(parameter_overrides=overrides)
        peer = rclpy.create_node("encodings_peer")
        executor = SingleThreadedExecutor()
        executor.add_node(fusion)
        executor.add_node(peer)
        pubs = (peer.create_publisher(Image, "ir/image", QOS), peer.create_publisher(Image, "visible/image", QOS))
        fused: list[Image] = []
        peer.create_subscription(Image, "fused/image", fused.append, QOS)
        rig = {"fusion": fusion, "executor": executor, "pubs": pubs, "fused": fused, "sec": 0}
        try:
            assert _spin(executor, lambda: all(p.get_subscription_count() for p in pubs)
                         and peer.count_publishers("fused/image"))
            yield rig
        finally:
            fusion.stop()
            fusion.destroy_node()
            peer.destroy_node()
            rclpy.shutdown()


def _spin(executor, predicate, timeout=30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        executor.spin_once(timeout_sec=0.02)
    return predicate()


def _fuse(rig, ir_msg: Image, vis_msg: Image) -> np.ndarray:
    """Publish one pair and return the fused frame: (H,W,3) uint8."""
    rig["sec"] += 1
    for msg, pub in zip((ir_msg, vis_msg), rig["pubs"], strict=True):
        msg.header.stamp.sec, msg.header.frame_id = rig["sec"], "cam"
        pub.publish(msg)
    n = len(rig["fused"]) + 1
    assert _spin(rig["executor"], lambda: len(rig["fused"]) >= n), rig["fusion"].counts
    out = rig["fused"][-1]
    assert out.header.stamp.sec == rig["sec"]
    return conversions.image_to_numpy(out)


SCENE_IR, SCENE_VIS = make_sample_pair(size=(256, 320))


@pytest.mark.parametrize(("encoding", "bigendian"), CASES, ids=IDS)
def test_node_fuses_each_encoding_like_cv_bridge_bgr8(rig, encoding, bigendian):
    bad = rig["fusion"].counts["bad_input"]
    if encoding in ("mono16", "16UC1", "32FC1"):  # the thermal camera's: against the same little-endian data
        ir_msg = build(SCENE_VIS, encoding, bigendian, pad=2, gray=SCENE_IR)
        reference = (build(SCENE_VIS, encoding, False, gray=SCENE_IR), conversions.numpy_to_image(SCENE_VIS, "bgr8"))
        pair = (ir_msg, conversions.numpy_to_image(SCENE_VIS, "bgr8"))
    else:
        pair = (conversions.numpy_to_image(SCENE_IR, "mono8"), build(SCENE_VIS, encoding, bigendian, pad=2))
        reference = (conversions.numpy_to_image(SCENE_IR, "mono8"),
                     conversions.numpy_to_image(cv_bridge_bgr8(SCENE_VIS, encoding), "bgr8"))
    got = _fuse(rig, *pair)
    want = _fuse(rig, *reference)
    assert rig["fusion"].counts["bad_input"] == bad
    assert got.shape == want.shape == (256, 320, 3)
    diff = float(np.abs(got.astype(np.int32) - want.astype(np.int32)).mean())
    assert diff <= 4.0, diff


def test_node_counts_an_unsupported_encoding_as_bad_input_with_one_log_line(rig, capfd):
    fusion = rig["fusion"]
    bad = fusion.counts["bad_input"]
    vis = conversions.numpy_to_image(SCENE_VIS, "bgr8")
    vis.encoding = "nv24"
    rig["sec"] += 1
    for msg, pub in zip((conversions.numpy_to_image(SCENE_IR, "mono8"), vis), rig["pubs"], strict=True):
        msg.header.stamp.sec = rig["sec"]
        pub.publish(msg)
    assert _spin(rig["executor"], lambda: fusion.counts["bad_input"] == bad + 1)
    _spin(rig["executor"], lambda: False, timeout=0.3)
    expected = "skipping a pair: visible image: unsupported encoding 'nv24'; supported: " + \
               ", ".join(conversions.SUPPORTED)
    lines = [line for line in capfd.readouterr().err.splitlines() if "nv24" in line]
    assert len(lines) == 1 and lines[0].endswith(expected), lines
    assert fusion.last_problem == expected.removeprefix("skipping a pair: ")

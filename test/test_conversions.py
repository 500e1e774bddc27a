"""Image / CompressedImage ↔ numpy, and pixel values to [0,1]."""

from __future__ import annotations

import array

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from dig2dig_ros.ros.conversions import (  # noqa: E402
    ENCODINGS,
    ConversionError,
    compressed_to_numpy,
    encoding_of,
    image_to_numpy,
    numpy_to_compressed,
    numpy_to_image,
    to_bgr,
    to_unit_float,
)


def random_image(encoding: str, h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    if dtype == np.float32:
        return rng.standard_normal(shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


def raw_message(arr: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image built by hand (independent of numpy_to_image): rows padded with pad junk bytes."""
    wire = arr.astype(arr.dtype.newbyteorder(">" if bigendian else "<"))
    rows = wire.reshape(arr.shape[0], -1).view(np.uint8)  # (H, W·bpp)
    junk = np.full((arr.shape[0], pad), 0xAB, np.uint8)
    data = np.concatenate([rows, junk], axis=1)  # (H, step)
    return Image(
        height=arr.shape[0], width=arr.shape[1], encoding=encoding, is_bigendian=int(bigendian),
        step=data.shape[1], data=array.array("B", data.tobytes()),
    )


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_round_trip_every_encoding(encoding):
    # even sizes: Bayer mosaics and YUV 4:2:2 need them
    arr = random_image(encoding, h=6, w=8, seed=list(ENCODINGS).index(encoding))
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = numpy_to_image(arr, encoding, header)
    assert msg.encoding == encoding and (msg.height, msg.width) == arr.shape[:2]
    assert msg.step == arr.shape[1] * arr.itemsize * (1 if arr.ndim == 2 else arr.shape[2])
    assert msg.is_bigendian == 0 and msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    back = image_to_numpy(msg)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    # the result is a copy: writing to it leaves the message untouched
    back[...] = 0
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


@pytest.mark.parametrize("encoding", ["mono8", "mono16", "bgr8", "rgba8", "32FC1"])
def test_step_padding_is_skipped(encoding):
    arr = random_image(encoding, h=4, w=5, seed=3)
    msg = raw_message(arr, encoding, pad=7)
    assert msg.step == arr.shape[1] * arr.itemsize * (1 if arr.ndim == 2 else arr.shape[2]) + 7
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
def test_big_endian_is_swapped_to_native(encoding):
    arr = random_image(encoding, seed=4)
    msg = raw_message(arr, encoding, pad=3, bigendian=True)
    out = image_to_numpy(msg)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    # read as little endian the same bytes would give different values
    msg.is_bigendian = 0
    assert not np.array_equal(image_to_numpy(msg), arr)


def test_rgb8_and_bgr8_keep_their_channel_order_and_to_bgr_normalises():
    px = np.zeros((2, 3, 3), np.uint8)
    px[..., 0], px[..., 1], px[..., 2] = 10, 20, 30
    rgb = image_to_numpy(raw_message(px, "rgb8"))
    bgr = image_to_numpy(raw_message(px, "bgr8"))
    assert rgb[0, 0].tolist() == [10, 20, 30] and bgr[0, 0].tolist() == [10, 20, 30]
    assert to_bgr(rgb, "rgb8")[0, 0].tolist() == [30, 20, 10]
    assert to_bgr(bgr, "bgr8")[0, 0].tolist() == [10, 20, 30]
    rgba = np.dstack([px, np.full((2, 3), 99, np.uint8)])  # (2,3,4)
    assert to_bgr(rgba, "rgba8")[0, 0].tolist() == [30, 20, 10]
    assert to_bgr(rgba, "bgra8")[0, 0].tolist() == [10, 20, 30]
    assert to_bgr(np.full((2, 3), 7, np.uint8), "mono8").shape == (2, 3, 3)


def test_data_as_bytes_or_list_also_decodes():
    arr = random_image("mono16", seed=5)
    msg = raw_message(arr, "mono16")
    raw = bytes(msg.data)
    for data in (raw, list(raw)):
        fake = type("Fake", (), {})()
        fake.height, fake.width, fake.step, fake.encoding, fake.is_bigendian = 5, 7, msg.step, "mono16", 0
        fake.data = data
        np.testing.assert_array_equal(image_to_numpy(fake), arr)


def test_png_round_trip_is_exact_and_jpeg_close():
    rng = np.random.default_rng(6)
    for arr in (
        rng.integers(0, 256, (16, 24, 3), dtype=np.uint8),
        rng.integers(0, 256, (16, 24), dtype=np.uint8),
        rng.integers(0, 65536, (16, 24), dtype=np.uint16),
        rng.integers(0, 256, (16, 24, 4), dtype=np.uint8),
    ):
        msg = numpy_to_compressed(arr, "png")
        assert isinstance(msg, CompressedImage) and "png" in msg.format
        out = compressed_to_numpy(msg)
        assert out.dtype == arr.dtype
        np.testing.assert_array_equal(out, arr)
    smooth = np.zeros((32, 32, 3), np.uint8)
    smooth[..., 0] = np.arange(32)[None, :] * 8
    smooth[..., 1] = np.arange(32)[:, None] * 4
    smooth[..., 2] = 128
    out = compressed_to_numpy(numpy_to_compressed(smooth, "jpeg", jpeg_quality=95))
    assert out.shape == smooth.shape
    err = np.abs(out.astype(int) - smooth.astype(int))
    assert err.mean() < 3.0 and err.max() < 40


def test_compressed_errors_name_format_and_size():
    msg = CompressedImage(format="jpeg", data=array.array("B", b"\x00\x01garbage" * 10))
    with pytest.raises(ConversionError, match=r"jpeg.*90 bytes"):
        compressed_to_numpy(msg)
    with pytest.raises(ConversionError, match="no data"):
        compressed_to_numpy(CompressedImage(format="png"))
    with pytest.raises(ConversionError, match="mono16"):
        numpy_to_compressed(np.zeros((4, 4), np.uint16), "jpeg")
    with pytest.raises(ConversionError, match="webp"):
        numpy_to_compressed(np.zeros((4, 4), np.uint8), "webp")


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"encoding": "nv24"}, r"unsupported encoding 'nv24'; supported: mono8, .*yuyv, .*nv12, nv21$"),
        ({"height": 0}, r"mono16 image has zero size \(7x0\)"),
        ({"width": 0}, r"mono16 image has zero size \(0x5\)"),
        ({"step": 13}, r"mono16 image 7x5: step 13 is smaller than one row \(14 bytes\)"),
        ({"step": 20}, r"mono16 image 7x5: data has 70 bytes, step·height needs 100"),
    ],
)
def test_bad_messages_raise_conversion_error_naming_encoding_and_size(change, pattern):
    msg = raw_message(random_image("mono16", seed=7), "mono16")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ConversionError, match=pattern):
        image_to_numpy(msg)


def test_truncated_data_raises():
    msg = raw_message(random_image("bgr8", seed=8), "bgr8")
    msg.data = msg.data[:-1]
    with pytest.raises(ConversionError, match=r"bgr8 image 7x5: data has 104 bytes"):
        image_to_numpy(msg)


@pytest.mark.parametrize(
    ("arr", "encoding", "pattern"),
    [
        (np.zeros((4, 4), np.float64), "32FC1", r"32FC1 needs dtype float32, got float64"),
        (np.zeros((4, 4), np.uint16), "mono8", r"mono8 needs dtype uint8, got uint16"),
        (np.zeros((4, 4), np.uint8), "bgr8", r"bgr8 needs shape \(H,W,3\), got \(4, 4\)"),
        (np.zeros((4, 4, 3), np.uint8), "mono8", r"mono8 needs shape \(H,W\), got \(4, 4, 3\)"),
        (np.zeros((0, 4), np.uint8), "mono8", r"mono8 array has zero size \(0, 4\)"),
        (np.zeros((4, 4), np.uint8), "nv24", r"unsupported encoding 'nv24'"),
        (np.zeros((6, 4), np.uint8), "nv12", r"nv12 is planar .*decode_image"),
        (np.zeros((4, 4, 3), np.uint8), "uyvy", r"uyvy needs shape \(H,W,2\), got \(4, 4, 3\)"),
    ],
)
def test_bad_arrays_raise_conversion_error(arr, encoding, pattern):
    with pytest.raises(ConversionError, match=pattern):
        numpy_to_image(arr, encoding)


def test_one_channel_arrays_may_carry_a_trailing_axis():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(arr, "mono8")), arr[:, :, 0])


def test_encoding_of_follows_cv2_conventions():
    assert encoding_of(np.zeros((2, 2), np.uint16)) == "mono16"
    assert encoding_of(np.zeros((2, 2, 3), np.uint8)) == "bgr8"
    with pytest.raises(ConversionError, match="int32"):
        encoding_of(np.zeros((2, 2), np.int32))


def test_to_unit_float_normalises_16_bit_and_reorders_colour():
    mono16 = np.array([[0, 32768, 65535]], np.uint16)
    unit = to_unit_float(mono16, "mono16")
    np.testing.assert_allclose(unit, [[0.0, 32768 / 65535, 1.0]], rtol=1e-6)
    assert unit.max() == 1.0 and to_unit_float(np.full((1, 1), 255, np.uint8), "mono8")[0, 0] == 1.0
    rgb = np.array([[[255, 0, 51]]], np.uint8)
    out = to_unit_float(rgb, "rgb8")
    assert out.dtype == np.float32 and out.shape == (1, 1, 3)
    np.testing.assert_allclose(out[0, 0], [0.2, 0.0, 1.0], rtol=1e-6)
    rgba = np.array([[[255, 0, 51, 7]]], np.uint8)
    np.testing.assert_allclose(to_unit_float(rgba, "rgba8")[0, 0], [0.2, 0.0, 1.0], rtol=1e-6)
    f = np.array([[-0.5, 0.25, 2.0, np.nan]], np.float32)
    np.testing.assert_array_equal(to_unit_float(f, "32FC1"), [[0.0, 0.25, 1.0, 0.0]])


def test_to_bgr_and_to_unit_float_decode_camera_arrays_in_their_own_depth():
    # a 2x2-periodic RGGB mosaic of a flat colour (B 1000, G 2000, R 3000): every pixel demosaics to it
    mosaic = np.tile(np.array([[3000, 2000], [2000, 1000]], np.uint16), (4, 4))  # (8,8) R G / G B
    bgr = to_bgr(mosaic, "bayer_rggb16")
    assert bgr.dtype == np.uint16 and bgr.shape == (8, 8, 3)
    assert bgr[3, 3].tolist() == [1000, 2000, 3000]
    unit = to_unit_float(mosaic, "bayer_rggb16")
    assert unit.shape == (8, 8, 3)
    np.testing.assert_allclose(unit[3, 3], np.array([1000, 2000, 3000]) / 65535, rtol=1e-6)
    gray_uyvy = np.full((2, 4, 2), 128, np.uint8)  # U = V = 128: no colour
    gray_uyvy[..., 1] = 126  # Y 126 → (126 - 16) x 1.164 = 128
    assert to_bgr(gray_uyvy, "uyvy")[0, 0].tolist() == [128, 128, 128]
    with pytest.raises(ConversionError, match="even width"):
        to_bgr(np.zeros((2, 3, 2), np.uint8), "yuyv")

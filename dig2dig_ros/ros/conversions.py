"""sensor_msgs Image / CompressedImage ↔ numpy, and pixel values to float [0,1]: our cv_bridge.

Supported raw encodings. ``image_to_numpy`` gives the pixels as stored (channel order exactly as the encoding
names it, native byte order); ``to_bgr`` turns colour into BGR in the same dtype; ``decode_image`` gives what
the fusion node fuses (gray as is, colour as 8-bit BGR):

  =======================================  =======  ==============  =====================================
  encoding                                 dtype    image_to_numpy  decode_image
  =======================================  =======  ==============  =====================================
  mono8, 8UC1                              uint8    (H,W)           (H,W) uint8
  mono16, 16UC1                            uint16   (H,W)           (H,W) uint16
  32FC1                                    float32  (H,W)           (H,W) float32
  bgr8, rgb8, 8UC3                         uint8    (H,W,3)         (H,W,3) BGR uint8
  bgra8, rgba8, 8UC4                       uint8    (H,W,4)         (H,W,3) BGR uint8, alpha dropped
  bgr16, rgb16, 16UC3                      uint16   (H,W,3)         (H,W,3) BGR uint8, x 255/65535
  bgra16, rgba16                           uint16   (H,W,4)         (H,W,3) BGR uint8, x 255/65535
  bayer_rggb8, _bggr8, _gbrg8, _grbg8      uint8    (H,W) mosaic    (H,W,3) BGR uint8, demosaiced
  bayer_rggb16, _bggr16, _gbrg16, _grbg16  uint16   (H,W) mosaic    (H,W,3) BGR uint8, demosaiced, scaled
  uyvy (= yuv422), yuyv (= yuv422_yuy2)    uint8    (H,W,2)         (H,W,3) BGR uint8
  nv12, nv21                               uint8    (not an array)  (H,W,3) BGR uint8
  =======================================  =======  ==============  =====================================

Colour follows cv_bridge's ``cvtColor(msg, "bgr8")``: the OpenCV colour conversion first, then 16-bit values
scaled by 255/65535 and rounded (cv::Mat::convertTo). OpenCV names a Bayer pattern after the second row's
second and third pixels, so ROS ``bayer_rggb*`` is ``COLOR_BayerBG2BGR``, ``bayer_bggr*`` BayerRG,
``bayer_gbrg*`` BayerGR, ``bayer_grbg*`` BayerGB (cv_bridge's mapping; bilinear demosaicing). YUV is decoded by
OpenCV's ``COLOR_YUV2BGR_UYVY`` / ``_YUY2`` / ``_NV12`` / ``_NV21`` (BT.601, limited range). NV12/NV21 hold a Y
plane of H rows of ``step`` bytes, then H/2 rows of interleaved chroma (NV12 U first, NV21 V first) at the same
step: step·H·3/2 bytes. YUV 4:2:2 needs an even width; Bayer and NV12/NV21 an even width and height.
8UC3 / 8UC4 carry no colour order; like cv_bridge we treat them as BGR / BGRA. cv_bridge refuses 16UC3 → bgr8
(no colour information); we treat it as BGR16, as we do 8UC3. Big-endian data (``is_bigendian``) is read for
every multi-byte encoding (16-bit and 32FC1); ``step`` row padding is skipped.
"""

from __future__ import annotations

import array
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)

# Encodings whose pixels are an (H,W) or (H,W,C) array: encoding -> (dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (_U8, 1),
    "8UC1": (_U8, 1),
    "mono16": (_U16, 1),
    "16UC1": (_U16, 1),
    "bgr8": (_U8, 3),
    "rgb8": (_U8, 3),
    "8UC3": (_U8, 3),
    "bgra8": (_U8, 4),
    "rgba8": (_U8, 4),
    "8UC4": (_U8, 4),
    "32FC1": (_F32, 1),
    "bgr16": (_U16, 3),
    "rgb16": (_U16, 3),
    "16UC3": (_U16, 3),
    "bgra16": (_U16, 4),
    "rgba16": (_U16, 4),
    **{f"bayer_{pattern}{bits}": (_U8 if bits == 8 else _U16, 1)
       for bits in (8, 16) for pattern in ("rggb", "bggr", "gbrg", "grbg")},
    "uyvy": (_U8, 2),
    "yuv422": (_U8, 2),
    "yuyv": (_U8, 2),
    "yuv422_yuy2": (_U8, 2),
}
_RGB_ORDER = ("rgb8", "rgba8", "rgb16", "rgba16")
_GRAY = ("mono8", "8UC1", "mono16", "16UC1", "32FC1")
# ROS pattern (first row, second row) -> OpenCV code (named after the second row's second and third pixels)
_BAYER_CODES = {"rggb": cv2.COLOR_BayerBG2BGR, "bggr": cv2.COLOR_BayerRG2BGR,
                "gbrg": cv2.COLOR_BayerGR2BGR, "grbg": cv2.COLOR_BayerGB2BGR}
_BAYER = {name: _BAYER_CODES[name[6:10]] for name in ENCODINGS if name.startswith("bayer_")}
_YUV422 = {"uyvy": cv2.COLOR_YUV2BGR_UYVY, "yuv422": cv2.COLOR_YUV2BGR_UYVY,
           "yuyv": cv2.COLOR_YUV2BGR_YUY2, "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUY2}
# Planar 4:2:0 (no (H,W,C) array): only decode_image reads them.
_YUV420 = {"nv12": cv2.COLOR_YUV2BGR_NV12, "nv21": cv2.COLOR_YUV2BGR_NV21}
# Every encoding an Image may carry, in the order error messages list them.
SUPPORTED: tuple[str, ...] = (*ENCODINGS, *_YUV420)
_UNIT_16 = np.float32(255.0 / 65535.0)


class ConversionError(ValueError):
    """An image message or array that cannot be converted; the message names the encoding and sizes."""


def _unsupported(encoding: str) -> str:
    return f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED)}"


def _spec(encoding: str) -> tuple[np.dtype, int]:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        if encoding in _YUV420:
            raise ConversionError(f"{encoding} is planar (a Y plane, then interleaved chroma), not an (H,W,C) "
                                  "array: decode_image converts it") from None
        raise ConversionError(_unsupported(encoding)) from None


def _byte_view(data: Any) -> np.ndarray:
    """The message's data field as a flat uint8 array (a view where the buffer protocol allows)."""
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)  # (N,)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)  # (N,) e.g. a list of ints


def _to_byte_array(arr: np.ndarray) -> array.array:
    """A C-contiguous array's bytes as array.array('B'): the type ROS uint8[] fields hold without checks."""
    out = array.array("B")
    out.frombytes(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return out


def _problem(msg: Image, size: int) -> str | None:
    """What is wrong with msg's encoding, sizes and step for a data field of size bytes, or None."""
    encoding = msg.encoding
    if encoding not in SUPPORTED:
        return _unsupported(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        return f"{encoding} image has zero size ({width}x{height})"
    where = f"{encoding} image {width}x{height}"
    if encoding in _YUV422 and width % 2:
        return f"{where}: YUV 4:2:2 needs an even width"
    if (encoding in _BAYER or encoding in _YUV420) and (width % 2 or height % 2):
        kind = "a Bayer mosaic" if encoding in _BAYER else "YUV 4:2:0"
        return f"{where}: {kind} needs an even width and height"
    if encoding in _YUV420:
        row_bytes, rows, needs = width, height * 3 // 2, "step·height·3/2"
    else:
        dtype, channels = ENCODINGS[encoding]
        row_bytes, rows, needs = width * channels * dtype.itemsize, height, "step·height"
    if step < row_bytes:
        return f"{where}: step {step} is smaller than one row ({row_bytes} bytes)"
    if size < step * rows:
        return f"{where}: data has {size} bytes, {needs} needs {step * rows}"
    return None


def layout_problem(msg: Image) -> str | None:
    """What is wrong with an Image that can be told without decoding it, or None.

    An unsupported encoding (the message names the supported ones), a zero size, an odd size the encoding
    cannot have (YUV 4:2:2: width; Bayer, NV12/NV21: width and height), a step shorter than one row, or data
    shorter than the rows the step implies.
    """
    return _problem(msg, _byte_view(msg.data).size)


def _rows(msg: Image, row_bytes: int, rows: int) -> np.ndarray:
    """The first rows of the message's data, row_bytes each (step padding dropped): (rows, row_bytes) uint8 view."""
    buf = _byte_view(msg.data)  # (N,)
    problem = _problem(msg, buf.size)
    if problem:
        raise ConversionError(problem)
    step = int(msg.step)
    return buf[: step * rows].reshape(rows, step)[:, :row_bytes]  # (rows, row_bytes)


def image_to_numpy(msg: Image) -> np.ndarray:
    """A copy of the image's pixels: (H,W) for one channel, (H,W,C) otherwise, native byte order.

    Bayer data comes as its (H,W) mosaic, YUV 4:2:2 as (H,W,2) bytes (see the module table); NV12/NV21 have no
    such array (use ``decode_image``). Honours ``step`` (row padding is dropped) and ``is_bigendian``. Raises
    ConversionError on what ``layout_problem`` reports.
    """
    encoding = msg.encoding
    dtype, channels = _spec(encoding)
    height, width = int(msg.height), int(msg.width)
    rows = _rows(msg, width * channels * dtype.itemsize, height)  # (H, row_bytes) view
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    pixels = np.array(rows, order="C", copy=True).view(wire)  # (H, W·C) copy, wire byte order
    if not pixels.dtype.isnative:
        pixels = pixels.astype(dtype)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return pixels.reshape(shape)


def decode_image(msg: Image) -> np.ndarray:
    """The pixels the fusion node takes: gray (H,W) uint8/uint16/float32 as stored, anything in colour as
    (H,W,3) BGR uint8 the way cv_bridge's ``cvtColor(msg, "bgr8")`` gives it (see the module docstring).

    Raises ConversionError on what ``layout_problem`` reports. 32FC1 values are returned as they are (NaN too).
    """
    encoding = msg.encoding
    if encoding in _YUV420:
        width, height = int(msg.width), int(msg.height)
        planes = _rows(msg, width, height * 3 // 2)  # (H·3/2, W): Y rows, then interleaved chroma rows
        return cv2.cvtColor(np.ascontiguousarray(planes), _YUV420[encoding])  # (H,W,3)
    arr = image_to_numpy(msg)
    if encoding in _GRAY:
        return arr
    bgr = to_bgr(arr, encoding)  # (H,W,3), uint8 or uint16
    return _to_8bit(bgr) if bgr.dtype == _U16 else bgr


def to_bgr8(msg: Image) -> np.ndarray:
    """Any supported Image as (H,W,3) BGR uint8: colour as ``decode_image``, gray replicated (16-bit x 255/65535,
    32FC1 taken as [0,1]: clipped, non-finite → 0)."""
    arr = decode_image(msg)
    if arr.ndim == 3:
        return arr
    if arr.dtype == _U16:
        arr = _to_8bit(arr)
    elif arr.dtype == _F32:
        unit = np.clip(np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)  # (H,W)
        arr = np.rint(unit * np.float32(255.0)).astype(np.uint8)
    return np.repeat(arr[:, :, None], 3, axis=2)  # (H,W,3)


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    """uint16 → uint8 as cv::Mat::convertTo(CV_8U, 255/65535) does (rounded to nearest)."""
    return np.rint(arr.astype(np.float32) * _UNIT_16).astype(np.uint8)


def _check_array(arr: np.ndarray, encoding: str) -> np.ndarray:
    """arr validated against the encoding, squeezed to (H,W) for one channel."""
    dtype, channels = _spec(encoding)
    arr = np.asarray(arr)
    if arr.dtype != dtype:
        raise ConversionError(f"{encoding} needs dtype {dtype}, got {arr.dtype} (shape {arr.shape})")
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    expected = "(H,W)" if channels == 1 else f"(H,W,{channels})"
    ok = arr.ndim == 2 if channels == 1 else (arr.ndim == 3 and arr.shape[2] == channels)
    if not ok:
        raise ConversionError(f"{encoding} needs shape {expected}, got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConversionError(f"{encoding} array has zero size {arr.shape}")
    return arr


def numpy_to_image(arr: np.ndarray, encoding: str, header: Any = None) -> Image:
    """An Image holding arr (dtype and channels must match the encoding), step = W·bpp, little endian."""
    arr = _check_array(arr, encoding)
    dtype, channels = _spec(encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels * dtype.itemsize
    msg.data = _to_byte_array(arr.astype(dtype.newbyteorder("<"), copy=False))
    return msg


def encoding_of(arr: np.ndarray) -> str:
    """The encoding cv2 conventions imply for an array: mono8/mono16/32FC1, bgr8, bgra8."""
    arr = np.asarray(arr)
    channels = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else 0)
    names = {
        (np.dtype(np.uint8), 1): "mono8",
        (np.dtype(np.uint16), 1): "mono16",
        (np.dtype(np.float32), 1): "32FC1",
        (np.dtype(np.uint8), 3): "bgr8",
        (np.dtype(np.uint8), 4): "bgra8",
    }
    try:
        return names[(arr.dtype, channels)]
    except KeyError:
        raise ConversionError(f"no encoding for an array of dtype {arr.dtype} and shape {arr.shape}") from None


def compressed_to_numpy(msg: CompressedImage) -> np.ndarray:
    """Decoded pixels as cv2 gives them: (H,W) gray, (H,W,3) BGR or (H,W,4) BGRA; uint8 or uint16.

    Any format cv2.imdecode reads (the ``format`` string is only used in error messages).
    """
    fmt = getattr(msg, "format", "") or "?"
    buf = _byte_view(msg.data)  # (N,)
    if buf.size == 0:
        raise ConversionError(f"compressed image (format {fmt!r}) has no data")
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ConversionError(f"could not decode compressed image (format {fmt!r}, {buf.size} bytes)")
    return decoded


def numpy_to_compressed(
    arr: np.ndarray, fmt: str = "png", header: Any = None, jpeg_quality: int = 95
) -> CompressedImage:
    """A CompressedImage of arr in cv2 channel order (gray, BGR, BGRA); png is lossless, jpeg 8-bit only.

    ``format`` is written as image_transport does: ``"<enc>; <fmt> compressed <enc>"``.
    """
    fmt = fmt.lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in ("png", "jpeg"):
        raise ConversionError(f"unsupported compression format {fmt!r}: use png or jpeg")
    encoding = encoding_of(arr)
    allowed = ("mono8", "bgr8") if fmt == "jpeg" else ("mono8", "mono16", "bgr8", "bgra8")
    if encoding not in allowed:
        raise ConversionError(f"{fmt} cannot hold {encoding} (shape {np.shape(arr)}); allowed: {allowed}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".png" if fmt == "png" else ".jpg", arr, params)
    if not ok:
        raise ConversionError(f"cv2 failed to encode {encoding} {np.shape(arr)} as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"{encoding}; {fmt} compressed {encoding}"
    msg.data = _to_byte_array(encoded)
    return msg


def to_bgr(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Any array encoding as (H,W,3) BGR, dtype kept: RGB reordered, alpha dropped, gray replicated, a Bayer
    mosaic demosaiced, YUV 4:2:2 converted (8-bit, as it is stored)."""
    arr = _check_array(arr, encoding)
    _, channels = _spec(encoding)
    if encoding in _BAYER:
        return cv2.cvtColor(arr, _BAYER[encoding])  # (H,W,3)
    if encoding in _YUV422:
        if arr.shape[1] % 2:
            raise ConversionError(f"{encoding} array {arr.shape}: YUV 4:2:2 needs an even width")
        return cv2.cvtColor(arr, _YUV422[encoding])  # (H,W,3)
    if channels == 1:
        return np.repeat(arr[:, :, None], 3, axis=2)  # (H,W,3)
    if encoding in _RGB_ORDER:
        return np.ascontiguousarray(arr[:, :, 2::-1])  # (H,W,3)
    return np.ascontiguousarray(arr[:, :, :3])  # (H,W,3)


def to_unit_float(arr: np.ndarray, encoding: str) -> np.ndarray:
    """float32 in [0,1]: gray (H,W) for mono8/mono16/8UC1/16UC1/32FC1, BGR (H,W,3) for the others.

    8-bit / 255, 16-bit / 65535 (normalised, never truncated to 8 bits), 32FC1 taken as already in [0,1]:
    clipped, non-finite values → 0. Infrared frames go through ``dig2dig_ros.core.frame.thermal.prepare_infrared``.
    """
    arr = _check_array(arr, encoding)
    dtype, _ = _spec(encoding)
    if encoding not in _GRAY:
        arr = to_bgr(arr, encoding)
    if dtype in (np.uint8, np.uint16):
        out = arr.astype(np.float32)  # (H,W) or (H,W,3)
        out /= np.float32(np.iinfo(dtype).max)
        return out
    out = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0)

"""sensor_msgs Image / CompressedImage ↔ numpy, and pixel values to float [0,1]: our cv_bridge.

Supported raw encodings (channel order exactly as the encoding names it; ``to_bgr`` normalises):

  =========================  ===========  =======
  encoding                   dtype        shape
  =========================  ===========  =======
  mono8, 8UC1                uint8        (H,W)
  mono16, 16UC1              uint16       (H,W)
  bgr8, rgb8, 8UC3           uint8        (H,W,3)
  bgra8, rgba8, 8UC4         uint8        (H,W,4)
  32FC1                      float32      (H,W)
  =========================  ===========  =======

8UC3 / 8UC4 carry no colour order; like cv_bridge we treat them as BGR / BGRA.
"""

from __future__ import annotations

import array
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

# encoding -> (dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgb8": (np.dtype(np.uint8), 3),
    "8UC3": (np.dtype(np.uint8), 3),
    "bgra8": (np.dtype(np.uint8), 4),
    "rgba8": (np.dtype(np.uint8), 4),
    "8UC4": (np.dtype(np.uint8), 4),
    "32FC1": (np.dtype(np.float32), 1),
}
_RGB_ORDER = ("rgb8", "rgba8")


class ConversionError(ValueError):
    """An image message or array that cannot be converted; the message names the encoding and sizes."""


def _spec(encoding: str) -> tuple[np.dtype, int]:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ConversionError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}"
        ) from None


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


def image_to_numpy(msg: Image) -> np.ndarray:
    """A copy of the image's pixels: (H,W) for one channel, (H,W,C) otherwise, native byte order.

    Honours ``step`` (row padding is dropped) and ``is_bigendian``. Raises ConversionError on unsupported
    encodings, zero sizes, a step smaller than one row, or data shorter than step·height.
    """
    encoding = msg.encoding
    dtype, channels = _spec(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"{encoding} image has zero size ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ConversionError(
            f"{encoding} image {width}x{height}: step {step} is smaller than one row ({row_bytes} bytes)"
        )
    buf = _byte_view(msg.data)  # (N,)
    if buf.size < step * height:
        raise ConversionError(
            f"{encoding} image {width}x{height}: data has {buf.size} bytes, step·height needs {step * height}"
        )
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]  # (H, row_bytes) view
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    pixels = np.array(rows, order="C", copy=True).view(wire)  # (H, W·C) copy, wire byte order
    if not pixels.dtype.isnative:
        pixels = pixels.astype(dtype)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return pixels.reshape(shape)


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
    """Any supported image as (H,W,3) BGR, dtype kept: RGB reordered, alpha dropped, gray replicated."""
    arr = _check_array(arr, encoding)
    _, channels = _spec(encoding)
    if channels == 1:
        return np.repeat(arr[:, :, None], 3, axis=2)  # (H,W,3)
    if encoding in _RGB_ORDER:
        return np.ascontiguousarray(arr[:, :, 2::-1])  # (H,W,3)
    return np.ascontiguousarray(arr[:, :, :3])  # (H,W,3)


def to_unit_float(arr: np.ndarray, encoding: str) -> np.ndarray:
    """float32 in [0,1]: gray (H,W) for one-channel encodings, BGR (H,W,3) otherwise.

    8-bit / 255, 16-bit / 65535 (normalised, never truncated to 8 bits), 32FC1 taken as already in [0,1]:
    clipped, non-finite values → 0. Infrared frames go through ``dig2dig_ros.core.thermal.prepare_infrared``.
    """
    arr = _check_array(arr, encoding)
    dtype, channels = _spec(encoding)
    if channels > 1:
        arr = to_bgr(arr, encoding)
    if dtype in (np.uint8, np.uint16):
        out = arr.astype(np.float32)  # (H,W) or (H,W,3)
        out /= np.float32(np.iinfo(dtype).max)
        return out
    out = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0)

"""Infrared → visible registration by a homography: parse H, warp one camera into the other's geometry.

H is the 3×3 matrix (row-major, 9 numbers) that maps infrared pixel coordinates to visible pixel coordinates,
x_vis ~ H · x_ir (homogeneous). It is exact for a planar scene or cameras that share a centre, and a good
approximation for a scene far away compared with the baseline. Obtain it from four or more point
correspondences with ``cv2.findHomography`` (docs/ROBOT.md, ``dig2dig calibrate``).

``warp_into`` returns the warped frame and a validity mask (uint8 (H,W), 255 where the source camera saw the
scene); the fusion core gives the warped source weight 0 outside it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


class RegistrationError(ValueError):
    """A homography that cannot be used (wrong count, not numbers, singular, unreadable file)."""


def parse_homography(value: str | Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    """A 3×3 float64 homography from 9 numbers (a sequence, or a string of comma- or space-separated numbers),
    or from a file holding them (text, or a .npy array); None or empty means the cameras are aligned.

    The matrix is scaled so that H[2,2] = 1 when that entry is non-zero. Raises RegistrationError.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        path = Path(text).expanduser()
        if _looks_like_path(text) or path.is_file():
            text = _read_file(path)
            if isinstance(text, np.ndarray):
                return _as_matrix(text.reshape(-1), f"{path}")
        parts = text.replace(",", " ").replace(";", " ").replace("[", " ").replace("]", " ").split()
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise RegistrationError(f"homography must be 9 numbers (row-major) or a file holding them; "
                                    f"got {value!r}") from None
        return _as_matrix(np.asarray(numbers), repr(value))
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        return None
    return _as_matrix(arr, "the homography")


def _looks_like_path(text: str) -> bool:
    return "/" in text or text.endswith((".txt", ".npy", ".csv", ".yaml"))


def _read_file(path: Path) -> str | np.ndarray:
    if not path.is_file():
        raise RegistrationError(f"homography file {path} does not exist")
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RegistrationError(f"cannot read homography from {path}: {exc}") from None
    lines = [line.split("#", 1)[0] for line in path.read_text().splitlines()]
    return " ".join(lines)


def _as_matrix(numbers: np.ndarray, what: str) -> np.ndarray:
    if numbers.size != 9:
        raise RegistrationError(f"{what}: a homography needs 9 numbers (3x3, row-major), got {numbers.size}")
    if not np.all(np.isfinite(numbers)):
        raise RegistrationError(f"{what}: the homography has non-finite entries")
    h = numbers.astype(np.float64).reshape(3, 3)
    if abs(np.linalg.det(h)) < 1e-12:
        raise RegistrationError(f"{what}: the homography is singular (determinant 0)")
    if h[2, 2] != 0:
        h = h / h[2, 2]
    return h


def is_identity(h: np.ndarray | None) -> bool:
    """True for no homography or (numerically) the identity."""
    return h is None or bool(np.allclose(h, np.eye(3), atol=1e-9))


def warp_into(image: np.ndarray, h: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Warp image ((H,W) or (H,W,C), any dtype cv2 takes) by h into a frame of size (height, width).

    Returns the warped image (same dtype and channels) and the validity mask (uint8 (height, width): 255 where
    the pixel maps inside the source, else 0). Bilinear; the border is replicated so that edge pixels do not
    blend with black, and the mask says where there is no data.
    """
    height, width = int(size[0]), int(size[1])
    if image.size == 0 or height <= 0 or width <= 0:
        raise RegistrationError(f"cannot warp an image of shape {image.shape} into {width}x{height}")
    warped = cv2.warpPerspective(image, h, (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    return warped, validity_mask(h, image.shape[:2], (height, width))


_MASKS: dict[tuple[bytes, tuple[int, int], tuple[int, int]], np.ndarray] = {}  # the latest few, per H and sizes
_MASKS_KEPT = 4
_MASKS_LOCK = threading.Lock()


def validity_mask(h: np.ndarray, source: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """uint8 (height, width): 255 where h maps a pixel of a (height, width) = ``source`` frame, else 0; read-only,
    and computed once per H and sizes (a camera stream warps every frame by the same H)."""
    key = (np.asarray(h, np.float64).tobytes(), tuple(source), tuple(size))
    with _MASKS_LOCK:
        mask = _MASKS.get(key)
    if mask is None:
        ones = np.full(source, 255, np.uint8)
        mask = cv2.warpPerspective(ones, h, (size[1], size[0]), flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask.setflags(write=False)
        with _MASKS_LOCK:
            if len(_MASKS) >= _MASKS_KEPT:
                _MASKS.pop(next(iter(_MASKS)))
            _MASKS[key] = mask
    return mask


def register_pair(
    ir: np.ndarray, vis: np.ndarray, h: np.ndarray | None, reference: str = "visible"
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """Bring [ir, vis] into the reference camera's geometry with h (infrared → visible pixels).

    reference "visible": the infrared frame is warped by h to the visible size; "ir": the visible frame is
    warped by h⁻¹ to the infrared size. Returns (ir, vis, valid) with valid = [mask or None, mask or None] for
    ``Fuser(images, valid=valid)``. Without h the frames are returned as they are and valid is [None, None].
    """
    if h is None:
        return ir, vis, [None, None]
    if reference == "visible":
        warped, mask = warp_into(ir, h, vis.shape[:2])
        return warped, vis, [mask, None]
    if reference == "ir":
        warped, mask = warp_into(vis, np.linalg.inv(h), ir.shape[:2])
        return ir, warped, [None, mask]
    raise ValueError(f"reference must be 'visible' or 'ir', got {reference!r}")


def estimate_homography(ir_points: np.ndarray, vis_points: np.ndarray) -> tuple[np.ndarray, float]:
    """H (infrared → visible) from N ≥ 4 point pairs ((N,2) each) by least squares (cv2.findHomography,
    method 0), and the RMS reprojection error in visible pixels."""
    src = np.asarray(ir_points, np.float64).reshape(-1, 2)
    dst = np.asarray(vis_points, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 4:
        raise RegistrationError(f"need at least 4 matching point pairs, got {len(src)} and {len(dst)}")
    h, _ = cv2.findHomography(src, dst, 0)
    if h is None:
        raise RegistrationError("cv2.findHomography found no homography (points collinear?)")
    h = _as_matrix(h.reshape(-1), "the estimated homography")
    projected = cv2.perspectiveTransform(src.reshape(-1, 1, 2), h).reshape(-1, 2)
    rms = float(np.sqrt(np.mean(np.sum((projected - dst) ** 2, axis=1))))
    return h, rms


def format_homography(h: np.ndarray) -> str:
    """H as the 9 comma-separated numbers the node parameter and --ir-homography take."""
    return ",".join(f"{v:.10g}" for v in np.asarray(h, np.float64).reshape(-1))

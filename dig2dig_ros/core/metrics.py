"""Image-fusion metrics of ALGORITHM.md §6: the paper's Tables 1–2, as the public evaluators compute them.

Every metric takes gray float64 images on the [0, 255] scale, all of one shape (H, W):
``f`` the fused image, ``a`` the infrared / first source, ``b`` the visible / second source. Use
:func:`to_gray255` to bring a uint8 / uint16 / float, gray or BGR image onto that scale first.

Each docstring states the exact definition, including the border handling and the conventions inherited from
the public MATLAB/Python evaluators (VIFB, VIF-Benchmark, Kumar's ``objective_fusion_perform_fn``), because
the published numbers depend on them. Higher is better for every metric except MSE and Nabf.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# -- SSIM (Wang et al. 2004) ------------------------------------------------------------------------------
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 255.0

# -- Qabf (Xydeas & Petrović 2000), constants as in the public evaluators -----------------------------------
QABF_L = 1.0  # weight exponent: w = g^L
QABF_GAMMA_G, QABF_KAPPA_G, QABF_SIGMA_G = 0.9994, -15.0, 0.5
QABF_GAMMA_A, QABF_KAPPA_A, QABF_SIGMA_A = 0.9879, -22.0, 0.8

# -- Nabf (Petrović's metrics as modified by B. K. Shreyamsha Kumar), his constants -------------------------
NABF_TD = 2.0  # edge-strength threshold for a full weight
NABF_WT_MIN = 0.001  # weight of pixels weaker than NABF_TD
NABF_LG = 1.5  # weight exponent
NABF_NRG, NABF_KG, NABF_SIGMAG = 0.9999, 19.0, 0.5
NABF_NRA, NABF_KA, NABF_SIGMAA = 0.9995, 22.0, 0.5

HIST_BINS = 256
LUMA_BGR = (0.114, 0.587, 0.299)  # ITU-R BT.601 weights for B, G, R (what cv2.COLOR_BGR2GRAY uses)

# Sobel kernels for correlation (cv2.filter2D): x = horizontal derivative, y = vertical derivative.
_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
_SOBEL_Y = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------------------
def to_gray255(img: np.ndarray, float_max: float = 1.0) -> np.ndarray:
    """Any image → float64 gray on the [0, 255] scale, shape (H, W).

    - uint8: taken as is; uint16: scaled by 255/65535 (full 16-bit range, no stretch: stretch raw radiometric
      thermal data before, if wanted); float: scaled by 255/float_max (default: floats are in [0, 1]).
    - (H, W) and (H, W, 1) are gray; (H, W, 3) is BGR and (H, W, 4) BGRA (alpha ignored), reduced with the
      BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B, unrounded. (Evaluators that read files with
      cv2.IMREAD_GRAYSCALE get the same luma rounded to uint8.)
    """
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        scale = 1.0
    elif arr.dtype == np.uint16:
        scale = 255.0 / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 / float_max
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}: use uint8, uint16 or float")
    x = arr.astype(np.float64) * scale
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[..., 0]
    elif x.ndim == 3 and x.shape[2] in (3, 4):
        x = x[..., 0] * LUMA_BGR[0] + x[..., 1] * LUMA_BGR[1] + x[..., 2] * LUMA_BGR[2]
    elif x.ndim != 2:
        raise ValueError(f"expected a (H,W), (H,W,1), (H,W,3) or (H,W,4) image, got shape {arr.shape}")
    return x  # (H,W)


def _check(*images: np.ndarray) -> list[np.ndarray]:
    out = [np.asarray(im, dtype=np.float64) for im in images]
    shape = out[0].shape
    if len(shape) != 2:
        raise ValueError(f"metrics take gray (H,W) images, got shape {shape}; see to_gray255")
    for im in out[1:]:
        if im.shape != shape:
            raise ValueError(f"image shapes differ: {shape} vs {im.shape}")
    return out


# ---------------------------------------------------------------------------------------------------------
# Reference-based metrics: F against each source
# ---------------------------------------------------------------------------------------------------------
def mse(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """MSE = (mean((A−F)²) + mean((B−F)²)) / 2, on the 255 scale. Lower is better."""
    f, a, b = _check(f, a, b)
    return float((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0)


def _psnr_one(f: np.ndarray, x: np.ndarray) -> float:
    err = float(np.mean((x - f) ** 2))
    return math.inf if err == 0.0 else 10.0 * math.log10(DATA_RANGE**2 / err)


def psnr(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """PSNR = PSNR(F,A) + PSNR(F,B) in dB, each 10·log10(255² / mean((X−F)²)).

    The sum (not the mean, nor one PSNR of the averaged MSE) is the only reading that fits the paper's table.
    Not capped: a term is ``inf`` when F equals that source, and so is the sum.
    """
    f, a, b = _check(f, a, b)
    return _psnr_one(f, a) + _psnr_one(f, b)


def _ssim_one(x: np.ndarray, y: np.ndarray) -> float:
    g = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA, ktype=cv2.CV_64F)  # (11,1), sums to 1
    pad = SSIM_WINDOW // 2

    def blur(img: np.ndarray) -> np.ndarray:
        # 'valid' region only: crop the half window so no padded value enters the mean.
        out = cv2.sepFilter2D(img, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
        return out[pad : out.shape[0] - pad, pad : out.shape[1] - pad]

    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(np.mean(smap))


def ssim(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SSIM = SSIM(F,A) + SSIM(F,B), so 2 at best.

    Each term is Wang et al.'s SSIM: Gaussian window 11×11, σ = 1.5 (normalised), population (biased)
    local statistics, C1 = (0.01·255)², C2 = (0.03·255)², data_range 255, the SSIM map averaged over the
    'valid' region (the image less a 5-pixel border), as MATLAB ``ssim_index`` and scikit-image
    (gaussian_weights=True, use_sample_covariance=False) compute it. Images smaller than 11×11 are rejected.
    """
    f, a, b = _check(f, a, b)
    if min(f.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {f.shape}")
    return _ssim_one(f, a) + _ssim_one(f, b)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.sum(xc * xc)) * float(np.sum(yc * yc)))
    return float(np.sum(xc * yc)) / den if den > 0 else math.nan


def cc(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """CC = (r(A,F) + r(B,F)) / 2, r the Pearson correlation over all pixels; NaN if an image is constant."""
    f, a, b = _check(f, a, b)
    return (_pearson(a, f) + _pearson(b, f)) / 2.0


def _joint_hist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xi, yi = _bin_index(x), _bin_index(y)
    counts = np.bincount((xi * HIST_BINS + yi).ravel(), minlength=HIST_BINS * HIST_BINS)
    return counts.reshape(HIST_BINS, HIST_BINS) / xi.size  # (256,256) joint probabilities


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))


def mi(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """MI = MI(F,A) + MI(F,B) in bits.

    MI(F,X) = H(F) + H(X) − H(F,X) from the 256×256 joint histogram of the binned images (bins as in
    :func:`en`). MI(F,X) ≤ EN(F), with equality for X = F: mi(f, f, f) = 2·en(f).
    """
    f, a, b = _check(f, a, b)
    total = 0.0
    for x in (a, b):
        joint = _joint_hist(f, x)
        total += _entropy_bits(joint.sum(axis=1)) + _entropy_bits(joint.sum(axis=0)) - _entropy_bits(joint)
    return total


# ---------------------------------------------------------------------------------------------------------
# Gradient-based fusion metrics: Qabf and Nabf
# ---------------------------------------------------------------------------------------------------------
def _sobel(img: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    gx = cv2.filter2D(img, cv2.CV_64F, _SOBEL_X, borderType=border)  # (H,W)
    gy = cv2.filter2D(img, cv2.CV_64F, _SOBEL_Y, borderType=border)  # (H,W)
    return gx, gy


def _qabf_edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # MATLAB conv2(·,'same') zero-pads and flips the kernels: its responses are x = −gx, y = gy.
    gx, gy = _sobel(img, cv2.BORDER_CONSTANT)
    strength = np.hypot(gx, gy)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.where(gx == 0, np.pi / 2, np.arctan(gy / -gx))
    return strength, angle


def _qabf_preservation(g_x: np.ndarray, a_x: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_g = np.where(g_x > g_f, g_f / g_x, np.where(g_x == g_f, g_f, g_x / g_f))  # sic: see qabf()
    rel_a = 1.0 - np.abs(a_x - a_f) / (np.pi / 2)
    q_g = QABF_GAMMA_G / (1.0 + np.exp(QABF_KAPPA_G * (rel_g - QABF_SIGMA_G)))
    q_a = QABF_GAMMA_A / (1.0 + np.exp(QABF_KAPPA_A * (rel_a - QABF_SIGMA_A)))
    return q_g * q_a  # (H,W)


def qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qabf (Xydeas & Petrović 2000): edge information carried from A and B into F, in [0, 1].

    Per image X ∈ {A, B, F}: the responses x, y of MATLAB ``conv2(X, h, 'same')`` (true convolution, zero
    padding) to the Sobel kernels h3 = [−1 0 1; −2 0 2; −1 0 1] and h1 = [1 2 1; 0 0 0; −1 −2 −1],
    strength g = √(x²+y²), orientation α = atan(y/x) (π/2 where x = 0). Per source X:
      G^XF = min(g_X, g_F)/max(g_X, g_F) (but g_F where g_X = g_F),  A^XF = 1 − |α_X − α_F| / (π/2),
      Q^XF = Γg/(1+exp(κg(G^XF−σg))) · Γα/(1+exp(κα(A^XF−σα))),
    with Γg = 0.9994, κg = −15, σg = 0.5, Γα = 0.9879, κα = −22, σα = 0.8, and
      Qabf = Σ(Q^AF·g_A^L + Q^BF·g_B^L) / Σ(g_A^L + g_B^L),  L = 1.
    G^XF = g_F where g_X = g_F is the public MATLAB code's (where 1 is meant), kept so that numbers match
    the published ones: on integer-valued images a nonzero g_F is ≥ 1, where the sigmoid is within 6e-4 of
    its value at 1 (measured on TNO: Qabf moves by ≤ 3.4e-4); on smooth float images whose gradients are
    below 0.5 it makes Q^XF small where F copies X exactly. Use the 255 scale, as the evaluators do.
    """
    f, a, b = _check(f, a, b)
    g_a, a_a = _qabf_edges(a)
    g_b, a_b = _qabf_edges(b)
    g_f, a_f = _qabf_edges(f)
    w_a, w_b = g_a**QABF_L, g_b**QABF_L
    den = float(np.sum(w_a + w_b))
    if den == 0.0:
        return math.nan  # both sources flat: no edge information to transfer
    num = np.sum(_qabf_preservation(g_a, a_a, g_f, a_f) * w_a + _qabf_preservation(g_b, a_b, g_f, a_f) * w_b)
    return float(num) / den


def _nabf_edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Kumar's sobel_fn: correlation with the kernels / 8 (his gv is our gx, his gh our gy), borders extended
    # by mirroring without repeating the edge pixel; his orientation is atan(gv/gh) (±π/2 where gh = 0).
    gx, gy = _sobel(img / 8.0, cv2.BORDER_REFLECT_101)
    strength = np.hypot(gx, gy)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.where((gx == 0) & (gy == 0), 0.0, np.arctan(gx / gy))
    return strength, angle


def _nabf_preservation(g_x: np.ndarray, a_x: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_g = np.where((g_x == 0) | (g_f == 0), 0.0, np.minimum(g_x, g_f) / np.maximum(g_x, g_f))
    rel_a = np.abs(np.abs(a_x - a_f) - np.pi / 2) * 2 / np.pi
    q_g = NABF_NRG / (1.0 + np.exp(-NABF_KG * (rel_g - NABF_SIGMAG)))
    q_a = NABF_NRA / (1.0 + np.exp(-NABF_KA * (rel_a - NABF_SIGMAA)))
    return np.sqrt(q_g * q_a)  # (H,W)


def nabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Nabf: Kumar's modified fusion-artifact measure (edges in F that neither source has). Lower is better.

    As in B. K. Shreyamsha Kumar's ``objective_fusion_perform_fn`` (the "NABF" output, not Petrović's NABF1),
    which the public VIF evaluators ship: correlation with the Sobel kernels / 8, mirrored borders
    (reflect-101), responses gv (horizontal derivative) and gh (vertical), strength g = √(gv²+gh²),
    orientation α = atan(gv/gh) (0 where gv = gh = 0); per source X
      G^XF = min(g_X,g_F)/max(g_X,g_F) (0 where either is 0),  A^XF = |(|α_X − α_F|) − π/2| · 2/π,
      Q^XF = √( Nrg/(1+exp(−kg(G^XF−σg))) · Nra/(1+exp(−ka(A^XF−σa))) ),
    with Nrg = 0.9999, kg = 19, σg = 0.5, Nra = 0.9995, ka = 22, σa = 0.5; weights w_X = g_X^1.5 where
    g_X ≥ Td = 2, else 0.001; artifact pixels are those where g_F exceeds both g_A and g_B, and
      Nabf = Σ_artifact ((1−Q^AF)·w_A + (1−Q^BF)·w_B) / Σ_all (w_A + w_B).
    """
    f, a, b = _check(f, a, b)
    g_a, a_a = _nabf_edges(a)
    g_b, a_b = _nabf_edges(b)
    g_f, a_f = _nabf_edges(f)
    w_a = np.where(g_a >= NABF_TD, g_a**NABF_LG, NABF_WT_MIN)
    w_b = np.where(g_b >= NABF_TD, g_b**NABF_LG, NABF_WT_MIN)
    q_af = _nabf_preservation(g_a, a_a, g_f, a_f)
    q_bf = _nabf_preservation(g_b, a_b, g_f, a_f)
    artifact = (g_f > g_a) & (g_f > g_b)
    num = np.sum(np.where(artifact, (1.0 - q_af) * w_a + (1.0 - q_bf) * w_b, 0.0))
    return float(num / np.sum(w_a + w_b))


# ---------------------------------------------------------------------------------------------------------
# No-reference metrics of F alone
# ---------------------------------------------------------------------------------------------------------
def sd(f: np.ndarray) -> float:
    """SD = population standard deviation of F (divides by H·W)."""
    (f,) = _check(f)
    return float(np.std(f))


def sf(f: np.ndarray) -> float:
    """SF = √(mean(dx²) + mean(dy²)), dx/dy the differences of horizontally/vertically adjacent pixels.

    Each mean is over the differences that exist (H·(W−1) and (H−1)·W of them), as VIFB's MATLAB ``SF``.
    """
    (f,) = _check(f)
    dx = np.diff(f, axis=1)  # (H,W-1)
    dy = np.diff(f, axis=0)  # (H-1,W)
    return float(math.sqrt(np.mean(dx * dx) + np.mean(dy * dy)))


def ag(f: np.ndarray) -> float:
    """AG = mean over all pixels of √((Gx² + Gy²)/2).

    Gx, Gy: ``np.gradient`` (central differences inside, one-sided at the borders, as MATLAB ``gradient``).
    Note: the public evaluators divide the same sum by (H−1)(W−1) instead of H·W, which reads
    H·W/((H−1)(W−1)) higher (+0.35 % at 640×512); we follow ALGORITHM.md's plain mean.
    """
    (f,) = _check(f)
    gy, gx = np.gradient(f)
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))


def ei(f: np.ndarray) -> float:
    """EI (edge intensity) = mean of the 3×3 Sobel magnitude √(Sx² + Sy²) (reflect-101 borders)."""
    (f,) = _check(f)
    gx, gy = _sobel(f, cv2.BORDER_REFLECT_101)
    return float(np.mean(np.hypot(gx, gy)))


def _bin_index(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, HIST_BINS - 1).astype(np.int64)


def en(f: np.ndarray) -> float:
    """EN = −Σ p_i log2 p_i in bits, p the 256-bin histogram of F.

    Bin i holds the values that round to i (clipped to 0..255): exactly the gray levels of an 8-bit image.
    """
    (f,) = _check(f)
    p = np.bincount(_bin_index(f).ravel(), minlength=HIST_BINS) / f.size
    return _entropy_bits(p)


def lpips_metric(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float | None:
    """LPIPS = mean of LPIPS(F,A), LPIPS(F,B) (AlexNet): not computed here, always None.

    LPIPS needs the ImageNet AlexNet features and the LPIPS linear-layer weights; none are available locally
    (and model hubs are unreachable), so this returns None, to be reported as "n/a", never as a number.
    """
    _check(f, a, b)
    return None


def compute_all(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Every computed metric by its short name: MSE, PSNR, SSIM, CC, Qabf, Nabf, SD, SF, AG, EI, EN, MI."""
    f, a, b = _check(f, a, b)
    return {
        "MSE": mse(f, a, b),
        "PSNR": psnr(f, a, b),
        "SSIM": ssim(f, a, b),
        "CC": cc(f, a, b),
        "Qabf": qabf(f, a, b),
        "Nabf": nabf(f, a, b),
        "SD": sd(f),
        "SF": sf(f),
        "AG": ag(f),
        "EI": ei(f),
        "EN": en(f),
        "MI": mi(f, a, b),
    }

"""Noise schedules (ᾱ) and the reduced-step timestep sequences of ALGORITHM.md §1–§2."""

from __future__ import annotations

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


def linear_alphas_cumprod(
    num_steps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """ᾱ_t of the DDPM linear beta schedule, float64, shape (num_steps,)."""
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def timesteps(n: int, spacing: str = "quadratic", num_train: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """The N reverse-process timesteps, strictly decreasing, ending at 0.

    spacing:
      - ``quadratic`` (default): t_i = round(T_max · (i/(N−1))²): large steps at high noise, small at low.
      - ``uniform``: t_i = round(T_max · i/(N−1)).
      - ``"a,b,c"``: guided-diffusion style sections: the range is cut into len(sections) equal parts and
        part j gets sections[j] uniformly spaced steps; the counts must add up to N.
    """
    if n < 2:
        raise ValueError(f"need at least 2 sampler steps, got {n}")
    if n > num_train:
        raise ValueError(f"{n} steps exceed the {num_train} training timesteps")
    t_max = num_train - 1
    if spacing == "quadratic":
        ts = np.round(t_max * (np.arange(n) / (n - 1)) ** 2).astype(np.int64)
    elif spacing == "uniform":
        ts = np.round(t_max * np.arange(n) / (n - 1)).astype(np.int64)
    else:
        ts = _sections(n, spacing, num_train)
    ts = _make_strictly_increasing(ts)
    return ts[::-1].copy()


def _sections(n: int, spec: str, num_train: int) -> np.ndarray:
    try:
        counts = [int(s) for s in spec.split(",")]
    except ValueError:
        raise ValueError(f"unknown spacing {spec!r}: use quadratic, uniform or section counts like '12,8,5'") from None
    if sum(counts) != n or any(c < 1 for c in counts):
        raise ValueError(f"section counts {counts} must be positive and add up to the {n} steps")
    size, extra = divmod(num_train, len(counts))
    out: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        length = size + (1 if i < extra else 0)
        frac = (length - 1) / max(count - 1, 1)
        out += [start + round(frac * j) for j in range(count)]
        start += length
    return np.asarray(out, dtype=np.int64)


def _make_strictly_increasing(ts: np.ndarray) -> np.ndarray:
    """Push duplicate low timesteps (quadratic spacing with large N) up by one so every step moves."""
    ts = ts.copy()
    for i in range(1, len(ts)):
        if ts[i] <= ts[i - 1]:
            ts[i] = ts[i - 1] + 1
    return ts


def previous_timestep(ts: np.ndarray, i: int) -> int:
    """The timestep that follows step i in the reverse sequence ts; −1 after the last (ᾱ = 1)."""
    return int(ts[i + 1]) if i + 1 < len(ts) else -1


def alpha_bar(alphas_cumprod: torch.Tensor, t: int) -> float:
    """ᾱ_t, with ᾱ_{−1} = 1 (the clean image)."""
    return 1.0 if t < 0 else float(alphas_cumprod[t])

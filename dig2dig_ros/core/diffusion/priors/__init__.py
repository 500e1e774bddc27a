"""Registry of diffusion priors, keyed by name: ``load_prior("wiener")``, ``load_prior("adm:/path.pt")``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dig2dig_ros.core.diffusion.priors.base import Prior, PriorError

# name -> factory(argument after the colon or None, device) -> Prior
PriorFactory = Callable[[str | None, torch.device], Prior]
_REGISTRY: dict[str, PriorFactory] = {}


def register_prior(name: str) -> Callable[[PriorFactory], PriorFactory]:
    """Decorator that makes a prior factory available as ``name`` (or ``name:ARG``)."""

    def wrap(factory: PriorFactory) -> PriorFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def _load_builtin_modules() -> None:
    # Imported for their @register_prior side effect; each module stays importable on its own.
    import importlib

    for module in ("wiener", "bundled", "adm", "diffusers_prior"):
        try:
            importlib.import_module(f"dig2dig_ros.core.diffusion.priors.{module}")
        except ModuleNotFoundError as exc:  # a prior module not written yet, or its optional extra absent
            if exc.name != f"dig2dig_ros.core.diffusion.priors.{module}":
                continue
            continue


def available_priors() -> list[str]:
    """Names accepted by :func:`load_prior`."""
    _load_builtin_modules()
    return sorted(_REGISTRY)


def load_prior(spec: str, device: torch.device | str = "cpu") -> Prior:
    """Build the prior named by ``spec`` (``NAME`` or ``NAME:ARG``), in eval mode on ``device``."""
    _load_builtin_modules()
    name, _, arg = spec.partition(":")
    if name not in _REGISTRY:
        raise PriorError(f"unknown prior {spec!r}; available: {', '.join(sorted(_REGISTRY))}")
    prior = _REGISTRY[name](arg or None, torch.device(device))
    return prior.to(device).eval()


__all__ = ["Prior", "PriorError", "available_priors", "load_prior", "register_prior"]

"""The four ranking models, one file each; `build_model(name, ...)` picks one by its config name."""

from __future__ import annotations

from training.models import deepfm, gbdt_lr, lr, wide_deep

# keyed by the registry's names (jobs/settings.py ModelName; tests/test_config.py checks they agree)
BUILDERS = {"lr": lr.build, "gbdt_lr": gbdt_lr.build, "wide_deep": wide_deep.build, "deepfm": deepfm.build}


def build_model(name: str, encoders, params, gbdt: dict | None = None):
    """params: the model's settings (jobs/settings.py models.<name>: LRParams, GBDTLRParams, ...)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model '{name}': choose one of {', '.join(BUILDERS)}")
    return BUILDERS[name](encoders, params, gbdt)

"""One blueprint per endpoint family."""
from __future__ import annotations

import importlib
import logging

__all__ = ["register_blueprints", "FAMILIES"]

logger = logging.getLogger(__name__)

# module name -> factory(state) -> Blueprint. Families whose module is absent are skipped.
FAMILIES = ["native", "models", "openai_chat", "openai_completions", "embeddings", "slots",
            "metrics", "ui", "infill", "lora", "openapi", "rerank", "anthropic", "responses"]


def register_blueprints(app, state) -> None:
    for name in FAMILIES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        app.register_blueprint(module.make_blueprint(state))

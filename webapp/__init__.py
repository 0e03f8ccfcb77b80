"""The web app: ``create_app(settings, engine)`` builds the Flask app.

``flask --app webapp run`` calls ``create_app()`` with no arguments: flags then come from
``LLAMA_ARG_*`` environment variables (e.g. ``LLAMA_ARG_MODEL``, ``LLAMA_ARG_N_PARALLEL``)
and the model is loaded before the first request.
"""
from __future__ import annotations

__all__ = ["create_app"]


def create_app(settings=None, engine=None, state=None):
    from flask import Flask

    from .auth import install_auth
    from .errors import register_error_handlers
    from .middleware import install_middleware
    from .routes import register_blueprints
    from .state import ServerState

    if settings is None:
        from .cli import configure_logging, parse_settings
        settings = parse_settings([])
        configure_logging(settings)
        if engine is None and state is None:
            from .state import build_engine
            engine = build_engine(settings)
    if state is None:
        state = ServerState(settings, engine)
    app = Flask(__name__, static_folder=None,
                template_folder=_templates_dir())
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.extensions["llama"] = state
    register_error_handlers(app)
    install_middleware(app, state)
    install_auth(app, state)
    register_blueprints(app, state)
    return app


def _templates_dir() -> str:
    """webapp/templates in an installed wheel (pyproject maps templates/ there), else the
    repository's top-level templates/ (a source checkout or an editable install)."""
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "templates")
    if os.path.isfile(os.path.join(installed, "index.html")):
        return installed
    return os.path.join(os.path.dirname(here), "templates")

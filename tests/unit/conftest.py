"""Fixtures of the fast tier."""
from __future__ import annotations

import pytest

from .engine_fakes import FakeContext, make_engine


@pytest.fixture
def app_over():
    """``app_over(ctx, *argv, **engine_config) -> (app, engine)``: the Flask app over the real
    Engine driving ``ctx``; every engine made is stopped afterwards."""
    from webapp import create_app
    from webapp.cli import parse_settings
    made = []

    def make(ctx: FakeContext, *argv: str, **config):
        engine = make_engine(ctx, **config)
        made.append(engine)
        return create_app(parse_settings(list(argv), environ={}), engine), engine

    yield make
    for engine in made:
        engine.stop(5)

"""GET /openapi.json: a valid OpenAPI 3.1 document that names exactly the routes the app has."""
from __future__ import annotations

import re

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from sampling.params import FIELDS
from webapp import create_app
from webapp.cli import parse_settings
from webapp.openapi import build_openapi

from .fakes import FakeEngine

# HEAD (Flask adds it to every GET route) and OPTIONS (the CORS middleware answers it on
# every path before routing) are not operations of their own; the document leaves them out.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


def registered(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        out |= {(path, method) for method in rule.methods - IMPLICIT_METHODS}
    return out


def documented(doc: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in doc["paths"].items() for method in item}


def app_with(args):
    settings = parse_settings(args, environ={})
    return create_app(settings, FakeEngine()), settings


@pytest.fixture(params=[
    pytest.param([], id="default"),
    pytest.param(["--path", "{tmp}"], id="with-path"),
    pytest.param(["--api-key", "sekret", "--no-webui", "--metrics"], id="with-api-key"),
])
def app_and_settings(request, tmp_path):
    return app_with([a.replace("{tmp}", str(tmp_path)) for a in request.param])


def test_the_document_is_valid_openapi_3_1(app_and_settings):
    _app, settings = app_and_settings
    doc = build_openapi(settings)
    assert doc["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(doc).validate()


def test_the_document_names_exactly_the_registered_routes(app_and_settings):
    app, settings = app_and_settings
    assert documented(build_openapi(settings)) == registered(app)


def test_path_adds_the_file_route_and_nothing_else(tmp_path):
    plain = documented(build_openapi(app_with([])[1]))
    with_path = documented(build_openapi(app_with(["--path", str(tmp_path)])[1]))
    assert with_path - plain == {("/{name}", "GET")}


def test_it_is_served_without_an_api_key():
    app, settings = app_with(["--api-key", "sekret"])
    client = app.test_client()
    r = client.get("/openapi.json")
    assert r.status_code == 200
    assert r.get_json() == build_openapi(settings)
    assert client.get("/props").status_code == 401


def test_api_keys_are_declared_and_public_routes_exempted():
    doc = build_openapi(app_with(["--api-key", "sekret"])[1])
    assert {"bearer", "apiKey"} <= set(doc["components"]["securitySchemes"])
    health = doc["paths"]["/health"]["get"]
    props = doc["paths"]["/props"]["get"]
    assert health["security"] == [] and "401" not in health["responses"]
    assert "security" not in props and "401" in props["responses"]
    assert "securitySchemes" not in build_openapi(app_with([])[1])["components"]


def test_every_sampling_field_is_in_every_generation_request():
    names = {key for _name, keys, _default, _parser in FIELDS for key in keys}
    doc = build_openapi(app_with([])[1])
    for path in ("/completion", "/infill", "/v1/chat/completions", "/v1/completions"):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        missing = names - set(body["properties"]) - {"n_probs"}   # the OpenAI routes set n_probs
        assert not missing, f"{path} lacks {sorted(missing)}"


def test_every_error_status_answers_the_error_shape():
    doc = build_openapi(app_with([])[1])
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if int(status) < 400:
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert "#/components/schemas/Error" in str(schema), (method, path, status)

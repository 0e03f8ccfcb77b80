"""``GET /metrics``: Prometheus text exposition (with ``--metrics``).

Each app has its own ``CollectorRegistry`` holding one collector (webapp/metrics.py) that
takes its numbers from the engine thread at scrape time (our ``llamacpp:*`` series and the
``vllm:*`` gauges the inference extension's Endpoint Picker reads, labelled with the model's
name), plus the HTTP request counts that an app-wide after-request hook keeps, and the
process collector (``process_*``).
"""
from __future__ import annotations

from flask import Blueprint, Response, request

from ..errors import ApiError
from ..metrics import HttpCounts, MetricsCollector

__all__ = ["make_blueprint"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def make_blueprint(state) -> Blueprint:
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

    bp = Blueprint("metrics", __name__)
    http = HttpCounts()
    registry = CollectorRegistry(auto_describe=False)

    registry.register(MetricsCollector(state.metrics_snapshot, http, model_name=state.model_id))
    registry.register(ProcessCollector(registry=None))

    @bp.after_app_request
    def _count(response):
        rule = request.url_rule
        http.add(rule.rule if rule is not None else "unmatched", response.status_code)
        return response

    @bp.get("/metrics")
    def metrics():
        if not state.settings.metrics:
            raise ApiError("This server does not support metrics endpoint. Start it with `--metrics`",
                           "not_supported_error", 501)
        state.check_ready()      # a sleeping model is not woken (llama-server's README)
        body = generate_latest(registry)
        return Response(body, content_type=CONTENT_TYPE)

    return bp

"""Slots: ``GET /slots`` (each slot's state) and ``POST /slots/{id_slot}?action=save|restore|erase``.

Every read and every action runs on the engine thread between decodes (``engine.call``), so
a snapshot is consistent and an action never races the scheduler. Save/restore go through
libllama's sequence state files (``Context.save_sequence`` / ``load_sequence``) inside
``--slot-save-path``; file names are plain names in that folder, never paths.
"""
from __future__ import annotations

import os
import re
import time

from flask import Blueprint, jsonify, request

from llama_lib import StateError
from llama_lib.engine import Status

from ..completion import call_engine, json_body
from ..media import prompt_text
from ..props import MEDIA_MARKER, generation_settings
from ..errors import ApiError, BadRequest

__all__ = ["make_blueprint", "slot_snapshot", "check_filename"]

_BUSY = object()          # an action's answer while its slot is processing: try again
_RETRY_S = 0.05
_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f-\x9f/\\:*?"<>|\ufffd\ufeff\u2215\u2216\uff0e\ud800-\udfff]')


def check_filename(name) -> str:
    """A plain file name for the slot folder (the rules of llama.cpp's fs_validate_filename):
    non-empty, at most 255 bytes, no path separators, no "..", no control or reserved
    characters, no leading/trailing space, no trailing dot."""
    if not isinstance(name, str) or not name:
        raise BadRequest("'filename' must be a non-empty string")
    if (len(name.encode("utf-8", "surrogatepass")) > 255 or _FORBIDDEN.search(name)
            or ".." in name or name == "." or name[0] == " " or name[-1] in " ."):
        raise BadRequest("Invalid filename")
    return name


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("slots", __name__)
    save_dir = os.path.realpath(state.settings.slot_save_path) if state.settings.slot_save_path else None
    if save_dir:
        try:
            os.makedirs(save_dir, exist_ok=True)
        except OSError as exc:
            raise SystemExit(f"error: --slot-save-path: cannot use {save_dir}: {exc.strerror or exc}") from None

    @bp.get("/slots")
    def get_slots():
        if not state.settings.slots_endpoint:
            raise ApiError("This server does not support slots endpoint. Start it with `--slots`",
                           "not_supported_error", 501)
        slots = slot_snapshot(state)
        if request.args.get("fail_on_no_slot") not in (None, "", "0", "false") \
                and not any(not s["is_processing"] for s in slots):
            raise ApiError("no slot available", "unavailable_error", 503)
        return jsonify(slots)

    @bp.post("/slots/<id_slot>")
    def slot_action(id_slot: str):
        if not save_dir:
            raise ApiError("This server does not support slots action. Start it with `--slot-save-path`",
                           "not_supported_error", 501)
        engine = state.ready_engine()
        if not re.fullmatch(r"[0-9]{1,9}", id_slot) or int(id_slot) >= engine.config.n_slots:
            raise BadRequest("Invalid slot ID")
        slot_id = int(id_slot)
        action = request.args.get("action", "")
        if action == "erase":
            return jsonify(_when_idle(state, engine, lambda e: _erase(e, slot_id)))
        if action not in ("save", "restore"):
            raise BadRequest("Invalid action: use ?action=save, restore or erase")
        filename = check_filename(json_body().get("filename"))
        path = os.path.join(save_dir, filename)
        if os.path.dirname(os.path.realpath(path)) != save_dir:   # e.g. a symlink out of the folder
            raise BadRequest("Invalid filename")
        if action == "save":
            return jsonify(_when_idle(state, engine, lambda e: _save(e, slot_id, path, filename)))
        if not os.path.isfile(path):
            raise BadRequest(f"Unable to restore slot: no file named {filename!r} in the slot save folder")
        return jsonify(_when_idle(state, engine, lambda e: _restore(e, slot_id, path, filename)))

    return bp


def _when_idle(state, engine, fn) -> dict:
    """As llama-server does, an action on a busy slot waits for it to finish (here: at most
    the connection timeout, then 503)."""
    deadline = time.monotonic() + max(1, state.settings.timeout)
    while True:
        result = call_engine(engine, fn)
        if result is not _BUSY:
            return result
        if time.monotonic() > deadline:
            raise ApiError("the slot is still processing a request", "unavailable_error", 503,
                           headers={"Retry-After": "1"})
        time.sleep(_RETRY_S)


# --- actions (engine thread) --------------------------------------------------------------
def _save(engine, slot_id: int, path: str, filename: str):
    slot = engine.scheduler.slots[slot_id]
    if not slot.idle:
        return _BUSY
    t0 = time.perf_counter()
    tokens = list(slot.cache_tokens)
    if any(t < 0 for t in tokens):
        raise BadRequest(f"Unable to save slot {slot_id}: its cache holds images or audio, which slot "
                         "files cannot store; erase the slot or save it after a text-only request")
    try:
        n_written = engine.ctx.save_sequence(path, slot_id, tokens)
    except StateError:
        raise ApiError("Unable to save slot", "server_error", 500) from None
    return {"id_slot": slot_id, "filename": filename, "n_saved": len(tokens), "n_written": n_written,
            "timings": {"save_ms": (time.perf_counter() - t0) * 1000}}


def _restore(engine, slot_id: int, path: str, filename: str):
    slot = engine.scheduler.slots[slot_id]
    if not slot.idle:
        return _BUSY
    t0 = time.perf_counter()
    try:
        tokens = engine.ctx.load_sequence(path, slot_id, engine.n_ctx_slot)
        if not all(0 <= t < engine.vocab.n_tokens for t in tokens):
            raise StateError("the file holds token ids this model does not have")
    except StateError as exc:
        engine.ctx.seq_rm(slot_id, -1, -1)
        slot.cache_tokens = []
        raise BadRequest(f"Unable to restore slot: {exc} (not a slot file of this model, "
                         "or larger than the slot's context)") from None
    slot.cache_tokens = list(tokens)
    return {"id_slot": slot_id, "filename": filename, "n_restored": len(tokens),
            "n_read": os.path.getsize(path), "timings": {"restore_ms": (time.perf_counter() - t0) * 1000}}


def _erase(engine, slot_id: int):
    slot = engine.scheduler.slots[slot_id]
    if not slot.idle:
        return _BUSY
    n = len(slot.cache_tokens)
    engine.ctx.seq_rm(slot_id, -1, -1)
    slot.cache_tokens = []
    return {"id_slot": slot_id, "n_erased": n}


# --- GET /slots ---------------------------------------------------------------------------
def _raw_slots(engine, observer) -> list[dict]:
    """Engine thread: plain values and references only; formatting happens on the hub."""
    out = []
    for slot in engine.scheduler.slots:
        req = slot.request if slot.request is not None else observer.last_request.get(slot.id)
        out.append({"id": slot.id, "processing": slot.request is not None, "req": req,
                    "status": req.status if req is not None else None,
                    "n_decoded": req.n_generated if req is not None else 0,
                    "final": None if slot.request is not None else observer.last_final.get(slot.id),
                    "n_past": slot.n_past, "prompt": slot.last_prompt, "n_prompt": slot.n_prompt,
                    "n_prompt_evaluated": slot.n_prompt_evaluated})
    return out


def slot_snapshot(state) -> list[dict]:
    """The seed's /slots objects (also used by /health?include_slots)."""
    engine = state.ready_engine()
    observer = state.observer
    spec = getattr(engine, "speculator", None)
    out = []
    for raw in call_engine(engine, lambda e: _raw_slots(e, observer)):
        req, final = raw["req"], raw["final"]
        n_predict = _effective_n_predict(req, state.settings.n_predict) if req is not None else -1
        n_decoded = raw["n_decoded"]
        status = raw["status"]
        out.append({
            "id": raw["id"],
            "id_task": req.id if req is not None else -1,
            "n_ctx": engine.n_ctx_slot,
            "speculative": spec is not None,
            "speculative.type": spec.name if spec is not None else "none",
            "is_processing": raw["processing"],
            "state": 1 if raw["processing"] else 0,
            "n_predict": n_predict,
            "n_past": raw["n_past"],
            "n_cache_tokens": raw["n_past"],
            "n_prompt_tokens": raw["n_prompt"],
            "n_prompt_tokens_processed": raw["n_prompt_evaluated"],
            "n_prompt_tokens_cache": req.n_cached if req is not None else 0,
            "prompt": prompt_text(engine.vocab, raw["prompt"], MEDIA_MARKER) if raw["prompt"] else "",
            "params": generation_settings(state, engine, req.sampling or state.defaults, req.options)
            if req is not None else {},
            "next_token": {
                "has_next_token": raw["processing"],
                "n_remain": n_predict - n_decoded if n_predict >= 0 else -1,
                "n_decoded": n_decoded,
                "stopped_eos": status is Status.FINISHED_EOS,
                "stopped_word": status is Status.FINISHED_STOP,
                "stopped_limit": status in (Status.FINISHED_LIMIT, Status.FINISHED_CONTEXT),
                "stopping_word": final.stopping_word if final is not None else "",
            },
        })
    return out


def _effective_n_predict(req, server_limit: int) -> int:
    n = req.options.n_predict
    if n < 0 or (server_limit >= 0 and n > server_limit):
        return server_limit
    return n

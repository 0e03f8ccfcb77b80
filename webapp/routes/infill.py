"""``POST /infill``: fill-in-the-middle completion for code models.

The prompt is laid out with the model's FIM tokens (read from its vocabulary)::

    [BOS] [extra context] <FIM_PRE> prefix <FIM_SUF> suffix <FIM_MID> prompt     (default)
    [BOS] [extra context] <FIM_SUF> suffix <FIM_PRE> prefix <FIM_MID> prompt     (--spm-infill)

and the request then runs like ``/completion`` (every option, the same result format). The
extra context (``input_extra`` chunks) follows the repo-level pattern when the model has the
tokens for it: ``<FIM_REP>myproject\\n`` then ``<FIM_SEP>{filename}\\n{text}`` per chunk and a
closing ``<FIM_SEP>filename\\n``; without ``<FIM_SEP>`` the chunks are separated by a plain
``--- snippet ---`` line. Nothing of it is added when ``input_extra`` is empty.

Budgets (as llama.cpp): the prefix keeps its last ``3/4 * n_batch`` tokens and the suffix its
first ``n_batch/4 - 2 - len(prompt)``, so the FIM part fits one batch; the extra context keeps
its last tokens that leave room for the answer (``n_predict``, or a quarter of the slot's
context when unlimited).

No media: as in llama-server, the prompt and the ``input_extra`` chunks are text only; a
request carrying images or audio (``multimodal_data``, ``image_data``, a prompt object, media
in an ``input_extra`` chunk) is a 400 that says so.
"""
from __future__ import annotations

from flask import Blueprint

from ..completion import json_body, parse_options, sampling_for
from ..errors import ApiError, BadRequest
from .native import ResponseShape, parse_n_cmpl, respond

__all__ = ["make_blueprint", "format_infill"]

_SNIPPET = "\n\n--- snippet ---\n\n"


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("infill", __name__)

    @bp.post("/infill")
    def infill():
        engine = state.ready_engine()
        vocab = engine.vocab
        body = json_body()
        _refuse_media(body)
        _check_model(vocab)
        for key in ("input_prefix", "input_suffix"):
            if key not in body:
                raise BadRequest(f"'{key}' is required")
        prefix = _tokens(vocab, body["input_prefix"], "input_prefix")
        suffix = _tokens(vocab, body["input_suffix"], "input_suffix")
        extra = _extra_chunks(body.get("input_extra"))
        prompt = body.get("prompt", "")
        if prompt is None:
            prompt = ""
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string")
        options = parse_options(body, state.settings)
        params = sampling_for(body, state, vocab)
        n_predict = options.n_predict if options.n_predict >= 0 else state.settings.n_predict
        tokens = format_infill(
            vocab, prefix, suffix, extra,
            vocab.tokenize(prompt, add_special=False, parse_special=True) if prompt else [],
            n_batch=engine.scheduler.n_batch, n_ctx=engine.n_ctx_slot, n_predict=n_predict,
            spm=state.settings.spm_infill)
        return respond(state, engine, [tokens], [tokens], False, options, params, system_prompt=False,
                       n_cmpl=parse_n_cmpl(body, engine), shape=ResponseShape.parse(body))

    return bp


def _check_model(vocab) -> None:
    missing = [name for name, token in (("prefix", vocab.fim_pre), ("suffix", vocab.fim_suf),
                                        ("middle", vocab.fim_mid)) if token < 0]
    if missing:
        raise ApiError("Infill is not supported by this model: it has no fill-in-the-middle "
                       + ", ".join(missing) + " token", "not_supported_error", 501)


def _tokens(vocab, value, where: str) -> list[int]:
    """A string or a list of strings and token ids; special tokens are not parsed in text
    (code may well contain ``<fim_prefix>``-like strings)."""
    if isinstance(value, str):
        return vocab.tokenize(value, add_special=False, parse_special=False)
    if isinstance(value, list):
        out: list[int] = []
        for part in value:
            if isinstance(part, str):
                out.extend(vocab.tokenize(part, add_special=False, parse_special=False))
            elif isinstance(part, int) and not isinstance(part, bool) and 0 <= part < vocab.n_tokens:
                out.append(part)
            else:
                raise BadRequest(f"'{where}' must be a string or a list of strings and token ids "
                                 f"in [0, {vocab.n_tokens})")
        return out
    raise BadRequest(f"'{where}' must be a string or a list of strings and token ids")


NO_MEDIA = ("/infill takes no images or audio (llama-server's infill prompt is text only); "
            "send a multimodal prompt to /completion instead")


def _refuse_media(body) -> None:
    """A 400 for any media in an infill request: llama-server reads its prompt as a string
    and each ``input_extra`` chunk's ``text`` only, so media there would be dropped silently."""
    if not isinstance(body, dict):
        return
    for key in ("multimodal_data", "image_data"):
        if body.get(key):
            raise BadRequest(f"'{key}': {NO_MEDIA}")
    if isinstance(body.get("prompt"), dict):
        raise BadRequest(f"'prompt' must be a string: {NO_MEDIA}")
    extra = body.get("input_extra")
    if isinstance(extra, list):
        for i, chunk in enumerate(extra):
            if isinstance(chunk, dict) and any(k in chunk for k in ("multimodal_data", "image_url",
                                                                     "input_audio", "image_data")):
                raise BadRequest(f"'input_extra[{i}]': {NO_MEDIA}")


def _extra_chunks(value) -> list[tuple[str, str]]:
    if value is None:
        return []
    shape = "'input_extra' must be an array of {\"filename\": string, \"text\": string}"
    if not isinstance(value, list):
        raise BadRequest(shape)
    chunks = []
    for chunk in value:
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise BadRequest(shape + " (each chunk needs a string 'text')")
        filename = chunk.get("filename", "tmp")
        if not isinstance(filename, str):
            raise BadRequest(shape + " ('filename' must be a string)")
        chunks.append((filename, chunk["text"]))
    return chunks


def format_infill(vocab, prefix: list[int], suffix: list[int], extra: list[tuple[str, str]],
                  prompt: list[int], *, n_batch: int, n_ctx: int, n_predict: int,
                  spm: bool) -> list[int]:
    """The token layout described in the module docstring."""
    def text(s: str) -> list[int]:
        return vocab.tokenize(s, add_special=False, parse_special=False)

    n_prefix = min(len(prefix), 3 * (n_batch // 4))
    n_suffix = min(len(suffix), max(0, n_batch // 4 - (2 + len(prompt))))
    prefix = prefix[len(prefix) - n_prefix:]
    suffix = suffix[:n_suffix]
    pre = [vocab.fim_pre] + prefix
    suf = [vocab.fim_suf] + suffix
    fim = (suf + pre if spm else pre + suf) + [vocab.fim_mid] + prompt

    extra_tokens: list[int] = []
    if extra:
        if vocab.fim_rep >= 0:
            extra_tokens += [vocab.fim_rep] + text("myproject\n")
        for filename, chunk in extra:
            if vocab.fim_sep >= 0:
                extra_tokens += [vocab.fim_sep] + text(filename + "\n")
            else:
                extra_tokens += text(_SNIPPET)
            extra_tokens += text(chunk)
        if vocab.fim_sep >= 0:
            extra_tokens += [vocab.fim_sep] + text("filename\n")
    bos = [vocab.bos] if vocab.add_bos and vocab.bos >= 0 else []
    reserve = n_predict if n_predict > 0 else n_ctx // 4
    room = max(0, n_ctx - len(bos) - len(fim) - reserve)
    extra_tokens = extra_tokens[max(0, len(extra_tokens) - room):]
    return bos + extra_tokens + fim

"""Multimodal prompts on the web side: media taken from request bodies, tokenized by libmtmd.

Where media come from:
- OpenAI chat content parts: ``image_url`` (``{"url": ...}``) and ``input_audio``
  (``{"data": ..., "format": ...}``); ``chat_media()`` swaps each for a text part holding the
  media marker and returns the files in prompt order.
- llama-server's multimodal prompt object: ``{"prompt_string": "... <marker> ...",
  "multimodal_data": ["<base64>", ...]}`` (``/completion``, ``/v1/completions``).
- the seed's ``image_data: [{"data": "<base64>", "id": 12}]`` with ``[img-12]`` in the prompt.

A URL is a ``data:image/...;base64,`` or ``data:audio/...`` URI, an ``http(s)://`` URL
(fetched with ``requests``: a size cap, a timeout, no redirect away from http(s)), a
``file://`` path inside ``--media-path``, or bare base64 (as llama-server takes it).

``tokenize()`` turns the prompt text and the files into the engine's tokens: text token ids,
and for each media chunk its placeholders (``llama_lib.engine.media``), with the chunks
themselves in ``media`` for the request. Every problem of the input is a 400 naming it.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from llama_lib.engine import media as placeholders

from .errors import BadRequest

__all__ = ["MediaPrompt", "projector", "require", "chat_media", "tokenize", "load_url",
           "prompt_text", "image_data_prompt", "object_prompt", "content_prompt", "media_part", "attach_projector", "ProjectorError", "NOT_SUPPORTED"]

NOT_SUPPORTED = "image input is not supported - start the server with --mmproj"
MAX_FETCH_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT_S = 10.0
_MIME = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[^;,]*)*),", re.S)


@dataclass
class MediaPrompt:
    tokens: list[int]
    media: dict = field(default_factory=dict)     # placeholder key -> MediaChunk
    n_files: int = 0


def projector(engine):
    """The engine's MultimodalContext, or None without --mmproj."""
    evaluator = getattr(engine, "media", None)
    return evaluator.mtmd if evaluator is not None else None


def require(engine, kind: str = "image", where: str = ""):
    """The projector, for an input of this kind; a 400 naming ``where`` if it cannot take it."""
    mm = projector(engine)
    lead = f"{where}: " if where else ""
    if mm is None:
        raise BadRequest(lead + (NOT_SUPPORTED if kind == "image" else
                                 "audio input is not supported - start the server with --mmproj"))
    if kind == "audio" and not mm.audio:
        raise BadRequest(lead + "audio input is not supported by this server's projector")
    if kind == "image" and not mm.vision:
        raise BadRequest(lead + "image input is not supported by this server's projector")
    return mm


# --- reading the files --------------------------------------------------------------------
def decode_base64(data, where: str) -> bytes:
    if not isinstance(data, str):
        raise BadRequest(f"{where} must be a base64 string")
    text = "".join(data.split())
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where} is not valid base64") from None
    if not raw:
        raise BadRequest(f"{where} is empty")
    return raw


def load_url(url, where: str, settings) -> bytes:
    """The bytes a content part's URL names (see the module docstring)."""
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where} must be a non-empty string")
    if url.startswith("data:"):
        m = _MIME.match(url)
        if m is None:
            raise BadRequest(f"{where}: not a valid data URI")
        mime = (m.group(1) or "").lower()
        if not mime.startswith(("image/", "audio/")):
            raise BadRequest(f"{where}: the MIME type {mime or '(none)'!r} is not an image or audio type")
        if "base64" not in m.group(2).lower().split(";"):
            raise BadRequest(f"{where}: the data URI must be base64 encoded")
        return decode_base64(url[m.end():], where)
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return _fetch(url, where)
    if scheme == "file":
        return _read_file(url, where, settings)
    if re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) and "://" in url:
        raise BadRequest(f"{where}: the URL scheme {scheme!r} is not supported (data:, http(s):// "
                         "or file:// under --media-path)")
    return decode_base64(url, where)


def _fetch(url: str, where: str) -> bytes:
    import requests
    try:
        with requests.get(url, timeout=FETCH_TIMEOUT_S, stream=True, allow_redirects=False,
                          headers={"User-Agent": "llama-server-py"}) as resp:
            if resp.is_redirect or resp.is_permanent_redirect:
                raise BadRequest(f"{where}: fetching {url} failed: it redirects "
                                 f"(to {resp.headers.get('location', '?')}); give the final URL")
            if resp.status_code != 200:
                raise BadRequest(f"{where}: fetching {url} failed: HTTP {resp.status_code}")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > MAX_FETCH_BYTES:
                raise BadRequest(f"{where}: {url} is larger than {MAX_FETCH_BYTES} bytes")
            data = bytearray()
            for piece in resp.iter_content(65536):
                data += piece
                if len(data) > MAX_FETCH_BYTES:
                    raise BadRequest(f"{where}: {url} is larger than {MAX_FETCH_BYTES} bytes")
    except requests.RequestException as exc:
        raise BadRequest(f"{where}: fetching {url} failed: {type(exc).__name__}: {exc}") from None
    if not data:
        raise BadRequest(f"{where}: {url} is empty")
    return bytes(data)


def _read_file(url: str, where: str, settings) -> bytes:
    """``file://NAME``: NAME inside --media-path (as llama-server reads it); an absolute path
    is taken when it lies inside that folder too. Nothing outside it, links included."""
    root = getattr(settings, "media_path", None)
    if not root:
        raise BadRequest(f"{where}: file:// URLs need the server to be started with --media-path")
    name = unquote(url[len("file://"):])
    root = os.path.realpath(root)
    path = os.path.realpath(name if name.startswith("/") else os.path.join(root, name))
    if os.path.commonpath([root, path]) != root:
        raise BadRequest(f"{where}: {name} is outside --media-path")
    if not os.path.isfile(path):
        raise BadRequest(f"{where}: no file {name} under --media-path")
    with open(path, "rb") as f:
        data = f.read(MAX_FETCH_BYTES + 1)
    if len(data) > MAX_FETCH_BYTES:
        raise BadRequest(f"{where}: {name} is larger than {MAX_FETCH_BYTES} bytes")
    return data


# --- bodies -------------------------------------------------------------------------------
def chat_media(engine, settings, body: dict) -> tuple[dict, list[bytes], list[str]]:
    """The chat body with every media part of every message replaced by a text part holding
    the media marker, the files in order, and where each came from. A body without media
    comes back as is."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body, [], []
    files: list[bytes] = []
    names: list[str] = []
    out_messages = []
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list) or not any(
                isinstance(p, dict) and p.get("type") in ("image_url", "input_audio") for p in content):
            out_messages.append(msg)
            continue
        parts = []
        for j, part in enumerate(content):
            got = media_part(engine, settings, part, f"messages[{i}].content[{j}]")
            if got is None:
                parts.append(part)
                continue
            data, name, marker = got
            files.append(data)
            names.append(name)
            parts.append({"type": "text", "text": marker})
        out_messages.append({**msg, "content": parts})
    if not files:
        return body, [], []
    return {**body, "messages": out_messages}, files, names


def media_part(engine, settings, part, where: str):
    """``(bytes, name, marker)`` for an ``image_url`` or ``input_audio`` content part, None
    for any other part. The part's own shape (URL, base64, audio format) is checked first,
    then whether the projector takes its kind: each problem a 400 naming ``where``."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "image_url":
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else spec
        mm = require(engine, "image", f"{where} (image_url)")
        return load_url(url, f"{where}.image_url.url", settings), f"{where} (image_url)", mm.marker
    if kind == "input_audio":
        spec = part.get("input_audio")
        if not isinstance(spec, dict):
            raise BadRequest(f"{where}.input_audio must be an object with 'data' and 'format'")
        fmt = spec.get("format")
        if fmt is not None and fmt not in ("wav", "mp3", "flac"):
            raise BadRequest(f"{where}.input_audio.format must be 'wav', 'mp3' or 'flac', not {fmt!r}")
        url = spec.get("data", spec.get("url"))
        if isinstance(url, str) and re.match(r"(?i)(https?|file)://", url):    # nothing fetched in vain
            mm = require(engine, "audio", f"{where} (input_audio)")
            return load_url(url, f"{where}.input_audio.data", settings), f"{where} (input_audio)", mm.marker
        data = load_url(url, f"{where}.input_audio.data", settings)
        mm = require(engine, "audio", f"{where} (input_audio)")
        return data, f"{where} (input_audio)", mm.marker
    return None


def content_prompt(engine, settings, content, where: str) -> tuple[str, list[bytes], list[str]]:
    """llama-server's OAI content array as one prompt (``{"content": [parts]}`` items of
    /embeddings): the text parts' text joined, each media part as the marker."""
    if not isinstance(content, list):
        raise BadRequest(f"'{where}.content' must be an array of content parts")
    text, files, names = [], [], []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        got = media_part(engine, settings, part, at)
        if got is not None:
            files.append(got[0])
            names.append(got[1])
            text.append(got[2])
        elif isinstance(part, dict) and part.get("type", "text") == "text":
            if not isinstance(part.get("text"), str):
                raise BadRequest(f"'{at}.text' must be a string")
            text.append(part["text"])
        else:
            raise BadRequest(f"'{at}' must be a text, image_url or input_audio part")
    return "".join(text), files, names


def image_data_prompt(prompt: str, image_data, marker: str) -> tuple[str, list]:
    """The seed's form: ``[img-ID]`` in the prompt, ``image_data: [{"data", "id"}]``. The
    prompt with each reference turned into the marker, and the base64 strings in its order."""
    if not isinstance(image_data, list) or not all(isinstance(d, dict) for d in image_data):
        raise BadRequest("'image_data' must be a list of {\"data\": base64, \"id\": N} objects")
    by_id = {}
    for k, item in enumerate(image_data):
        ident = item.get("id")
        if isinstance(ident, bool) or not isinstance(ident, int):
            raise BadRequest(f"image_data[{k}].id must be an integer")
        by_id[ident] = item.get("data")
    data: list = []
    used = set()

    def swap(m):
        ident = int(m.group(1))
        if ident not in by_id:
            raise BadRequest(f"the prompt refers to [img-{ident}], which is not in 'image_data'")
        used.add(ident)
        data.append(by_id[ident])
        return marker

    text = re.sub(r"\[img-(\d+)\]", swap, prompt)
    unused = sorted(set(by_id) - used)
    if unused:
        raise BadRequest(f"image_data id {unused[0]} is not referred to as [img-{unused[0]}] in the prompt")
    return text, data


# --- tokenizing ---------------------------------------------------------------------------
def tokenize(engine, text: str, files: list[bytes], names: list[str], *,
             add_special: bool = True) -> MediaPrompt:
    """``names``: where each file came from, for the error messages."""
    mm = projector(engine)
    if mm is None:
        raise BadRequest(NOT_SUPPORTED)
    n_markers = text.count(mm.marker)
    if n_markers != len(files):
        raise BadRequest(f"the prompt has {n_markers} media markers but {len(files)} "
                         f"{'file' if len(files) == 1 else 'files'} were given; each file needs one "
                         f"marker ({mm.marker}) where it goes")
    for name, data in zip(names, files):
        kind = _sniff(data)
        if kind is None:
            raise BadRequest(f"{name} is not an image or audio file the server can decode")
        if kind == "audio" and not mm.audio or kind == "image" and not mm.vision:
            raise BadRequest(f"{name}: {kind} input is not supported by this server's projector")
    from llama_lib.mtmd import MediaError
    try:
        pieces = mm.tokenize(text, files, add_special=add_special, parse_special=True)
    except MediaError as exc:
        if exc.index is not None:
            raise BadRequest(f"{names[exc.index]}: {exc.reason}") from None
        raise BadRequest(str(exc)) from None
    out = MediaPrompt([], {}, len(files))
    for piece in pieces:
        if isinstance(piece, list):
            out.tokens.extend(piece)
            continue
        if piece.kind == "audio" and not mm.audio or piece.kind == "image" and not mm.vision:
            raise BadRequest(f"{piece.kind} input is not supported by this server's projector")
        if piece.n_tokens >= placeholders.MAX_CHUNK_TOKENS:
            raise BadRequest(f"an {piece.kind} of {piece.n_tokens} tokens is more than this server "
                             f"takes ({placeholders.MAX_CHUNK_TOKENS - 1}); lower --image-max-tokens")
        # no content hash: a key of its own, so it is never taken for another file
        key = engine.media.keys.key(piece.id or "unhashed-" + secrets.token_hex(16),
                                    piece.n_pos - piece.n_tokens)
        out.media.setdefault(key, piece)
        out.tokens.extend(placeholders.placeholders(key, piece.n_tokens))
    if out.tokens and out.tokens[-1] < 0:
        raise BadRequest("the prompt must not end with an image or audio: put some text after it")
    return out


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image"), (b"\xff\xd8\xff", "image"), (b"GIF87a", "image"),
    (b"GIF89a", "image"), (b"BM", "image"), (b"8BPS", "image"), (b"#?RADIANCE", "image"),
    (b"P3", "image"), (b"P5", "image"), (b"P6", "image"), (b"fLaC", "audio"), (b"ID3", "audio"),
)


def _sniff(data: bytes) -> str | None:
    """What the file looks like from its first bytes (stb_image's formats, miniaudio's),
    so that plain garbage gets a 400 without reaching the decoders."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image"
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        return "audio"       # an MPEG frame
    return None


def prompt_text(vocab, tokens, marker: str) -> str:
    """A prompt's text for the responses that echo it: media chunks as the marker."""
    if not any(t < 0 for t in tokens):
        return vocab.detokenize(tokens)
    out, run = [], []
    i = 0
    while i < len(tokens):
        if tokens[i] < 0:
            if run:
                out.append(vocab.detokenize(run))
                run = []
            out.append(marker)
            i += placeholders.media_run(tokens, i)
        else:
            run.append(tokens[i])
            i += 1
    if run:
        out.append(vocab.detokenize(run))
    return "".join(out)


# --- startup ------------------------------------------------------------------------------
class ProjectorError(RuntimeError):
    """--mmproj names a projector this server cannot use."""


def attach_projector(settings, engine, n_threads: int, marker: str) -> None:
    """Load --mmproj beside the model and give the engine its evaluator; ProjectorError
    (the model load fails, /health says why) when it cannot be used."""
    path = getattr(settings, "mmproj", None)
    if not path or getattr(settings, "no_mmproj", False):
        return
    from llama_lib.engine.media import MediaEvaluator
    from llama_lib.mtmd import MediaError, MultimodalContext, MultimodalParams, supported
    if not supported():
        raise ProjectorError("--mmproj: this libllama build has no libmtmd next to it")
    if not os.path.isfile(path):
        raise ProjectorError(f"--mmproj: no such file: {path}")
    try:
        mm = MultimodalContext(path, engine.model, MultimodalParams(
            use_gpu=settings.mmproj_offload, n_threads=n_threads, marker=marker,
            image_min_tokens=settings.image_min_tokens, image_max_tokens=settings.image_max_tokens))
    except MediaError as exc:
        raise ProjectorError(f"--mmproj: {exc.describe()}") from None
    if engine.scheduler.group_attn is not None:
        mm.close()
        raise ProjectorError("--mmproj cannot be combined with self-extend (--grp-attn-n)")
    cache_mib = settings.mmproj_cache_mib
    engine.media = MediaEvaluator(mm, max(0, cache_mib) * 1024 * 1024)
    if mm.uses_mrope:   # chunks advance positions by n_pos, not n_tokens (engine/media.py)
        engine.scheduler.shift_of = engine.media.keys.shift


# --- /completion-style prompts ------------------------------------------------------------
def completion_prompts(engine, settings, body: dict, prompts: list) -> tuple[list, list]:
    """Token lists and media maps (None for a prompt without media) of the prompts of a
    /completion or /v1/completions body: strings and token lists as before, llama-server's
    ``{"prompt_string", "multimodal_data"}`` objects, and a string prompt with the seed's
    ``image_data``."""
    from .completion import tokenize_prompt
    image_data = body.get("image_data")
    tokens_out, media_out = [], []
    for n, prompt in enumerate(prompts):
        where = "prompt" if len(prompts) == 1 else f"prompt[{n}]"
        got = None
        if isinstance(prompt, dict):
            tokens, chunks = object_prompt(engine, settings, prompt, where)
            tokens_out.append(tokens)
            media_out.append(chunks)
            continue
        elif image_data and isinstance(prompt, str):
            mm = projector(engine)
            if mm is None:
                raise BadRequest(NOT_SUPPORTED)
            text, data = image_data_prompt(prompt, image_data, mm.marker)
            names = [f"image_data[{i}].data" for i in range(len(data))]
            files = [decode_base64(d, name) for d, name in zip(data, names)]
            got = tokenize(engine, text, files, names)
        if got is None:
            tokens_out.append(tokenize_prompt(engine.vocab, prompt, where))
            media_out.append(None)
        else:
            tokens_out.append(got.tokens)
            media_out.append(got.media or None)
    return tokens_out, media_out


def object_prompt(engine, settings, prompt: dict, where: str, *,
                  content_array: bool = False) -> tuple[list[int], dict | None]:
    """Tokens and media map (None without media) of a prompt object: llama-server's
    ``{"prompt_string": ..., "multimodal_data": [base64, ...]}``, and with ``content_array``
    (/embeddings) also ``{"content": [OAI content parts]}``."""
    from .completion import tokenize_prompt
    if content_array and "content" in prompt and "prompt_string" not in prompt:
        text, files, names = content_prompt(engine, settings, prompt["content"], where)
        if not files:
            return tokenize_prompt(engine.vocab, text, where), None
        got = tokenize(engine, text, files, names)
        return got.tokens, got.media or None
    if "prompt_string" not in prompt:
        raise BadRequest(f"'{where}' objects must have a 'prompt_string'"
                         + (" (or a 'content' array of parts)" if content_array else ""))
    text = prompt["prompt_string"]
    data = prompt.get("multimodal_data")
    if data is None:
        return tokenize_prompt(engine.vocab, text, where), None
    if projector(engine) is None:
        raise BadRequest(NOT_SUPPORTED)
    if not isinstance(text, str):
        raise BadRequest(f"'{where}.prompt_string' must be a string when it comes with 'multimodal_data'")
    if not isinstance(data, list):
        raise BadRequest(f"'{where}.multimodal_data' must be a list of base64 strings")
    names = [f"{where}.multimodal_data[{i}]" for i in range(len(data))]
    files = [decode_base64(d, name) for d, name in zip(data, names)]
    got = tokenize(engine, text, files, names)
    return got.tokens, got.media or None

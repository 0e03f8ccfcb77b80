"""Images under M-RoPE (Qwen2-VL and the like): an image fills one KV cell per embedding but
advances the position by its n_pos only (tests/mmproj_mrope.py: a 32x32 image is 9
embeddings over 3 positions), so the text after it sits at positions that are not its cache
index. The server (a tiny random Qwen2-VL pair written by the tests) must give what libmtmd's
own decode path gives, computed here in-process with the same files: the next-token
distribution after an image, greedy continuations token by token, and the same again when
the image comes from the slot's cache."""
from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.mmproj import png, solid
from tests.mmproj_mrope import IMAGE_N_POS, IMAGE_SIZE, IMAGE_TOKENS, qwen2vl_projector, tiny_qwen2vl

pytestmark = pytest.mark.slow

RED = png(IMAGE_SIZE, IMAGE_SIZE, solid(220, 20, 20))
GREEN = png(IMAGE_SIZE, IMAGE_SIZE, solid(20, 200, 30))
N_PROBS = 5


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def files(tmp_path_factory, model_path):
    folder = tmp_path_factory.mktemp("mrope")
    return (tiny_qwen2vl(str(folder / "tiny-qwen2vl.gguf"), model_path),
            qwen2vl_projector(str(folder / "mmproj-qwen2vl.gguf"), 64))


@pytest.fixture(scope="module")
def server(server_factory, files):
    text, projector = files
    return server_factory("-m", text, "--mmproj", projector, "-np", "2", "-c", "2048")


@pytest.fixture(scope="module")
def marker(server):
    return server.get("/props").json()["media_marker"]


class Reference:
    """libmtmd's own path, in this process: text, then the image through
    mtmd_helper_decode_image_chunk (which sets the M-RoPE positions), then text at the
    position it returns."""

    def __init__(self, files):
        import llama_lib
        from llama_lib.context import ContextParams
        from llama_lib.mtmd import MultimodalContext, MultimodalParams
        llama_lib.load(None)
        text, projector = files
        self.model = llama_lib.Model(text, llama_lib.ModelParams(n_gpu_layers=0))
        self.mm = MultimodalContext(projector, self.model, MultimodalParams(n_threads=1, use_gpu=False))
        self.ctx = llama_lib.Context(self.model, ContextParams(n_ctx=512, n_batch=512, n_ubatch=512,
                                                               n_threads=1, n_threads_batch=1))
        self.batch = llama_lib.Batch(512)

    def run(self, before: str, image: bytes, after: str, n_greedy: int = 0):
        """(log-softmax of the next token after the prompt, greedy continuation, positions)"""
        self.ctx.clear()
        pieces = self.mm.tokenize(f"{before}{self.mm.marker}{after}", [image])
        head, chunk, tail = pieces
        assert (chunk.n_tokens, chunk.n_pos) == (IMAGE_TOKENS, IMAGE_N_POS)
        self.batch.clear()
        self.batch.add(head, 0, 0, False)
        self.ctx.decode(self.batch)
        pos = self.mm.decode_media(self.ctx, chunk, self.mm.encode(chunk), len(head), 0, 512)
        self.batch.clear()
        last = self.batch.add(tail, pos, 0, True)
        self.ctx.decode(self.batch)
        pos += len(tail)
        logits = self.ctx.logits(last).astype(np.float64)
        first = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        tokens = []
        for _ in range(n_greedy):
            token = int(np.argmax(self.ctx.logits(last)))
            tokens.append(token)
            self.batch.clear()
            last = self.batch.add([token], pos, 0, True)
            self.ctx.decode(self.batch)
            pos += 1
        chunk.close()
        return first, tokens


@pytest.fixture(scope="module")
def reference(files):
    return Reference(files)


def top(logprobs: np.ndarray) -> list[tuple[int, float]]:
    ids = np.argsort(-logprobs, kind="stable")[:N_PROBS]
    return [(int(i), float(logprobs[i])) for i in ids]


def server_top(server, marker, before, image, after, **extra) -> tuple[list, dict]:
    r = server.post("/completion", json={
        "prompt": {"prompt_string": f"{before}{marker}{after}", "multimodal_data": [b64(image)]},
        "n_predict": 1, "n_probs": N_PROBS, "temperature": 0, **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    return [(t["id"], t["logprob"]) for t in body["completion_probabilities"][0]["top_logprobs"]], body


def assert_same_top(got, want):
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=2e-3)


def test_the_server_loads_an_mrope_projector(server):
    assert server.get("/props").json()["modalities"]["vision"] is True


def test_the_next_token_after_an_image_is_libmtmds(server, marker, reference):
    for image in (RED, GREEN):
        got, body = server_top(server, marker, "Look: ", image, " describe it", cache_prompt=False)
        want, _ = reference.run("Look: ", image, " describe it")
        assert_same_top(got, top(want))
    assert body["tokens_evaluated"] > IMAGE_TOKENS
    red, _ = server_top(server, marker, "Look: ", RED, " describe it", cache_prompt=False)
    green, _ = server_top(server, marker, "Look: ", GREEN, " describe it", cache_prompt=False)
    assert red != green


def test_a_greedy_continuation_after_an_image_is_libmtmds(server, marker, reference):
    r = server.post("/completion", json={
        "prompt": {"prompt_string": f"Picture {marker} shows", "multimodal_data": [b64(RED)]},
        "n_predict": 12, "temperature": 0, "ignore_eos": True, "return_tokens": True,
        "cache_prompt": False})
    assert r.status_code == 200, r.text
    _, want = reference.run("Picture ", RED, " shows", n_greedy=12)
    assert r.json()["tokens"] == want


def test_a_follow_up_from_the_cache_sits_at_the_right_positions(server, marker, reference):
    """The image comes from the slot's cache; the new text goes in after it at positions the
    scheduler derives from the cached image's n_pos: the same distribution as a fresh
    evaluation and as libmtmd's."""
    first, body = server_top(server, marker, "Photo: ", GREEN, " colour?", id_slot=0)
    longer = " colour? Answer in one word please"
    got, body = server_top(server, marker, "Photo: ", GREEN, longer, id_slot=0)
    assert body["tokens_cached"] >= IMAGE_TOKENS + 2
    fresh, fresh_body = server_top(server, marker, "Photo: ", GREEN, longer, id_slot=1, cache_prompt=False)
    assert fresh_body["tokens_cached"] == 0
    want, _ = reference.run("Photo: ", GREEN, longer)
    assert_same_top(got, top(want))
    assert_same_top(fresh, top(want))

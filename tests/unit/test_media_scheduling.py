"""Media chunks in the engine without a model: placeholders, the scheduler's media steps and
prefix reuse, the embedding LRU; and the web side's pure helpers (image_data, data URIs)."""
from __future__ import annotations

import numpy as np
import pytest

from llama_lib.engine import GenerationOptions, Request, Scheduler, Status
from llama_lib.engine import media
from webapp.errors import BadRequest
from webapp.media import image_data_prompt, load_url, prompt_text

from .engine_fakes import sched_step

IMG = media.placeholders(5, 4)
OTHER = media.placeholders(6, 4)


def req(tokens, **opts) -> Request:
    return Request(prompt_tokens=list(tokens), options=GenerationOptions(**opts))


def run_step(sched: Scheduler, token: int = 7):
    return sched_step(sched, token)[0]


def test_placeholders_are_negative_int32_and_name_their_chunk():
    values = media.placeholders((1 << 16) - 1, media.MAX_CHUNK_TOKENS)
    assert all(-(2**31) <= v < 0 for v in values)
    assert {media.media_key(v) for v in values} == {(1 << 16) - 1}
    assert media.media_run([1] + IMG + OTHER + [2], 1) == 4
    assert media.media_run(IMG + OTHER, 4) == 4


def test_text_runs_stop_before_media():
    assert media.text_run([1, 2] + IMG, 10) == 2
    assert media.text_run([1, 2, 3], 2) == 2
    assert media.text_run(IMG, 10) == 0


@pytest.mark.parametrize("keep, expected", [(0, 0), (2, 2), (4, 2), (5, 2), (6, 6), (7, 7)],
                         ids=["none", "before-image", "inside-image", "last-of-image", "after-image",
                              "past-image"])
def test_a_reused_prefix_never_ends_inside_an_image(keep, expected):
    assert media.align_keep([1, 2] + IMG + [3, 4], keep) == expected


def test_keys_are_shared_by_equal_hashes_and_recycled_oldest_first():
    keys = media.MediaKeys()
    a, b = keys.key("aa"), keys.key("bb")
    assert a != b and keys.key("aa") == a


def test_a_media_chunk_gets_a_step_of_its_own_and_generation_goes_on_between():
    s = Scheduler(n_slots=2, n_ctx_slot=128, n_batch=32)
    s.add(req(range(3)))
    run_step(s)                                    # slot 0 generates
    image_req = req([1, 2] + IMG + [3, 4])
    s.add(image_req)
    plan = run_step(s)                             # slot 0's token + the text before the image
    assert not plan.media
    assert [(e.slot.id, e.tokens) for e in plan.entries] == [(0, [7]), (1, [1, 2])]
    assert not plan.entries[1].wants_logits
    plan = run_step(s)                             # the image alone
    assert plan.media and len(plan.entries) == 1
    entry = plan.entries[0]
    assert (entry.slot.id, entry.tokens, entry.first_pos, entry.wants_logits) == (1, IMG, 2, False)
    plan = run_step(s)                             # then an ordinary batch again
    assert not plan.media
    assert [(e.slot.id, e.tokens) for e in plan.entries] == [(0, [7]), (1, [3, 4])]
    assert image_req.status is Status.GENERATING
    assert s.slots[1].cache_tokens == [1, 2] + IMG + [3, 4] and s.slots[1].pending == [7]


def test_a_follow_up_reuses_the_image_and_another_image_is_evaluated_again():
    s = Scheduler(n_slots=1, n_ctx_slot=128, n_batch=32)
    first = req([1, 2] + IMG + [3, 4], n_predict=1)
    s.add(first)
    for _ in range(3):
        run_step(s)
    s.finish(s.slots[0], Status.FINISHED_LIMIT)
    again = req([1, 2] + IMG + [3, 4, 7, 9])
    s.add(again)
    plan = run_step(s)
    assert again.n_cached == 8 and not plan.media     # the whole cache, the image included
    s.finish(s.slots[0], Status.FINISHED_LIMIT)
    other = req([1, 2] + OTHER + [3, 4])
    s.add(other)
    plan = run_step(s)
    assert other.n_cached == 2 and plan.media and plan.entries[0].tokens == OTHER


def test_a_prompt_ending_with_an_image_is_refused():
    s = Scheduler(n_slots=1, n_ctx_slot=64, n_batch=16)
    r = req([1, 2] + IMG)
    s.add(r)
    plan = s.schedule()
    assert plan.finished == [r] and r.error_type == "invalid_request_error"


def test_no_context_shift_through_a_cache_holding_media():
    s = Scheduler(n_slots=1, n_ctx_slot=12, n_batch=16)
    r = req([1] + IMG + [2, 3], n_keep=1)
    s.add(r)
    for _ in range(12):
        plan = run_step(s)
        if plan.context_full:
            break
    assert plan.context_full and plan.context_full[0].id == 0


def test_a_prompt_with_media_is_never_truncated():
    s = Scheduler(n_slots=1, n_ctx_slot=8, n_batch=16)
    r = req([1, 2] + IMG + [3, 4, 5])
    s.add(r)
    plan = s.schedule()
    assert plan.finished == [r] and r.error_type == "exceed_context_size_error"


class FakeMtmd:
    def __init__(self):
        self.encoded = []

    def encode(self, chunk):
        self.encoded.append(chunk.id)
        return np.full((chunk.n_tokens, 8), len(self.encoded), np.float32)


class Chunk:
    def __init__(self, ident, n_tokens=4, kind="image"):
        self.id, self.n_tokens, self.kind = ident, n_tokens, kind


def test_the_embedding_lru_keeps_recent_chunks_within_its_budget():
    fake = FakeMtmd()
    ev = media.MediaEvaluator(fake, cache_bytes=2 * 4 * 8 * 4)     # two chunks of 4x8 floats
    a, b, c = Chunk("a"), Chunk("b"), Chunk("c")
    first = ev.embeddings(a)
    assert ev.embeddings(a) is first and ev.n_cache_hits == 1
    ev.embeddings(b)
    ev.embeddings(c)                  # evicts a, the least recently used
    ev.embeddings(b)
    ev.embeddings(a)
    assert fake.encoded == ["a", "b", "c", "a"]
    assert ev.n_encoded == 4 and ev.n_cache_hits == 2


def test_seed_image_data_references_become_markers_in_order():
    text, data = image_data_prompt("A [img-2] B [img-1] C [img-2]", [{"data": "x", "id": 1},
                                                                       {"data": "y", "id": 2}], "<m>")
    assert text == "A <m> B <m> C <m>" and data == ["y", "x", "y"]


@pytest.mark.parametrize("prompt, image_data, message", [
    ("[img-3]", [{"data": "x", "id": 4}], "[img-3]"),
    ("no refs", [{"data": "x", "id": 4}], "[img-4]"),
    ("[img-1]", [{"data": "x", "id": "1"}], "id must be an integer"),
    ("[img-1]", "x", "'image_data' must be a list"),
], ids=["unknown-id", "unused-id", "string-id", "not-a-list"])
def test_seed_image_data_errors(prompt, image_data, message):
    with pytest.raises(BadRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        image_data_prompt(prompt, image_data, "<m>")


class Settings:
    media_path = None


@pytest.mark.parametrize("url, message", [
    ("data:text/plain;base64,aGVsbG8=", "not an image or audio type"),
    ("data:image/png,rawbytes", "must be base64 encoded"),
    ("data:image/png;base64,!!!", "not valid base64"),
    ("file:///etc/hosts", "--media-path"),
    ("gopher://x/y.png", "not supported"),
    ("", "non-empty string"),
], ids=["text-mime", "not-base64-uri", "bad-base64", "file-without-media-path", "other-scheme", "empty"])
def test_bad_urls_are_named(url, message):
    with pytest.raises(BadRequest, match=message):
        load_url(url, "part", Settings())


def test_a_data_uri_decodes():
    assert load_url("data:image/png;base64,iVBORw==", "part", Settings()) == b"\x89PNG"


class Vocab:
    @staticmethod
    def detokenize(tokens):
        return "".join(chr(96 + t) for t in tokens)


def test_echoed_prompts_show_media_as_the_marker():
    assert prompt_text(Vocab(), [1, 2] + IMG + [3] + OTHER + [4], "<m>") == "ab<m>c<m>d"


def test_under_mrope_positions_follow_each_chunks_n_pos_not_its_cells():
    """IMG: 4 cells over 2 positions (shift -2), OTHER: 4 cells over 1 (shift -3). Text after
    them, the removal of a reused prefix's tail and a slot generating on all follow."""
    shifts = {media.media_key(IMG[0]): -2, media.media_key(OTHER[0]): -3}
    s = Scheduler(n_slots=1, n_ctx_slot=128, n_batch=32)
    s.shift_of = shifts.get
    first = req([1, 2] + IMG + [3, 4] + OTHER + [5], n_predict=3)
    s.add(first)
    positions = []
    for _ in range(7):
        plan = run_step(s)
        positions += [(e.tokens[0], e.first_pos) for e in plan.entries]
    # text [1, 2] at 0; IMG at 2 (cells 2..5); [3, 4] at 4; OTHER at 6 (cells 8..11);
    # [5] at 7; then the generated tokens at 8, 9
    assert positions[:5] == [(1, 0), (IMG[0], 2), (3, 4), (OTHER[0], 6), (5, 7)]
    assert [p for _, p in positions[5:]] == [8, 9]
    slot = s.slots[0]
    assert s.pos(slot) == len(slot.cache_tokens) - 5
    s.finish(slot, Status.FINISHED_LIMIT)
    # a follow-up keeps [1, 2] + IMG + [3]: its tail goes from cache index 7, position 5
    again = req([1, 2] + IMG + [3, 9, 9])
    s.add(again)
    plan = s.schedule()
    assert ("rm", 0, 5, -1) in plan.kv_ops and again.n_cached == 7
    assert [(e.tokens, e.first_pos) for e in plan.entries] == [([9, 9], 5)]
    # without shifts, positions are the cache indices
    s.shift_of = None
    assert s.pos(slot) == len(slot.cache_tokens)

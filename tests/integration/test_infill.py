"""POST /infill: the FIM prompt layout, --spm-infill, extra context, options and errors.

The default model has no FIM tokens, so the tests serve a copy of it whose metadata names
three of its unused special tokens as FIM prefix/suffix/middle (and <file_sep> as the file
separator; libllama already finds <reponame> as the repo token)."""
from __future__ import annotations

import pytest
import requests

from tests.gguf_builders import fim_model
from webapp.routes.infill import format_infill

from .sse import stream

PRE, SUF, MID, SEP, REP = 7, 8, 9, 5, 4      # <gh_stars> <issue_start> <issue_comment> <file_sep> <reponame>
PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.fixture(scope="session")
def fim_path(tmp_path_factory, model_path):
    return fim_model(model_path, str(tmp_path_factory.mktemp("fim") / "fim.gguf"),
                     pre=PRE, suf=SUF, mid=MID, sep=SEP)


@pytest.fixture(scope="session")
def psm(server_factory, fim_path):
    return server_factory("-m", fim_path, "-t", "1", "-np", "1", "-c", "1024")


@pytest.fixture(scope="session")
def spm(server_factory, fim_path):
    return server_factory("-m", fim_path, "-t", "1", "-np", "1", "-c", "1024", "--spm-infill")


def tokens(srv, text):
    r = srv.post("/tokenize", json={"content": text, "add_special": False})
    return r.json()["tokens"]


def post_ok(srv, path, **body):
    body.setdefault("temperature", 0)
    r = srv.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def detok(srv, ids):
    return srv.post("/detokenize", json={"tokens": ids}).json()["content"]


@pytest.mark.slow
@pytest.mark.parametrize("server_name,layout", [
    pytest.param("psm", "pre-suf-mid", id="prefix-suffix-middle-by-default"),
    pytest.param("spm", "suf-pre-mid", id="suffix-prefix-middle-with-spm-infill"),
])
def test_the_model_sees_the_fim_layout(request, server_name, layout):
    srv = request.getfixturevalue(server_name)
    pre = [PRE] + tokens(srv, PREFIX)
    suf = [SUF] + tokens(srv, SUFFIX)
    expected = (pre + suf if layout == "pre-suf-mid" else suf + pre) + [MID]
    infill = post_ok(srv, "/infill", input_prefix=PREFIX, input_suffix=SUFFIX, n_predict=8,
                     ignore_eos=True)
    same = post_ok(srv, "/completion", prompt=expected, n_predict=8, ignore_eos=True)
    assert infill["prompt"] == detok(srv, expected)
    assert infill["tokens_evaluated"] == len(expected)
    assert infill["content"] == same["content"] and infill["tokens_predicted"] == 8


@pytest.mark.slow
def test_the_prompt_goes_after_the_middle_token(psm):
    expected = [PRE] + tokens(psm, PREFIX) + [SUF] + tokens(psm, SUFFIX) + [MID] + tokens(psm, "return")
    infill = post_ok(psm, "/infill", input_prefix=PREFIX, input_suffix=SUFFIX, prompt="return",
                     n_predict=6, ignore_eos=True)
    assert infill["prompt"] == detok(psm, expected)
    assert infill["content"] == post_ok(psm, "/completion", prompt=expected, n_predict=6,
                                        ignore_eos=True)["content"]


@pytest.mark.slow
def test_extra_context_uses_the_repo_level_pattern(psm):
    r = post_ok(psm, "/infill", input_prefix="x = ", input_suffix="\n", n_predict=0,
                input_extra=[{"filename": "util.py", "text": "def helper():\n    pass\n"},
                             {"text": "y = 2\n"}])
    assert r["prompt"] == ("<reponame>myproject\n<file_sep>util.py\ndef helper():\n    pass\n"
                           "<file_sep>tmp\ny = 2\n<file_sep>filename\n"
                           "<gh_stars>x = <issue_start>\n<issue_comment>")
    assert r["content"] == "" and r["tokens_predicted"] == 0


@pytest.mark.slow
def test_prefix_and_suffix_may_be_token_lists_and_text_is_never_parsed_as_special(psm):
    by_ids = post_ok(psm, "/infill", input_prefix=tokens(psm, PREFIX), input_suffix=[SUFFIX],
                     n_predict=0)
    by_text = post_ok(psm, "/infill", input_prefix=PREFIX, input_suffix=SUFFIX, n_predict=0)
    assert by_ids["prompt"] == by_text["prompt"]
    literal = post_ok(psm, "/infill", input_prefix="<gh_stars>", input_suffix="", n_predict=0)
    assert literal["tokens_evaluated"] > 3     # the text "<gh_stars>" is several plain tokens


@pytest.mark.slow
def test_streaming_infill_matches_the_plain_answer(psm):
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 8, "temperature": 0,
            "ignore_eos": True, "n_probs": 2}
    whole = post_ok(psm, "/infill", **body)
    events, _ = stream(psm.url + "/infill", dict(body, stream=True))
    assert events[-1]["stop"] is True
    assert "".join(e["content"] for e in events) == whole["content"]
    assert len(whole["completion_probabilities"]) == 8


@pytest.mark.slow
def test_infill_takes_response_fields_return_tokens_and_n_cmpl(psm):
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 4, "temperature": 0,
            "ignore_eos": True, "return_tokens": True}
    whole = post_ok(psm, "/infill", **body)
    assert len(whole["tokens"]) == 4
    shaped = post_ok(psm, "/infill", **body, response_fields=["content", "timings/predicted_n"])
    assert shaped == {"content": whole["content"], "timings/predicted_n": 4}
    r = psm.post("/infill", json={**body, "n_cmpl": 2})       # one slot: at most one completion
    assert r.status_code == 400 and "n_cmpl" in r.json()["error"]["message"]


@pytest.mark.slow
def test_a_model_without_fim_tokens_answers_501(server_factory):
    r = server_factory("-t", "1", "-np", "1", "-c", "512").post("/infill", json={"input_prefix": "a", "input_suffix": "b"})
    assert r.status_code == 501
    err = r.json()["error"]
    assert err["type"] == "not_supported_error" and err["code"] == 501
    assert "prefix" in err["message"] and "middle" in err["message"]


BAD = [
    pytest.param({"input_suffix": "b"}, id="missing-input_prefix"),
    pytest.param({"input_prefix": "a"}, id="missing-input_suffix"),
    pytest.param({"input_prefix": 3, "input_suffix": "b"}, id="prefix-not-text"),
    pytest.param({"input_prefix": "a", "input_suffix": [99999999]}, id="suffix-token-out-of-range"),
    pytest.param({"input_prefix": "a", "input_suffix": "b", "prompt": 5}, id="prompt-not-a-string"),
    pytest.param({"input_prefix": "a", "input_suffix": "b", "input_extra": "x"}, id="extra-not-an-array"),
    pytest.param({"input_prefix": "a", "input_suffix": "b", "input_extra": [{"filename": "f"}]},
                 id="extra-chunk-without-text"),
    pytest.param({"input_prefix": "a", "input_suffix": "b", "input_extra": [{"text": "t", "filename": 1}]},
                 id="extra-filename-not-a-string"),
    pytest.param({"input_prefix": "a", "input_suffix": "b", "n_predict": "x"}, id="bad-completion-option"),
    pytest.param({"input_prefix": "a", "input_suffix": "b", "top_p": 7}, id="bad-sampling-option"),
]


@pytest.mark.slow
@pytest.mark.parametrize("body", BAD)
def test_bad_infill_requests_get_a_400(psm, body):
    r = psm.post("/infill", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]


@pytest.mark.slow
def test_a_body_that_is_not_json_gets_a_400(psm):
    r = requests.post(psm.url + "/infill", data=b"{", headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == 400


# --- the layout's budgets, over a byte-level vocabulary (no model) ------------------------
class ByteVocab:
    n_tokens = 300
    bos, add_bos = 256, True
    fim_pre, fim_suf, fim_mid, fim_rep, fim_sep = 257, 258, 259, -1, -1

    def tokenize(self, text, add_special=False, parse_special=False):
        return list(text.encode())


def layout(**kw):
    args = dict(prefix=list(b"p" * 100), suffix=list(b"s" * 100), extra=[], prompt=[],
                n_batch=64, n_ctx=256, n_predict=16, spm=False)
    args.update(kw)
    return format_infill(ByteVocab(), **args)


def test_prefix_keeps_its_end_and_suffix_its_start_within_one_batch():
    out = layout(prefix=list(range(100)), suffix=list(range(100, 200)))
    pre, suf, mid = out.index(257), out.index(258), out.index(259)
    assert out[0] == 256 and pre == 1
    assert out[pre + 1:suf] == list(range(100 - 48, 100))          # 3/4 of n_batch, the end
    assert out[suf + 1:mid] == list(range(100, 100 + 16 - 2))       # n_batch/4 - 2, the start
    assert mid == len(out) - 1


def test_extra_context_keeps_its_end_and_leaves_room_for_the_answer():
    out = layout(extra=[("f", "e" * 1000)], n_predict=100)
    assert len(out) == 256 - 100
    assert out[1:4] == list(b"eee") and out[0] == 256


def test_no_extra_context_means_no_snippet_marker():
    out = layout(extra=[])
    assert b"snippet" not in bytes(t for t in out if t < 256)
    out = layout(extra=[("f", "e")])
    assert b"--- snippet ---" in bytes(t for t in out if t < 256)


def test_spm_puts_the_suffix_first():
    out = layout(spm=True, prefix=[1], suffix=[2], prompt=[3])
    assert out == [256, 258, 2, 257, 1, 259, 3]


def test_without_add_bos_nothing_is_prepended():
    vocab = ByteVocab()
    vocab.add_bos = False
    out = format_infill(vocab, [1], [2], [], [], n_batch=64, n_ctx=256, n_predict=-1, spm=False)
    assert out == [257, 1, 258, 2, 259]


def test_a_vocabulary_without_fim_tokens_is_refused_before_anything_runs():
    from tests.unit.fakes import FakeEngine
    from webapp import create_app
    from webapp.cli import parse_settings
    engine = FakeEngine("hi")
    engine.vocab.fim_pre = engine.vocab.fim_suf = engine.vocab.fim_mid = -1
    r = create_app(parse_settings([]), engine).test_client().post(
        "/infill", json={"input_prefix": "a", "input_suffix": "b"})
    assert r.status_code == 501 and r.get_json()["error"]["type"] == "not_supported_error"
    assert engine.submitted == []

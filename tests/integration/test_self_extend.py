"""Self-extend (--grp-attn-n/--grp-attn-w) and the RoPE/YaRN flags.

Three levels: the scheduler's KV edits replayed on a model-free KV cache (positions exact
against the closed form), the engine over the real model in this process (libllama's own
largest position after a generation across several windows), and the real server."""
from __future__ import annotations

import subprocess
import sys

import pytest

from llama_lib.engine import GenerationOptions, Request, Scheduler, Status
from llama_lib.engine.self_extend import GroupAttention

N, W = 4, 32                      # group factor, window
BD = (W // N) * (N - 1)           # positions removed by one grouping
# One thread per server: on a shared 2-core machine, ggml's spinning worker threads make
# 2-thread decoding 10-20x slower than 1-thread decoding as soon as other work runs.
BASE = ("-t", "1", "-np", "1", "-c", "512")


# --- the scheduler's KV edits on a fake cache ------------------------------------------
class FakeKV:
    """Per sequence: the position of every cached token, in token order."""

    def __init__(self):
        self.pos: dict[int, list[int]] = {}

    def apply(self, op) -> None:
        kind, seq, p0, p1, *rest = op
        cells = self.pos.setdefault(seq, [])
        hi = float("inf") if p1 < 0 else p1
        if kind == "rm":
            self.pos[seq] = [p for p in cells if not p0 <= p < hi]
        elif kind == "add":
            self.pos[seq] = [p + rest[0] if p0 <= p < hi else p for p in cells]
        elif kind == "div":
            self.pos[seq] = [p // rest[0] if p0 <= p < hi else p for p in cells]
        else:
            raise AssertionError(f"unexpected op {op}")

    def decode(self, entry) -> None:
        self.pos.setdefault(entry.slot.id, []).extend(
            range(entry.first_pos, entry.first_pos + len(entry.tokens)))


def expected_position(t: int, k: int) -> int:
    """Token t after k groupings: grouped windows hold t / N within their W/N positions."""
    if t < k * W:
        return (t // W) * (W // N) + (t % W) // N
    return t - k * BD


def drive(sched: Scheduler, kv: FakeKV, steps: int, token: int = 5, ops: list | None = None):
    groupings, windows = 0, []
    for _ in range(steps):
        plan = sched.schedule()
        for op in plan.kv_ops:
            kv.apply(op)
            groupings += op[0] == "div"
        if ops is not None:
            ops.extend(plan.kv_ops)
        for e in plan.entries:
            kv.decode(e)
            windows.append((e.first_pos, len(e.tokens), groupings))
        sampled = {e.slot.id: token for e in plan.entries if e.wants_logits}
        for slot, tok in sched.update(plan, sampled):
            if tok is not None:
                sched.accept(slot, tok)
        if not plan.entries:
            break
    return groupings, windows


def new_scheduler(**kw) -> Scheduler:
    kw.setdefault("context_shift", False)
    return Scheduler(n_slots=2, n_ctx_slot=4096, n_batch=512, group_attn=(N, W), **kw)


def req(n_prompt: int, base: int = 0, **opts) -> Request:
    return Request(prompt_tokens=list(range(base, base + n_prompt)), options=GenerationOptions(**opts))


def test_positions_after_a_long_prompt_and_generation_match_the_closed_form():
    sched, kv = new_scheduler(), FakeKV()
    sched.add(req(150, n_predict=-1))
    groupings, windows = drive(sched, kv, 120)
    n_tokens = len(sched.slots[0].cache_tokens)
    assert n_tokens > 5 * W
    assert groupings == (n_tokens - 1) // W     # every full window before the newest token
    assert kv.pos[0] == [expected_position(t, groupings) for t in range(n_tokens)]


def test_no_batch_ever_places_a_token_past_the_current_window():
    sched, kv = new_scheduler(), FakeKV()
    sched.add(req(300))
    _, windows = drive(sched, kv, 80)
    for first_pos, n, k in windows:
        assert first_pos + n - 1 < k * (W // N) + W     # ga_i + W after k groupings
    prompt_chunks = [n for _, n, _ in windows if n > 1]
    assert sum(prompt_chunks) == 300 and max(prompt_chunks) <= W


def test_positions_stay_ordered_and_the_newest_window_exact():
    sched, kv = new_scheduler(), FakeKV()
    sched.add(req(10))
    drive(sched, kv, 200)
    pos = kv.pos[0]
    assert pos == sorted(pos)
    tail = pos[-(W // 2):]
    assert tail == list(range(tail[0], tail[0] + len(tail)))
    assert max(pos) < len(pos) // N + W


def test_a_grouped_cache_is_not_reused_as_a_prefix_but_a_plain_one_is():
    sched, kv = new_scheduler(), FakeKV()

    def serve(r, steps):
        ops: list = []
        sched.add(r)
        drive(sched, kv, steps, ops=ops)
        sched.finish(sched.slots[r.slot_id], Status.FINISHED_LIMIT)
        return ops

    serve(req(10, id_slot=0), 5)
    ops = serve(req(10, id_slot=0), 1)
    assert ("rm", 0, 9, -1) in ops                   # a plain cache: the prefix is kept
    serve(req(100, id_slot=0), 10)
    assert sched.group_attn.grouped(0)
    follow_up = req(100, id_slot=0)
    ops = serve(follow_up, 1)
    assert follow_up.n_cached == 0 and ops[0] == ("rm", 0, 0, -1)
    assert kv.pos[0] == list(range(len(kv.pos[0])))  # back to plain positions


def test_forget_caches_makes_every_slot_start_over():
    sched = Scheduler(n_slots=1, n_ctx_slot=256, n_batch=64)
    sched.add(req(10, n_predict=2))
    drive(sched, FakeKV(), 5)
    sched.forget_caches()
    r = req(10, n_predict=2)
    sched.add(r)
    sched.schedule()
    assert r.n_cached == 0


@pytest.mark.parametrize("n,w", [pytest.param(1, 512, id="factor-1"), pytest.param(4, 510, id="width-not-a-multiple"),
                                 pytest.param(4, 2, id="width-below-factor")])
def test_bad_group_settings_are_refused(n, w):
    with pytest.raises(ValueError):
        GroupAttention(n, w)


# --- the engine over the real model, in this process ------------------------------------
@pytest.fixture(scope="module")
def real_engine(model_path):
    import llama_lib
    from llama_lib.engine import Engine, EngineConfig
    from llama_lib.engine.bridge import ThreadBridge
    llama_lib.load(None)
    model = llama_lib.Model(model_path)
    ctx = llama_lib.Context(model, llama_lib.ContextParams(n_ctx=512, n_batch=512, n_seq_max=1,
                                                                n_threads=1, n_threads_batch=1))
    from sampling import make_sampler
    engine = Engine(model, ctx, EngineConfig(n_slots=1, grp_attn_n=N, grp_attn_w=W), make_sampler,
                    bridge=ThreadBridge())
    engine.start()
    yield engine
    engine.stop()
    ctx.close()
    model.close()


def run(engine, tokens, n_predict):
    from llama_lib.engine import FinalEvent, TokenEvent
    from sampling import SamplingParams
    from sampling.params import parse_sampling_params
    params = parse_sampling_params({"temperature": 0}, SamplingParams())
    r = engine.submit(Request(prompt_tokens=tokens, sampling=params,
                              options=GenerationOptions(n_predict=n_predict, ignore_eos=True)))
    pieces, final = [], None
    while final is None:
        for ev in r.mailbox.get(60) or pytest.fail("the engine did not answer"):
            if isinstance(ev, TokenEvent):
                pieces.append(ev.text)
            elif isinstance(ev, FinalEvent):
                final = ev
    return "".join(pieces), final


def ask(engine, fn):
    [(kind, value)] = engine.call(fn).get(30)
    assert kind == "ok", value
    return value


@pytest.mark.slow
def test_libllama_holds_the_grouped_positions_after_a_long_generation(real_engine):
    prompt = real_engine.vocab.tokenize("The history of the printing press begins", add_special=False)
    text, final = run(real_engine, prompt, 5 * W)
    assert final.status is Status.FINISHED_LIMIT and final.n_predicted == 5 * W
    n_cached = ask(real_engine, lambda e: len(e.scheduler.slots[0].cache_tokens))
    pos_max = ask(real_engine, lambda e: e.ctx.seq_pos_max(0))
    # the newest token sits where the closed form says, far below its index
    assert pos_max == expected_position(n_cached - 1, (n_cached - 1) // W)
    assert pos_max < n_cached - 3 * BD
    assert len(text.split()) > 20 and "\ufffd" not in text


# --- the real server ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def extended(server_factory):
    return server_factory("-t", "1", "-np", "1", "-c", "1024", "--grp-attn-n", str(N), "--grp-attn-w", str(W))


def complete(srv, **body):
    body.setdefault("temperature", 0)
    r = srv.post("/completion", json=body)
    assert r.status_code == 200, r.text
    return r.json()


PROMPT = "The three primary colors are"


@pytest.mark.slow
def test_inside_the_first_window_nothing_changes(extended, server_factory):
    a = complete(extended, prompt=PROMPT, n_predict=12, cache_prompt=False)
    b = complete(server_factory(*BASE), prompt=PROMPT, n_predict=12, cache_prompt=False)
    assert a["content"] == b["content"]


@pytest.mark.slow
def test_a_long_prompt_and_generation_across_many_windows_complete(extended):
    prompt = "Tea is a drink made from leaves. " * 40          # ~320 tokens: ten windows
    r = complete(extended, prompt=prompt + "In summary,", n_predict=3 * W, ignore_eos=True)
    assert r["tokens_evaluated"] > 8 * W
    assert r["tokens_predicted"] == 3 * W and r["truncated"] is False
    assert r["content"].strip() and "\ufffd" not in r["content"]
    again = complete(extended, prompt=prompt + "In summary,", n_predict=3 * W, ignore_eos=True)
    assert again["tokens_cached"] == 0 and again["content"] == r["content"]


@pytest.mark.slow
def test_with_self_extend_a_full_context_stops_instead_of_shifting(server_factory):
    small = server_factory("-t", "1", "-np", "1", "-c", "128", "--grp-attn-n", str(N), "--grp-attn-w", str(W))
    n_ctx = small.get("/props").json()["default_generation_settings"]["n_ctx"]   # libllama's minimum: 256
    r = complete(small, prompt="Count: one, two, three,", n_predict=n_ctx + 50, ignore_eos=True)
    assert r["stopped_limit"] is True and r["truncated"] is False
    assert r["tokens_evaluated"] + r["tokens_predicted"] == n_ctx + 1


@pytest.mark.slow
def test_a_width_that_is_not_a_multiple_of_the_factor_stops_startup():
    proc = subprocess.run([sys.executable, "-m", "webapp.cli", "--port", "0", "--grp-attn-n", "4",
                           "--grp-attn-w", "510"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "grp-attn-w" in proc.stderr and "Traceback" not in proc.stderr


# --- RoPE / YaRN flags reach libllama ----------------------------------------------------------
@pytest.mark.slow
def test_rope_and_yarn_flags_start_a_server_whose_model_answers_differently(server_factory):
    rope = server_factory(*BASE, "--rope-freq-base", "10000", "--rope-scaling", "yarn",
                          "--rope-scale", "2", "--yarn-orig-ctx", "8192", "--yarn-ext-factor", "1.0",
                          "--yarn-attn-factor", "1.0", "--yarn-beta-slow", "1.0", "--yarn-beta-fast", "32.0",
                          "--defrag-thold", "0.1")
    a = complete(rope, prompt=PROMPT, n_predict=8, n_probs=3, ignore_eos=True)
    b = complete(server_factory(*BASE), prompt=PROMPT, n_predict=8, n_probs=3, ignore_eos=True)
    assert a["tokens_predicted"] == 8 and a["content"].strip()
    assert a["completion_probabilities"] != b["completion_probabilities"]

"""The engine's ways of drawing a step's tokens, over the real model in this process: one
compiled call on the engine thread (CPU decoding) and worker threads while the engine
handles each token as it comes (sample_async, the server's way with the model offloaded,
which a machine without a GPU never picks on its own). Same requests, same seeds: the same
text, token for token, and the same endings."""
from __future__ import annotations

import pytest

from llama_lib.engine import FinalEvent, GenerationOptions, Request, TokenEvent

BODIES = [{"seed": 1}, {"seed": 2, "temperature": 1.2}, {"temperature": 0},
          {"seed": 3, "top_p": 0.5, "repeat_penalty": 1.2}, {"seed": 4, "mirostat": 2},
          {"seed": 5, "top_k": 5}]
PROMPTS = ["Once upon a time", "The capital of France", "def fibonacci(n):",
           "List three colors:", "Water boils at", "My favourite book"]


def generate(model, **config) -> list[tuple[list[int], str, str]]:
    import llama_lib
    from llama_lib.engine import Engine, EngineConfig
    from llama_lib.engine.bridge import ThreadBridge
    from sampling import SamplingParams, make_sampler
    from sampling.params import parse_sampling_params
    ctx = llama_lib.Context(model, llama_lib.ContextParams(n_ctx=1024, n_batch=256,
                                                           n_seq_max=len(BODIES), n_threads=1,
                                                           n_threads_batch=1))
    engine = Engine(model, ctx, EngineConfig(n_slots=len(BODIES), **config), make_sampler,
                    bridge=ThreadBridge())
    engine.start()
    try:
        reqs = []
        for body, prompt in zip(BODIES, PROMPTS):
            req = Request(prompt_tokens=model.vocab.tokenize(prompt),
                          sampling=parse_sampling_params(dict(body), SamplingParams()),
                          options=GenerationOptions(n_predict=24, cache_prompt=False))
            req.sampler = engine.make_sampler(req.sampling, req.prompt_tokens)
            reqs.append(req)
        engine.submit_many(reqs)
        out = []
        for req in reqs:
            tokens, text, final = [], [], None
            while final is None:
                for ev in req.mailbox.get(60) or pytest.fail("the engine did not answer"):
                    if isinstance(ev, TokenEvent):
                        tokens.append(ev.token)
                        text.append(ev.text)
                    elif isinstance(ev, FinalEvent):
                        final = ev
                        text.append(ev.text)
            out.append((tokens, "".join(text), final.status.name))
        return out
    finally:
        engine.stop()
        ctx.close()


@pytest.fixture(scope="module")
def model(model_path):
    import llama_lib
    llama_lib.load(None)
    model = llama_lib.Model(model_path)
    yield model
    model.close()


def test_drawing_on_workers_gives_what_the_engine_thread_draws(model):
    on_thread = generate(model)
    assert all(tokens for tokens, _, _ in on_thread)
    assert len({tuple(tokens) for tokens, _, _ in on_thread}) == len(BODIES)
    for threads in (1, 2):
        assert generate(model, sample_async=True, sample_threads=threads) == on_thread

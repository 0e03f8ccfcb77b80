"""A scripted fake engine for fast tests of the web layer (no model, no libllama)."""
from __future__ import annotations

from types import SimpleNamespace

from llama_lib.engine import FinalEvent, Status, TokenEvent
from llama_lib.engine.bridge import Mailbox, ThreadBridge


class FakeVocab:
    """Byte-level: token id = byte value + 1 (0 is BOS)."""
    n_tokens = 257
    bos = 0
    eos = 0
    add_bos = True
    nl = 11             # "\n"

    def tokenize(self, text, add_special=True, parse_special=True):
        data = text.encode() if isinstance(text, str) else text
        return ([0] if add_special else []) + [b + 1 for b in data]

    def piece(self, token, special=True):
        return b"" if token == 0 else bytes([token - 1])

    def piece_text(self, token, special=True):
        try:
            return self.piece(token, special).decode("utf-8")
        except UnicodeDecodeError:
            return None

    def detokenize(self, tokens, remove_special=False, unparse_special=True):
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def text(self, token):
        return "<s>" if token == 0 else self.piece(token).decode("utf-8", "replace")

    def is_eog(self, token):
        return token == 0


class FakeEngine:
    """Answers every request with a fixed reply, one token per byte."""

    def __init__(self, reply: str = "ok", n_slots: int = 2):
        self.reply = reply
        self.vocab = FakeVocab()
        self.config = SimpleNamespace(n_slots=n_slots)
        self.n_ctx_slot = 512
        self.n_processing = 0
        self.n_waiting = 0
        self.bridge = ThreadBridge()
        self.model = SimpleNamespace(chat_template=lambda name=None: "{{ messages }}",
                                     description=lambda: "fake", n_ctx_train=512, n_params=1,
                                     size=1, n_embd=4)
        self.ctx = SimpleNamespace(n_ubatch=512, pooling=1)
        self.submitted = []
        self.aborted = []
        self.failure = None

    def make_sampler(self, params, prompt_tokens, ignore_eos=False):
        return None

    def submit_many(self, reqs):
        return [self.submit(req) for req in reqs]

    def submit(self, req):
        if req.mailbox is None:
            req.mailbox = Mailbox(self.bridge)
        self.submitted.append(req)
        req.slot_id = 0
        for b in self.reply.encode():
            req.mailbox.put(TokenEvent(chr(b), b + 1, None))
            req.n_generated += 1
        req.mailbox.put(FinalEvent(Status.FINISHED_EOS, n_prompt=len(req.prompt_tokens),
                                   n_predicted=req.n_generated, timings={}))
        return req

    def abort(self, req_id):
        self.aborted.append(req_id)

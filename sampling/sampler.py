"""The one interface the engine samples through, and the plan both chains run.

``make_sampler(params, n_vocab, prompt_tokens, vocab, n_ctx)`` returns a ``Sampler`` with
``sample(logits) -> int``, ``accept(token)``, ``last_probs`` (the top ``n_probs``
(token, probability) pairs of the candidates the last draw saw, or None), ``last_prob`` (the
drawn token's probability among them) and ``seed``. The
engine calls ``sample`` with the raw logits of one sequence (a float32 view valid until the
next decode) and ``accept`` with every token it keeps.

Settings become a ``ChainPlan`` first: a tuple of stage specs holding only the stages that
change anything, in this order:

1. logit bias (always first, on the whole vocabulary);
2. greedy (temperature <= 0, no mirostat): the history stages of ``samplers``
   (penalties, DRY), then argmax; probabilities are the softmax of those logits;
3. mirostat 1/2: the history stages of ``samplers``, temperature, then mirostat's own cut
   and draw (``samplers``' truncation stages are ignored, as in llama.cpp);
4. otherwise every stage of ``samplers`` in its order (repeats allowed), then a draw.

The compiled ``_chain.Chain`` runs a plan; ``_reference.ReferenceChain`` (numpy) runs the same
plan and defines what is correct. Both draw from one xoshiro256** stream seeded from the
request's ``seed``, so a request samples the same tokens whatever else the server is doing.
"""
from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .params import SamplingParams

__all__ = ["make_sampler", "build_plan", "Sampler", "ChainPlan", "new_seed", "dry_breakers",
           "DryBreakers", "DRY_CACHE_SIZE", "TopK", "TopP", "MinP", "TailFree", "Typical", "Temperature",
           "Penalties", "Dry", "Xtc", "TopNSigma", "Dist", "Greedy", "Mirostat", "MirostatV2",
           "UNLIMITED"]

UNLIMITED = 1 << 62     # a history window with no end (last_n = -1 without a context size)
RANDOM_SEEDS = (-1, 0xFFFFFFFF)     # llama.cpp's LLAMA_DEFAULT_SEED means "pick one"


def new_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


# --- stage specs ----------------------------------------------------------------------
@dataclass(frozen=True)
class TopK:
    kind: ClassVar[str] = "top_k"
    k: int


@dataclass(frozen=True)
class TopP:
    kind: ClassVar[str] = "top_p"
    p: float
    min_keep: int = 0


@dataclass(frozen=True)
class MinP:
    kind: ClassVar[str] = "min_p"
    p: float
    min_keep: int = 0


@dataclass(frozen=True)
class TailFree:
    kind: ClassVar[str] = "tail_free"
    z: float
    min_keep: int = 0


@dataclass(frozen=True)
class Typical:
    kind: ClassVar[str] = "typical"
    p: float
    min_keep: int = 0


@dataclass(frozen=True)
class Temperature:
    """temp <= 0 keeps only the best token; delta > 0 is dynamic temperature."""
    kind: ClassVar[str] = "temperature"
    temp: float
    delta: float = 0.0
    exponent: float = 1.0


@dataclass(frozen=True)
class Penalties:
    kind: ClassVar[str] = "penalties"
    last_n: int
    repeat: float = 1.0
    freq: float = 0.0
    present: float = 0.0
    skip_token: int = -1        # never penalized (the newline token unless penalize_nl)


@dataclass(frozen=True)
class Dry:
    kind: ClassVar[str] = "dry"
    multiplier: float
    base: float
    allowed_length: int
    last_n: int
    breakers: "DryBreakers"


@dataclass(frozen=True)
class Xtc:
    kind: ClassVar[str] = "xtc"
    probability: float
    threshold: float
    min_keep: int = 0


@dataclass(frozen=True)
class TopNSigma:
    kind: ClassVar[str] = "top_n_sigma"
    n: float


@dataclass(frozen=True)
class Dist:
    kind: ClassVar[str] = "dist"


@dataclass(frozen=True)
class Greedy:
    kind: ClassVar[str] = "greedy"


@dataclass(frozen=True)
class Mirostat:
    kind: ClassVar[str] = "mirostat"
    tau: float
    eta: float
    m: int = 100


@dataclass(frozen=True)
class MirostatV2:
    kind: ClassVar[str] = "mirostat_v2"
    tau: float
    eta: float


@dataclass(frozen=True)
class ChainPlan:
    n_vocab: int
    stages: tuple = ()
    final: object = Dist()
    seed: int = 0
    n_probs: int = 0
    bias_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    bias_values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    history: tuple = ()         # tokens that seed the penalty/DRY history (oldest first)


# --- DRY sequence breakers ------------------------------------------------------------
class DryBreakers:
    """Restart sequences by head token: ``heads[t]`` lists the token tails that, after
    ``t``, complete a breaker (an empty tail: ``t`` alone contains one). Also laid out as
    CSR arrays for the compiled chain: head t's entries are ``head_off[t]:head_off[t+1]``,
    entry e's tail is ``tails[tail_off[e]:tail_off[e+1]]``."""

    def __init__(self, n_vocab: int, heads: dict[int, list[tuple[int, ...]]]):
        self.heads = {t: list(v) for t, v in heads.items() if v}
        counts = np.zeros(n_vocab + 1, np.int64)
        entries: list[tuple[int, ...]] = []
        for t in sorted(self.heads):
            counts[t + 1] = len(self.heads[t])
            entries.extend(self.heads[t])
        self.head_off = np.cumsum(counts).astype(np.int32)
        self.tail_off = np.cumsum([0] + [len(e) for e in entries]).astype(np.int32)
        self.tails = np.array([t for e in entries for t in e], dtype=np.int32)


_MAX_BREAKER_BYTES = 40
_MAX_TAIL_TOKENS = 20
DRY_CACHE_SIZE = 32     # custom breaker lists whose tables are kept, per vocabulary
_DEFAULT_BREAKERS = SamplingParams().dry_sequence_breakers


class _BreakerTables:
    """One vocabulary's tables: the default list's for good, the ``DRY_CACHE_SIZE`` most
    recently used custom lists' besides (a client may send any number of distinct lists).

    Both the request greenlets and the engine thread build samplers, without a lock: each
    OrderedDict call below is one C call, atomic under the GIL, and a race costs at most a
    table built twice or dropped early, never a wrong one."""

    def __init__(self):
        self.default: DryBreakers | None = None
        self.recent: OrderedDict = OrderedDict()

    def get(self, key: tuple) -> "DryBreakers | None":
        if key == _DEFAULT_BREAKERS:
            return self.default
        table = self.recent.get(key)
        if table is not None:
            try:
                self.recent.move_to_end(key)
            except KeyError:        # dropped meanwhile by the other thread: still valid
                pass
        return table

    def put(self, key: tuple, table: DryBreakers) -> None:
        if key == _DEFAULT_BREAKERS:
            self.default = table
            return
        self.recent[key] = table
        self.recent.move_to_end(key)
        while len(self.recent) > DRY_CACHE_SIZE:
            try:
                self.recent.popitem(last=False)
            except KeyError:
                break

    def __len__(self) -> int:
        return len(self.recent) + (self.default is not None)


_dry_cache: "weakref.WeakKeyDictionary[object, _BreakerTables]" = weakref.WeakKeyDictionary()


def dry_breakers(vocab, breakers, n_vocab: int | None = None) -> DryBreakers:
    """Every way each breaker string can start inside a token, as llama.cpp finds them:
    a token containing the whole breaker is a breaker by itself; a token ending with the
    breaker's first k bytes needs the rest of the breaker's tokens to follow. Cached per
    vocabulary (scanning 49152 pieces takes about 15 ms a breaker): the default list's table
    always, custom lists' by least recent use (``_BreakerTables``)."""
    if vocab is None:
        return DryBreakers(n_vocab or 0, {})
    key = tuple(breakers)
    per_vocab = _dry_cache.get(vocab)
    if per_vocab is None:
        per_vocab = _dry_cache.setdefault(vocab, _BreakerTables())
    cached = per_vocab.get(key)
    if cached is not None:
        return cached
    n = vocab.n_tokens
    pieces = [vocab.piece(t, True) for t in range(n)]
    heads: dict[int, list[tuple[int, ...]]] = {}
    tail_tokens: dict[bytes, tuple[int, ...]] = {}

    def add(token: int, tail: tuple[int, ...]) -> None:
        entries = heads.setdefault(token, [])
        if tail not in entries:
            entries.append(tail)

    for text in key:
        brk = text.encode("utf-8")[:_MAX_BREAKER_BYTES]
        if not brk:
            continue
        first = brk[:1]
        for token, word in enumerate(pieces):
            if brk in word:
                add(token, ())
                continue
            pos = word.find(first)
            while pos >= 0:
                if brk.startswith(word[pos:]):
                    rest = brk[len(word) - pos:]
                    if rest not in tail_tokens:
                        ids = vocab.tokenize(rest, add_special=False, parse_special=False)
                        tail_tokens[rest] = tuple(ids[:_MAX_TAIL_TOKENS])
                    add(token, tail_tokens[rest])
                pos = word.find(first, pos + 1)
    table = DryBreakers(n, heads)
    per_vocab.put(key, table)
    return table


# --- plan -------------------------------------------------------------------------------
def _window(last_n: int, n_ctx: int) -> int:
    if last_n == -1:
        return n_ctx if n_ctx > 0 else UNLIMITED
    return last_n


def _tokens(value, vocab, parse_special: bool) -> list[int]:
    if isinstance(value, str):
        if vocab is None:
            raise ValueError("a string needs the model's vocabulary to be tokenized")
        return list(vocab.tokenize(value, add_special=False, parse_special=parse_special))
    return [int(value)]


def _logit_bias(pairs, n_vocab: int, vocab):
    ids: list[int] = []
    values: list[float] = []
    for key, bias in pairs:
        for token in _tokens(key, vocab, parse_special=False):
            if 0 <= token < n_vocab:    # out-of-range ids are ignored, as llama-server does
                ids.append(token)
                values.append(bias)
    return np.array(ids, np.int32), np.array(values, np.float32)


def _history_stages(p: SamplingParams, vocab, n_vocab: int, n_ctx: int) -> dict[str, object]:
    out: dict[str, object] = {}
    last_n = _window(p.repeat_last_n, n_ctx)
    if last_n != 0 and (p.repeat_penalty != 1.0 or p.frequency_penalty != 0.0
                        or p.presence_penalty != 0.0):
        skip = vocab.nl if (vocab is not None and not p.penalize_nl) else -1
        out["penalties"] = Penalties(last_n, p.repeat_penalty, p.frequency_penalty,
                                     p.presence_penalty, skip)
    dry_n = _window(p.dry_penalty_last_n, n_ctx)
    if p.dry_multiplier != 0.0 and p.dry_base >= 1.0 and dry_n != 0:
        out["dry"] = Dry(p.dry_multiplier, p.dry_base, p.dry_allowed_length, dry_n,
                         dry_breakers(vocab, p.dry_sequence_breakers, n_vocab))
    return out


def _stage(name: str, p: SamplingParams):
    """The spec for one entry of ``samplers``, or None where the settings make it a no-op."""
    if name == "top_k":
        return TopK(p.top_k) if p.top_k > 0 else None
    if name == "top_p":
        return TopP(p.top_p, p.min_keep) if p.top_p < 1.0 else None
    if name == "min_p":
        return MinP(p.min_p, p.min_keep) if p.min_p > 0.0 else None
    if name == "tfs_z":
        return TailFree(p.tfs_z, p.min_keep) if p.tfs_z < 1.0 else None
    if name == "typical_p":
        return Typical(p.typical_p, p.min_keep) if p.typical_p < 1.0 else None
    if name == "temperature":
        if p.temperature == 1.0 and p.dynatemp_range <= 0.0:
            return None
        return Temperature(p.temperature, p.dynatemp_range, p.dynatemp_exponent)
    if name == "xtc":
        if p.xtc_probability <= 0.0 or p.xtc_threshold > 0.5:
            return None
        return Xtc(p.xtc_probability, p.xtc_threshold, p.min_keep)
    if name == "top_n_sigma":
        return TopNSigma(p.top_n_sigma) if p.top_n_sigma > 0.0 else None
    raise ValueError(f"unknown sampler {name!r}")


def build_plan(params: SamplingParams, n_vocab: int, prompt_tokens=(), vocab=None,
               n_ctx: int = 0) -> ChainPlan:
    p = params
    seed = new_seed() if p.seed in RANDOM_SEEDS else p.seed
    bias_ids, bias_values = _logit_bias(p.logit_bias, n_vocab, vocab)
    history_stages = _history_stages(p, vocab, n_vocab, n_ctx)
    in_order = [history_stages[name] for name in p.samplers if name in history_stages]
    if p.greedy:
        stages, final = in_order, Greedy()
    elif p.mirostat:
        stages = in_order + ([Temperature(p.temperature)] if p.temperature != 1.0 else [])
        final = (Mirostat(p.mirostat_tau, p.mirostat_eta) if p.mirostat == 1
                 else MirostatV2(p.mirostat_tau, p.mirostat_eta))
    else:
        stages = []
        for name in p.samplers:
            spec = history_stages.get(name) if name in ("penalties", "dry") else _stage(name, p)
            if spec is not None:
                stages.append(spec)
        final = Dist()
    history: tuple = ()
    if in_order:
        source = prompt_tokens
        if p.penalty_prompt is not None:
            source = (_tokens(p.penalty_prompt, vocab, parse_special=True)
                      if isinstance(p.penalty_prompt, str) else p.penalty_prompt)
        window = max(s.last_n for s in in_order)
        history = tuple(int(t) for t in source)[-window:]
    return ChainPlan(n_vocab, tuple(stages), final, seed, p.n_probs, bias_ids, bias_values,
                     history)


# --- the engine's sampler ---------------------------------------------------------------
class Sampler:
    """A chain plus, when the request has one, a grammar checked after the draw."""

    def __init__(self, chain, grammar=None, banned=frozenset()):
        self.chain = chain
        self.grammar = grammar
        # tokens a -inf logit bias (or ignore_eos) bans: the chain's fallback when every
        # token is banned (token 0) must not pass for a grammar-allowed choice
        self.banned = banned
        self.seed = chain.seed
        self.last_probs: list[tuple[int, float]] | None = None
        self.last_prob = 0.0        # with n_probs: the drawn token's probability in that set
        # sample_rows can draw for it: a compiled chain, no grammar (checked token by token
        # in Python), no n_probs (Python lists)
        self.batchable = (grammar is None and chain.n_probs == 0
                          and type(chain).__module__ == "sampling._chain")
        if grammar is None:
            self.accept = chain.accept      # once per token: skip the method in between

    def sample(self, logits: np.ndarray) -> int:
        token = self.chain.sample(logits)
        grammar = self.grammar
        if grammar is not None and not grammar.allows(token):
            # Sample first, constrain only on rejection: most drawn tokens are already valid,
            # and constraining checks every token of the vocabulary.
            token = self.chain.sample(grammar.constrain(logits))
            if not grammar.masked_in(token) or token in self.banned:
                # every allowed token was banned (bias, ignore_eos): the chain fell back to
                # a token the grammar rejects
                from .grammar import GrammarExhausted
                raise GrammarExhausted("the grammar admits no token the sampler may choose")
        self.last_probs = self.chain.last_probs
        self.last_prob = self.chain.last_prob
        return token

    def accept(self, token: int) -> None:
        self.chain.accept(token)
        if self.grammar is not None:
            self.grammar.accept(token)

    @staticmethod
    def sample_rows(samplers: list["Sampler"], table: np.ndarray, rows, n_threads: int = 1) -> list[int]:
        """One token for each batchable sampler from its row of ``table``: one compiled
        loop with the GIL released once (the engine's step over its generating slots),
        split over ``n_threads`` OS threads."""
        from ._chain import sample_rows
        out = np.empty(len(samplers), np.int32)
        sample_rows([s.chain for s in samplers], table, np.asarray(rows, np.int32), out, n_threads)
        return out.tolist()

    @staticmethod
    def start_rows(samplers: list["Sampler"], table: np.ndarray, rows, n_threads: int = 1):
        """sample_rows on ``n_threads`` worker threads, returning at once a draw whose
        ``token(k)`` waits for sampler k's token and ``finish()`` for them all: the engine
        handles each token while the rest are drawn. The table must stay as it is, and the
        samplers unused, until their tokens are in."""
        from ._chain import start_rows
        return start_rows([s.chain for s in samplers], table, np.asarray(rows, np.int32), n_threads)


def make_sampler(params: SamplingParams, n_vocab: int, prompt_tokens=(), vocab=None,
                 n_ctx: int = 0, *, impl: str = "cython") -> Sampler:
    """``impl="reference"`` runs the numpy twin instead of the compiled chain (tests)."""
    plan = build_plan(params, n_vocab, prompt_tokens, vocab, n_ctx)
    if impl == "cython":
        from ._chain import Chain
    elif impl == "reference":
        from ._reference import ReferenceChain as Chain
    else:
        raise ValueError(f"unknown sampler implementation {impl!r}")
    grammar = None
    if params.grammar and params.grammar_lazy:
        from .grammar import LazyGrammarConstraint
        grammar = LazyGrammarConstraint(vocab, params.grammar, list(params.grammar_trigger_patterns),
                                        list(params.grammar_trigger_tokens))
    elif params.grammar:
        from .grammar import GrammarConstraint
        grammar = GrammarConstraint(vocab, params.grammar)
    banned = frozenset(int(t) for t, v in zip(plan.bias_ids, plan.bias_values) if v == -np.inf)
    return Sampler(Chain(plan), grammar, banned)

"""Type stubs for the compiled sampler chain (sampling/_chain.pyx)."""
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Chain", "sample_rows"]

class Chain:
    """One request's sampler: the stages of a ``sampling.sampler.ChainPlan``, its RNG and
    its token history. Not thread-safe: one thread samples a given chain at a time."""

    n_vocab: int
    seed: int
    n_probs: int
    last_probs: list[tuple[int, float]] | None
    """The top ``n_probs`` (token, probability) of the set the last draw saw, or None."""
    last_prob: float
    """With ``n_probs``: the drawn token's probability in that set."""

    def __init__(self, plan: Any) -> None: ...
    def sample(self, logits: npt.NDArray[np.float32]) -> int:
        """Run the chain over one sequence's logits (float32, n_vocab, C-contiguous; only
        read, and only during the call) and draw a token."""
    def accept(self, token: int) -> None:
        """Record a token the engine kept (penalty/DRY history, mirostat's mu)."""
    @property
    def mirostat_mu(self) -> float: ...
    def apply(self, logits: npt.NDArray[np.float32]) -> tuple[
            npt.NDArray[np.int32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Run the stages without drawing; return the surviving (ids, logits, p)."""
    def candidates(self) -> tuple[
            npt.NDArray[np.int32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """The (ids, logits, p) the last draw saw; ValueError after a greedy pick."""


def sample_rows(chains: list[Chain], table: npt.NDArray[np.float32], rows: npt.NDArray[np.int32],
                out: npt.NDArray[np.int32]) -> None:
    """Draw one token for each chain from its row of ``table`` (float32, C-contiguous,
    (n_rows, n_vocab)): chains[i] from table[rows[i]], into out[i], with the GIL released
    once for all of them. Each chain at most once; chains with n_probs > 0 are refused."""

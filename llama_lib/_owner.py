"""The lifetime protocol every owner of a native handle shares."""
from __future__ import annotations

__all__ = ["Owner"]


class Owner:
    """Subclasses implement an idempotent ``close()``; ``with`` closes, and ``__del__`` is
    only a backstop for an owner nobody closed."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:   # interpreter shutdown: the library may already be gone
            pass

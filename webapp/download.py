"""Model download before the server starts: ``-mu URL`` and Hugging Face ``-hf``/``-hfr``/``-hff``.

``-mu URL`` streams the file with ``requests`` into ``<cache>/<last URL path segment>``, or to
the ``-m`` path when one is given, through ``<dest>.part``: an interrupted or truncated
download leaves only that ``.part`` file, which the next start resumes with an HTTP Range
request; the model file itself appears (atomic rename) only once complete and, when the URL
ends with ``#sha256=<hex>``, once its SHA-256 matches (a mismatch deletes the ``.part``). A
file already at the destination is used as is, without contacting the server (checked
against the ``#sha256=`` when given). The cache is ``$LLAMA_CACHE``, else
``$XDG_CACHE_HOME/llama.cpp``, else ``~/.cache/llama.cpp`` (llama.cpp's own rule on Linux).

``-hfr REPO -hff FILE`` (or ``-hf REPO[:QUANT]``, which picks the repository's GGUF file for
that quantization, ``Q4_K_M`` by default) goes through ``huggingface_hub.hf_hub_download``:
its cache (``$HF_HUB_CACHE``/``$HF_HOME``, ``~/.cache/huggingface/hub``), its resume logic,
its progress bars, ``$HF_ENDPOINT``; the token is ``-hft`` or ``$HF_TOKEN``. With ``-m`` the
file is then also copied to that path; a split model's parts are copied next to it under the
names libllama's split loader looks for (``split_names``), and the model path is the first.

Every failure is a ``DownloadError`` with a one-line message; ``webapp.cli`` prints it and
exits with status 1 before anything listens.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from urllib.parse import urlsplit

__all__ = ["DownloadError", "cache_dir", "resolve_model", "fetch_url", "fetch_hf", "split_names"]

_CHUNK = 1 << 20
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


class DownloadError(Exception):
    """A model could not be fetched; the message is one line for the user."""


def cache_dir() -> str:
    if os.environ.get("LLAMA_CACHE"):
        return os.environ["LLAMA_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "llama.cpp")


def resolve_model(settings) -> None:
    """Fetch the model the download flags name and point ``settings.model`` at it."""
    explicit = getattr(settings, "explicit", set())
    dest = settings.model if "model" in explicit else None
    if settings.model_url:
        settings.model = fetch_url(settings.model_url, dest)
    elif settings.hf or settings.hf_repo:
        repo = settings.hf or settings.hf_repo
        settings.model = fetch_hf(repo, settings.hf_file, settings.hf_token, dest)
    elif settings.hf_file:
        raise DownloadError("--hf-file needs --hf-repo")
    mmproj_url = getattr(settings, "mmproj_url", None)
    if mmproj_url and not getattr(settings, "no_mmproj", False):
        # -mmu: the projector, the same way (-mm with it: the path to save it as)
        mm_dest = settings.mmproj if "mmproj" in explicit else None
        settings.mmproj = fetch_url(mmproj_url, mm_dest, flag="--mmproj-url")


# --- plain URLs -------------------------------------------------------------------------
def fetch_url(url: str, dest: str | None = None, *, stream=None, flag: str = "--model-url") -> str:
    base, _, fragment = url.partition("#")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"{flag} must be an http(s) URL, not {url!r}")
    sha256 = _checksum(fragment)
    if dest is None:
        name = parts.path.rsplit("/", 1)[-1]
        if name in ("", ".", "..") or "\\" in name or name.startswith("."):
            raise DownloadError(f"cannot name the file from {base!r}; give the path to save it as with -m")
        dest = os.path.join(cache_dir(), name)
    if os.path.isfile(dest):
        if sha256 is None or _sha256(dest) == sha256:
            return dest
        raise DownloadError(f"{dest} exists but its SHA-256 is not {sha256}; remove it to download again")
    folder = os.path.dirname(os.path.abspath(dest))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {folder}: {exc.strerror}") from None
    _download(base, dest, sha256, stream or sys.stderr)
    return dest


def _checksum(fragment: str) -> str | None:
    if not fragment:
        return None
    m = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", fragment)
    if not m:
        raise DownloadError(f"unknown URL fragment #{fragment}: the only one understood is #sha256=<64 hex digits>")
    return m.group(1).lower()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: str, sha256: str | None, stream) -> None:
    import requests
    part = dest + ".part"
    offset = os.path.getsize(part) if os.path.isfile(part) else 0
    headers = {"User-Agent": "llama-server-py", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = requests.get(url, headers=headers, stream=True, timeout=(15, 60))
        if resp.status_code == 416 and offset:      # the .part is no prefix of this file: start over
            resp.close()
            os.remove(part)
            offset = 0
            del headers["Range"]
            resp = requests.get(url, headers=headers, stream=True, timeout=(15, 60))
        with resp:
            if resp.status_code not in (200, 206):
                raise DownloadError(f"download failed: HTTP {resp.status_code} {resp.reason} for {url}")
            if resp.status_code == 200:
                offset = 0                         # the server ignored the range: whole file
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            bar = _Progress(os.path.basename(dest), total, offset, stream)
            with open(part, "ab" if offset else "wb") as out:
                # small reads: a connection cut mid-read loses at most this much of the .part
                for chunk in resp.iter_content(64 * 1024):
                    out.write(chunk)
                    bar.update(len(chunk))
            bar.done()
    except requests.RequestException as exc:
        if os.path.isfile(part) and os.path.getsize(part) > 0:
            raise DownloadError(f"download of {url} interrupted ({type(exc).__name__}); "
                                f"start again to resume from {part}") from None
        if os.path.isfile(part):
            os.remove(part)
        raise DownloadError(f"cannot download {url}: {type(exc).__name__}") from None
    size = os.path.getsize(part)
    if total is not None and size != total:
        raise DownloadError(f"download of {url} is truncated ({size} of {total} bytes); "
                            f"start again to resume from {part}")
    if sha256 is not None:
        got = _sha256(part)
        if got != sha256:
            os.remove(part)
            raise DownloadError(f"SHA-256 mismatch for {url}: expected {sha256}, got {got}; the download was deleted")
    os.replace(part, dest)


class _Progress:
    """One line on stderr, redrawn at most ten times a second (each 10% when not a terminal)."""

    def __init__(self, name: str, total: int | None, done: int, stream):
        self.name, self.total, self.done_bytes, self.stream = name, total, done, stream
        self.start, self.last = time.monotonic(), 0.0
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_decile = -1

    def update(self, n: int) -> None:
        self.done_bytes += n
        now = time.monotonic()
        if self.tty and now - self.last >= 0.1:
            self.last = now
            self._write("\r")
        elif not self.tty and self.total:
            decile = self.done_bytes * 10 // self.total
            if decile != self.last_decile:
                self.last_decile = decile
                self._write("")

    def done(self) -> None:
        self._write("\r" if self.tty else "")

    def _write(self, lead: str) -> None:
        mb = self.done_bytes / 1e6
        rate = mb / max(1e-6, time.monotonic() - self.start)
        if self.total:
            text = f"{self.name}: {100 * self.done_bytes // self.total:3d}% {mb:.1f}/{self.total / 1e6:.1f} MB {rate:.1f} MB/s"
        else:
            text = f"{self.name}: {mb:.1f} MB {rate:.1f} MB/s"
        self.stream.write(lead + text + ("" if self.tty else "\n"))
        self.stream.flush()


# --- Hugging Face -------------------------------------------------------------------------
def fetch_hf(repo: str, filename: str | None, token: str | None, dest: str | None = None) -> str:
    repo, _, quant = repo.partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise DownloadError(f"a Hugging Face repository is OWNER/NAME, not {repo!r}")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DownloadError("downloading from Hugging Face needs the huggingface_hub package") from None
    if not filename:
        filename = _pick_gguf(repo, quant, token)
    names = [filename]
    m = _SPLIT.search(filename)
    if m:       # a split model: every part, libllama loads them from the first
        stem, count = filename[:m.start()], int(m.group(2))
        names = [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    try:
        paths = [hf_hub_download(repo_id=repo, filename=name, token=token or None) for name in names]
    except Exception as exc:    # huggingface_hub's errors are many; each becomes one line
        raise DownloadError(f"Hugging Face download of {repo}/{filename} failed: {_one_line(exc)}") from None
    if dest is None:
        return paths[0]
    targets = [dest] if len(paths) == 1 else split_names(dest, len(paths))
    target = dest
    try:
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        for src, target in zip(paths, targets):
            shutil.copyfile(src, target + ".part")
            os.replace(target + ".part", target)
    except OSError as exc:
        raise DownloadError(f"cannot write {target}: {exc.strerror}") from None
    return targets[0]


def split_names(dest: str, count: int) -> list[str]:
    """Where the parts of a split model go for ``-m DEST``: ``STEM-00001-of-0000N.gguf``, ...
    next to DEST (STEM: DEST without ``.gguf`` and without a split suffix of its own).

    libllama opens a split model from its first part and finds the others by rewriting that
    path's ``-00001-of-0000N.gguf`` tail (``llama_split_prefix`` / ``llama_split_path``): a
    first part saved under DEST's plain name would not load, and the parts must sit side by
    side. Deriving the names from DEST keeps the name the user chose (unlike the repository's
    own names) and makes them what the loader looks for; the model path is the first part.
    """
    stem = dest[:-len(".gguf")] if dest.lower().endswith(".gguf") else dest
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", stem)
    return [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def _pick_gguf(repo: str, quant: str, token: str | None) -> str:
    try:
        from huggingface_hub import HfApi
        files = [s.rfilename for s in HfApi().model_info(repo, token=token or None).siblings or []]
    except Exception as exc:
        raise DownloadError(f"cannot list the files of {repo}: {_one_line(exc)}") from None
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf") and "mmproj" not in f.lower())
    ggufs = [f for f in ggufs if not _SPLIT.search(f) or _SPLIT.search(f).group(1) == "00001"]
    wanted = (quant or "Q4_K_M").lower()
    matching = [f for f in ggufs if wanted in f.lower()]
    if matching:
        return matching[0]
    if ggufs and not quant:
        return ggufs[0]
    raise DownloadError(f"{repo} has no GGUF file" + (f" for {quant}" if quant else "")
                        + (f" (GGUF files: {', '.join(ggufs)})" if ggufs else ""))


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."

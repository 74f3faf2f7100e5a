"""Where a result came from: the software, the model's files and tokenizer, as plain data (torch-free).

:func:`environment` states the scopecheck version, its git revision when the package runs
from a checkout (``git rev-parse HEAD`` of the source tree; None when it is not a git work
tree or git is absent), and the python / torch / transformers / tokenizers versions (the
installed distributions' versions, ``importlib.metadata``; None for one not installed).
:func:`model_facts` states one loaded model's identity: where it was loaded from (a local
directory or ``.gguf`` file; None for a hub id), its revision (a hub model's commit, when
transformers knows it), the sha256 of every local weights file, the quantization, the
tokenizer's special tokens and the sha256 of its chat template (None when it has none).

A file is hashed once per ``(path, size, mtime)`` in a process (:func:`file_sha256`), so a
dataset run, which builds one result per example, reads the weights once; :func:`hash_calls`
counts the files actually read. The JSON results (:mod:`scopecheck.report.jsonout`) record
both; ``scopecheck compare`` (:mod:`scopecheck.report.compare`) reads them back.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from scopecheck.version import __version__

#: the files of a model directory that hold its weights
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt")
#: the tokenizer attributes recorded as its special tokens (those it sets)
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def sha256_text(text: str) -> str:
    """The sha256 (hex) of ``text``'s UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes, computed once per (path, size, mtime) in this process."""
    p = Path(path).resolve()
    st = p.stat()
    return _file_sha256(str(p), st.st_size, st.st_mtime_ns)


def hash_calls() -> int:
    """How many files this process has read to hash them (the cache's misses)."""
    return _file_sha256.cache_info().misses


def distribution_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``; None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def git_revision() -> str | None:
    """``git rev-parse HEAD`` of the folder this package's source lives in, when that folder is
    a git checkout of scopecheck (its ``version.py`` is tracked); None otherwise (an installed
    copy, git absent or failing)."""
    package = Path(__file__).resolve().parent.parent
    try:
        tracked = subprocess.run(["git", "-C", str(package), "ls-files", "--error-unmatch", "version.py"],
                                 capture_output=True, text=True, timeout=10, check=False)
        if tracked.returncode != 0:
            return None
        proc = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    rev = proc.stdout.strip()
    return rev if proc.returncode == 0 and rev else None


def environment() -> dict[str, Any]:
    """The software a run used: scopecheck (version, git revision), python and the libraries."""
    return {"scopecheck": __version__, "git_revision": git_revision(), "python": platform.python_version(),
            "torch": distribution_version("torch"), "transformers": distribution_version("transformers"),
            "tokenizers": distribution_version("tokenizers")}


def weight_files(location: str | Path) -> list[Path]:
    """The weights files of a local model (a directory's weights files, or the one file named),
    sorted by name; [] when ``location`` is not a local file or directory."""
    p = Path(location)
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in WEIGHT_SUFFIXES)
    return []


def special_tokens(tok: Any) -> dict[str, Any]:
    """The tokenizer's special tokens that are set (name -> text), and ``additional`` ones."""
    out: dict[str, Any] = {}
    for name in SPECIAL_TOKENS:
        try:
            value = getattr(tok, name, None)
        except Exception:  # noqa: BLE001 - some tokenizers raise for an unset token
            value = None
        if value is not None:
            out[name] = str(value)
    try:
        extra = list(getattr(tok, "additional_special_tokens", None) or [])
    except Exception:  # noqa: BLE001 - as above
        extra = []
    if extra:
        out["additional"] = [str(t) for t in extra]
    return out


def chat_template_sha256(tok: Any) -> str | None:
    """The sha256 of the tokenizer's chat template; named templates (a dict) are hashed as
    ``name\\ntemplate`` lines in name order; None when it has none."""
    template = getattr(tok, "chat_template", None)
    if isinstance(template, dict):
        template = "\n".join(f"{k}\n{template[k]}" for k in sorted(template))
    return sha256_text(template) if isinstance(template, str) and template else None


def _local(value: Any) -> str | None:
    if not value:
        return None
    p = Path(str(value)).expanduser()
    return str(p.resolve()) if p.exists() else None


def model_facts(lm: Any) -> dict[str, Any]:
    """The identity of a loaded model (a :class:`scopecheck.engine.models.LoadedModel`: its
    ``model``, ``tokenizer``, ``identity`` and ``quantization``), as plain data."""
    model = lm.model
    cfg = getattr(model, "config", None)
    # a path identity names the directory or .gguf file itself; a reference model's files are
    # where it was loaded from; a hub id has no local location
    location = _local(lm.identity) or (None if str(lm.identity).startswith("hub:") else
                                        _local(getattr(model, "name_or_path", None)
                                               or getattr(cfg, "_name_or_path", None)))
    revision = getattr(cfg, "_commit_hash", None)
    tok = lm.tokenizer
    return {
        "identity": lm.identity,
        "location": location,
        "revision": str(revision) if revision else None,
        "weights": [{"file": f.name, "bytes": f.stat().st_size, "sha256": file_sha256(f)}
                    for f in (weight_files(location) if location else [])],
        "quantization": getattr(lm, "quantization", None),
        "tokenizer": {"class": type(tok).__name__, "special_tokens": special_tokens(tok),
                      "chat_template_sha256": chat_template_sha256(tok)},
    }


__all__ = ["SPECIAL_TOKENS", "WEIGHT_SUFFIXES", "chat_template_sha256", "distribution_version", "environment",
           "file_sha256", "git_revision", "hash_calls", "model_facts", "sha256_text", "special_tokens",
           "weight_files"]

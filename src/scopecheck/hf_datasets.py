"""The rows of ``dataset hf("name_or_path", split = "...", config = "...")``, read through the
Hugging Face ``datasets`` library (the optional extra ``scopecheck[hf]``, imported only here and
only when such a dataset is read; ``import scopecheck`` never imports it).

What the name is, in this order:

* a local path (relative to the contract file; the folder rule of every dataset file holds, and
  ``--allow-outside-data`` lifts it): a folder written by ``save_to_disk`` (``load_from_disk``:
  a ``Dataset``, or a ``DatasetDict`` whose ``split`` is chosen), or a ``.parquet`` / ``.arrow``
  / ``.json`` / ``.jsonl`` / ``.csv`` file (``load_dataset(<format>, data_files=...)``; its one
  split is ``train``). A name that exists next to the contract, or that is spelled as a path
  (``./``, ``../``, ``/``, ``~``, a file suffix), is local.
* otherwise a hub id (``owner/name`` or ``name``), read with ``load_dataset(name, config,
  split=split)`` where a hub is reachable. Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``
  set, or the endpoint not answering a 3-second connection attempt) it is refused with an error on
  the ``dataset`` statement before the library is asked, so that no network timeout is waited out.

The rows are plain Python dicts (``Dataset.to_list()``) that :func:`scopecheck.datasets.load_examples`
maps to examples with the same field and row-error rules as JSON Lines rows. The fingerprint is a
sha256 of the rows read (canonical JSON), so that editing the data, or naming another split or
configuration, gives another store key. No remote code is ever run (``datasets`` 5 has no loading
scripts, and nothing here passes ``trust_remote_code``). Torch-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from scopecheck.errors import ContractError, ContractValidationError
from scopecheck.spec import model as m

INSTALL = "pip install 'scopecheck[hf]'"
#: local data files by suffix -> the ``datasets`` packaged builder that reads them
FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}
#: a hub dataset id: ``name`` or ``owner/name``
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?")
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
PROBE_TIMEOUT_S = 3.0


def _library(ds: m.Dataset) -> Any:
    try:
        import datasets
    except ImportError:
        raise ContractError(f"dataset hf({ds.name!r}) is read by the Hugging Face `datasets` library, which is "
                            "not installed", ds.span, expected="the scopecheck[hf] extra installed", hint=INSTALL,
                            rule="dataset") from None
    return datasets


def _err(ds: m.Dataset, message: str, expected: str | None = None, hint: str | None = None) -> ContractValidationError:
    return ContractValidationError(message, ds.span, expected=expected, hint=hint, rule="dataset")


def _param(ds: m.Dataset, key: str) -> str | None:
    v = next((p.value for p in ds.params if p.key == key), None)
    return None if v is None else str(m.py_value(v))


def is_local(ds: m.Dataset, base_dir: Path | None) -> bool:
    """A local path (see the module doc), else a hub id."""
    name = ds.name
    if name.startswith((".", "/", "~")) or Path(name).suffix.lower() in FORMATS or not HUB_ID.fullmatch(name):
        return True
    full = (base_dir or Path(".")).resolve() / name
    return full.exists() or full.is_symlink()


#: The contract-folder rule for a path a contract names (``scopecheck.datasets.inside``, which
#: the caller passes in: the data layer's dataset reader imports this module, not the reverse).
Resolve = Callable[[m.Dataset, "Path | None", bool], Path]


def _local(ds: m.Dataset, base_dir: Path | None, allow_outside: bool, resolve: Resolve) -> Path:
    """The local dataset folder or file, under the folder rule: the path itself and, for a folder,
    every file in it (a symlink inside may not lead out of the contract's folder)."""
    full = resolve(ds, base_dir, allow_outside)
    if not full.exists():
        raise _err(ds, f"dataset {str(full)!r} does not exist",
                   expected="a dataset folder (save_to_disk) or a .parquet / .arrow / .json / .jsonl / .csv file")
    if full.is_dir() and not allow_outside:
        base = (base_dir or Path(".")).resolve()
        for f in full.rglob("*"):
            r = f.resolve()
            if base not in r.parents:
                raise _err(ds, f"dataset folder {str(full)!r} links outside the contract's folder ({f} -> {r})",
                           expected=f"files inside {str(base)!r}",
                           hint="copy the data in; a run may lift the rule with --allow-outside-data")
    return full


def hub_unreachable() -> str | None:
    """Why the hub cannot be asked now (offline mode set, or its endpoint not answering a short
    connection attempt), or None when it answers."""
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    u = urlsplit(endpoint)
    host, port = u.hostname, u.port or (80 if u.scheme == "http" else 443)
    if not host:
        return f"HF_ENDPOINT {endpoint!r} names no host"
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{host}:{port} cannot be reached ({exc.strerror or exc})"


@contextlib.contextmanager
def _quiet(lib: Any) -> Iterator[None]:
    """No progress bars while reading (the run has its own)."""
    was = lib.are_progress_bars_disabled()
    lib.disable_progress_bars()
    try:
        yield
    finally:
        if not was:
            lib.enable_progress_bars()


def _one_split(ds: m.Dataset, got: Any, split: str | None, what: str) -> Any:
    """The ``Dataset`` named by ``split`` from what the library returned (a ``Dataset`` or a
    ``DatasetDict``)."""
    if hasattr(got, "keys") and not hasattr(got, "features"):           # a DatasetDict
        names = list(got.keys())
        if split is None:
            if len(names) == 1:
                return got[names[0]]
            raise _err(ds, f"{what} has {len(names)} splits; name one", expected=", ".join(
                f'split = "{n}"' for n in names))
        if split not in names:
            raise _err(ds, f"{what} has no split {split!r}", expected=", ".join(f'split = "{n}"' for n in names))
        return got[split]
    if split is not None and getattr(got, "split", None) not in (None, split):
        raise _err(ds, f"{what} is the {got.split!r} split, not {split!r}", expected=f'split = "{got.split}"')
    if split is not None and getattr(got, "split", None) is None:
        raise _err(ds, f"{what} holds one dataset, without splits", expected="no `split` parameter",
                   hint="a folder written by DatasetDict.save_to_disk has splits")
    return got


def _read(ds: m.Dataset, base_dir: Path | None, allow_outside: bool, resolve: Resolve) -> tuple[Any, str]:
    lib = _library(ds)
    split, config = _param(ds, "split"), _param(ds, "config")
    if is_local(ds, base_dir):
        path = _local(ds, base_dir, allow_outside, resolve)
        if config is not None:
            raise _err(ds, "`config` names a configuration of a hub dataset; a local dataset has none",
                       expected="no `config` parameter")
        if path.is_dir():
            try:
                with _quiet(lib):
                    got = lib.load_from_disk(str(path), keep_in_memory=True)
            except FileNotFoundError:
                raise _err(ds, f"{str(path)!r} is not a dataset folder",
                           expected="a folder written by Dataset.save_to_disk or DatasetDict.save_to_disk "
                                    "(it has state.json or dataset_dict.json)") from None
            return _one_split(ds, got, split, f"dataset folder {path.name!r}"), str(path)
        builder = FORMATS.get(path.suffix.lower())
        if builder is None:
            raise _err(ds, f"{path.name!r} is not a format the datasets library reads here",
                       expected="a dataset folder or a " + " / ".join(FORMATS) + " file")
        if split not in (None, "train"):
            raise _err(ds, f"a data file has one split, `train`, not {split!r}", expected='split = "train", or none')
        try:
            with _quiet(lib), tempfile.TemporaryDirectory(prefix="scopecheck-hf-") as cache:
                got = lib.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                       keep_in_memory=True)
        except Exception as exc:  # noqa: BLE001 - the library's reason (pyarrow, json), on the statement
            first = (str(exc).strip().splitlines() or [""])[0]
            raise _err(ds, f"the datasets library cannot read {path.name!r} as {builder}: {type(exc).__name__}"
                           + (f": {first}" if first else ""), expected=f"a valid {builder} file") from None
        return got, str(path)
    why = hub_unreachable()
    if why is not None:
        raise _err(ds, f"dataset hf({ds.name!r}) is a hub id (no file or folder of that name is next to the "
                       f"contract) and the hub cannot be reached: {why}",
                   expected="a local dataset folder or file next to the contract, or a reachable hub",
                   hint="where a hub is reachable, save the split once (load_dataset(...).save_to_disk(\"data/x\")) "
                        "and name the folder: dataset hf(\"data/x\")")
    try:
        with _quiet(lib):
            got = lib.load_dataset(ds.name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - the hub's or library's reason, on the statement
        raise _err(ds, f"the datasets library cannot load {ds.name!r}"
                       + (f" ({config})" if config else "") + f": {type(exc).__name__}: {exc}",
                   expected="a hub dataset id, with its config and split") from None
    return _one_split(ds, got, split, f"hub dataset {ds.name!r}"), f"hf:{ds.name}" + (f"/{config}" if config else "")


def _canonical(v: Any) -> Any:
    """A JSON stand-in for a value JSON cannot hold (bytes, arrays, images): its bytes' hash."""
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": hashlib.sha256(v).hexdigest()}
    tob = getattr(v, "tobytes", None)
    if callable(tob):
        return {type(v).__name__: hashlib.sha256(tob()).hexdigest()}
    return {type(v).__name__: str(v)}


def read_rows(ds: m.Dataset, base_dir: Path | None, *, resolve: Resolve, allow_outside: bool = False
              ) -> tuple[list[tuple[int, Any]], str, str]:
    """``(rows, fingerprint, source)``: the rows as ``(1-based row number, dict)``, a sha256 of
    the rows read, and where they came from (the local path or ``hf:<id>[/<config>]``). ``resolve``
    applies the contract-folder rule to a local path."""
    got, source = _read(ds, base_dir, allow_outside, resolve)
    rows = got.to_list()
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False, default=_canonical).encode("utf-8"))
        h.update(b"\n")
    return list(enumerate(rows, 1)), h.hexdigest(), source


__all__ = ["FORMATS", "HUB_ID", "INSTALL", "hub_unreachable", "is_local", "read_rows"]

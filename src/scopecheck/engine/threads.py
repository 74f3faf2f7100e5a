"""How many CPU threads torch's intra-op pool uses while scopecheck runs a model.

Checks run thousands of small forwards. On a tiny model each forward is a few small matrix
products, and fanning every one out to all cores and waiting for the slowest costs more than it
saves; beside other CPU-bound processes (a CI runner, a compiler) every such barrier waits for a
descheduled thread. Measured on the main job (2 cores, issue 29): 34-45 s quiet with torch's
default against 40 s single-threaded, and beside two CPU-bound processes 277 s against 79 s.

Policies (``SCOPECHECK_THREADS`` in the environment, ``--threads`` on the command line,
``--scope-threads`` in pytest):

* ``torch`` (the library default, ``scopecheck.run`` in your own process): torch's settings are
  left as they are.
* ``auto`` (the command line's and the pytest plugin's default): a model under
  :data:`SMALL_MODEL` parameters runs single-threaded, a larger one with torch's default pool;
  an ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` you set is respected (nothing is changed).
* ``N`` (a positive integer): exactly N threads.
"""

from __future__ import annotations

import os

from scopecheck.errors import ContractError

#: below this many parameters a model's forwards are too small to gain from intra-op threads
SMALL_MODEL = 10_000_000
POLICIES = ("torch", "auto")

_policy = "torch"
_default: int | None = None          # torch's own thread count before scopecheck first changed it


def parse_policy(value: str) -> str:
    """``torch``, ``auto`` or a positive integer (as text); anything else is a usage error."""
    v = value.strip().lower()
    if v in POLICIES or (v.isdigit() and int(v) > 0):
        return v
    raise ContractError(f"unknown thread policy {value!r}", rule="threads",
                        expected="torch, auto or a positive number of threads",
                        hint="SCOPECHECK_THREADS=auto (the command line's default) or e.g. SCOPECHECK_THREADS=2")


def set_policy(value: str) -> None:
    """Set the process's policy (the command line and the pytest plugin call this at start)."""
    global _policy
    _policy = parse_policy(value)


def policy() -> str:
    return _policy


def chosen(n_params: int, policy_: str | None = None) -> int | None:
    """The thread count the policy chooses for a model of ``n_params``; ``None``: leave torch as is."""
    p = _policy if policy_ is None else policy_
    if p == "torch":
        return None
    if p.isdigit():
        return int(p)
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None                   # the user chose
    return 1 if n_params < SMALL_MODEL else _default


def on_model(model: object) -> None:
    """Apply the policy for ``model`` (called whenever a contract's model is handed out)."""
    global _default
    import torch

    if _policy == "torch":
        return
    if _default is None:
        _default = torch.get_num_threads()
    params = getattr(model, "parameters", None)
    n = sum(p.numel() for p in params()) if callable(params) else 0
    want = chosen(n)
    if want is not None and want != torch.get_num_threads():
        torch.set_num_threads(want)


__all__ = ["POLICIES", "SMALL_MODEL", "chosen", "on_model", "parse_policy", "policy", "set_policy"]

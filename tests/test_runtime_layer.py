"""The runtime layer (progress, devices' memory, memory-aware batching) sits below the engine
and the checks: it imports nothing of theirs, its progress module is torch-free (the CLI and the
matrix import it), and what moved there out of ``engine/methods/_common.py`` and out of
``checks/faithfulness.py`` into its own modules is defined in one module only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import scopecheck

PACKAGE = Path(scopecheck.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    """Every ``scopecheck`` module ``path`` imports, at module level or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "scopecheck":
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "scopecheck"}
    return out


def _top_level_defs(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    for n in tree.body:
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_runtime_imports_only_errors_and_itself():
    """The runtime layer sits just above errors (and ``version``, the package's own version,
    which provenance records): it imports nothing else of the package."""
    files = sorted((PACKAGE / "runtime").glob("*.py"))
    assert {f.stem for f in files} >= {"__init__", "progress", "devices", "batching"}
    for f in files:
        bad = {m for m in _imports(f) if m not in ("scopecheck.errors", "scopecheck.version") and not m.startswith("scopecheck.runtime")}
        assert bad == set(), (f.name, bad)


def test_progress_imports_no_torch():
    code = ("import sys; import scopecheck.runtime.progress; "
            "print(sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_each_moved_name_has_one_home():
    homes = {
        "runtime/progress.py": {"Progress", "phase", "current_phase", "progress_enabled", "PROGRESS_ENV",
                                "LOG_INTERVAL"},
        "runtime/devices.py": {"free_memory", "is_out_of_memory", "release_memory", "vmapped_backward",
                               "VMAPPED_BACKWARD", "CPU_LOOP_MIN_TOKENS"},
        "runtime/batching.py": {"map_batches", "batches", "auto_batch", "row_bytes", "learned_rows",
                                "forget_learned_batches", "BatchSizeError", "INTERNAL_BATCH", "CPU_MEMORY_SHARE"},
        "checks/params.py": {"plain", "as_int", "as_float", "k_count"},
        "checks/rowcache.py": {"SCORE_CACHE", "score_cache", "clear_score_cache", "mask_keys", "Work", "counting"},
        "checks/context.py": {"Ctx", "setup", "protocol_of", "map_order", "DEFAULT_BATCH"},
        "checks/curves.py": {"grid", "trapezoid", "aopc_bounds", "shared_bounds", "bound_rows", "beam_slots",
                             "EXHAUSTIVE_MAX", "BEAM_WIDTH"},
        "checks/plan.py": {"PLANNED", "planned_drops", "Plan", "plan", "score_plan", "prefetch"},
    }
    defs = {str(p.relative_to(PACKAGE)): _top_level_defs(p) for p in PACKAGE.rglob("*.py")}
    for home, names in homes.items():
        assert names <= defs[home], (home, names - defs[home])
        elsewhere = {(n, f) for f, d in defs.items() if f != home for n in names & d}
        assert elsewhere == set(), elsewhere

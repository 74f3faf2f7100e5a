"""Look at a rendered report the way a reader does: headless Chromium screenshots and DOM dumps.

``screenshot(html, png)`` renders ``html`` with Debian's ``chromium`` (headless, no
sandbox, no network services, a fresh profile in a temporary directory) and writes the
PNG atomically; :func:`is_blank` / :func:`assert_not_blank` check that the picture has
content (pixel variance above a threshold); :func:`dump_dom` returns the DOM after
rendering, to check that the token texts really appear in the page.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1200, 1600)
BLANK_VARIANCE = 1e-4   # grayscale variance in [0, 1] units; a blank page is ~0


class BrowserError(RuntimeError):
    """Chromium is missing, failed, or produced no output."""


def find_chromium() -> str | None:
    """The chromium executable, or None if none is installed (``SCOPECHECK_CHROMIUM`` overrides)."""
    env = os.environ.get("SCOPECHECK_CHROMIUM")
    for name in ((env,) if env else ()) + CANDIDATES:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _args(exe: str, profile: str, extra: list[str], window: tuple[int, int]) -> list[str]:
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--mute-audio", f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}", *extra]


def _run(extra: list[str], html_path: Path, timeout: float, window: tuple[int, int]) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise BrowserError("chromium is not installed (apt-get install -y chromium)")
    if not html_path.is_file():
        raise BrowserError(f"no such file: {html_path}")
    profile = tempfile.mkdtemp(prefix="scopecheck-chromium-")
    try:
        cmd = _args(exe, profile, extra, window) + [html_path.resolve().as_uri()]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={**os.environ, "HOME": profile})
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # our own process group only
            except ProcessLookupError:
                pass
            proc.communicate()
            raise BrowserError(f"chromium did not finish within {timeout:.0f} s") from None
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(html_path: str | os.PathLike[str], png_path: str | os.PathLike[str], *,
               window: tuple[int, int] = WINDOW, timeout: float = 90.0) -> Path:
    """Render ``html_path`` in headless chromium and write a PNG of the first ``window`` pixels.

    The PNG is first written in a temporary directory and moved into place, so
    ``png_path`` is either complete or untouched."""
    html_path, png_path = Path(html_path), Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".shot-", dir=png_path.parent) as tmp:
        shot = Path(tmp) / "shot.png"
        proc = _run([f"--screenshot={shot}"], html_path, timeout, window)
        if not shot.is_file() or shot.stat().st_size == 0:
            tail = (proc.stderr or "").strip().splitlines()[-5:]
            raise BrowserError(f"chromium wrote no screenshot (exit {proc.returncode}): " + " | ".join(tail))
        os.replace(shot, png_path)
    return png_path


def dump_dom(html_path: str | os.PathLike[str], *, timeout: float = 90.0) -> str:
    """The serialized DOM of the page after chromium rendered it."""
    proc = _run(["--dump-dom"], Path(html_path), timeout, WINDOW)
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        raise BrowserError(f"chromium --dump-dom failed (exit {proc.returncode}): " + " | ".join(tail))
    return proc.stdout


def pixel_variance(png_path: str | os.PathLike[str]) -> float:
    """Variance of the grayscale pixel values (0..1) of a PNG."""
    import matplotlib.image as mpimg
    import numpy as np

    img = np.asarray(mpimg.imread(str(png_path)), dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    if img.max() > 1.0:  # 8-bit data read without scaling
        img = img / 255.0
    return float(img.var())


def is_blank(png_path: str | os.PathLike[str], threshold: float = BLANK_VARIANCE) -> bool:
    return pixel_variance(png_path) <= threshold


def assert_not_blank(png_path: str | os.PathLike[str], threshold: float = BLANK_VARIANCE) -> float:
    """Raise AssertionError if the PNG is (nearly) one flat color; returns the variance."""
    v = pixel_variance(png_path)
    if v <= threshold:
        raise AssertionError(f"{png_path} looks blank: pixel variance {v:.3g} <= {threshold:g}")
    return v

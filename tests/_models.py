"""Where the tests find the shared offline checkpoints (``../shared/models`` beside the checkout),
and the skip marker for tests that need one: a checkout without them skips those tests, naming
the path, instead of failing with a model error."""

from __future__ import annotations

from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
STORIES = MODELS / "stories260k"

needs_stories = pytest.mark.skipif(not (STORIES / "config.json").exists(),
                                   reason=f"the shared stories260k checkpoint is not at {STORIES}")

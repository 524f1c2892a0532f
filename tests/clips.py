"""Where the shared recorded clips are, and a skip marker for tests that need them."""

import json
from pathlib import Path
from typing import Any

import pytest

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "clips"

needs_clips = pytest.mark.skipif(
    not (CLIPS / "walking-by.h264").is_file(),
    reason=f"the recorded clips are not at {CLIPS} (CI checks ../shared out beside the repository)",
)


def labels(name: str) -> dict[str, Any]:
    """The JSON labels of a clip."""
    result: dict[str, Any] = json.loads((CLIPS / f"{name}.json").read_text())
    return result

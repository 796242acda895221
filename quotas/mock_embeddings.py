"""The mock provider's embeddings: deterministic unit vectors, one per input."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
from typing import Any

DIMENSIONS = 1536


def vector(item: str | list[int], dimensions: int) -> list[float]:
    """A unit vector that depends on the input alone."""
    seed = hashlib.sha256(json.dumps(item).encode()).digest()
    draw = random.Random(seed)
    values = [draw.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 7) for v in values]


def embeddings_answer(
    body: dict[str, Any], items: list[str | list[int]], tokens: int
) -> dict[str, Any]:
    dimensions = body.get("dimensions") or DIMENSIONS
    data = []
    for index, item in enumerate(items):
        values = vector(item, dimensions)
        embedding: Any = values
        if body.get("encoding_format") == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }

"""A name's traffic split as predict uses it: the versions it routes to, and the draw.

A request with a route key (``X-Fitserve-Route-Key``: a user id, say) lands in the bucket
its hash picks, so the same key meets the same version for as long as the split stands;
one without is drawn at random. Buckets are whole percents, as the weights are. The hash
is salted with the name, so a user in one model's 10 % is not in every model's 10 %.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate

ROUTE_KEY_HEADER = "x-fitserve-route-key"
VERSION_HEADER = "X-Fitserve-Model-Version"


def route_bucket(name: str, key: str) -> int:
    """The bucket (0 to 99) a route key falls in for a name: the same for the same key."""
    digest = hashlib.blake2b(f"{name}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


@dataclass(frozen=True)
class TrafficSplit:
    """Model ids with their whole-percent weights (summing to 100), in the split's order."""

    name: str
    model_ids: tuple[str, ...]
    weights: tuple[int, ...]
    _bounds: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_bounds", tuple(accumulate(self.weights)))

    def pick(self, route_key: str | None = None) -> str:
        """The model id that answers: by the key's bucket, or at random without one."""
        bucket = (random.randrange(100) if route_key is None
                  else route_bucket(self.name, route_key))
        return self.model_ids[bisect_right(self._bounds, bucket)]

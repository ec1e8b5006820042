"""Commands the command API accepts, imperative and validated at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID


@dataclass(frozen=True, slots=True)
class RegisterAudio:
    """Register an audio object already stored under the caller's S3 prefix."""

    user_id: UUID
    s3_key: str
    metadata: dict[str, str] = field(default_factory=dict)

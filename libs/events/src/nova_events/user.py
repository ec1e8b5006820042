"""Events of the `User` aggregate: what happens to a user as a whole.

A user's stream is keyed `User#<user id>` in the event store and by the user
id on Kafka, so it is ordered on its own, apart from the user's audios.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import AwareDatetime

from .audio import EventPayload

USER = "User"


class UserErased(EventPayload):
    """The user's personal data was shredded: their data key was destroyed at
    `erased_at` and their audio objects deleted.

    Every personal field of every event of theirs, stored or published, now
    opens to an erased value; projections drop what they kept of the user.
    """

    user_id: UUID
    erased_at: AwareDatetime


USER_EVENTS: tuple[type[EventPayload], ...] = (UserErased,)

"""Who is asking: a rep or a supervisor, signed in to the console or using their API token."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    rep_id: int
    name: str
    supervisor: bool

    def may_act_for(self, rep_id: int | None) -> bool:
        """A rep acts on their own calls and tasks; a supervisor on everyone's."""
        return self.supervisor or rep_id == self.rep_id

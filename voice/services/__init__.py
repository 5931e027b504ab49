"""Use cases: one unit of work each (calls, dispatch, queue, presence, housekeeping, hand-offs)."""

"""Two use cases locking the same rows in opposite orders: PostgreSQL rolls one back to break the deadlock, and
``again_after_deadlock`` runs that one again, so both changes are kept."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from crm_sync.db import Store, again_after_deadlock, is_deadlock
from crm_sync.queries.reps import upsert_rep

pytestmark = pytest.mark.postgres


def test_the_transaction_postgresql_rolls_back_in_a_deadlock_runs_again_and_both_are_kept(
    postgres_database: str,
) -> None:
    store = Store(postgres_database)
    try:
        with store.unit_of_work() as session:
            for name, phone in (("Deadlock A", "+15557770001"), ("Deadlock B", "+15557770002")):
                upsert_rep(session, name=name, phone_e164=phone, departments=["billing"], languages=["en"])
        both_hold_their_first_lock = threading.Barrier(2, timeout=10)
        tries: dict[str, int] = {"forward": 0, "backward": 0}
        victims: list[BaseException] = []
        failures: list[BaseException] = []  # anything else a use case raised, shown if the assertions below fail

        def lock_in_order(label: str, first: str, second: str) -> None:
            tries[label] += 1
            with store.unit_of_work() as session:
                session.execute(text("SELECT id FROM reps WHERE name = :n FOR UPDATE"), {"n": first})
                if tries[label] == 1:  # only the first attempts meet: a retry runs after the other has committed
                    both_hold_their_first_lock.wait()
                session.execute(text("SELECT id FROM reps WHERE name = :n FOR UPDATE"), {"n": second})
                session.execute(text("UPDATE reps SET phone = :s WHERE name = :n"), {"s": label, "n": second})

        def use_case(label: str, first: str, second: str) -> None:
            def attempt() -> None:
                try:
                    lock_in_order(label, first, second)
                except BaseException as error:
                    (victims if is_deadlock(error) else failures).append(error)
                    raise

            again_after_deadlock(attempt)

        threads = [
            threading.Thread(target=use_case, args=("forward", "Deadlock A", "Deadlock B")),
            threading.Thread(target=use_case, args=("backward", "Deadlock B", "Deadlock A")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(victims) == 1, f"PostgreSQL broke exactly one deadlock; other failures: {failures!r}"
        assert sorted(tries.values()) == [1, 2], f"the victim ran again, once ({tries}); other failures: {failures!r}"
        with store.unit_of_work(read_only=True) as session:
            phones: dict[str, str] = dict(
                session.execute(text("SELECT name, phone FROM reps WHERE name LIKE 'Deadlock %'")).all()
            )
        assert phones == {"Deadlock A": "backward", "Deadlock B": "forward"}, "both use cases' changes were kept"
    finally:
        store.dispose()

"""The ledger's vocabulary as pure values (adapter.core.records): one merge rule for every
path that folds a person into a waiting row, and who is told an outcome.

The same ``merge_into`` serves a submission merged into its person's waiting delivery
(single and bulk accept) and an older row folded into a newer one (a taken-over lease, a
release that finds a newer row); these tests pin what each keeps.
"""

from __future__ import annotations

from typing import Any

from adapter.core.contact import Contact
from adapter.core.records import Submission, carried_over, merge_into, new_row
from adapter.delivery.notify import plan

NOW = 1_800_000_000.0


def waiting(**changes: Any) -> dict[str, Any]:
    row = new_row(
        Submission(source="api", fields={}, callback={"to": "first"}),
        "d1",
        "pending",
        {"name": "Chris Doe", "email": "chris@example.com", "phone": None, "custom_fields": {}},
        "tok",
        NOW,
    )
    row.update(changes)
    return row


def test_a_newer_submission_wins_and_its_callback_is_added_once() -> None:
    newer = Contact(name="Christopher Doe", phone="+14155552671")
    merged, values = merge_into(
        waiting(),
        newer,
        callbacks=[{"to": "second"}, {"to": "first"}],
        contact_manager="agent.smith",
        warnings={"email": "looks odd"},
    )
    assert merged.name == "Christopher Doe"  # the newer name wins
    assert merged.email == "chris@example.com" and merged.phone == "+14155552671"  # gaps filled
    assert values["fields"] == merged.as_dict()
    assert values["email_key"] == "chris@example.com" and values["phone_key"] == "+14155552671"
    assert values["extra_callbacks"] == [{"to": "second"}]  # "first" is there already
    assert values["contact_manager"] == "agent.smith"
    assert values["warnings"] == {"email": "looks odd"}


def test_an_older_row_folded_into_a_newer_one_only_fills_its_gaps() -> None:
    older = Contact(name="C. Doe", email="old@example.com", phone="+14155552671")
    held = waiting(contact_manager="agent.jones", contact_id=None)
    merged, values = merge_into(
        held,
        older,
        callbacks=[{"to": "older"}],
        contact_manager="agent.smith",
        contact_id="rc-contact-1",
        newer_wins=False,
    )
    assert merged.name == "Chris Doe" and merged.email == "chris@example.com"  # newer kept
    assert merged.phone == "+14155552671"  # the gap it had is filled
    assert "contact_manager" not in values  # the newer row's manager stays
    assert values["contact_id"] == "rc-contact-1"  # it had none: the older one's carries over
    assert values["extra_callbacks"] == [{"to": "older"}]


def test_a_caller_waiting_alone_is_told_in_its_answer() -> None:
    own = {"to": "caller"}
    told = plan([own], own, caller_waiting=True)
    assert told.told_here and told.others == []
    other = {"to": "merged-in"}
    told = plan([own, other], own, caller_waiting=True)
    assert not told.told_here and told.others == [other]
    assert plan([], None, caller_waiting=False).told_here  # nobody to tell
    assert not plan([own], None, caller_waiting=False).told_here  # the notifier tells it


def test_a_new_delivery_carries_over_what_the_persons_last_one_held() -> None:
    previous = waiting(contact_id="rc-7", contact_manager="agent.jones", status="delivered")
    merged, carried = carried_over(previous, Contact(name="Chris D.", phone="+14155552671"), None)
    assert merged.name == "Chris D." and merged.email == "chris@example.com"
    assert carried["fields"] == merged.as_dict() and carried["phone_key"] == "+14155552671"
    assert carried["contact_id"] == "rc-7" and carried["contact_manager"] == "agent.jones"
    _, named = carried_over(previous, Contact(name="Chris D."), "agent.smith")
    assert named["contact_manager"] == "agent.smith"  # the submission's own manager wins
    first, nothing = carried_over(None, Contact(name="Ann"), "agent.smith")
    assert first.name == "Ann"
    assert nothing == {"contact_id": None, "contact_manager": "agent.smith"}

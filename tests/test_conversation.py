"""The messenger conversation as pure logic: what is asked next, in which language, when
it expires (the clock is a number passed in)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapter.core.conversation import (
    Conversation,
    ConversationRules,
    Incoming,
    advance,
    language_of,
    language_of_phone,
)
from adapter.core.conversation_text import LANGUAGES, MESSAGES

RULES = ConversationRules(ttl=600, contact_button=True)
T0 = 1_795_514_400.0


def keys(step: object) -> list[str]:
    return [r.key for r in step.replies]  # type: ignore[attr-defined]


def test_every_message_is_translated_into_every_language() -> None:
    for language in LANGUAGES:
        assert set(MESSAGES[language]) == set(MESSAGES["en"]), language
        for key, text in MESSAGES[language].items():
            assert (text.strip() and text != MESSAGES["en"][key]) or language == "en", key


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("pt-BR", "pt"), ("ru", "ru"), ("de_AT", "de"), ("zh-hans", "en"), (None, "en")],
)
def test_language_of(tag: str | None, expected: str) -> None:
    assert language_of(tag) == expected


def test_language_of_phone() -> None:
    assert [language_of_phone(n) for n in ("34612345678", "+5511912345678", "4915123456789")] == [
        "es",
        "pt",
        "de",
    ]
    assert language_of_phone("14155552671") == "en" and language_of_phone("") == "en"


def test_one_question_at_a_time_until_complete() -> None:
    hello = Incoming(chat_id="1", language="en", command="start", known={"name": "Chris Doe"})
    step = advance(None, hello, channel="telegram", now=T0, rules=RULES)
    assert keys(step) == ["welcome", "ask_phone_button"] and step.complete is None
    assert step.conversation is not None and step.conversation.expires_at == T0 + 600
    shared = Incoming(chat_id="1", shared={"phone": "14155552671", "name": "C D"})
    step = advance(step.conversation, shared, channel="telegram", now=T0 + 5, rules=RULES)
    assert keys(step) == ["ask_email"]
    assert step.conversation is not None
    assert step.conversation.fields == {"name": "Chris Doe", "phone": "+14155552671"}
    typed = Incoming(chat_id="1", text="chris@example.com")
    step = advance(step.conversation, typed, channel="telegram", now=T0 + 9, rules=RULES)
    assert step.conversation is None  # deleted: registered
    assert step.complete == {
        "name": "Chris Doe",
        "phone": "+14155552671",
        "email": "chris@example.com",
    }
    assert step.replies[-1].text("de") == "Danke, Chris Doe! Wir registrieren Ihre Daten."


def test_the_name_is_asked_when_unknown_and_free_text_is_not_taken_as_one_otherwise() -> None:
    rules = ConversationRules(ttl=60)
    step = advance(None, Incoming(chat_id="2", text="hi"), channel="whatsapp", now=T0, rules=rules)
    assert keys(step) == ["welcome", "ask_name"]
    step = advance(
        step.conversation,
        Incoming(chat_id="2", text="Ana Souza"),
        channel="whatsapp",
        now=T0 + 1,
        rules=rules,
    )
    assert keys(step) == ["ask_phone"]
    assert step.conversation is not None and step.conversation.fields["name"] == "Ana Souza"
    step = advance(
        step.conversation,
        Incoming(chat_id="2", text="I am not sure"),
        channel="whatsapp",
        now=T0 + 2,
        rules=rules,
    )
    assert keys(step) == ["not_understood", "ask_phone"]
    assert step.conversation is not None and step.conversation.fields["name"] == "Ana Souza"


def test_an_expired_conversation_is_forgotten() -> None:
    kept = Conversation(
        channel="telegram",
        chat_id="1",
        language="fr",
        fields={"name": "Chris Doe", "phone": "+14155552671"},
        asking="email",
        started_at=T0,
        updated_at=T0,
        expires_at=T0 + 600,
    )
    later = Incoming(chat_id="1", text="chris@example.com")
    assert advance(kept, later, channel="telegram", now=T0 + 599, rules=RULES).complete
    step = advance(kept, later, channel="telegram", now=T0 + 600, rules=RULES)
    assert step.complete is None and keys(step) == ["welcome", "ask_name"]
    assert step.language == "en"  # the old conversation's language went with it


def test_relaxed_required_fields_ask_less() -> None:
    rules = ConversationRules(required=("name", "email"))
    step = advance(
        None,
        Incoming(chat_id="3", text="x@example.org", known={"name": "Kim"}),
        channel="whatsapp",
        now=T0,
        rules=rules,
    )
    assert step.complete == {"name": "Kim", "email": "x@example.org"}


def test_state_round_trips_through_json() -> None:
    step = advance(
        None,
        Incoming(chat_id="9", language="ru", known={"name": "Иван Петров"}),
        channel="telegram",
        now=T0,
        rules=RULES,
    )
    kept = step.conversation
    assert kept is not None
    again = Conversation.from_json("telegram", "9", kept.as_json(), kept.expires_at)
    assert again == kept


# ------------------------------------------------------------------ the durable store


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'conversations.db'}"


def test_the_store_keeps_a_conversation_with_its_update_ids_once(db_url: str) -> None:
    from adapter.channels import ConversationStore
    from adapter.ledger.conversations import ConversationLedger
    from adapter.ledger.schema import create_engine, migrate
    from adapter.ledger.store import LedgerStore

    async def main() -> None:
        engine = create_engine(db_url)
        await migrate(engine)
        ledger = LedgerStore(engine)
        store = ConversationStore(ConversationLedger(ledger))
        try:
            step = advance(
                None,
                Incoming(chat_id="7", language="pt", known={"name": "Ana"}),
                channel="telegram",
                now=T0,
                rules=RULES,
            )
            assert step.conversation is not None
            assert await store.save(step.conversation, event_ids=["u1"], now=T0)
            assert await store.seen("telegram", "u1")
            assert not await store.seen("whatsapp", "u1")  # per channel
            assert not await store.save(step.conversation, event_ids=["u1"], now=T0)
            assert await store.load("telegram", "7", now=T0 + 1) == step.conversation
            assert await store.load("telegram", "7", now=T0 + 600) is None  # expired
            assert await store.purge("telegram", now=T0 + 600, keep_events=10) == ["7"]
            assert not await store.seen("telegram", "u1")  # older than keep_events
            assert await store.save(step.conversation, event_ids=["u2"], now=T0)
            assert await store.delete("telegram", "7", event_ids=["u3"], now=T0)
            assert await store.load("telegram", "7", now=T0) is None
        finally:
            ledger.close()
            await engine.dispose()

    asyncio.run(main())

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from ragbot.generation.base import ChatMessage, LLMError, LLMStreamInterruptedError
from ragbot.generation.condense import clean_condensed, condense_question, fallback_query
from ragbot.generation.prompts import PromptLibrary

pytestmark = pytest.mark.unit


class ScriptedLLM:
    """Plays back queued replies in small deltas and records what it was asked."""

    model_name = "scripted"

    def __init__(self, *replies: str | BaseException) -> None:
        self.replies = list(replies)
        self.calls: list[list[ChatMessage]] = []
        self.delivered: list[str] = []

    def stream(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        self.calls.append(list(messages))
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        for i in range(0, len(reply), 3):
            self.delivered.append(reply[i : i + 3])
            yield reply[i : i + 3]

    def complete(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(self.stream(messages))

    def count_tokens(self, text: str) -> int:
        return len(text.split())


HISTORY = [
    ChatMessage(role="user", content="What is Qdrant Edge?"),
    ChatMessage(role="assistant", content="Qdrant Edge is the embedded vector engine [1]."),
]


@pytest.fixture
def prompts() -> PromptLibrary:
    return PromptLibrary()


def test_first_turn_skips_the_llm(prompts: PromptLibrary) -> None:
    llm = ScriptedLLM()
    assert condense_question(llm, prompts, [], "What is SPLADE?") == "What is SPLADE?"
    assert condense_question(llm, prompts, [ChatMessage(role="system", content="note")], "Hi") == "Hi"
    assert llm.calls == []


def test_follow_up_is_rewritten_from_history(prompts: PromptLibrary) -> None:
    llm = ScriptedLLM("Can Qdrant Edge be replaced by a Qdrant server?\n")
    out = condense_question(llm, prompts, HISTORY, "Can it be replaced by a server?")
    assert out == "Can Qdrant Edge be replaced by a Qdrant server?"
    [messages] = llm.calls
    assert "What is Qdrant Edge?" in messages[-1]["content"]
    assert "Can it be replaced by a server?" in messages[-1]["content"]


def test_stops_reading_after_the_first_line(prompts: PromptLibrary) -> None:
    reply = "How big is the Qdrant Edge shard?\nAssistant: The shard is " + "very " * 200
    llm = ScriptedLLM(reply)
    assert condense_question(llm, prompts, HISTORY, "how big is it?") == "How big is the Qdrant Edge shard?"
    assert len("".join(llm.delivered)) < 60, "the stream should be closed once the first line is complete"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"How do I install ragbot?"', "How do I install ragbot?"),
        ("Rewritten question: How do I install ragbot?", "How do I install ragbot?"),
        ("Standalone question: 'What is RRF?'", "What is RRF?"),
        ("**Question:** What is RRF?", "What is RRF?"),
        ("Sure! Here is the rewritten question:\nWhat is RRF?", "What is RRF?"),
        ("\n\n  What is RRF?  \n", "What is RRF?"),
        ("", ""),
    ],
)
def test_clean_condensed(raw: str, expected: str) -> None:
    assert clean_condensed(raw) == expected


def test_preamble_line_does_not_end_the_stream_early(prompts: PromptLibrary) -> None:
    llm = ScriptedLLM("Sure! Here is the rewritten question:\nIs Qdrant Edge persistent?\n")
    assert condense_question(llm, prompts, HISTORY, "is it persistent?") == "Is Qdrant Edge persistent?"


@pytest.mark.parametrize("reply", ["", "   \n", '""', "Qdrant Edge " * 200])
def test_empty_or_runaway_output_falls_back_to_previous_turn_plus_question(
    prompts: PromptLibrary, reply: str
) -> None:
    llm = ScriptedLLM(reply)
    assert condense_question(llm, prompts, HISTORY, "is it fast?") == "What is Qdrant Edge? is it fast?"


def test_interrupted_stream_uses_what_arrived(prompts: PromptLibrary) -> None:
    llm = ScriptedLLM(LLMStreamInterruptedError("cut", partial="Is Qdrant Edge fast?"))
    assert condense_question(llm, prompts, HISTORY, "is it fast?") == "Is Qdrant Edge fast?"


def test_llm_failure_propagates_for_the_caller_to_handle(prompts: PromptLibrary) -> None:
    llm = ScriptedLLM(LLMError("down"))
    with pytest.raises(LLMError, match="down"):
        condense_question(llm, prompts, HISTORY, "is it fast?")


def test_fallback_query_without_a_user_turn_is_the_question() -> None:
    assert fallback_query([ChatMessage(role="assistant", content="Hello!")], " price? ") == "price?"


def test_rewrite_about_something_the_conversation_never_mentioned_is_rejected(prompts: PromptLibrary) -> None:
    llm = ScriptedLLM("What is the return policy for shoes?\n")
    assert condense_question(llm, prompts, HISTORY, "is it fast?") == "What is Qdrant Edge? is it fast?"


def test_rewrite_may_rephrase_with_a_few_new_words(prompts: PromptLibrary) -> None:
    llm = ScriptedLLM("How quickly does Qdrant Edge answer a query?\n")
    out = condense_question(llm, prompts, HISTORY, "how quickly does it answer a query?")
    assert out == "How quickly does Qdrant Edge answer a query?"


@pytest.mark.parametrize(
    "reply",
    [
        "User: What is Qdrant Edge?\n",  # an earlier turn copied back
        "Qdrant Edge is the embedded vector engine [1].\n",  # the previous answer copied back
        "Qdrant Edge runs inside the ragbot process.\n",  # an answer: the follow-up's words are gone
    ],
)
def test_copies_and_answers_are_not_rewrites(prompts: PromptLibrary, reply: str) -> None:
    llm = ScriptedLLM(reply)
    assert (
        condense_question(llm, prompts, HISTORY, "how fast is it?") == "What is Qdrant Edge? how fast is it?"
    )


def test_rephrasing_that_resolves_nothing_falls_back(prompts: PromptLibrary) -> None:
    llm = ScriptedLLM("How fast is this?\n")
    assert (
        condense_question(llm, prompts, HISTORY, "how fast is it?") == "What is Qdrant Edge? how fast is it?"
    )


def test_fallback_query_keeps_the_question_that_named_the_topic() -> None:
    history = [
        ChatMessage(role="user", content="What is   Qdrant Edge?"),
        ChatMessage(role="assistant", content="An in-process engine."),
        ChatMessage(role="user", content="How do I change it?"),
        ChatMessage(role="assistant", content="Set RAGBOT_QDRANT_URL."),
    ]
    assert fallback_query(history, "Does that work on PostgreSQL too?") == (
        "What is Qdrant Edge? How do I change it? Does that work on PostgreSQL too?"
    )
    assert fallback_query(history, "and then?", turns=1) == "How do I change it? and then?"

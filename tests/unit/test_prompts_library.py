from __future__ import annotations

from pathlib import Path

import pytest

from ragbot.generation.base import ChatMessage
from ragbot.generation.prompts import PromptLibrary, default_prompts_dir
from ragbot.types import Chunk, Hit

pytestmark = pytest.mark.unit


def words(text: str) -> int:
    """A deterministic token counter: one token per whitespace-separated word."""
    return len(text.split())


def hit(
    n: int, text: str, *, title: str = "Doc", page: int | None = None, start_s: float | None = None
) -> Hit:
    chunk = Chunk(
        id=f"c{n}",
        bot_id="b",
        source_id=f"s{n}",
        uri=f"/docs/{n}.md",
        title=title,
        text=text,
        chunk_index=0,
        heading_path=(title, "Section"),
        page=page,
        start_s=start_s,
    )
    return Hit(chunk=chunk, score=1.0 / n)


def turn(role: str, content: str) -> ChatMessage:
    return ChatMessage(role=role, content=content)


@pytest.fixture
def library() -> PromptLibrary:
    return PromptLibrary()


def test_shipped_prompt_files_are_found_from_the_package() -> None:
    folder = default_prompts_dir()
    assert {p.stem for p in folder.glob("*.md")} >= {"system", "answer", "condense", "refusal"}
    assert PromptLibrary(None).prompts_dir == folder


def test_sources_ground_the_system_message_and_the_question_is_the_last_turn(library: PromptLibrary) -> None:
    hits = [hit(1, "SQLite is the default database."), hit(2, "Qdrant Edge is embedded.", page=3)]
    prompt = library.build_answer(
        "Which database?",
        hits,
        [],
        persona="",
        context_window=2000,
        max_answer_tokens=100,
        count_tokens=words,
    )
    system, user = prompt.messages
    assert system["role"] == "system" and user == {"role": "user", "content": "Which database?"}
    grounding = system["content"]
    assert grounding.index("[1]") < grounding.index("SQLite") < grounding.index("[2]")
    assert "page 3" in grounding
    assert "like [1]" in grounding and "words" not in grounding  # no length limit asked for
    assert prompt.sources == tuple(hits)


def test_the_bots_answer_length_goes_into_the_grounding(library: PromptLibrary) -> None:
    prompt = library.build_answer(
        "Which database?",
        [hit(1, "SQLite is the default database.")],
        [],
        persona="",
        context_window=2000,
        max_answer_tokens=100,
        count_tokens=words,
        max_words=40,
    )
    assert "Answer in at most 40 words." in prompt.messages[0]["content"]


def test_persona_goes_into_the_system_prompt(library: PromptLibrary) -> None:
    plain = library.system_text("")
    styled = library.system_text("Speak like a pirate and call the product Ragbot.")
    assert "pirate" in styled and "pirate" not in plain
    assert "$persona" not in plain and "\n\n\n" not in plain
    prompt = library.build_answer(
        "q?",
        [hit(1, "x")],
        [],
        persona="Be terse.",
        context_window=3000,
        max_answer_tokens=10,
        count_tokens=words,
    )
    assert prompt.messages[0]["content"].index("Be terse.") < prompt.messages[0]["content"].index("[1]")


def test_history_is_trimmed_by_tokens_oldest_first(library: PromptLibrary) -> None:
    long_answer = "word " * 300
    history = [
        turn("user", "first question about sparse retrieval"),
        turn("assistant", long_answer),
        turn("user", "second question about dense retrieval"),
        turn("assistant", "short answer about dense"),
    ]
    base = library.build_answer(
        "third?",
        [hit(1, "x")],
        [],
        persona="",
        context_window=10_000,
        max_answer_tokens=10,
        count_tokens=words,
    )
    budget = base.prompt_tokens + 10 + 2 * 8 + 12 + 5  # room for the last two short turns only
    prompt = library.build_answer(
        "third?",
        [hit(1, "x")],
        history,
        persona="",
        context_window=budget,
        max_answer_tokens=10,
        count_tokens=words,
    )
    contents = [m["content"] for m in prompt.messages[1:-1]]
    assert contents == ["second question about dense retrieval", "short answer about dense"]
    assert prompt.history_messages == 2
    total = sum(words(m["content"]) + 8 for m in prompt.messages)
    assert total + 10 <= budget


def test_long_history_message_count_does_not_matter_only_tokens(library: PromptLibrary) -> None:
    history = [turn("user" if i % 2 == 0 else "assistant", f"t{i}") for i in range(40)]
    prompt = library.build_answer(
        "q?",
        [hit(1, "x")],
        history,
        persona="",
        context_window=5000,
        max_answer_tokens=10,
        count_tokens=words,
    )
    assert prompt.history_messages == 40


def test_history_never_starts_with_an_assistant_turn_and_roles_alternate(library: PromptLibrary) -> None:
    history = [
        turn("assistant", "Hello! How can I help?"),
        turn("user", "what is ragbot?"),
        turn("user", "hello?"),  # the previous turn failed and got no answer
        turn("system", "handoff note"),
    ]
    prompt = library.build_answer(
        "and the price?",
        [hit(1, "x")],
        history,
        persona="",
        context_window=5000,
        max_answer_tokens=10,
        count_tokens=words,
    )
    roles = [m["role"] for m in prompt.messages]
    assert roles == ["system", "user"]
    assert prompt.messages[1]["content"].startswith("what is ragbot?\n\nhello?\n\n")


def test_sources_that_do_not_fit_are_dropped_from_the_end_keeping_numbers(library: PromptLibrary) -> None:
    hits = [hit(i, f"source {i} " + "filler " * 100) for i in range(1, 6)]
    base = library.build_answer(
        "q?", [], [], persona="", context_window=10_000, max_answer_tokens=50, count_tokens=words
    )
    window = base.prompt_tokens + 50 + 2 * 102 + 20  # two sources and a bit
    prompt = library.build_answer(
        "q?", hits, [], persona="", context_window=window, max_answer_tokens=50, count_tokens=words
    )
    assert prompt.sources == tuple(hits[:2])
    grounding = prompt.messages[0]["content"]
    assert "[1]" in grounding and "[2]" in grounding and "[3]" not in grounding


def test_a_source_is_clipped_rather_than_dropped_when_enough_room_remains(library: PromptLibrary) -> None:
    hits = [hit(1, "alpha " * 500)]
    prompt = library.build_answer(
        "q?", hits, [], persona="", context_window=400, max_answer_tokens=50, count_tokens=words
    )
    assert prompt.sources == (hits[0],)
    assert " ..." in prompt.messages[0]["content"]
    assert sum(words(m["content"]) + 8 for m in prompt.messages) + 50 <= 400


def test_window_too_small_for_the_frame_is_a_clear_error(library: PromptLibrary) -> None:
    with pytest.raises(ValueError, match="RAGBOT_LLM_CONTEXT_WINDOW"):
        library.build_answer(
            "q?", [], [], persona="", context_window=60, max_answer_tokens=50, count_tokens=words
        )


def test_answer_messages_is_build_answer_messages(library: PromptLibrary) -> None:
    args = ("q?", [hit(1, "x")], [turn("user", "hi"), turn("assistant", "hello")])
    kwargs = {"persona": "", "context_window": 3000, "max_answer_tokens": 10, "count_tokens": words}
    assert library.answer_messages(*args, **kwargs) == library.build_answer(*args, **kwargs).messages


def test_timestamps_of_transcript_chunks_are_shown(library: PromptLibrary) -> None:
    prompt = library.build_answer(
        "q?",
        [hit(1, "said in the talk", start_s=3725.0)],
        [],
        persona="",
        context_window=3000,
        max_answer_tokens=10,
        count_tokens=words,
    )
    assert "at 1:02:05" in prompt.messages[0]["content"]


def test_condense_prompt_holds_recent_turns_and_the_follow_up(library: PromptLibrary) -> None:
    history = [turn("user", f"question {i}") for i in range(30)]
    [message] = library.condense_messages(history, "and how much does it cost?", max_history_tokens=20)
    content = message["content"]
    assert message["role"] == "user"
    assert "and how much does it cost?" in content
    assert "User: question 29" in content
    assert "User: question 0\n" not in content


def test_condense_prompt_clips_long_answers(library: PromptLibrary) -> None:
    history = [turn("user", "what is splade?"), turn("assistant", "SPLADE " * 1000)]
    [message] = library.condense_messages(history, "why?", max_turn_chars=100)
    assert len(message["content"]) < 2000


def test_refusal_offers_a_human(library: PromptLibrary) -> None:
    text = library.refusal_text("")
    assert "person" in text or "human" in text


def test_custom_prompts_dir_overrides_and_missing_files_are_named(tmp_path: Path) -> None:
    for name in ("system", "answer", "condense", "refusal"):
        (tmp_path / f"{name}.md").write_text(f"{name}: $question $sources $persona $history")
    library = PromptLibrary(tmp_path)
    assert library.refusal_text("calm") == "refusal: $question $sources calm $history"
    (tmp_path / "condense.md").unlink()
    with pytest.raises(FileNotFoundError, match=r"condense\.md"):
        PromptLibrary(tmp_path)


def test_dollar_signs_in_user_text_are_not_template_syntax(library: PromptLibrary) -> None:
    prompt = library.build_answer(
        "Does it cost $5 or ${price}?",
        [hit(1, "It costs $5.")],
        [],
        persona="",
        context_window=3000,
        max_answer_tokens=10,
        count_tokens=words,
    )
    assert prompt.messages[-1]["content"] == "Does it cost $5 or ${price}?"
    assert "It costs $5." in prompt.messages[0]["content"]

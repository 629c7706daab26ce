from __future__ import annotations

import pytest
import torch

from ragbot.generation.local_provider import _NoRepeatInAnswer

pytestmark = pytest.mark.unit


def test_repeating_an_answer_ngram_is_banned_but_prompt_ngrams_stay_free() -> None:
    prompt = [7, 8, 9, 7, 8]  # "7 8 -> 9" occurs in the prompt: copying it must stay allowed
    answer = [1, 2, 3, 4, 1, 2]  # "1 2 -> 3" was generated already
    ids = torch.tensor([prompt + answer])
    scores = torch.zeros(1, 10)
    out = _NoRepeatInAnswer(prompt_tokens=len(prompt), n=3)(ids, scores.clone())
    assert out[0, 3] == float("-inf")
    assert torch.isfinite(out[0, [0, 1, 2, 4, 5, 6, 7, 8, 9]]).all()


def test_short_answers_and_disabled_processor_change_nothing() -> None:
    ids = torch.tensor([[5, 5, 5, 1]])
    scores = torch.zeros(1, 8)
    assert torch.equal(_NoRepeatInAnswer(prompt_tokens=3, n=4)(ids, scores.clone()), scores)
    assert torch.equal(_NoRepeatInAnswer(prompt_tokens=0, n=1)(ids, scores.clone()), scores)

"""Is this a word of the language? For the grounding check's "no dictionary knows it" rule.

wordfreq's frequency lists (dozens of languages, built from web text, subtitles and books) know real words
down to about one in a hundred million, typos common enough to be written often included; a misspelling
the model produced ("retrieble") or a name it made up is in none of them. Lists load on first use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

__all__ = ["known_word"]


def known_word(languages: Iterable[str]) -> Callable[[str], bool] | None:
    """A lookup that says whether a lower-cased word is in any of ``languages``' lists; ``None`` when
    wordfreq has a list for none of them (then nothing can be called unknown)."""
    usable = tuple(dict.fromkeys(lang for lang in languages if lang in _available()))
    if not usable:
        return None
    return functools.partial(_known, usable)


@functools.cache
def _available() -> frozenset[str]:
    from wordfreq import available_languages

    return frozenset(available_languages())


@functools.lru_cache(maxsize=65536)
def _known(languages: tuple[str, ...], word: str) -> bool:
    from wordfreq import zipf_frequency

    return any(zipf_frequency(word, lang) > 0 for lang in languages)

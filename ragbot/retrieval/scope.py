"""Is a question within a bot's content? A per-bot relevance floor calibrated on off-topic questions.

A fixed cosine floor (the old 0.20) means different things on different content: a bot whose pages are
all about one narrow product scores every question higher than a bot with a broad knowledge base. So
each bot's floor is learned from its own index: a fixed, built-in set of diverse questions that no
support content answers (cooking, sport, history, ... in several languages; ``NULL_QUESTIONS``) is
scored against the bot's chunks, and that *null distribution* says what "unrelated" looks like there.

Each retrieval signal (dense cosine, SPLADE dot product, BM25 where it ran) is standardised robustly
against its null distribution (median and MAD, so one odd null question moves nothing), and a question
counts as in scope when its strongest signal stands ``k`` robust deviations above the null median
(``FloorModel.in_scope``). Signals a bot's null run did not measure (BM25 not
configured) are left out on both sides, so a missing ``bm25_score`` works.

Pure functions; ``ragbot.services.relevance`` runs the null questions and caches a model per bot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ragbot.types import Hit

__all__ = [
    "NULL_QUESTIONS",
    "SIGNALS",
    "FloorModel",
    "SignalNull",
    "calibrate",
    "hit_signals",
]

#: The retrieval signals the floor reads, as named on ``Hit`` (``<name>_score``).
SIGNALS = ("dense", "sparse", "bm25")
#: MAD of a normal distribution is 0.6745 sigma; scaling by 1.4826 makes it a sigma estimate.
_MAD_TO_SIGMA = 1.4826

#: Questions no support knowledge base answers: many domains, a few languages, some phrased like
#: support questions ("how do I ...") so the floor is not learned on style alone.
NULL_QUESTIONS: tuple[str, ...] = (
    # cooking and food
    "How long should I boil an egg for a runny yolk?",
    "What is the best flour for sourdough bread?",
    "How do I make a classic French omelette?",
    "Can I freeze cooked rice safely?",
    "What wine goes well with grilled salmon?",
    "How do you caramelise onions without burning them?",
    "Is it safe to eat raw cookie dough?",
    "What temperature should a medium rare steak reach?",
    # sport and games
    "Who won the football World Cup in 1998?",
    "How many players are on a rugby union team?",
    "What is the offside rule in ice hockey?",
    "How do I improve my marathon time?",
    "What are the rules of castling in chess?",
    "Which tennis player has won the most Wimbledon titles?",
    "How is a decathlon scored?",
    # history and geography
    "When did the Roman Empire fall?",
    "Who was the first emperor of China?",
    "Why did the Berlin Wall come down in 1989?",
    "What is the capital of Mongolia?",
    "How long is the river Nile?",
    "Which countries border Bolivia?",
    "What caused the French Revolution?",
    "When were the pyramids of Giza built?",
    # science and nature
    "Why is the sky blue?",
    "How do bees make honey?",
    "What is the speed of light in a vacuum?",
    "How do vaccines train the immune system?",
    "Why do leaves change colour in autumn?",
    "What is the difference between a virus and a bacterium?",
    "How far is the Moon from the Earth?",
    "What causes the northern lights?",
    "How many bones are in the adult human body?",
    "Why do cats purr?",
    # health and body
    "How much water should I drink every day?",
    "What are the symptoms of a migraine?",
    "How can I fall asleep faster at night?",
    "Is stretching before running useful?",
    "What vitamins are in spinach?",
    # home, garden, cars
    "How do I unclog a kitchen sink drain?",
    "When should I prune my rose bushes?",
    "How often should I change the oil in my car?",
    "Why is my tomato plant turning yellow?",
    "How do I remove a red wine stain from a carpet?",
    "What is the best way to paint a ceiling?",
    "How do I fix a leaking tap?",
    "How much air should be in my bicycle tyres?",
    # money, law, travel
    "How do I file my income tax return?",
    "What is a good interest rate for a mortgage?",
    "Do I need a visa to travel to Japan?",
    "How early should I arrive at the airport for an international flight?",
    "What is the cheapest way to travel across Europe by train?",
    "How do I get a divorce?",
    "What does a notary public do?",
    "Should I invest in index funds or individual stocks?",
    # culture and arts
    "Who painted the Mona Lisa?",
    "What is the plot of Hamlet?",
    "How do I learn to play the guitar chords?",
    "Which novel begins with 'Call me Ishmael'?",
    "What is the difference between baroque and classical music?",
    "Who directed the film Casablanca?",
    "How many symphonies did Beethoven write?",
    # everyday life and people
    "How do I write a good birthday card message?",
    "What should I wear to a job interview?",
    "How can I stop my dog from barking at night?",
    "How do I teach a child to ride a bike?",
    "What is a good gift for a retirement party?",
    "How do I politely decline a wedding invitation?",
    "What are fun things to do on a rainy weekend?",
    # weather, maths, misc
    "Will it rain in Paris tomorrow?",
    "What is the square root of 144?",
    "How do I convert Fahrenheit to Celsius?",
    "What is the tallest mountain in Africa?",
    "How many days are there in a leap year?",
    "What time is it in Tokyo right now?",
    "Who invented the telephone?",
    "What is the population of Brazil?",
    "How do airplanes stay in the air?",
    "Tell me a joke about penguins.",
    "What is the meaning of life?",
    # other languages
    "¿Cuál es la receta tradicional de la paella valenciana?",
    "¿Quién ganó el mundial de fútbol en 2010?",
    "Quelle est la meilleure saison pour visiter la Provence ?",
    "Comment faire une pâte à crêpes sans grumeaux ?",
    "Wie lange muss ich Kartoffeln kochen?",
    "Wann wurde der Kölner Dom fertiggestellt?",
    "Qual è la differenza tra un espresso e un ristretto?",
    "Quanto tempo ci vuole per imparare a nuotare?",
    "Como faço para plantar morangos na varanda?",
    "Hoe lang duurt een vlucht van Amsterdam naar New York?",
    "Jak ugotować dobry barszcz?",
    "Сколько лет живут кошки?",
    "Почему море солёное?",
    "Πότε χτίστηκε ο Παρθενώνας;",
    "東京で一番高いビルはどれですか？",
    "如何在家里种植西红柿？",
    "김치는 어떻게 만드나요?",
    "ما هي عاصمة أستراليا؟",
    "कौन सा मसाला करी को पीला बनाता है?",
    "Türkiye'nin en uzun nehri hangisidir?",
    "Hur lagar man köttbullar?",
)


@dataclass(frozen=True, slots=True)
class SignalNull:
    """One signal's null distribution, summarised robustly."""

    median: float
    scale: float  # MAD scaled to a sigma estimate, with a floor so a flat distribution cannot divide by 0
    high: float  # the highest null score seen (reported, and a sanity bound)
    n: int

    def z(self, score: float) -> float:
        return (score - self.median) / self.scale


@dataclass(frozen=True, slots=True)
class FloorModel:
    """A bot's calibrated floor: per-signal null summaries and the number of deviations ``k`` required.

    ``in_scope`` takes the strongest standardised signal: a question about an exact product name may
    score low on the dense model yet far above null on SPLADE or BM25, and the reverse for a paraphrase.
    """

    nulls: Mapping[str, SignalNull]
    k: float
    version: str = ""  # what the bot's content was when calibrated (the cache key)

    def evidence(self, signals: Mapping[str, float | None]) -> float:
        """The strongest signal's robust z-score against the null distribution (``-inf``: no signal)."""
        best = -math.inf
        for name, null in self.nulls.items():
            value = signals.get(name)
            if value is not None and math.isfinite(value):
                best = max(best, null.z(value))
        return best

    def in_scope(self, signals: Mapping[str, float | None]) -> bool:
        return self.evidence(signals) >= self.k

    def dense_floor(self) -> float | None:
        """The dense cosine this model's rule amounts to on the dense signal alone (for reports)."""
        null = self.nulls.get("dense")
        return None if null is None else null.median + self.k * null.scale

    def describe(self) -> dict[str, object]:
        return {
            "k": self.k,
            "version": self.version,
            "signals": {
                name: {"median": round(n.median, 4), "scale": round(n.scale, 4), "high": round(n.high, 4)}
                for name, n in self.nulls.items()
            },
        }


def hit_signals(hits: Sequence[Hit]) -> dict[str, float | None]:
    """Each signal's best score over the hits (the fused order need not put it first); None where absent."""
    out: dict[str, float | None] = {}
    for name in SIGNALS:
        values = [v for v in (getattr(h, f"{name}_score", None) for h in hits) if v is not None]
        out[name] = max(values) if values else None
    return out


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarise(values: Iterable[float], *, min_scale: float) -> SignalNull | None:
    """Median, MAD-based scale and maximum of one signal's null scores; None when there are too few."""
    kept = [v for v in values if math.isfinite(v)]
    if len(kept) < 5:
        return None
    median = _median(kept)
    mad = _median([abs(v - median) for v in kept])
    scale = max(_MAD_TO_SIGMA * mad, min_scale)
    return SignalNull(median=median, scale=scale, high=max(kept), n=len(kept))


#: Smallest scale per signal, in the signal's units: a null distribution that happens to be very tight
#: (a tiny bot) must not turn a hair's difference into many deviations.
MIN_SCALE = {"dense": 0.02, "sparse": 0.5, "bm25": 0.5}


def calibrate(
    null_scores: Mapping[str, Sequence[float | None]], *, k: float, version: str = ""
) -> FloorModel:
    """A floor model from each signal's top score on every null question (None where it did not run).

    A signal with fewer than 5 scores is left out. ``k`` is the number of robust deviations above the
    null median a question's strongest signal must reach.
    """
    nulls: dict[str, SignalNull] = {}
    for name, values in null_scores.items():
        summary = summarise((v for v in values if v is not None), min_scale=MIN_SCALE.get(name, 0.01))
        if summary is not None:
            nulls[name] = summary
    return FloorModel(nulls=nulls, k=k, version=version)

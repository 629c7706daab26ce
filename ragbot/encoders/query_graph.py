"""A traced graph of an encoder for one unpadded text: query latency without Python's per-module overhead.

A query is a handful of tokens, so an eager Hugging Face forward spends about as long walking Python
modules, building attention masks and dispatching ops as it does multiplying (MiniLM: ~7 ms eager, ~4 ms
traced on 2 cores). A TorchScript trace records the ops once. The trace is only ever used for one text with
no padding, the one input shape it was recorded for; before it is trusted it must reproduce the eager model
on two other lengths, and any failure keeps the eager path, so an unusual model is never wrong, only slower.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["SingleTextGraph"]

logger = logging.getLogger(__name__)

#: A trace may differ from eager by kernel choice only; anything larger means it baked in a wrong branch.
_TOLERANCE = 1e-4
#: Token counts of the probe texts: the first is traced, the others must then match eager.
_PROBE_LENGTHS = (5, 12, 64)


class SingleTextGraph:
    """Lazily traced ``model(input_ids, attention_mask)[0]`` (the last hidden state) for one text."""

    def __init__(self, model: nn.Module, *, vocab_size: int) -> None:
        self._model = model
        self._vocab_size = vocab_size
        self._graph: Callable[[torch.Tensor, torch.Tensor], object] | None = None
        self._failed = False
        self._lock = threading.Lock()

    @property
    def traced(self) -> bool:
        """Whether queries run on the traced graph (known once the first query was encoded)."""
        return self._graph is not None

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(1, tokens) ids -> (1, tokens, dim) states, traced when possible (call under inference mode)."""
        mask = torch.ones_like(input_ids)
        graph = self._graph if self._graph is not None or self._failed else self._build(input_ids.device)
        if graph is None:
            return _last_hidden(self._model(input_ids=input_ids, attention_mask=mask))
        return _last_hidden(graph(input_ids, mask))

    def _build(self, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], object] | None:
        with self._lock:
            if self._graph is not None or self._failed:
                return self._graph
            probes = [
                torch.tensor([[(1000 + 7919 * i) % self._vocab_size for i in range(n)]], device=device)
                for n in _PROBE_LENGTHS
            ]
            # The tracer reads every attribute of the model, and some (a Hugging Face model's loss_function)
            # log a warning when read; the shape-branch TracerWarnings are what the probes check.
            chatty = logging.getLogger("transformers")
            level = chatty.level
            chatty.setLevel(logging.ERROR)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                        self._model,
                        (probes[0], torch.ones_like(probes[0])),
                        strict=False,
                        check_trace=False,
                    )
                    graph: Callable[[torch.Tensor, torch.Tensor], object] = torch.jit.freeze(traced.eval())
                for ids in probes[1:]:
                    mask = torch.ones_like(ids)
                    eager = _last_hidden(self._model(input_ids=ids, attention_mask=mask))
                    drift = float((_last_hidden(graph(ids, mask)) - eager).abs().max())
                    if drift > _TOLERANCE:
                        raise ValueError(f"traced graph drifts {drift:.2e} from the eager model")
            except Exception:
                logger.info("query encoder stays eager: tracing failed", exc_info=True)
                self._failed = True
                return None
            finally:
                chatty.setLevel(level)
            self._graph = graph
            return graph


def _last_hidden(output: object) -> torch.Tensor:
    """The first output, whether the model returned a ModelOutput, a dict or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        first = output.get("last_hidden_state", next(iter(output.values())))
    elif isinstance(output, Sequence):
        first = output[0]
    else:
        first = getattr(output, "last_hidden_state", None)
    if not isinstance(first, torch.Tensor):
        raise TypeError(f"cannot find the hidden states in {type(output).__name__}")
    return first

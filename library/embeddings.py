"""Pretrained word vectors: reading them (gensim), aligning them with the transform's vocabulary, measuring
how much of it they cover, and training Word2Vec vectors on a run's own text.

Formats (chosen from the file, see `detect_format`): word2vec text ("N D" header line, then "word v1 .. vD"),
word2vec binary (.bin), GloVe text (no header), fastText .vec (word2vec text with a header) and gensim's own
KeyedVectors files (.kv, written by `KeyedVectors.save`; a pickle, so load only files you trust).

Alignment: row i of the embedding matrix is the vector of token id i, where id i >= 1 is vocabulary entry
i - 1 of the transform's vocabulary file (the transform shifts ids by one to keep 0 for padding), and the
last rows are the out-of-vocabulary buckets. Lookup is by the token itself, then by its lowercased form among
the file's words (the transform lowercases; some files, e.g. word2vec GoogleNews, are cased). Row 0 (padding)
is zeros; tokens missing from the file and the OOV buckets get seeded random vectors drawn with the file's
own per-component standard deviation (as in Kim 2014, "Convolutional Neural Networks for Sentence
Classification"), so they neither dominate nor vanish next to the real vectors.

gensim is an optional dependency (the `embeddings` extra); it is imported only when vectors are read or
trained.
"""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.artifacts import ComponentError
from contract.files import update_digest
from library.layouts import ModelInputSpec, examples_files, vocabulary_file

FORMATS = ("word2vec", "word2vec_binary", "glove", "kv")
PADDING_ID = 0
DEFAULT_MIN_TOKEN_COVERAGE = 0.5


def _gensim_keyed_vectors():
    try:
        from gensim.models import KeyedVectors
    except ImportError:
        raise ComponentError(
            "pretrained embeddings need gensim: pip install 'agnews-pipeline[embeddings]'"
        ) from None
    return KeyedVectors


def _is_header(line: bytes) -> bool:
    parts = line.split()
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def detect_format(path: Path) -> str:
    """'kv' for gensim's .kv files; otherwise from the first bytes: a "count dim" header line means word2vec
    (binary if the rest is not UTF-8 text), anything else GloVe-style text without a header."""
    path = Path(path)
    if path.suffix == ".kv":
        return "kv"
    with open(path, "rb") as handle:
        first = handle.readline(1 << 16)
        rest = handle.read(1 << 16)
    if not _is_header(first):
        return "glove"
    try:
        rest.decode("utf-8")
        text = b"\0" not in rest
    # a chunk may end inside a multi-byte character
    except UnicodeDecodeError as error:
        text = error.start >= len(rest) - 3 and b"\0" not in rest
    return "word2vec" if text else "word2vec_binary"


def file_fingerprint(path: Path) -> str:
    """SHA-256 of the vectors file's bytes (and of gensim's companion .npy files next to a .kv file)."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in [path] + sorted(path.parent.glob(path.name + ".*.npy")):
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            update_digest(digest, handle)
    return digest.hexdigest()


def check_vectors_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ComponentError(f"pretrained embeddings file not found: {path} (trainer.pretrained_embeddings)")
    return path


def load_vectors(path: str | Path):
    """gensim KeyedVectors of any supported format; a bad file is a ComponentError naming it."""
    path = check_vectors_file(path)
    keyed_vectors = _gensim_keyed_vectors()
    kind = detect_format(path)
    try:
        if kind == "kv":
            vectors = keyed_vectors.load(str(path))
        else:
            vectors = keyed_vectors.load_word2vec_format(str(path), binary=kind == "word2vec_binary",
                                                         no_header=kind == "glove", unicode_errors="replace")
    # gensim raises many kinds; the user needs the file and reason
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ComponentError(f"cannot read {path} as {kind} word vectors: {reason}") from None
    if not hasattr(vectors, "key_to_index") or len(vectors.index_to_key) == 0 or vectors.vector_size < 1:
        raise ComponentError(f"{path} holds no word vectors")
    return vectors


def read_vocabulary(vocab_file: Path) -> list[str]:
    """The transform's vocabulary, one token per line; line k is token id k + 1."""
    vocab_file = Path(vocab_file)
    if not vocab_file.is_file():
        raise ComponentError(f"transform vocabulary not found: {vocab_file}")
    return vocab_file.read_text(encoding="utf-8").split("\n")[:-1] if vocab_file.stat().st_size else []


@dataclass(frozen=True)
class Alignment:
    """An embedding matrix aligned with the transform's token ids, and which ids the file covered."""
    # float32 [embedding_input_dim, dimension]
    matrix: np.ndarray
    # bool [embedding_input_dim]: the row is the file's vector
    covered: np.ndarray
    vocab_size: int
    dimension: int

    @property
    def vocab_coverage(self) -> float:
        """Share of vocabulary ids (1..vocab_size) with a vector in the file."""
        return float(self.covered[1:self.vocab_size + 1].mean()) if self.vocab_size else 0.0

    def token_coverage(self, token_counts: np.ndarray) -> float:
        """Share of token occurrences (counts per id, e.g. of the train split) whose id has a file vector."""
        counts = np.asarray(token_counts, dtype=np.float64)[:len(self.covered)]
        counts[PADDING_ID] = 0
        total = counts.sum()
        return float(counts[self.covered[:len(counts)]].sum() / total) if total else 0.0


def align(vectors, vocabulary: list[str], embedding_input_dim: int, seed: int) -> Alignment:
    """The [embedding_input_dim, D] matrix whose row i is the vector of token id i (see the module doc)."""
    if embedding_input_dim < len(vocabulary) + 1:
        raise ComponentError(f"the embedding has {embedding_input_dim} rows but the vocabulary holds "
                             f"{len(vocabulary)} tokens plus padding")
    dimension = int(vectors.vector_size)
    index = vectors.key_to_index
    lowercased: dict[str, int] | None = None
    # token id -> row of the file, -1 = missing
    rows = np.full(embedding_input_dim, -1, dtype=np.int64)
    for token_id, token in enumerate(vocabulary, start=1):
        position = index.get(token)
        if position is None:
            # built once, only when needed; the file's first (most frequent) form wins
            if lowercased is None:
                lowercased = {}
                for key, known_position in index.items():
                    lowercased.setdefault(str(key).lower(), known_position)
            position = lowercased.get(token)
        if position is not None:
            rows[token_id] = position
    covered = rows >= 0
    if not covered.any():
        raise ComponentError(f"none of the {len(vocabulary)} vocabulary tokens has a vector in the file: "
                             "is it the right file (language, tokenization)?")
    found = np.asarray(vectors.vectors[rows[covered]], dtype=np.float32)
    scale = float(found.std()) or 0.1
    matrix = (
        np.random.default_rng(seed)
        .normal(0.0, scale, size=(embedding_input_dim, dimension))
        .astype(np.float32)
    )
    matrix[covered] = found
    matrix[PADDING_ID] = 0.0
    return Alignment(matrix=matrix, covered=covered, vocab_size=len(vocabulary), dimension=dimension)


# ----------------------------------------------------------------------------------------------------------
# Training Word2Vec on a run's own text


def _stable_hash(text: str) -> int:
    # gensim seeds each word's initial vector with hash(word + seed); Python's str hash changes per process.
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(sentences: list[list[str]], *, dimension: int = 100, window: int = 5, min_count: int = 2,
                   epochs: int = 10, seed: int = 42, workers: int = 1):
    """Skip-gram Word2Vec KeyedVectors over tokenized sentences; one worker makes it reproducible."""
    try:
        from gensim.models import Word2Vec
    except ImportError:
        raise ComponentError(
            "training vectors needs gensim: pip install 'agnews-pipeline[embeddings]'"
        ) from None
    if not any(sentences):
        raise ComponentError("no tokens to train word vectors on")
    model = Word2Vec(
        vector_size=dimension,
        window=window,
        min_count=min_count,
        sg=1,
        epochs=epochs,
        seed=seed,
        workers=workers,
        hashfxn=_stable_hash,
    )
    model.build_vocab(sentences)
    if len(model.wv.index_to_key) == 0:
        raise ComponentError(f"no word occurs at least min_count={min_count} times; lower --min-count")
    model.train(sentences, total_examples=model.corpus_count, epochs=model.epochs)
    return model.wv


def save_vectors(vectors, out: Path) -> str:
    """Writes KeyedVectors in the format the name asks for: .kv (gensim), .bin (word2vec binary), otherwise
    word2vec text (.txt, .vec). Returns the format written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".kv":
        vectors.save(str(out))
        return "kv"
    binary = out.suffix == ".bin"
    vectors.save_word2vec_format(str(out), binary=binary)
    return "word2vec_binary" if binary else "word2vec"


OUTPUT_SUFFIXES = (".kv", ".bin", ".txt", ".vec")


def tokenized_split(examples_dir: Path, split: str, text_features: str, max_length: int) -> list[list[str]]:
    """The token lists of one split of the ingest's raw examples, through the transform's own normalization
    and tokenization ops (library/text.py), so the words are exactly the vocabulary's kind of tokens."""
    import tensorflow as tf

    from library import text

    files = examples_files(examples_dir, split)
    if not files:
        raise ComponentError(f"no {split} examples under {examples_dir} (deleted by gc?)")
    features = {
        name: tf.io.FixedLenFeature([], tf.string, default_value="") for name in ("title", "description")
    }
    batches = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024).map(
        lambda serialized: text.text_to_tokens(tf.io.parse_example(serialized, features), text_features,
                                               max_length))
    return [[token.decode("utf-8") for token in row] for batch in batches for row in batch.to_list()]


# ----------------------------------------------------------------------------------------------------------
# What the tuner and the trainer share


@dataclass(frozen=True)
class Pretrained:
    """Vectors read from a file and aligned with a transform's vocabulary, with the facts worth recording."""
    alignment: Alignment
    path: Path
    format: str
    fingerprint: str
    # words in the file
    words: int

    def properties(self) -> dict:
        return {"embeddings_file": str(self.path), "embeddings_format": self.format,
                "embeddings_fingerprint": self.fingerprint, "embeddings_dim": self.alignment.dimension,
                "embeddings_vocab_coverage": round(self.alignment.vocab_coverage, 6)}


def prepare(
    path: str | Path, transform_graph_dir: Path, model_input: ModelInputSpec, seed: int
) -> Pretrained:
    path = check_vectors_file(path).resolve()
    vectors = load_vectors(path)
    vocabulary = read_vocabulary(vocabulary_file(transform_graph_dir, model_input))
    alignment = align(vectors, vocabulary, model_input.embedding_input_dim, seed)
    return Pretrained(
        alignment=alignment,
        path=path,
        format=detect_format(path),
        fingerprint=file_fingerprint(path),
        words=len(vectors.index_to_key),
    )


def external_fingerprint(path: str) -> str | None:
    """The vectors file's fingerprint for a step's cache key (None without vectors)."""
    return file_fingerprint(check_vectors_file(path)) if path else None


def check_fixed_dimension(fixed: dict, dimension: int, path: Path) -> None:
    if "embedding_dim" in fixed and fixed["embedding_dim"] != dimension:
        raise ComponentError(
            f"embedding_dim is fixed to {fixed['embedding_dim']} but {path} holds {dimension}-"
            "dimensional vectors; drop embedding_dim (the dimension comes from the file)"
        )

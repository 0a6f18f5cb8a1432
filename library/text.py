"""Text normalization and tokenization for AG News, as TensorFlow string ops only.

The transform's preprocessing_fn calls these, so they end up inside the saved transform graph: the serving
model runs exactly the same ops on raw title/description strings (no training/serving skew), and nothing
here may be Python-side string code.

AG News carries artifacts of its HTML sources, which normalize_text removes:
  - numeric entities, with or without their "&": "Bush #39;s" (apostrophe), "#36;5" (dollar), "#151;" (dash);
  - named entities whose "&" was often lost: " quot;", " amp;", "&lt;", "nbsp;";
  - HTML tags escaped into the text: "&lt;b&gt;x&lt;/b&gt;", "&lt;A HREF=""...""&gt;MON.N&lt;/A&gt;"
    (the tag goes, the text between tags stays);
  - literal backslashes from the original line breaks: "dwindling\\band" is "dwindling band".
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf

# Which raw features make up the text, per TransformConfig.text_features.
TEXT_FEATURE_COLUMNS: dict[str, tuple[str, ...]] = {
    "title": ("title",),
    "title_description": ("title", "description"),
}

# (RE2 pattern, replacement), applied in order to lowercased text. Entities are mapped to the character
# they stand for; the tokenizer later treats every non-alphanumeric character as a separator.
_NORMALIZATION_RULES: tuple[tuple[str, str], ...] = (
    # the original files' line breaks survive as a literal backslash
    (r"\\", " "),
    # an escaped HTML tag (shortest match, so text between tags is kept)
    (r"&lt;.*?&gt;", " "),
    (r"&?#(39|145|146|8216|8217);", "'"),
    (r"&?#(34|147|148|8220|8221);", '"'),
    (r"&?#36;", "$"),
    (r"&?#0*38;", "&"),
    (r"&?#(150|151|8211|8212);", " - "),
    # any other numeric entity is dropped
    (r"&?#[0-9]+;", " "),
    (r"&?\bquot;", '"'),
    (r"&?\bamp;", "&"),
    (r"&?\bapos;", "'"),
    (r"&?\blt;", "<"),
    (r"&?\bgt;", ">"),
    (r"&?\b(nbsp|hellip|rsquo|lsquo|rdquo|ldquo|mdash|ndash);", " "),
    # any other named entity that kept its "&"
    (r"&[a-z]+;", " "),
)

# Everything that is not a letter or a digit (any script) separates tokens.
_SEPARATORS = r"[^\pL\pN]+"


def normalize_text(text: tf.Tensor) -> tf.Tensor:
    """Lowercases a string tensor (any shape, UTF-8) and removes AG News' HTML and escaping artifacts."""
    text = tf.strings.lower(text, encoding="utf-8")
    for pattern, replacement in _NORMALIZATION_RULES:
        text = tf.strings.regex_replace(text, pattern, replacement)
    return text


def tokenize(normalized_text: tf.Tensor) -> tf.RaggedTensor:
    """Splits a [batch] string tensor into words: runs of letters and digits. Returns a [batch, None] ragged
    tensor; a text without any word gives an empty row."""
    spaced = tf.strings.regex_replace(normalized_text, _SEPARATORS, " ")
    return tf.strings.split(tf.strings.strip(spaced))


def join_text_features(features: Mapping[str, tf.Tensor], text_features: str) -> tf.Tensor:
    """The model's input text: the configured raw string features ([batch] each) joined with a space."""
    if text_features not in TEXT_FEATURE_COLUMNS:
        raise ValueError(
            f"text_features must be one of {sorted(TEXT_FEATURE_COLUMNS)}, got {text_features!r}"
        )
    columns = [features[name] for name in TEXT_FEATURE_COLUMNS[text_features]]
    return columns[0] if len(columns) == 1 else tf.strings.join(columns, separator=" ")


def text_to_tokens(features: Mapping[str, tf.Tensor], text_features: str, max_length: int) -> tf.RaggedTensor:
    """Joined, normalized and tokenized text, truncated to the first `max_length` tokens: [batch, None]."""
    tokens = tokenize(normalize_text(join_text_features(features, text_features)))
    return tokens[:, :max_length]

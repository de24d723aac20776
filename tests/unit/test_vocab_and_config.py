"""Vocabulary round trip and config validation (no Ray, no TensorFlow)."""

import json

import numpy as np
import pytest

from models.config import CharRNNConfig, SampleConfig, TrainConfig, parse_config
from models.vocab import UNKNOWN, Vocab


def test_vocab_round_trip_through_json():
    text = "To be, or not to be: that is the question. Æsir — 日本語"
    vocab = Vocab.from_text(text, max_vocab=1000)
    restored = Vocab.from_json(vocab.to_json())
    assert restored == vocab
    assert restored.decode(restored.encode(text)) == text


def test_vocab_cap_keeps_most_frequent_and_maps_rest_to_unknown():
    vocab = Vocab.from_text("aaaabbbcc d", max_vocab=3)  # unknown + 2 most frequent
    assert vocab.chars == (UNKNOWN, "a", "b")
    assert vocab.decode(vocab.encode("abcd")) == "ab" + UNKNOWN * 2
    assert vocab.unknown_chars("abcdc") == ["c", "d"]


def test_vocab_is_deterministic():
    assert Vocab.from_text("xyzzy", 10) == Vocab.from_text("xyzzy", 10)
    assert np.array_equal(Vocab.from_text("hello", 10).encode("hello"), [2, 1, 3, 3, 4])


@pytest.mark.parametrize("payload", [
    "[]", '{"chars": ["a", "b"]}', '{"chars": []}', '{"chars": ["\\ufffd", "ab"]}',
    '{"chars": ["\\ufffd", "a", "a"]}', '"not a dict"',
])
def test_vocab_rejects_malformed_json(payload):
    with pytest.raises(ValueError):
        Vocab.from_json(payload)


def test_vocab_file_is_plain_json():
    data = json.loads(Vocab.from_text("abc", 10).to_json())
    assert data["chars"][1:] == ["a", "b", "c"]


def test_parse_config_coerces_form_strings():
    config = parse_config(TrainConfig, {"num_seqs": "16", "learning_rate": "0.002",
                                        "use_gpu": "true"})
    assert (config.num_seqs, config.learning_rate, config.use_gpu) == (16, 0.002, True)


@pytest.mark.parametrize("values, message", [
    ({"num_seqs": 0}, "num_seqs: must be >= 1"),
    ({"num_seqs": "many"}, "num_seqs: expected an integer"),
    ({"num_seqs": 2.5}, "num_seqs: expected an integer"),
    ({"learning_rate": "nan"}, "learning_rate: expected a finite number"),
    ({"bogus": 1}, "unknown parameter(s): bogus"),
])
def test_parse_config_rejects_bad_values(values, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(TrainConfig, values)


def test_cell_choices_and_sample_defaults():
    with pytest.raises(ValueError, match="cell: must be one of lstm, gru, rnn"):
        parse_config(CharRNNConfig, {"cell": "transformer"})
    assert parse_config(SampleConfig, {"prime": "ROMEO:", "seed": 7}).seed == 7

"""Sentence splitting and cleanup: pure functions, no engines."""

from voxserve.audio.encode import streaming_wav_header
from voxserve.tts.text import approx_tokens, clean_text, split_sentences
from voxserve.tts.voices import quoted_list


def test_sentences_split_on_ends_not_on_abbreviations_or_decimals():
    text = 'Dr. Smith paid $3.50 for it. He said "fine." Then he left! Did he?'
    assert split_sentences(text) == [
        "Dr. Smith paid $3.50 for it.", 'He said "fine."', "Then he left!", "Did he?",
    ]


def test_cjk_sentences_split_without_spaces():
    text = "今日は晴れです。明日は雨です。"
    assert split_sentences(text) == ["今日は晴れです。", "明日は雨です。"]


def test_markdown_links_and_emoji_are_cleaned():
    text = "# Title\n**Bold** 🚀 see [the docs](https://a.io/x) or https://www.example.com/p?q=1"
    assert clean_text(text) == "Title\nBold see the docs or example.com"


def test_nothing_speakable_gives_no_sentences():
    assert split_sentences("🎉👍🏽 ✨ … --- **") == []


def test_long_sentences_are_cut_at_clauses_within_the_limit():
    text = ", ".join(["a few words here"] * 40) + "."
    pieces = split_sentences(text, max_chars=100)
    assert len(pieces) > 1 and all(len(p) <= 100 for p in pieces)
    def squeeze(value: str) -> str:
        return value.replace(" ", "").replace(",", "")

    assert squeeze("".join(pieces)) == squeeze(text)  # nothing lost or reordered


def test_token_estimate_matches_openai_usage_for_its_recorded_sentence():
    assert approx_tokens("Hello, world! This is a streaming test.") == 10


def test_supported_values_are_listed_as_openai_does():
    assert quoted_list(("a", "b", "c")) == "'a', 'b', and 'c'"


def test_streaming_wav_header_is_44_bytes_with_unknown_sizes():
    header = streaming_wav_header()
    assert len(header) == 44
    assert header[4:8] == header[40:44] == b"\xff\xff\xff\xff"

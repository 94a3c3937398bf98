"""Prepare text for a speech engine: clean what should not be read aloud, split into sentences.

Engines read whatever they are given, so chat-style text (markdown, links, emoji) is cleaned
first: markup is dropped, a link is read as its visible text or its host name, pictographs are
skipped. Sentences are the unit of streaming: the first one is synthesized, encoded and sent
before the second is started.
"""

from __future__ import annotations

import re
import unicodedata

# A sentence longer than this is cut at clause marks, then spaces, so one synthesis call never
# holds a stream back for long (and stays inside Kokoro's 510-phoneme window).
MAX_SENTENCE_CHARS = 300
# A live voice (realtime translation) first speaks at most this much of a text: Piper takes
# 0.6-0.7 s for a 130-character sentence on 2 cores and 0.2 s for 46 characters, and the
# listener waits for the first piece only.
LEAD_CHARS = 60

_CODE_FENCE = re.compile(r"```[^\n]*\n?")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
# A URL is read as its host ("example.com"), without scheme, "www." or path.
_URL = re.compile(
    r"\b(?:https?://)?(?:www\.)?([a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,})"
    r"(?:[/?#][^\s]*)?(?=\s|$|[,;:!?)])",
    re.IGNORECASE,
)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3}|~~|`+)")
_TABLE_RULE = re.compile(r"^\s*\|?[\s:|-]+\|[\s:|-]*$", re.MULTILINE)
_SPACES = re.compile(r"[ \t\f\v]+")

# Sentence ends: Latin marks followed by space, or CJK marks anywhere; blank lines and list
# items (already turned into line breaks) end a sentence too.
_SENTENCE_END = re.compile(
    r"(?<=[.!?…])\s+|(?<=[.!?…][\"'”’)\]])\s+|(?<=[。！？])|\n+"
)
_CLAUSE_END = re.compile(r"(?<=[,;:、，；])\s*")
_LEAD_END = re.compile(r"[.!?…,;:](?=\s)")
# "Dr. Smith" and "e.g. this" are not sentence ends.
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "fig", "no",
    "approx", "inc", "ltd", "co", "mt",
}


def clean_text(text: str) -> str:
    """Text as it should be read: no markup, links as words, no pictographs or controls."""
    text = unicodedata.normalize("NFC", text)
    text = _CODE_FENCE.sub("\n", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub(lambda m: m.group(1), text)
    text = _TABLE_RULE.sub("", text)
    text = _HEADING.sub("\n", text)
    text = _BULLET.sub("\n", text)
    text = _EMPHASIS.sub("", text)
    text = text.replace("|", ", ")
    text = "".join(_keep(ch) for ch in text)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _keep(ch: str) -> str:
    category = unicodedata.category(ch)
    if ch == "\n":
        return ch
    if category in ("Cc", "Zl", "Zp"):
        return "\n" if ch in "\r\u2028\u2029" else " "
    # Emoji and other pictographs (So), modifier symbols (Sk), format characters such as the
    # zero-width joiner inside emoji sequences (Cf), private use and unassigned code points.
    if category in ("So", "Sk", "Cf", "Co", "Cn", "Cs"):
        return " "
    if 0xFE00 <= ord(ch) <= 0xFE0F:  # variation selectors
        return ""
    return ch


def is_speakable(text: str) -> bool:
    """Whether there is anything to read: a letter or a digit in any script."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """The cleaned text as sentences, in order, each at most `max_chars` long and speakable."""
    pieces: list[str] = []
    for part in _SENTENCE_END.split(clean_text(text)):
        part = part.strip()
        if not part:
            continue
        if pieces and _ends_with_abbreviation(pieces[-1]):
            pieces[-1] = f"{pieces[-1]} {part}"
        else:
            pieces.append(part)
    sentences: list[str] = []
    for piece in pieces:
        sentences.extend(_limit_length(piece, max_chars))
    return [s for s in sentences if is_speakable(s)]


def split_lead(text: str, max_chars: int = LEAD_CHARS) -> tuple[str, str]:
    """The opening words of `text` to speak first, and the rest ("" when the text is short).

    The lead ends at the first sentence or clause mark past a third of `max_chars`, else at
    the last word boundary within `max_chars`: the shortest piece that still sounds whole.
    (Digits' commas, "680,000", are not clause marks.)"""
    text = text.strip()
    if len(text) <= max_chars:
        return text, ""
    head = text[: max_chars + 1]
    marks = [m.end() for m in _LEAD_END.finditer(head) if m.end() >= max_chars // 3]
    cut = marks[0] if marks else head.rfind(" ")
    if cut <= 0:
        return text, ""
    return text[:cut].strip(), text[cut:].strip()


def _ends_with_abbreviation(sentence: str) -> bool:
    if not sentence.endswith("."):
        return False
    last = sentence[:-1].rsplit(" ", 1)[-1].lower()
    return last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())


def _limit_length(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    out: list[str] = []
    current = ""
    for clause in _CLAUSE_END.split(sentence):
        for word in _words_within(clause, max_chars):
            joined = f"{current} {word}".strip() if current else word
            if len(joined) > max_chars and current:
                out.append(current)
                current = word
            else:
                current = joined
    if current:
        out.append(current)
    return out


def _words_within(clause: str, max_chars: int) -> list[str]:
    """A clause, or its words when the clause alone is too long (hard-cut very long words)."""
    if len(clause) <= max_chars:
        return [clause]
    words: list[str] = []
    for word in clause.split():
        words.extend(word[i : i + max_chars] for i in range(0, len(word), max_chars))
    return words


_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate of GPT tokens: words and punctuation marks.

    "Hello, world! This is a streaming test." counts 10, as OpenAI's usage reported for it.
    """
    return len(_TOKEN.findall(text))

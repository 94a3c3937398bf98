"""Whisper's byte-level BPE tokens as raw bytes (what OpenAI's `logprobs[].bytes` holds)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's reversible map between bytes and printable characters, inverted."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=False)}


def token_bytes(hf_tokenizer: object, token_id: int) -> bytes:
    piece = hf_tokenizer.id_to_token(token_id) or ""
    table = _unicode_to_byte()
    return bytes(table[ch] for ch in piece if ch in table)

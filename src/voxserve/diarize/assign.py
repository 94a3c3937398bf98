"""Words -> speakers, and Whisper segments -> speaker segments.

A word belongs to the speaker whose turn overlaps it most. Whisper's word times are a few
tens of ms loose, so a word that touches no turn (a pause the segmentation called silence)
keeps the previous word's speaker, or takes the nearest turn's when it opens a segment.
"""

from __future__ import annotations

from dataclasses import replace

from voxserve.diarize.pipeline import Turn
from voxserve.domain import Segment, Word


def speaker_for(start: float, end: float, turns: list[Turn]) -> str | None:
    """The speaker overlapping [start, end] most, or None when no turn touches it."""
    best, best_overlap = None, 0.0
    for turn in turns:
        overlap = min(end, turn.end) - max(start, turn.start)
        if overlap > best_overlap:
            best, best_overlap = turn.speaker, overlap
    return best


def nearest_speaker(time: float, turns: list[Turn], default: str = "A") -> str:
    if not turns:
        return default
    return min(turns, key=lambda t: max(t.start - time, time - t.end, 0.0)).speaker


def label_words(words: tuple[Word, ...], turns: list[Turn], previous: str | None) -> list[Word]:
    out = []
    for word in words:
        speaker = speaker_for(word.start, word.end, turns)
        if speaker is None:
            speaker = previous or nearest_speaker((word.start + word.end) / 2, turns)
        out.append(replace(word, speaker=speaker))
        previous = speaker
    return out


def split_by_speaker(segment: Segment, turns: list[Turn], first_id: int,
                     previous: str | None = None) -> list[Segment]:
    """One Whisper segment as one or more speaker segments, numbered from `first_id`."""
    if not segment.words:
        speaker = speaker_for(segment.start, segment.end, turns) or nearest_speaker(
            (segment.start + segment.end) / 2, turns)
        return [replace(segment, id=first_id, speaker=speaker)]
    groups: list[list[Word]] = []
    for word in label_words(segment.words, turns, previous):
        if groups and groups[-1][-1].speaker == word.speaker:
            groups[-1].append(word)
        else:
            groups.append([word])
    return [
        replace(
            segment, id=first_id + i, start=group[0].start, end=group[-1].end,
            text="".join(w.word for w in group), words=tuple(group), speaker=group[0].speaker,
            tokens=segment.tokens if len(groups) == 1 else (),
        )
        for i, group in enumerate(groups)
    ]

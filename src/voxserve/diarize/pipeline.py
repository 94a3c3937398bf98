"""Who spoke when: segmentation -> one embedding per speaker run -> agglomerative clustering
-> known-speaker matching. A cut-down pyannote-3.1 recipe; thresholds in `DiarizeConfig`.

Why per-run embeddings: segmentation-3.0 is good at *where* a speaker changes inside a 10 s
window but its local speaker ids mean nothing across windows (and alone it hears the 6.5 s
OpenAI meeting as one speaker). Embedding each contiguous run and clustering the embeddings
globally gives consistent identities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from voxserve.diarize.onnx_models import (
    FBANK_LENGTH,
    FBANK_SHIFT,
    FRAME_DURATION,
    FRAME_STEP,
    SAMPLE_RATE,
    WINDOW_SECONDS,
    SpeakerModels,
    fbank,
)


@dataclass(frozen=True)
class DiarizeConfig:
    window_step: float = 2.5  # seconds between segmentation windows
    min_run: float = 0.5  # shorter runs are too short to embed; they borrow a neighbour's label
    piece: float = 1.5  # long runs are embedded in pieces of at most this length
    min_gap: float = 0.1  # silences shorter than this inside a speaker's run are bridged
    silence_threshold: float = 0.3  # P(silence) from which a frame is a pause (see local_speakers)
    cluster_threshold: float = 0.4  # cosine distance, average linkage
    min_cluster_seconds: float = 1.0  # smaller clusters join their nearest neighbour
    match_threshold: float = 0.55  # cosine similarity to name a cluster after a reference


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class KnownSpeaker:
    name: str
    embedding: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Voice:
    """A speaker as one run of the diarizer heard them: the duration-weighted mean of their
    runs' embeddings (unit length), over `seconds` of embedded speech."""

    name: str
    embedding: np.ndarray = field(repr=False)
    seconds: float


@dataclass(frozen=True)
class Diarization:
    turns: list[Turn]
    voices: list[Voice]


@dataclass
class _Piece:
    start: float
    end: float
    group: tuple[int, int]  # (0, stitched local speaker id): a hint for unembedded runs
    embedding: np.ndarray | None = None
    cluster: int = -1

    @property
    def duration(self) -> float:
        return self.end - self.start


class Diarizer:
    def __init__(self, models: SpeakerModels, config: DiarizeConfig | None = None) -> None:
        self.models = models
        self.config = config or DiarizeConfig()

    # -- public -----------------------------------------------------------------------------

    def diarize(
        self,
        audio: np.ndarray,
        known: list[KnownSpeaker] | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> list[Turn]:
        """Speaker turns sorted by start; overlapping speech gives overlapping turns."""
        return self.diarize_voices(audio, known, min_speakers, max_speakers).turns

    def diarize_voices(
        self,
        audio: np.ndarray,
        known: list[KnownSpeaker] | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> Diarization:
        """The turns, and the voice of each speaker named in them: what a caller needs to
        recognise the same speakers in later audio (as known speakers). Speakers that match
        no known one are named A, B, ... skipping the known names."""
        pieces = self._pieces(audio)
        embedded = [p for p in pieces if p.embedding is not None]
        if not embedded:
            return Diarization([], [])
        labels = self._cluster(embedded, min_speakers, max_speakers)
        for piece, label in zip(embedded, labels, strict=False):
            piece.cluster = int(label)
        _label_short_pieces(pieces)
        names = self._name_clusters(pieces, known or [])
        turns = [Turn(p.start, p.end, names[p.cluster]) for p in pieces]
        voices = []
        for cluster, name in names.items():
            members = [p for p in pieces if p.cluster == cluster and p.embedding is not None]
            voices.append(Voice(name, _centroid(members), sum(p.duration for p in members)))
        return Diarization(_merge_turns(sorted(turns, key=lambda t: (t.start, t.end))), voices)

    def reference_embedding(self, audio: np.ndarray) -> np.ndarray:
        """One embedding for a known speaker's reference clip, from its speech only."""
        activity = self._activity(audio).max(axis=1)
        speech = np.repeat(activity > 0, round(FRAME_STEP * SAMPLE_RATE))  # per sample
        features = fbank(audio)
        frames = _fbank_mask(speech, len(features))
        chosen = features[frames] if frames.sum() >= 50 else features
        return self.models.embed(chosen)

    # -- segmentation -----------------------------------------------------------------------

    def _windows(self, audio: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Overlapping 10 s windows as strided views (no copy: an hour would be ~1 GB)."""
        size = int(WINDOW_SECONDS * SAMPLE_RATE)
        step = int(self.config.window_step * SAMPLE_RATE)
        count = max(1, int(np.ceil(max(0, len(audio) - size) / step)) + 1)
        padded = np.zeros((count - 1) * step + size, dtype=np.float32)
        padded[:len(audio)] = audio[:len(padded)]
        windows = np.lib.stride_tricks.sliding_window_view(padded, size)[::step]
        return windows, [i * step / SAMPLE_RATE for i in range(count)]

    def _activity(self, audio: np.ndarray) -> np.ndarray:
        """(frames, 3) speaker activity over the whole file.

        Each frame is read from the window where it is most central (segmentation is least
        reliable near a window's edges). Local speaker ids are only meaningful inside one
        window, so each window's ids are first permuted to agree best with the previous
        window's on the frames both see: a run then keeps one id across window borders."""
        from scipy.optimize import linear_sum_assignment

        windows, starts = self._windows(audio)
        local = self.models.local_speakers(windows, self.config.silence_threshold)
        per_window = local.shape[1]
        offsets = [int(round(s / FRAME_STEP)) for s in starts]
        for w in range(1, len(local)):
            shift = offsets[w] - offsets[w - 1]
            if shift >= per_window:
                continue
            previous, current = local[w - 1, shift:], local[w, :per_window - shift]
            agreement = previous.T @ current  # (3 previous ids, 3 current ids)
            rows, cols = linear_sum_assignment(-agreement)
            order = np.empty(len(cols), dtype=int)
            order[rows] = cols
            local[w] = local[w][:, order]
        total = int(np.ceil(len(audio) / SAMPLE_RATE / FRAME_STEP))
        centres = np.arange(total) * FRAME_STEP + FRAME_DURATION / 2
        half = WINDOW_SECONDS / 2
        owner = np.clip(np.rint((centres - half) / self.config.window_step), 0, len(starts) - 1)
        owner = owner.astype(int)
        index = np.clip(np.arange(total) - np.asarray(offsets)[owner], 0, per_window - 1)
        return local[owner, index]

    def _pieces(self, audio: np.ndarray) -> list[_Piece]:
        """One item per speaker run, embedded as the duration-weighted mean of its pieces."""
        activity = self._activity(audio)
        features = fbank(audio)
        duration = len(audio) / SAMPLE_RATE
        runs: list[_Piece] = []
        for speaker in range(activity.shape[1]):
            for first, last in _runs(activity[:, speaker] > 0, self.config.min_gap):
                start = first * FRAME_STEP
                end = min(duration, last * FRAME_STEP + FRAME_DURATION)
                runs.append(_Piece(start, end, (0, speaker), self._embed_run(start, end, features)))
        return sorted(runs, key=lambda p: p.start)

    def _embed_run(self, start: float, end: float, features: np.ndarray) -> np.ndarray | None:
        length = end - start
        if length < self.config.min_run:
            return None
        count = int(np.ceil(length / self.config.piece))
        bounds = np.linspace(start, end, count + 1)
        total = np.zeros(0)
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            first = int(a * SAMPLE_RATE) // FBANK_SHIFT
            last = max(first + 1, (int(b * SAMPLE_RATE) - FBANK_LENGTH) // FBANK_SHIFT + 1)
            chunk = features[first:last]
            if len(chunk) >= 20:
                vector = self.models.embed(chunk) * (b - a)
                total = vector if total.size == 0 else total + vector
        return _unit(total) if total.size else None

    # -- clustering -------------------------------------------------------------------------

    def _cluster(self, pieces: list[_Piece], low: int | None, high: int | None) -> np.ndarray:
        from scipy.cluster.hierarchy import fcluster, linkage

        if len(pieces) == 1:
            return np.zeros(1, dtype=int)
        vectors = np.stack([p.embedding for p in pieces])
        tree = linkage(vectors, method="average", metric="cosine")
        labels = fcluster(tree, t=self.config.cluster_threshold, criterion="distance") - 1
        count = labels.max() + 1
        if high is not None and count > high:
            labels = fcluster(tree, t=high, criterion="maxclust") - 1
        elif low is not None and count < low:
            labels = fcluster(tree, t=min(low, len(pieces)), criterion="maxclust") - 1
        if low is None:
            labels = self._absorb_small(vectors, labels, [p.duration for p in pieces])
        return _renumber(labels)

    def _absorb_small(self, vectors, labels, durations) -> np.ndarray:
        """Clusters with under `min_cluster_seconds` of speech are usually a noisy piece of a
        known voice: merge each into the cluster whose centroid is closest."""
        labels = labels.copy()
        while True:
            ids = np.unique(labels)
            if len(ids) < 2:
                return labels
            pairs = list(zip(durations, labels, strict=False))
            sizes = {c: sum(d for d, label in pairs if label == c) for c in ids}
            small = min(ids, key=lambda c: sizes[c])
            if sizes[small] >= self.config.min_cluster_seconds:
                return labels
            centroids = {c: _unit(vectors[labels == c].mean(axis=0)) for c in ids}
            others = [c for c in ids if c != small]
            nearest = max(others, key=lambda c: float(centroids[c] @ centroids[small]))
            labels[labels == small] = nearest

    def _name_clusters(self, pieces: list[_Piece], known: list[KnownSpeaker]) -> dict[int, str]:
        """Known speakers by Hungarian matching over cosine similarity (only above the
        threshold: an absent speaker must never be named); the rest A, B, ... in order of
        first appearance, as OpenAI labels them."""
        order: list[int] = []
        for piece in pieces:
            if piece.cluster not in order:
                order.append(piece.cluster)
        names: dict[int, str] = {}
        if known:
            from scipy.optimize import linear_sum_assignment

            centroids = [
                _centroid([p for p in pieces if p.cluster == c and p.embedding is not None])
                for c in order
            ]
            similarity = np.stack([k.embedding for k in known]) @ np.stack(centroids).T
            rows, cols = linear_sum_assignment(-similarity)
            for r, c in zip(rows, cols, strict=False):
                if similarity[r, c] >= self.config.match_threshold:
                    names[order[c]] = known[r].name
        # A known name that matched nothing still names someone else: never reuse it.
        taken = {k.name for k in known}
        letters = (name for name in _letters() if name not in taken)
        for cluster in order:
            if cluster not in names:
                names[cluster] = next(letters)
        return names


# -- helpers ---------------------------------------------------------------------------------


def _runs(active: np.ndarray, min_gap: float):
    """(first, last) frame of each run of activity, bridging gaps shorter than `min_gap`."""
    gap = int(round(min_gap / FRAME_STEP))
    first = None
    last = None
    for i in np.flatnonzero(active):
        if first is not None and i - last > gap + 1:
            yield first, last
            first = None
        if first is None:
            first = i
        last = i
    if first is not None:
        yield first, last


def _fbank_mask(speech_samples: np.ndarray, frames: int) -> np.ndarray:
    centres = np.arange(frames) * FBANK_SHIFT + 200
    inside = centres < len(speech_samples)
    mask = np.zeros(frames, dtype=bool)
    mask[inside] = speech_samples[centres[inside]]
    return mask


def _label_short_pieces(pieces: list[_Piece]) -> None:
    """Unembedded pieces take the label of their own group, else of the nearest piece in time."""
    by_group = {p.group: p.cluster for p in pieces if p.cluster >= 0}
    labelled = [p for p in pieces if p.cluster >= 0]
    for piece in pieces:
        if piece.cluster >= 0:
            continue
        if piece.group in by_group:
            piece.cluster = by_group[piece.group]
            continue
        middle = (piece.start + piece.end) / 2
        nearest = min(labelled, key=lambda p: abs((p.start + p.end) / 2 - middle))
        piece.cluster = nearest.cluster


def _merge_turns(turns: list[Turn]) -> list[Turn]:
    """Join a speaker's touching or near-touching turns (pieces of one run)."""
    merged: list[Turn] = []
    last_of: dict[str, int] = {}
    for turn in turns:
        i = last_of.get(turn.speaker)
        if i is not None and turn.start - merged[i].end <= 0.05 and i == len(merged) - 1:
            merged[i] = Turn(merged[i].start, max(merged[i].end, turn.end), turn.speaker)
            continue
        last_of[turn.speaker] = len(merged)
        merged.append(turn)
    return merged


def _centroid(members: list[_Piece]) -> np.ndarray:
    """The duration-weighted mean of embedded pieces, unit length."""
    weights = np.array([p.duration for p in members])
    stacked = np.stack([p.embedding for p in members])
    return _unit((stacked * weights[:, None]).sum(axis=0))


def _renumber(labels: np.ndarray) -> np.ndarray:
    _, out = np.unique(labels, return_inverse=True)
    return out


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


def _letters():
    """A, B, ..., Z, AA, AB, ..."""
    from itertools import count, product
    from string import ascii_uppercase

    for size in count(1):
        for combo in product(ascii_uppercase, repeat=size):
            yield "".join(combo)

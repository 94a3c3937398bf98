"""Benchmark inputs with reference texts: the 16 English clips of ../shared/audio/en, long files
joined from them, and acted Czech (or Dutch) lines of Debian's fillets-ng-data-cs/-nl with the
game's Czech text and English subtitles. The Debian packages are GPL-2: they are fetched with
`apt-get download` into a temporary directory at benchmark time and never stored in the repo."""

from __future__ import annotations

import io
import random
import re
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxserve.audio.decode import SAMPLE_RATE, decode_audio

ROOT = Path(__file__).resolve().parents[1]
SHARED_EN = ROOT.parent / "shared" / "audio" / "en"
FILLETS = "/usr/share/games/fillets-ng"


@dataclass(frozen=True)
class Clip:
    name: str
    samples: np.ndarray
    reference: str  # in the clip's language
    translation: str = ""  # English reference, for translation rows

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE

    @property
    def wav(self) -> bytes:
        return wav_bytes(self.samples)


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def english_clips(folder: Path = SHARED_EN) -> list[Clip]:
    lines = (folder / "transcripts.tsv").read_text().splitlines()
    refs = dict(line.split("\t", 1) for line in lines if "\t" in line)
    return [Clip(name, decode_audio((folder / name).read_bytes()), text)
            for name, text in refs.items()]  # the tsv order, as issue 12 measured


def join(clips: list[Clip], name: str, gap_seconds: float = 1.0,
         min_seconds: float = 0.0) -> Clip:
    """The clips one after another, each followed by a silence, repeated until `min_seconds`."""
    gap = np.zeros(int(gap_seconds * SAMPLE_RATE), dtype=np.float32)
    pieces, texts, translations, total = [], [], [], 0
    while True:
        for clip in clips:
            pieces += [clip.samples, gap]
            texts.append(clip.reference)
            translations.append(clip.translation)
            total += clip.samples.size + gap.size
            if min_seconds and total >= min_seconds * SAMPLE_RATE:
                break
        if total >= min_seconds * SAMPLE_RATE:
            break
    return Clip(name, np.concatenate(pieces), " ".join(texts), " ".join(translations))


def shuffled_joins(clips: list[Clip], seeds: tuple[int, ...] = (1, 2, 3)) -> list[Clip]:
    """The clips joined as `join` does, once per seed in a shuffled order: the same speech cut
    into other chunk layouts (one file's WER moves by 0.04 with its layout)."""
    out = []
    for seed in seeds:
        order = clips[:]
        random.Random(seed).shuffle(order)
        out.append(join(order, f"long-en-{seed}"))
    return out


def _apt_download(package: str, into: Path) -> Path:
    subprocess.run(["apt-get", "download", package], cwd=into, check=True,
                   capture_output=True)
    return next(into.glob(f"{package}_*.deb"))


def _extract(deb: Path, into: Path, *patterns: str) -> None:
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into), "--wildcards", *patterns],
                   stdin=tar.stdout, check=True)
    tar.wait()


_DIALOG = re.compile(r'dialogId\("([^"]+)",\s*"[^"]*",\s*"((?:[^"\\]|\\.)*)"\)'
                     r'(?:\s*dialogStr\("((?:[^"\\]|\\.)*)"\))?')


def _dialogs(path: Path) -> dict[str, tuple[str, str]]:
    """dialog id -> (English subtitle, the file's own translation or '')."""
    if not path.exists():
        return {}
    return {m[1]: (m[2], m[3] or "") for m in _DIALOG.finditer(path.read_text(errors="replace"))}


def fillets_clips(lang: str = "cs", cache: Path | None = None) -> list[Clip]:
    """Every acted line of the game in `lang` that has an English subtitle and a text in its own
    language, sorted by level and id. Fetched into `cache` (a temporary dir by default)."""
    if cache is None:
        cache = Path(tempfile.mkdtemp(prefix="voxserve-fillets-"))
    root = cache / "root"
    if not (root / FILLETS.lstrip("/") / "sound").exists():
        root.mkdir(parents=True, exist_ok=True)
        _extract(_apt_download(f"fillets-ng-data-{lang}", cache), root, "*.ogg")
        _extract(_apt_download("fillets-ng-data", cache), root, "*/dialogs_*.lua")
    base = root / FILLETS.lstrip("/")
    clips = []
    for level in sorted((base / "sound").iterdir()):
        texts = _dialogs(base / "script" / level.name / f"dialogs_{lang}.lua")
        for ogg in sorted((level / lang).glob("*.ogg")) if (level / lang).is_dir() else []:
            english, own = texts.get(ogg.stem, ("", ""))
            if english and own:
                clips.append(Clip(f"{level.name}/{ogg.name}", decode_audio(ogg.read_bytes()),
                                  own, english))
    return clips


def spread(clips: list[Clip], count: int, min_s: float = 1.5, max_s: float = 12.0) -> list[Clip]:
    """`count` clips picked evenly over the whole list (so over many levels and voices)."""
    fitting = [c for c in clips if min_s <= c.seconds <= max_s]
    step = max(1, len(fitting) // count)
    return fitting[::step][:count]

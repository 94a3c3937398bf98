"""Diarizer cost on real audio: CPU seconds per audio second (the issue's budget is 0.1 on two
cores), wall time, load time and the diarizer's own peak RSS (it runs alone in this process:
no Whisper). Prints a table, then one JSON line.

    PYTHONPATH=src:tests python bench/bench_diarize.py [--cache-dir DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests" / "fixtures" / "audio"
FOUR_SPEAKERS = ("arctic_a0007.wav", "arctic_a0009.wav", "sense_and_sensibility_01_austen_64kb-0870.wav",
                 "goforward.wav", "arctic_a0009.wav", "sense_and_sensibility_01_austen_64kb-0890.wav",
                 "arctic_a0007.wav", "goforward.wav")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "models")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
    import numpy as np

    from voxserve.audio.decode import decode_audio
    from voxserve.diarize.install import converted_models
    from voxserve.diarize.onnx_models import SpeakerModels
    from voxserve.diarize.pipeline import Diarizer

    def load(name: str) -> np.ndarray:
        return decode_audio((AUDIO / name).read_bytes())

    inputs = {
        "phone_call_2spk (2 spk)": load("phone_call_2spk.wav"),
        "audio_meeting (2 spk)": load("audio_meeting.wav"),
        "two_cities (1 spk)": load("two_cities.wav"),
        "joined clips (4 spk)": np.concatenate([load(n) for n in FOUR_SPEAKERS]),
    }
    inputs["phone_call x10 (2 spk)"] = np.tile(inputs["phone_call_2spk (2 spk)"], 10)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    diarizer = Diarizer(SpeakerModels.load(converted_models(args.cache_dir)))
    load_s = time.perf_counter() - started
    rows = []
    for name, audio in inputs.items():
        seconds = audio.size / 16000
        cpu, wall = [], []
        for _ in range(args.repeat):
            c0, w0 = time.process_time(), time.perf_counter()
            turns = diarizer.diarize(audio)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        rows.append({
            "input": name, "audio_s": round(seconds, 1), "speakers": len({t.speaker for t in turns}),
            "cpu_s": round(min(cpu), 3), "wall_s": round(min(wall), 3),
            "cpu_rtf": round(min(cpu) / seconds, 4),
        })
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'input':<26}{'audio s':>9}{'spk':>5}{'CPU s':>8}{'wall s':>8}{'CPU RTF':>9}")
    for r in rows:
        print(f"{r['input']:<26}{r['audio_s']:>9}{r['speakers']:>5}{r['cpu_s']:>8}{r['wall_s']:>8}{r['cpu_rtf']:>9}")
    print(f"load {load_s:.2f} s; peak RSS {peak:.0f} MB (audio decoding alone {rss_before:.0f} MB); "
          f"{os.cpu_count()} cores")
    print(json.dumps({"bench": "diarize", "load_s": round(load_s, 3), "peak_rss_mb": round(peak),
                      "cores": os.cpu_count(), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Batching Whisper's model calls across requests.

Every request decodes in its own worker thread with faster-whisper's own loop (seek, prompt,
temperature fallback, timestamps), so a batched result is the unbatched result: only the two
heavy calls on the CTranslate2 model, `encode` and `generate`, go through `BatchingWhisper`,
which merges calls that arrive together from different threads into one engine call and hands
each caller its own row of the output.

Rules that keep this honest:
- Only calls with identical options are merged (beam size, temperature, length limits…), and
  `generate` calls only when their prompts put `<|startoftranscript|>` at the same position
  (CTranslate2 requires it; truncating one request's previous text would change its result).
  In practice: the first window of every file (all short clips) batches freely, later windows
  of long files batch when their carried context happens to be equally long.
- The first caller of a batch (its leader) waits at most `window` seconds for companions, and
  not at all when every decode running on this model is already waiting in some batch: a lone
  request is never slowed down. `max_batch` bounds a batch.
- Arrival order is kept inside a batch and a long file contributes one window per batch, so it
  cannot starve short requests.

On a GPU the encoder output is copied to host memory to be split (megabytes, negligible next to
the decode); `align` and `detect_language` pass straight through to the model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


class _Batch:
    def __init__(self) -> None:
        self.inputs: list[Any] = []
        self.results: list[Any] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class BatchingWhisper:
    """A drop-in for `ctranslate2.models.Whisper` (what faster-whisper holds as `.model`)."""

    def __init__(
        self,
        model: Any,
        window: float,
        max_batch: int,
        sot_token: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._model = model
        self._sot = sot_token
        self._window = window
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._open: dict[Hashable, _Batch] = {}
        self._decoding = 0  # decodes running on this model (see `decoding`)
        self._joined = 0  # of those, how many are inside a batch right now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    @contextmanager
    def decoding(self) -> Iterator[None]:
        """Brackets one request's decode, so a leader knows whether anyone could still join."""
        with self._cond:
            self._decoding += 1
        try:
            yield
        finally:
            with self._cond:
                self._decoding -= 1
                self._cond.notify_all()

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        if features.shape[0] != 1:
            return self._model.encode(features, to_cpu=to_cpu)
        # On a GPU the output must come back to the host to be split per caller.
        to_cpu = to_cpu or self._model.device == "cuda"
        return self._join(("encode", to_cpu), np.asarray(features), self._encode_batch(to_cpu))

    def generate(self, features: Any, prompts: list, **options: Any) -> Any:
        if len(prompts) != 1 or options.get("asynchronous") or features.device != "cpu":
            return self._model.generate(features, prompts, **options)
        prompt = list(prompts[0])
        # Previous-text tokens come before <|startoftranscript|>; its position must match.
        sot_at = prompt.index(self._sot) if self._sot in prompt else len(prompt)
        key = ("generate", sot_at, _freeze(options))
        return [self._join(key, (np.asarray(features), prompt), self._generate_batch(options))]

    # -- merging ---------------------------------------------------------------------------

    def _encode_batch(self, to_cpu: bool) -> Callable[[list], list]:
        def run(inputs: list) -> list:
            import ctranslate2

            output = self._model.encode(_stack(inputs), to_cpu=to_cpu)
            if len(inputs) == 1:
                return [output]
            rows = np.asarray(output)
            # Copies: a row must not point into the batch's buffer once that is freed.
            return [ctranslate2.StorageView.from_array(np.array(rows[i : i + 1]))
                    for i in range(len(inputs))]

        return run

    def _generate_batch(self, options: dict) -> Callable[[list], list]:
        def run(inputs: list) -> list:
            features = _stack([f for f, _ in inputs])
            return list(self._model.generate(features, [p for _, p in inputs], **options))

        return run

    def _join(self, key: Hashable, item: Any, run: Callable[[list], list]) -> Any:
        with self._cond:
            batch = self._open.get(key)
            leader = batch is None
            if leader:
                batch = self._open[key] = _Batch()
            index = len(batch.inputs)
            batch.inputs.append(item)
            self._joined += 1
            if len(batch.inputs) >= self._max_batch:
                del self._open[key]
            self._cond.notify_all()
            if leader:
                self._gather(key, batch)
        try:
            if leader:
                self._run(batch, run)
            else:
                batch.done.wait()
        finally:
            with self._cond:
                self._joined -= 1
        if batch.error is not None:
            raise batch.error
        assert batch.results is not None
        return batch.results[index]

    def _gather(self, key: Hashable, batch: _Batch) -> None:
        """Called with the lock held: wait for companions, then close the batch."""
        deadline = time.monotonic() + self._window
        while self._open.get(key) is batch and self._decoding > self._joined:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        if self._open.get(key) is batch:
            del self._open[key]

    def _run(self, batch: _Batch, run: Callable[[list], list]) -> None:
        try:
            batch.results = run(batch.inputs)
            if self._on_batch is not None:
                self._on_batch(len(batch.inputs))
        except BaseException as exc:  # every caller of the batch sees the engine's error
            batch.error = exc
        finally:
            batch.done.set()


def _stack(arrays: list[np.ndarray]) -> Any:
    import ctranslate2

    joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(joined))


def _freeze(options: dict) -> Hashable:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))

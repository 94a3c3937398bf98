"""Batching Whisper's model calls across requests.

Every request decodes in its own worker thread with faster-whisper's own loop (seek, prompt,
temperature fallback, timestamps), so a batched result is the unbatched result: only the two
heavy calls on the CTranslate2 model, `encode` and `generate`, go through `BatchingWhisper`,
which merges calls that arrive together from different threads into one engine call and hands
each caller its own row of the output.

Rules that keep this honest:
- Only calls with identical options are merged (beam size, temperature, length limits…), and
  `generate` calls only when their prompts put `<|startoftranscript|>` at the same position
  and as many task tokens after it (CTranslate2 requires both; truncating one request's
  previous text would change its result; a plain-text decode has one task token more,
  `<|notimestamps|>`, than a timestamped one).
  In practice: the first window of every file (all short clips) batches freely, later windows
  of long files batch when their carried context happens to be equally long.
- At most one batch per CTranslate2 replica runs at a time; the others queue in arrival order
  and stay open to newcomers while they queue. This is where batches grow under load: while
  the replicas are busy, the requests that arrive meanwhile gather into the next batch. (Handing
  every batch to CTranslate2 at once would only queue it inside the engine, closed, and under
  16 clients batches averaged 1.02 calls.)
- With a `shared` engine (CPU, see runtime/layout.py) an `encode` runs on the solo engine, which
  has every core, only when nothing else runs or waits and no other decode is under way;
  otherwise it takes a shared replica with its share of the cores. Nothing starts while the
  solo engine runs, so the cores are never oversubscribed by batches. A `generate` always
  takes a shared replica: beam search on one thread is faster than on two (whisper-base,
  beam 5, 2 cores: 0.34 s against 0.51 s for a short English clip, 1.84 s against 2.43 s
  for 30 s of Czech; its matrices are too small to split), while the encoder gains from
  every core (0.90 s against 0.59 s).
- A leader whose turn has come waits at most `window` seconds from its arrival for more
  companions, and not at all when every decode running on this model is already waiting in
  some batch: a lone request is never slowed down. `max_batch` bounds a batch.
- Arrival order is kept inside a batch and between batches, and a long file contributes one
  window per batch, so it cannot starve short requests.

On a GPU the encoder output is copied to host memory to be split (megabytes, negligible next to
the decode); `align` and `detect_language` pass straight through to the model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
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


class _Engine:
    """A CTranslate2 Whisper model and how many of its replicas are running a batch."""

    def __init__(self, model: Any, replicas: int) -> None:
        self.model = model
        self.replicas = replicas
        self.busy = 0

    @property
    def free(self) -> bool:
        return self.busy < self.replicas


class BatchingWhisper:
    """A drop-in for `ctranslate2.models.Whisper` (what faster-whisper holds as `.model`)."""

    def __init__(
        self,
        model: Any,
        window: float,
        max_batch: int,
        sot_token: int,
        replicas: int = 1,
        shared: Any = None,
        shared_replicas: int = 2,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """`model` (with `replicas` replicas) also answers every call that is not merged;
        `shared`, when given, is a second model of the same weights for concurrent batches."""
        self._model = model
        self._solo = _Engine(model, replicas)
        self._shared = _Engine(shared, shared_replicas) if shared is not None else None
        self._sot = sot_token
        self._window = window
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._open: dict[Hashable, _Batch] = {}
        self._decoding = 0  # decodes running on this model (see `decoding`)
        self._joined = 0  # of those, how many are inside a batch right now
        self._queued: deque[_Batch] = deque()  # batches waiting for a replica, oldest first

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
        # Windows of one length merge (live passes encode shorter ones: short_window.py).
        features = np.asarray(features)
        return self._join(("encode", to_cpu, features.shape), features,
                          self._encode_batch(to_cpu))

    def generate(self, features: Any, prompts: list, **options: Any) -> Any:
        if len(prompts) != 1 or options.get("asynchronous") or features.device != "cpu":
            return self._model.generate(features, prompts, **options)
        prompt = list(prompts[0])
        # Previous-text tokens come before <|startoftranscript|>, task tokens (language, task,
        # <|notimestamps|>) after it: CTranslate2 needs both counts equal across a batch.
        sot_at = prompt.index(self._sot) if self._sot in prompt else len(prompt)
        features = np.asarray(features)
        key = ("generate", features.shape, sot_at, len(prompt) - sot_at, _freeze(options))
        return [self._join(key, (features, prompt), self._generate_batch(options))]

    # -- merging ---------------------------------------------------------------------------

    def _encode_batch(self, to_cpu: bool) -> Callable[[Any, list], list]:
        def run(model: Any, inputs: list) -> list:
            import ctranslate2

            output = model.encode(_stack(inputs), to_cpu=to_cpu)
            if len(inputs) == 1:
                return [output]
            rows = np.asarray(output)
            # Copies: a row must not point into the batch's buffer once that is freed.
            return [ctranslate2.StorageView.from_array(np.array(rows[i : i + 1]))
                    for i in range(len(inputs))]

        return run

    def _generate_batch(self, options: dict) -> Callable[[Any, list], list]:
        def run(model: Any, inputs: list) -> list:
            features = _stack([f for f, _ in inputs])
            return list(model.generate(features, [p for _, p in inputs], **options))

        return run

    def _join(self, key: Hashable, item: Any, run: Callable[[Any, list], list]) -> Any:
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
                engine = self._take_replica(key, batch)
        try:
            if leader:
                try:
                    self._run(batch, run, engine.model)
                finally:
                    with self._cond:
                        engine.busy -= 1
                        self._cond.notify_all()
            else:
                batch.done.wait()
        finally:
            with self._cond:
                self._joined -= 1
        if batch.error is not None:
            raise batch.error
        assert batch.results is not None
        return batch.results[index]

    def _take_replica(self, key: Hashable, batch: _Batch) -> _Engine:
        """Called with the lock held: queue for a replica (the batch stays open meanwhile),
        wait out the gathering window if companions may still come, then close the batch."""
        deadline = time.monotonic() + self._window
        self._queued.append(batch)
        solo_pays = key[0] != "generate"
        while True:
            engine = self._free_engine(batch, solo_pays)
            if engine is not None:
                still_open = self._open.get(key) is batch
                others_may_join = self._decoding > self._joined
                left = deadline - time.monotonic()
                if not (still_open and others_may_join and left > 0):
                    break
                self._cond.wait(left)
            else:
                self._cond.wait()
        self._queued.popleft()
        engine.busy += 1
        if self._open.get(key) is batch:
            del self._open[key]
        return engine

    def _free_engine(self, batch: _Batch, solo_pays: bool) -> _Engine | None:
        """The engine the oldest queued batch may run on now, if `batch` is that one; the
        solo engine only for a call that gains from its cores (`solo_pays`)."""
        if self._queued[0] is not batch:
            return None
        solo, shared = self._solo, self._shared
        if shared is None:
            return solo if solo.free else None
        if solo.busy:
            return None
        alone = shared.busy == 0 and len(self._queued) == 1 and self._decoding == self._joined
        if alone and solo_pays:
            return solo
        return shared if shared.free else None

    def _run(self, batch: _Batch, run: Callable[[Any, list], list], model: Any) -> None:
        try:
            batch.results = run(model, batch.inputs)
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

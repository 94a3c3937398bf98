"""What one live session may cost everyone else (issue 24: "live audio as solid and fast as the
file path"), driven by real WebSocket clients with real speech against whisper-tiny.en.

* A single legal append (just under OpenAI's 15 MiB of base64: about four minutes of 24 kHz
  PCM16) is decoded, resampled and screened by the VAD off the event loop: another session's
  WebSocket pings are answered within 100 ms while it is digested, and the session goes on.
* Clients that append at 20x real time and never read are bounded: the server either keeps
  up or ends such a session with OpenAI's `error` event (`session_backlog_exceeded`) and a
  1008 close; its memory stays under a stated ceiling, and a session at real-time pace beside
  them still gets every turn, right and in time.

The server runs in a subprocess of its own (conftest's `LiveServer` in a child interpreter),
so that its memory can be read from /proc and its event loop shares nothing with the test's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jiwer
import numpy as np
import pytest
import websockets
from conftest import audio_path, reference_texts
from realtime_audio import ENGLISH_CLIPS as CLIPS
from realtime_audio import chunks, pcm24, speech
from websockets.frames import Opcode
from whisper_normalizer.english import EnglishTextNormalizer

from voxserve.audio.decode import SAMPLE_RATE, decode_audio

TESTS = Path(__file__).resolve().parent
normalize = EnglishTextNormalizer()

# The child: conftest's LiveServer (the same settings every test server has), its URL on
# stdout once the preloaded model is loaded; it stops when its stdin closes.
_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from conftest import LiveServer
with LiveServer(**json.loads(sys.argv[2])) as server:
    server.wait_ready(120)
    print(server.base_url, flush=True)
    sys.stdin.read()
"""


class ServerProcess:
    """conftest's `LiveServer(**overrides)` in a subprocess: `pid` is the server's own."""

    def __init__(self, **overrides) -> None:
        self.overrides = overrides

    def __enter__(self) -> ServerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(TESTS), json.dumps(self.overrides)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        try:
            ready, _, _ = select.select([self.process.stdout], [], [], 180)
            line = self.process.stdout.readline().strip() if ready else ""
            if not line.startswith("http://127.0.0.1:"):
                raise RuntimeError(f"the server did not start (exit code {self.process.poll()})")
        except BaseException:
            self.process.kill()
            self.process.wait(30)
            raise
        self.base_url = line
        self.port = int(line.rsplit(":", 1)[1])
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime?intent=transcription"

    def rss_mb(self) -> float:
        """The server's resident memory now (VmRSS), in MB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS for the server")

    def __exit__(self, *exc) -> None:
        self.process.stdin.close()  # LiveServer's exit: uvicorn stops, the thread joins
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    """A fresh server per test, tiny.en loaded before the test starts (so no first pass also
    loads the model, and no test sees another's memory)."""
    with ServerProcess(preload=["whisper-tiny.en"]) as live:
        yield live


def session_update(**input_fields) -> str:
    return json.dumps({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": input_fields}}})


ENGLISH = {"transcription": {"model": "whisper-1", "language": "en"}}


async def next_event(ws, kind: str | None = None, timeout: float = 120) -> dict:
    """The next event (of `kind`, skipping others)."""
    deadline = time.monotonic() + timeout
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if kind is None or event["type"] == kind:
            return event


def file_endpoint_wer(server: ServerProcess, names: list[str]) -> float:
    """The file endpoint's WER on these clips, same model: what live text is held to."""
    hypotheses = []
    for name in dict.fromkeys(names):
        response = httpx.post(f"{server.base_url}/v1/audio/transcriptions", timeout=120,
                              files={"file": (name, audio_path(name).read_bytes())},
                              data={"model": "whisper-1", "language": "en"})
        response.raise_for_status()
        hypotheses.append((name, response.json()["text"]))
    text = dict(hypotheses)
    return jiwer.wer([normalize(reference_texts()[n]) for n in names],
                     [normalize(text[n]) for n in names])


def wer(names: list[str], transcripts: list[str]) -> float:
    return jiwer.wer([normalize(reference_texts()[n]) for n in names],
                     [normalize(t) for t in transcripts])


# -- 1. a huge append ----------------------------------------------------------------------

# OpenAI's limit on an append's `audio`, in base64 characters.
MAX_APPEND_CHARS = 15 * 2**20
# Between the clips of the huge append: far more than the VAD's 500 ms, so each clip is one
# turn, and the append is mostly silence the VAD must still score frame by frame.
HUGE_GAP_SECONDS = 12.0
PING_EVERY = 0.020
# A loop that does nothing heavier than moving JSON answers a ping in a few ms; 100 ms is the
# issue's bound, room for a loaded 2-core machine and far below what screening four minutes
# of audio in one piece costs when it runs on the loop.
PONG_BOUND = 0.100
BASELINE_PINGS = 10  # answered before A's append is sent


def huge_append() -> tuple[str, list[str]]:
    """The base64 of as much 24 kHz PCM16 as fits just under the limit: the clips in turn,
    each followed by `HUGE_GAP_SECONDS` of silence, then silence to the end. Returns the
    `audio` and the clips it holds, in order (each one turn)."""
    raw_bytes = (MAX_APPEND_CHARS - 4) // 4 * 3 // 2 * 2  # whole samples, base64 under the limit
    budget = raw_bytes // 2 * SAMPLE_RATE // 24_000 - 2 * SAMPLE_RATE  # 2 s of silence at the end
    gap = np.zeros(int(HUGE_GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    pieces, names, used = [np.zeros(SAMPLE_RATE // 2, dtype=np.float32)], [], SAMPLE_RATE // 2
    clips = {name: decode_audio(audio_path(name).read_bytes()) for name in CLIPS}
    while True:
        name = CLIPS[len(names) % len(CLIPS)]
        if used + clips[name].size + gap.size > budget:
            break
        pieces += [clips[name], gap]
        names.append(name)
        used += clips[name].size + gap.size
    data = pcm24(np.concatenate(pieces))
    data += bytes(raw_bytes - len(data))
    audio = base64.b64encode(data).decode()
    assert MAX_APPEND_CHARS - 16 < len(audio) <= MAX_APPEND_CHARS
    return audio, names


class Pinger:
    """Pings a connection every `PING_EVERY` s and times each pong on this (otherwise idle)
    event loop."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.sent: list[tuple[float, asyncio.Future]] = []
        self.answered: dict[int, float] = {}  # ping index -> latency
        self.lag = 0.0  # the worst delay of this loop itself in sending a ping on time
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._baseline = asyncio.Event()  # the first BASELINE_PINGS pongs have come

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not self._stop.is_set():
            sent = loop.time()
            self.lag = max(self.lag, sent - due)
            waiter = await self.ws.ping()
            index = len(self.sent)
            self.sent.append((sent, waiter))
            waiter.add_done_callback(lambda _, i=index, s=sent: self._answer(i, loop.time() - s))
            due += PING_EVERY
            try:
                await asyncio.wait_for(self._stop.wait(), max(0.0, due - loop.time()))
            except TimeoutError:
                pass

    def _answer(self, index: int, latency: float) -> None:
        self.answered.setdefault(index, latency)
        if len(self.answered) >= BASELINE_PINGS:
            self._baseline.set()

    async def baseline(self) -> None:
        """Waits for the first `BASELINE_PINGS` pongs: the quiet loop's latency."""
        await asyncio.wait_for(self._baseline.wait(), 30)

    async def stop(self) -> list[tuple[float, float]]:
        """(sent at, latency) of every ping; a pong still missing after 10 s counts as inf."""
        self._stop.set()
        await self._task
        waiters = [w for _, w in self.sent]
        await asyncio.wait(waiters, timeout=10)
        return [(sent, self.answered.get(i, float("inf")))
                for i, (sent, _) in enumerate(self.sent)]


async def test_a_huge_append_does_not_block_other_sessions(server):
    """Session A sends one append just under 15 MiB of base64 (about 245 s of audio: the
    four clips in turn, 12 s of silence after each), with server_vad, so the server must
    decode, resample and VAD-screen four minutes of audio at once. Session B, already open,
    is pinged every 20 ms from before A's send until A has been told of its last turn's
    commit (which it can only be once the VAD has read the audio up to that clip's end, so
    the pings span the server's digestion of the append): every pong must come within
    100 ms. Then A's session still works: every clip is one turn, committed in order, and
    the transcripts are within the file endpoint's WER on the same clips (+0.05)."""
    audio, names = huge_append()
    message = json.dumps({"type": "input_audio_buffer.append", "audio": audio})
    reference_wer = file_endpoint_wer(server, names)  # also warms the model's first pass
    # Like the official SDK: no compression (and no keepalive pings of the library's own).
    options = {"compression": None, "ping_interval": None, "max_size": None}
    async with websockets.connect(server.ws_url(), **options) as b, \
            websockets.connect(server.ws_url(), **options) as a:
        await next_event(b, "session.created")
        await next_event(a, "session.created")
        await a.send(session_update(**ENGLISH))
        assert (await next_event(a, "session.updated"))["session"]["audio"]["input"][
            "turn_detection"]["type"] == "server_vad"
        pinger = Pinger(b)
        pinger.start()
        try:
            await pinger.baseline()
            loop = asyncio.get_running_loop()
            sent_at = loop.time()
            await a.send(message)
            events, committed = [], 0
            while committed < len(names):
                event = await next_event(a, timeout=120)
                events.append(event)
                committed += event["type"] == "input_audio_buffer.committed"
            digested_at = loop.time()
            # A few seconds of pings at least, however fast the append was digested.
            end = max(digested_at + 0.2, sent_at + 3.0)
            await asyncio.sleep(max(0.0, end - loop.time()))
        finally:
            pings = await pinger.stop()
        window = [latency for sent, latency in pings if sent_at <= sent <= digested_at]
        worst = max(latency for _, latency in pings)
        slow = [round(latency * 1000) for _, latency in pings if latency > PONG_BOUND]
        report = (f"append digested in {digested_at - sent_at:.2f} s; {len(pings)} pings, "
                  f"{len(window)} during digestion; worst pong {worst * 1000:.0f} ms; "
                  f"{len(slow)} over {PONG_BOUND * 1000:.0f} ms: {slow[:20]}; this loop's own "
                  f"worst lag {pinger.lag * 1000:.0f} ms")
        assert len(window) >= (digested_at - sent_at) / PING_EVERY / 2, report
        assert worst <= PONG_BOUND, report

        # A's session goes on: every turn completes, in order, with the file path's text.
        completed = [e for e in events if e["type"].endswith("transcription.completed")]
        while len(completed) < len(names):
            event = await next_event(a, timeout=120)
            events.append(event)
            assert not event["type"].endswith("transcription.failed"), event
            if event["type"].endswith("transcription.completed"):
                completed.append(event)
    errors = [e["error"]["code"] for e in events if e["type"] == "error"]
    # Four minutes committed at once is more than the 30 s of backlog: saying so is allowed.
    assert set(errors) <= {"server_overloaded"}, errors
    items = [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]
    previous = [e["previous_item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]
    assert previous == [None, *items[:-1]]
    assert [e["item_id"] for e in completed] == items
    transcripts = [e["transcript"] for e in completed]
    assert wer(names, transcripts) <= reference_wer + 0.05, (transcripts, reference_wer)
    print(report)  # the figures, for `pytest -s`


# -- 2. clients that flood and never read --------------------------------------------------

SPEEDUP = 20  # the flood's pace: seconds of audio per second
# uvicorn pings every 20 s and closes a connection whose pong has not come 20 s later.
KEEPALIVE_SECONDS = 40.0
FLOOD_SECONDS = 60.0
FLOOD_CHUNK = 0.2  # seconds of audio per append: 9600 bytes, one every 10 ms per client
FLOOD_CLIPS = [
    "sense_and_sensibility_01_austen_64kb-0870.wav", "arctic_a0009.wav",
    "sense_and_sensibility_01_austen_64kb-0920.wav", "cards_005.wav",
    "sense_and_sensibility_01_austen_64kb-0930.wav", "arctic_a0007.wav",
]
TURNS = ["arctic_a0007.wav", "sense_and_sensibility_01_austen_64kb-0890.wav", "goforward.wav"]
# The two flood clients' kernel receive buffers. The deaf one's is tiny (4 KiB, which Linux
# doubles), so the server's events back up on the server's side within a second. The late
# reader's holds far more than the server sends it in a minute (about 4 KB of events a
# second), so what the server said before ending the session is still there to be read once
# the flood is over: a client that never reads can learn why it was closed in no other way.
DEAF_BUFFER = 4096
LATE_BUFFER = 4 * 2**20
# How far the server's RSS (read every second) may rise above its level before the floods.
# What a minute of this can show, measured on this 2-core machine: with decode passes running,
# RSS swings by up to 60 MB from one second to the next whatever the queues hold (a pass's
# working memory comes and goes), in both versions measured. The server before issue 24's
# bounds (1f875d3) kept each flood session's committed audio until its final pass, without a
# cap, but that grows by only about 0.5 MB a second per flood (1.3 MB a second of decoded
# audio at 20x, half of it transcribed as it comes), and uvicorn's keepalive drops a client
# that answers no ping after 40 s: its peaks were +183 and +186 MB; the capped design under
# way peaked at +147 to +156 MB (its flood sessions ended at their backlog limit, 20 s in).
# So within the test's minute this bound cannot tell a slow leak from the swings: it catches
# gross overuse (a server holding both floods' messages and their decoded audio, 5 MB a
# second together, passes it in under a minute) and leaves the swings room on top of two
# sessions' caps. What tells a capped session from an uncapped one here is how it ends
# (`check_flood_client`).
RSS_PEAK_MB = 250.0
# A turn's `.completed` after its `speech_stopped`: about 0.3-0.6 s on a quiet machine with
# one session (docs/benchmarks.md), a few seconds with floods sharing the lane and the two
# cores. 10 s is loose enough for a busy machine and fails when the floods' work queues ahead
# of this session's (its lag would then grow with the flood, to tens of seconds).
TURN_BOUND = 10.0
OTHER_AFTER = 100.0  # seconds of audio each flood has sent when the third session starts
# The three turns hold 29 words (normalized). Live text is fixed as it comes, so a word the
# live passes misheard stays: seen once beside the floods, "unless" as "I'd less" ("i would
# less" normalized, three errors: 0.103). Up to three words may differ from the file
# endpoint's; audio lost or crossed between sessions costs far more.
TURNS_WER_MARGIN = 0.11
BACKLOG = "session_backlog_exceeded"


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of a socket (1: established; 7: reset; 8: the peer closed)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def server_send_queue(server_port: int, client_port: int) -> int:
    """Bytes the server has written to a client's connection that have not reached the
    client's kernel yet (the server socket's tx_queue in /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        ports = (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16))
        if ports == (server_port, client_port):
            return int(fields[4].split(":")[0], 16)
    return 0


class NeverReads:
    """A WebSocket client that never reads while it floods: websockets' sans-I/O protocol
    over a plain socket with a chosen kernel receive buffer. Nothing reads the socket until
    `read_what_came`, and the socket stays open whatever happens to the connection, so what
    reached its kernel before a close or a reset can still be read then."""

    def __init__(self, url: str, port: int, receive_buffer: int) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self._flush_blocking()
        while self.protocol.state is websockets.State.CONNECTING:  # the handshake's answer
            data = self.sock.recv(4096)
            assert data, "the server closed during the handshake"
            self.protocol.receive_data(data)
        assert self.protocol.handshake_exc is None, self.protocol.handshake_exc
        self.sock.setblocking(False)
        self.sent_seconds = 0.0
        self.ended_by = "the full minute"
        self.events: list[dict] = []
        self.close_code: int | None = None  # from the close frame read, if one came
        self.close_reason = ""
        self.closed_at: float | None = None  # seconds into the flood, if the server closed
        self.ended = False  # the connection is over (read after the flood)
        self.passed = asyncio.Event()  # the flood has sent `mark` seconds of audio, or ended

    def _flush_blocking(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    async def send(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        loop = asyncio.get_running_loop()
        for data in self.protocol.data_to_send():
            if data:
                await loop.sock_sendall(self.sock, data)

    async def flood(self, appends: list[str], seconds: float, mark: float) -> None:
        """`appends` over and over at `SPEEDUP`x real time for `seconds`, or until the
        connection is no longer established (the server closed it) or the server stops
        taking what is sent; `passed` is set once `mark` seconds of audio are sent."""
        try:
            await self._flood(appends, seconds, mark)
        finally:
            self.passed.set()

    async def _flood(self, appends: list[str], seconds: float, mark: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self.send(session_update(**ENGLISH))  # its answer is never read either
        for sent in range(10**9):
            now = loop.time()
            if now - start >= seconds:
                return
            await asyncio.sleep(max(0.0, start + sent * FLOOD_CHUNK / SPEEDUP - now))
            if tcp_state(self.sock) != 1:
                self.ended_by = f"the server closing the connection at {now - start:.1f} s"
                self.closed_at = now - start
                return
            try:  # waits while the server does not read; never past the flood's end
                await asyncio.wait_for(self.send(appends[sent % len(appends)]),
                                       max(0.01, start + seconds - loop.time()))
            except TimeoutError:
                self.ended_by = "the server no longer reading"
                return
            except OSError as error:
                self.ended_by = f"a failed send ({error})"
                return
            self.sent_seconds += FLOOD_CHUNK
            if self.sent_seconds >= mark:
                self.passed.set()

    async def read_what_came(self, seconds: float) -> None:
        """Reads the socket until the server's close frame, the connection's end, or
        `seconds`; keeps the events and the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.protocol.close_rcvd is None and loop.time() < deadline:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 2**20),
                                              deadline - loop.time())
            except TimeoutError:
                break
            except OSError:  # a reset: what came before it has been read
                self.ended = True
                break
            if not data:
                self.ended = True
                break
            self.protocol.receive_data(data)
        for frame in self.protocol.events_received():
            if getattr(frame, "opcode", None) is Opcode.TEXT:
                self.events.append(json.loads(frame.data))
        if self.protocol.close_rcvd is not None:
            self.close_code = self.protocol.close_rcvd.code
            self.close_reason = self.protocol.close_rcvd.reason
        self.ended = self.ended or tcp_state(self.sock) != 1

    def summary(self) -> str:
        last = [e["error"] if e["type"] == "error" else e["type"] for e in self.events[-2:]]
        return (f"{self.sent_seconds:.0f} s of audio sent, ended by {self.ended_by}; "
                f"{len(self.events)} events read, the last {last}, close code {self.close_code}")

    def close(self) -> None:
        self.sock.close()


async def stream_turns(server: ServerProcess, paced: bool = True) -> list[dict]:
    """A well-behaved session: `TURNS` in 100 ms appends (at real-time pace, or at once);
    returns its events (each with its arrival time, `at`), up to its last `.completed`."""
    audio = pcm24(speech(*TURNS, gap=1.5))
    events: list[dict] = []
    async with websockets.connect(server.ws_url(), compression=None) as ws:
        await next_event(ws, "session.created")
        await ws.send(session_update(**ENGLISH))
        await next_event(ws, "session.updated")

        async def send() -> None:
            start = time.monotonic()
            for i, piece in enumerate(chunks(audio, 4800)):  # 100 ms each, on the clock
                if paced:
                    await asyncio.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))

        sender = asyncio.create_task(send())
        try:
            while sum(e["type"].endswith("transcription.completed") for e in events) < len(TURNS):
                events.append({**await next_event(ws, timeout=120), "at": time.monotonic()})
            await sender
        finally:
            sender.cancel()
    return events


def check_flood_client(client: NeverReads, must_hear_the_end: bool, report: str) -> None:
    """Kept up (no error but the lag warning; still open, or closed by the server's keepalive:
    a client that never reads answers no ping, and uvicorn closes it 40 s in with 1011), or
    ended OpenAI's way: the error `session_backlog_exceeded` as its last event, then a close
    frame with code 1008. A client whose buffer cannot hold the server's last words
    (`must_hear_the_end` False) may find its connection reset before it reads them; what it
    did read must still be in order. (Since live passes encode short windows, tiny.en keeps
    within the backlog limit with both floods, and the keepalive is what ends them.)"""
    codes = [e["error"]["code"] for e in client.events if e["type"] == "error"]
    assert set(codes) <= {"server_overloaded", BACKLOG}, report
    keepalive = (client.close_code == 1011 and "keepalive" in client.close_reason) or (
        client.close_code is None and client.closed_at is not None
        and client.closed_at >= KEEPALIVE_SECONDS - 1)
    if BACKLOG not in codes and keepalive:
        # It kept within the limits (the lag warning allowed: a loaded machine sends it); the
        # keepalive ended a client that never read.
        return
    if client.close_code is not None or (must_hear_the_end and (client.ended or BACKLOG in codes)):
        last = client.events[-1] if client.events else {}
        assert last.get("type") == "error", (client.summary(), report)
        assert last["error"]["code"] == BACKLOG, (client.summary(), report)
        assert client.close_code == 1008, (client.summary(), report)


async def test_a_client_that_floods_and_never_reads_is_bounded(server):
    """Two clients each append real speech (six clips, 1 s apart, over and over) in 200 ms
    appends at 20x real time for up to 60 s, and never read: one with a 4 KiB kernel receive
    buffer, so the server's events back up at once (they pile up in the server's socket:
    tens of KB within 20 s, measured), one with a buffer that holds all it is sent, so that
    it can read afterwards what the server said. Meanwhile:

    * the server's RSS, read every second from /proc, never rises more than `RSS_PEAK_MB`
      above its level just before the floods;
    * once each flood has sent `OTHER_AFTER` s of audio (5 s in, the floods' backlog
      building), a third session streams three turns at real-time pace: each completes, in
      order, within `TURNS_WER_MARGIN` of the file endpoint's WER on those clips, its
      `.completed` within `TURN_BOUND` of its `speech_stopped`;
    * each flood session either kept up (still open, no error but the lag warning
      `server_overloaded`) or was ended OpenAI's way: the `error` event
      `session_backlog_exceeded` as its last event, then a close frame with code 1008. The
      late reader must find both; the deaf client may find its connection reset first.

    A flood stops early once its connection is no longer established, so that nothing it
    sends after the server's end makes its own socket fail."""
    reference_wer = file_endpoint_wer(server, TURNS)
    await stream_turns(server, paced=False)  # warms the live and final passes
    cycle = pcm24(speech(*FLOOD_CLIPS, gap=1.0, lead=1.0, tail=1.0))
    appends = [json.dumps({"type": "input_audio_buffer.append", "audio": piece})
               for piece in chunks(cycle, int(FLOOD_CHUNK * 48_000))]
    baseline = max(server.rss_mb() for _ in range(3))
    deaf = NeverReads(server.ws_url(), server.port, DEAF_BUFFER)
    late = NeverReads(server.ws_url(), server.port, LATE_BUFFER)
    samples: list[tuple[float, float, int]] = []  # (s into the flood, RSS MB, deaf's unsent)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def watch() -> None:
        while True:
            samples.append((loop.time() - started, server.rss_mb(),
                            server_send_queue(server.port, deaf.port)))
            await asyncio.sleep(1.0)

    async def other_session() -> list[dict]:
        await deaf.passed.wait()
        return await stream_turns(server)

    watcher = asyncio.create_task(watch())
    floods = asyncio.gather(*[client.flood(appends, FLOOD_SECONDS, OTHER_AFTER)
                              for client in (deaf, late)])
    other = asyncio.create_task(other_session())
    try:
        await floods
        flood_end = loop.time() - started
        turns = await asyncio.wait_for(other, 120)
        for client in (late, deaf):  # the one that can read its end first: it is waited for
            await client.read_what_came(15)
    finally:
        watcher.cancel()
        other.cancel()
        deaf.close()
        late.close()

    committed = [e for e in turns if e["type"] == "input_audio_buffer.committed"]
    completed = [e for e in turns if e["type"].endswith("transcription.completed")]
    stopped = {e["item_id"]: e["at"] for e in turns if e["type"].endswith("speech_stopped")}
    waits = [round(e["at"] - stopped[e["item_id"]], 2) for e in completed]
    peak = max(mb for _, mb, _ in samples)
    settled = float(np.median([mb for t, mb, _ in samples if flood_end - 10 <= t <= flood_end]))
    report = (f"floods over at {flood_end:.1f} s; deaf: {deaf.summary()}; late reader: "
              f"{late.summary()}; RSS {baseline:.0f} MB before, +{settled - baseline:.0f} MB "
              f"over the floods' last 10 s (median), peak +{peak - baseline:.0f} MB; the "
              f"server's writes to the deaf client pending in its socket: up to "
              f"{max(q for _, _, q in samples)} bytes; the other session's turns completed "
              f"{waits} s after speech_stopped; RSS by second "
              f"{[(round(t), round(mb)) for t, mb, _ in samples]}")
    assert peak - baseline <= RSS_PEAK_MB, report

    # The other session: every turn, in order, right, and in time.
    assert not [e for e in turns if e["type"] == "error"], report
    assert [e["item_id"] for e in completed] == [e["item_id"] for e in committed], report
    assert [e["previous_item_id"] for e in committed] == [
        None, *[e["item_id"] for e in committed[:-1]]]
    assert all(w <= TURN_BOUND for w in waits), report
    transcripts = [e["transcript"] for e in completed]
    assert wer(TURNS, transcripts) <= reference_wer + TURNS_WER_MARGIN, (transcripts, report)

    # The floods: kept up, or ended OpenAI's way.
    check_flood_client(late, must_hear_the_end=True, report=report)
    check_flood_client(deaf, must_hear_the_end=False, report=report)
    print(report)  # the figures, for `pytest -s`

"""Live audio sessions (OpenAI's Realtime API): transport-free parts.

`audio_in` turns the wire's audio into 16 kHz samples, `turns` finds utterances in them,
`transcriber` decodes an utterance while it grows, `session` is the transcription session's
state machine and `events` builds and checks the JSON events. The WebSocket edge is
`voxserve.api.realtime`.
"""

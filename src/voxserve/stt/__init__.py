"""Speech-to-text: what a transcription is, and the Whisper engine behind it."""

"""Text-to-speech: engines behind one small protocol, and the text -> PCM -> bytes pipeline."""

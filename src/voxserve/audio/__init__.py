"""Audio in and out: decode any upload to 16 kHz mono float32; encode PCM to the speech formats."""

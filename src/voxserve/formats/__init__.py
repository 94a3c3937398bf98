"""Pure renderers: a Transcript in, the bytes of an OpenAI response format out."""

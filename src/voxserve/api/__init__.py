"""The HTTP edge: OpenAI request parsing, auth, errors, SSE and response rendering."""

from conftest import audio_path


def test_health_and_hello_world(client, base_url):
    import httpx

    assert httpx.get(f"{base_url}/health").json()["status"] == "ok"
    with audio_path("audio_hello_world.mp3").open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert "hello" in result.text.lower()

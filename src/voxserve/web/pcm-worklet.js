// AudioWorklet: the microphone's float samples as 16-bit PCM, posted every 100 ms.
// The AudioContext runs at 24 kHz, so the browser has already resampled the microphone.

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = sampleRate / 10;
    this.block = new Int16Array(this.size);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0]?.[0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const s = Math.max(-1, Math.min(1, channel[i]));
      this.block[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.filled === this.size) {
        // Transferred, not copied: the old block is detached, so a new one is made.
        this.port.postMessage(this.block.buffer, [this.block.buffer]);
        this.block = new Int16Array(this.size);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);

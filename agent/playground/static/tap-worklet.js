"use strict";
// An audio tap on the audio rendering thread: every render quantum of its input goes to the page with the context
// time of its first sample, whatever the page's main thread is doing.
class Tap extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage({ t: currentTime, samples: channel.slice() });
    return true;
  }
}
registerProcessor("tap", Tap);

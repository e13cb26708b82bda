"use strict";
// The playground page: joins a fresh room with the microphone, shows the avatar, its state and the agent's
// transcript, and measures what this browser receives. Everything measured is kept in `window.playground.measured`
// (times in performance.now() milliseconds), where the browser tests read it.

const LK = window.LivekitClient;
const STATE_ATTRIBUTE = "dystream.state";
const RUNG_ATTRIBUTE = "dystream.rung";
const SAMPLE_RATE = 16000; // the taps' audio context: the avatar's own rate
const ONSET_RMS = 0.02; // the microphone's speech onset: a block this loud (of full scale) ...
const ONSET_QUIET_MS = 300; // ... after this much quiet
const FPS_WINDOW_MS = 2000;

const $ = (id) => document.getElementById(id);

const measured = {
  frames: [], // per video frame presented: {t (expected display time), presented (count), patch (brightness)}
  // the avatar's voice as it reaches the page's audio graph: {t (its first sample leaves the output), context (that
  // sample's audio-context time, ms), pcm (Int16Array, 16 kHz)}
  audio: [],
  mic: [], // the microphone, the same way
  // the voice's receiver (inbound-rtp, every 500 ms): samples received and concealed (packets late or lost)
  receiver: [],
  // the browser's own lip sync (every 500 ms): the sender's capture time (ms) of the picture shown and of the voice
  // played now, from the video and audio receivers' estimatedPlayoutTimestamp
  sync: [],
  states: [], // {t, value} of `dystream.state` as it arrives
  listening: [], // ms from each speech onset on the microphone to the next `listening` / `both`
};

let room = null;
let audioContext = null;
let watching = false;
let onsetAt = null;
let quietSince = 0;

function show(id, text) {
  $(id).textContent = text;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
}

// -- video: count presented frames and read the diagnostic square (top-left quarter of the shorter side) ----------

function patchReader(video) {
  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  return (width, height) => {
    const side = Math.max(8, Math.floor(Math.min(width, height) / 4));
    const inset = Math.floor(side / 4); // clear of the edges, which video coding blurs
    const size = side - 2 * inset;
    if (canvas.width !== size) {
      canvas.width = size;
      canvas.height = size;
    }
    context.drawImage(video, inset, inset, size, size, 0, 0, size, size);
    const data = context.getImageData(0, 0, size, size).data;
    let sum = 0;
    for (let i = 0; i < data.length; i += 4) sum += data[i] + data[i + 1] + data[i + 2];
    return sum / ((data.length / 4) * 3);
  };
}

function watchFrames(video) {
  if (watching) return; // once per page: the element keeps its callbacks across tracks
  watching = true;
  const readPatch = patchReader(video);
  const onFrame = (_now, meta) => {
    measured.frames.push({
      t: meta.expectedDisplayTime,
      presented: meta.presentedFrames,
      patch: readPatch(meta.width, meta.height),
    });
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

function receivedFps() {
  const frames = measured.frames;
  if (frames.length < 2) return null;
  const last = frames[frames.length - 1];
  let first = frames.length - 1;
  while (first > 0 && last.t - frames[first - 1].t <= FPS_WINDOW_MS) first -= 1;
  const span = last.t - frames[first].t;
  return span > 0 ? ((last.presented - frames[first].presented) * 1000) / span : null;
}

// -- audio: tap a track into 16 kHz blocks on the audio thread (tap-worklet.js) -------------------------------------

function contextToPerformance(contextTime) {
  // when the sample at `contextTime` leaves the page's audio output: the context's own clock, mapped
  const stamp = audioContext.getOutputTimestamp();
  return stamp.performanceTime + (contextTime - stamp.contextTime) * 1000;
}

function tap(track, into, onBlock) {
  const source = audioContext.createMediaStreamSource(new MediaStream([track]));
  const node = new AudioWorkletNode(audioContext, "tap");
  node.port.onmessage = ({ data }) => {
    const x = data.samples;
    const pcm = new Int16Array(x.length);
    let energy = 0;
    for (let i = 0; i < x.length; i++) {
      pcm[i] = Math.max(-32768, Math.min(32767, Math.round(x[i] * 32767)));
      energy += x[i] * x[i];
    }
    const t = contextToPerformance(data.t);
    into.push({ t, context: data.t * 1000, pcm });
    if (onBlock) onBlock(t, Math.sqrt(energy / x.length), (x.length * 1000) / audioContext.sampleRate);
  };
  source.connect(node);
  const silent = audioContext.createGain(); // the tap runs only when pulled; the <audio> element plays
  silent.gain.value = 0;
  node.connect(silent).connect(audioContext.destination);
}

function onMicBlock(t, rms, blockMs) {
  if (rms < ONSET_RMS) {
    quietSince += blockMs;
    return;
  }
  if (quietSince >= ONSET_QUIET_MS) onsetAt = t;
  quietSince = 0;
}

// -- the avatar's state, rung and the agent's transcript -----------------------------------------------------------

function onAttributes(participant) {
  if (participant.kind !== LK.ParticipantKind.AGENT) return;
  const state = participant.attributes[STATE_ATTRIBUTE];
  const last = measured.states[measured.states.length - 1];
  if (state !== undefined && (!last || last.value !== state)) {
    const t = performance.now();
    measured.states.push({ t, value: state });
    show("state", state);
    if ((state === "listening" || state === "both") && onsetAt !== null) {
      measured.listening.push(t - onsetAt);
      onsetAt = null;
    }
  }
  const rung = participant.attributes[RUNG_ATTRIBUTE];
  if (rung !== undefined) show("rung", rung);
}

function onTranscript(reader, info) {
  const line = document.createElement("div");
  line.textContent = `${info.identity}: `;
  $("transcript").appendChild(line);
  (async () => {
    for await (const chunk of reader) {
      line.textContent += chunk;
      $("transcript").scrollTop = $("transcript").scrollHeight;
    }
  })();
}

// -- live figures -------------------------------------------------------------------------------------------------

async function inboundRtp(track) {
  const report = track ? await track.getRTCStatsReport() : null;
  let found = null;
  report?.forEach((s) => {
    if (s.type === "inbound-rtp") found = s;
  });
  return found;
}

async function refreshFigures() {
  const fps = receivedFps();
  show("fps", fps === null ? "–" : `${fps.toFixed(1)} fps`);
  const listening = median(measured.listening);
  show("listening", listening === null ? "–" : `${Math.round(listening)} ms (median of ${measured.listening.length})`);
  if (!room) return;
  const tracks = [...room.remoteParticipants.values()].flatMap((p) => [...p.trackPublications.values()]);
  const video = tracks.find((t) => t.kind === "video" && t.track)?.track;
  const audio = tracks.find((t) => t.kind === "audio" && t.track)?.track;
  const [v, a] = await Promise.all([inboundRtp(video), inboundRtp(audio)]);
  // the sender's time of what plays now: video minus audio, positive when the picture is ahead of the voice
  const playout = (s) => s?.estimatedPlayoutTimestamp ?? null;
  const synced = playout(v) !== null && playout(a) !== null;
  show("av", synced ? `${Math.round(playout(v) - playout(a))} ms` : "–");
  if (synced) measured.sync.push({ t: performance.now(), video: playout(v), audio: playout(a) });
  if (a) {
    measured.receiver.push({
      t: performance.now(),
      received: a.totalSamplesReceived,
      concealed: a.concealedSamples,
      concealments: a.concealmentEvents,
    });
  }
}

// -- joining and leaving ------------------------------------------------------------------------------------------

async function join() {
  $("join").disabled = true;
  show("error", "");
  try {
    audioContext = new AudioContext({ sampleRate: SAMPLE_RATE });
    await audioContext.audioWorklet.addModule("/tap-worklet.js");
    await audioContext.resume();
    const session = await (await fetch("/api/session")).json();
    room = new LK.Room({ adaptiveStream: false, dynacast: false });
    room.on(LK.RoomEvent.TrackSubscribed, (track, _publication, participant) => {
      if (track.kind === "video") {
        track.attach($("avatar"));
        watchFrames($("avatar"));
      } else if (track.kind === "audio") {
        track.attach($("voice"));
        tap(track.mediaStreamTrack, measured.audio, null);
      }
      onAttributes(participant);
    });
    room.on(LK.RoomEvent.ParticipantAttributesChanged, (_changed, participant) => onAttributes(participant));
    room.on(LK.RoomEvent.ParticipantConnected, onAttributes);
    room.on(LK.RoomEvent.Disconnected, () => leave());
    room.registerTextStreamHandler("lk.transcription", onTranscript);
    await room.connect(session.url, session.token);
    await room.startAudio();
    await room.localParticipant.setMicrophoneEnabled(true);
    const microphone = room.localParticipant.getTrackPublication(LK.Track.Source.Microphone);
    tap(microphone.track.mediaStreamTrack, measured.mic, onMicBlock);
    show("room", session.room);
    $("join").textContent = "Leave";
    $("join").disabled = false;
    $("mic").disabled = false;
  } catch (error) {
    show("error", `could not join: ${error}`);
    $("join").disabled = false;
    room = null;
  }
}

async function leave() {
  const leaving = room;
  room = null;
  if (leaving) await leaving.disconnect();
  if (audioContext) await audioContext.close();
  audioContext = null;
  $("join").textContent = "Join";
  $("mic").disabled = true;
}

$("join").addEventListener("click", () => (room ? leave() : join()));
$("mic").addEventListener("click", async () => {
  const enabled = room.localParticipant.isMicrophoneEnabled;
  await room.localParticipant.setMicrophoneEnabled(!enabled);
  $("mic").textContent = enabled ? "Unmute" : "Mute";
});
setInterval(refreshFigures, 500);

window.playground = { measured, room: () => room };

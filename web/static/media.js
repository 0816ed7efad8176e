// media.js: this participant's camera, microphone and screen.
//
// LocalMedia owns the local tracks. It asks for camera and microphone in
// steps so that whatever is there gets used, lets the user switch devices,
// mute, turn the camera off and share the screen, and says what changed:
//
//   "trackchange"  detail {kind}: the track to send for kind ("audio" or
//                  "video") is another one now; senders must replaceTrack.
//   "change"       what is being sent changed (mute, camera, screen, a lost
//                  device); the room tells the others with a media message.

import { load, save } from './store.js';

const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
const KEY = { audio: 'parley.microphone', video: 'parley.camera' };

export class LocalMedia extends EventTarget {
  constructor() {
    super();
    this.mic = null;      // MediaStreamTrack or null
    this.camera = null;   // MediaStreamTrack or null
    this.screen = null;   // MediaStreamTrack or null, while sharing
    this.micOn = true;    // the user's choice, kept across device changes
    this.cameraOn = true;
    // The stream the senders are associated with (its id groups our tracks
    // on the other side). It holds what we send: mic, and screen or camera.
    this.stream = new MediaStream();
  }

  /** supported reports whether this page may use cameras at all. */
  get supported() {
    return !!navigator.mediaDevices?.getUserMedia;
  }

  /**
   * start asks for microphone and camera: both, else the microphone alone,
   * else the camera alone, else nothing. It never throws; it returns a
   * sentence for the user when something is missing, or null.
   */
  async start() {
    if (!this.supported) {
      return 'This page cannot use a camera or microphone here (it needs HTTPS or localhost). ' +
        'You can still join and see and hear the others.';
    }
    const reason = { audio: null, video: null }; // error name per kind, when it failed
    let refused = false;
    let stream = null;
    for (const kinds of [['audio', 'video'], ['audio'], ['video']]) {
      // After a refusal, ask again only for what the browser says is
      // granted: asking blindly would put the same question to the user
      // once more, or three times in some browsers.
      if (refused && !(await allGranted(kinds))) continue;
      try {
        stream = await navigator.mediaDevices.getUserMedia(this.constraints(kinds));
        break;
      } catch (err) {
        console.info(`parley: getUserMedia(${kinds}) failed:`, err.name, err.message);
        for (const k of kinds) if (kinds.length === 1 || !reason[k]) reason[k] = err.name;
        if (err.name === 'NotAllowedError' || err.name === 'SecurityError') refused = true;
      }
    }
    if (stream) {
      for (const track of stream.getTracks()) this.setTrack(track.kind, track);
    }
    this.emitChange();
    return describeMissing(!this.mic && reason.audio, !this.camera && reason.video, !!this.mic, !!this.camera);
  }

  /** stop stops every local track (the camera light goes off). */
  stop() {
    for (const t of [this.mic, this.camera, this.screen]) t?.stop();
    for (const t of this.stream.getTracks()) this.stream.removeTrack(t);
    this.mic = this.camera = this.screen = null;
    this.dispatchEvent(new CustomEvent('trackchange', { detail: { kind: 'audio' } }));
    this.dispatchEvent(new CustomEvent('trackchange', { detail: { kind: 'video' } }));
    this.emitChange();
  }

  /** outgoing returns the track to send for kind, or null. */
  outgoing(kind) {
    return kind === 'audio' ? this.mic : (this.screen ?? this.camera);
  }

  /** sending returns what is being sent now, as in a media message. */
  sending() {
    return {
      audio: !!this.mic && this.micOn,
      video: !!this.screen || (!!this.camera && this.cameraOn),
      screen: !!this.screen,
    };
  }

  setMicOn(on) {
    this.micOn = on;
    if (this.mic) this.mic.enabled = on;
    this.emitChange();
  }

  setCameraOn(on) {
    // enabled=false sends black frames and lets browsers turn the camera
    // light off, without renegotiating or losing the device.
    this.cameraOn = on;
    if (this.camera) this.camera.enabled = on;
    this.emitChange();
  }

  /** devices lists cameras and microphones ({deviceId, label}). */
  async devices() {
    const out = { audio: [], video: [] };
    if (!navigator.mediaDevices?.enumerateDevices) return out;
    const n = { audio: 0, video: 0 };
    for (const d of await navigator.mediaDevices.enumerateDevices()) {
      const kind = d.kind === 'audioinput' ? 'audio' : d.kind === 'videoinput' ? 'video' : null;
      if (!kind) continue;
      n[kind]++;
      // Labels stay empty until the page has been allowed a device.
      const label = d.label || `${kind === 'audio' ? 'Microphone' : 'Camera'} ${n[kind]}`;
      out[kind].push({ deviceId: d.deviceId, label });
    }
    return out;
  }

  /** deviceId returns the id of the device in use for kind, or "". */
  deviceId(kind) {
    const track = kind === 'audio' ? this.mic : this.camera;
    return track?.getSettings?.().deviceId ?? '';
  }

  /**
   * useDevice switches kind to the device deviceId. On failure it keeps the
   * old track and throws, so the caller can say what went wrong.
   */
  async useDevice(kind, deviceId) {
    const old = kind === 'audio' ? this.mic : this.camera;
    const constraints = { [kind]: this.trackConstraints(kind, deviceId, true) };
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      // Some devices (most phone cameras) open only once: free it, retry.
      if (!old || err.name !== 'NotReadableError') throw err;
      old.stop();
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    }
    const track = stream.getTracks()[0];
    if (old && old !== track) old.stop();
    this.setTrack(kind, track);
    save(KEY[kind], deviceId);
    this.emitChange();
  }

  /** startScreen asks which screen to share and sends it instead of the camera. */
  async startScreen() {
    if (!navigator.mediaDevices?.getDisplayMedia) {
      throw new Error('This browser cannot share the screen.');
    }
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    if ('contentHint' in track) track.contentHint = 'detail';
    // The browser's own "Stop sharing" button ends the track.
    track.addEventListener('ended', () => {
      if (this.screen === track) this.stopScreen();
    });
    this.screen?.stop();
    this.screen = track;
    this.syncStream();
    this.dispatchEvent(new CustomEvent('trackchange', { detail: { kind: 'video' } }));
    this.emitChange();
  }

  /** stopScreen goes back from the screen to the camera (if any). */
  stopScreen() {
    const track = this.screen;
    if (!track) return;
    this.screen = null;
    track.stop();
    this.syncStream();
    this.dispatchEvent(new CustomEvent('trackchange', { detail: { kind: 'video' } }));
    this.emitChange();
  }

  // --- helpers ---

  constraints(kinds) {
    const c = {};
    for (const k of kinds) c[k] = this.trackConstraints(k, load(KEY[k]), false);
    return c;
  }

  trackConstraints(kind, deviceId, exact) {
    const c = { ...(kind === 'audio' ? AUDIO : VIDEO) };
    if (deviceId) c.deviceId = exact ? { exact: deviceId } : { ideal: deviceId };
    return c;
  }

  setTrack(kind, track) {
    if (kind === 'audio') {
      this.mic = track;
      track.enabled = this.micOn;
    } else {
      this.camera = track;
      track.enabled = this.cameraOn;
    }
    // An unplugged device ends its track: stop sending it, say so.
    track.addEventListener('ended', () => {
      if ((kind === 'audio' ? this.mic : this.camera) !== track) return;
      if (kind === 'audio') this.mic = null; else this.camera = null;
      this.syncStream();
      this.dispatchEvent(new CustomEvent('trackchange', { detail: { kind } }));
      this.dispatchEvent(new CustomEvent('lost', { detail: { kind } }));
      this.emitChange();
    });
    this.syncStream();
    this.dispatchEvent(new CustomEvent('trackchange', { detail: { kind } }));
  }

  /** syncStream makes this.stream hold exactly the outgoing tracks. */
  syncStream() {
    const want = [this.outgoing('audio'), this.outgoing('video')].filter(Boolean);
    for (const t of this.stream.getTracks()) if (!want.includes(t)) this.stream.removeTrack(t);
    for (const t of want) if (!this.stream.getTracks().includes(t)) this.stream.addTrack(t);
  }

  emitChange() {
    this.dispatchEvent(new CustomEvent('change', { detail: this.sending() }));
  }
}

/** allGranted reports whether the Permissions API says every kind is granted. */
async function allGranted(kinds) {
  try {
    for (const k of kinds) {
      const name = k === 'audio' ? 'microphone' : 'camera';
      if ((await navigator.permissions.query({ name })).state !== 'granted') return false;
    }
    return true;
  } catch {
    return false; // no Permissions API, or it does not know cameras
  }
}

/**
 * describeMissing turns the errors of the kinds we could not get into one
 * sentence. audioErr/videoErr are DOMException names, or false when that
 * kind is fine; haveAudio/haveVideo say what we do have.
 */
function describeMissing(audioErr, videoErr, haveAudio, haveVideo) {
  if (!audioErr && !videoErr) return null;
  const denied = (e) => e === 'NotAllowedError' || e === 'SecurityError';
  const absent = (e) => e === 'NotFoundError' || e === 'OverconstrainedError';
  const busy = (e) => e === 'NotReadableError' || e === 'AbortError';
  const rest = 'you can still join and see and hear the others';

  if (audioErr && videoErr) {
    if (denied(audioErr) || denied(videoErr)) {
      return 'Camera and microphone access was denied — ' + rest +
        '. To send, allow them in the browser\'s site settings and reload.';
    }
    if (absent(audioErr) && absent(videoErr)) return `No camera or microphone found — ${rest}.`;
    if (busy(audioErr) || busy(videoErr)) {
      return `The camera and microphone could not be started (in use by another application?) — ${rest}.`;
    }
    return `The camera and microphone are not available — ${rest}.`;
  }
  if (videoErr) {
    const then = haveAudio ? 'the others will hear you' : rest;
    if (denied(videoErr)) return `Camera access was denied — you can still join; ${then}.`;
    if (absent(videoErr)) return `No camera found — you can still join and see the others${haveAudio ? '; they will hear you' : ''}.`;
    if (busy(videoErr)) return `The camera could not be started (in use by another application?) — you can still join; ${then}.`;
    return `The camera is not available — you can still join; ${then}.`;
  }
  const then = haveVideo ? 'the others will see you' : rest;
  if (denied(audioErr)) return `Microphone access was denied — you can still join; ${then}.`;
  if (absent(audioErr)) return `No microphone found — you can still join; ${then}.`;
  if (busy(audioErr)) return `The microphone could not be started (in use by another application?) — you can still join; ${then}.`;
  return `The microphone is not available — you can still join; ${then}.`;
}

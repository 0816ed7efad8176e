// ui.js: the room page's DOM. Views, the status line, the tiles, the
// controls and the device lists. No networking and no WebRTC in here.

const $ = (id) => document.getElementById(id);

/** displayName is what we call a participant: their name, or "Guest". */
export function displayName(name) {
  return (typeof name === 'string' && name.trim()) || 'Guest';
}

/** setStatus puts text in the status line (a polite live region). */
export function setStatus(text) {
  $('status').textContent = text;
}

/**
 * showView shows one state of the page:
 *   "loading"  nothing but the status line
 *   "missing"  the room does not exist
 *   "lobby"    preview, devices, name and Join
 *   "joining"  the same, Join disabled
 *   "joined"   the grid of tiles with all controls
 *   "left"     "You left the room." and Rejoin
 */
export function showView(view) {
  const inCall = view === 'lobby' || view === 'joining' || view === 'joined';
  $('missing').hidden = view !== 'missing';
  $('left').hidden = view !== 'left';
  $('call').hidden = !inCall;
  $('lobby').hidden = view === 'joined';
  $('join').disabled = view === 'joining';
  $('leave').hidden = view !== 'joined';
  $('share').hidden = view !== 'joined' || !navigator.mediaDevices?.getDisplayMedia;
  document.body.dataset.view = view;
}

/** updateControls makes the buttons say what pressing them will do. */
export function updateControls(media) {
  const mute = $('mute');
  mute.textContent = media.micOn ? 'Mute' : 'Unmute';
  mute.disabled = !media.mic;
  mute.title = media.mic ? '' : 'No microphone';
  const cam = $('camera');
  cam.textContent = media.cameraOn ? 'Camera off' : 'Camera on';
  cam.disabled = !media.camera;
  cam.title = media.camera ? '' : 'No camera';
  $('share').textContent = media.screen ? 'Stop sharing' : 'Share screen';
}

/** flashCopied shows "Link copied" next to the button for a moment. */
export function flashCopied() {
  const el = $('copied');
  el.hidden = false;
  clearTimeout(flashCopied.timer);
  flashCopied.timer = setTimeout(() => { el.hidden = true; }, 2500);
}

/**
 * fillDevices fills a <select> with devices ({deviceId, label}), selecting
 * currentId. With no device it shows `none` and is disabled.
 */
export function fillDevices(select, devices, currentId, none) {
  select.replaceChildren(...devices.map((d) => new Option(d.label, d.deviceId, false, d.deviceId === currentId)));
  if (devices.length === 0) select.append(new Option(none, ''));
  select.disabled = devices.length === 0;
}

/** Tiles manages the grid: the own tile and one tile per remote participant. */
export class Tiles {
  /**
   * @param {(peerId: string) => void} onFirstFrame  called when a remote
   *   video shows its first decoded frame (maybe more than once per tile)
   */
  constructor(onFirstFrame) {
    this.grid = $('grid');
    this.template = $('tile-template');
    this.self = $('self-tile');
    this.onFirstFrame = onFirstFrame;
    this.tiles = new Map(); // peer id → {el, video, stream}
    this.blocked = new Set(); // videos the browser would not autoplay with sound
  }

  // --- own tile ---

  /** setSelf updates the own tile: label, the video we send, badges. */
  setSelf({ name, track, sending, screen }) {
    const el = this.self;
    el.querySelector('.tile-name').textContent = `${displayName(name)} (you)`;
    el.querySelector('.initial').textContent = displayName(name).slice(0, 1).toUpperCase();
    el.setAttribute('aria-label', `${displayName(name)} (you)`);
    const video = el.querySelector('video');
    if (track !== undefined && video.srcObject?.getVideoTracks()[0] !== track) {
      // A fresh stream per track: some browsers do not repaint a <video>
      // whose stream had its video track swapped.
      video.srcObject = track ? new MediaStream([track]) : null;
      if (track) video.play().catch(() => {}); // muted: autoplay is allowed
    }
    video.classList.toggle('mirrored', !screen); // a mirror, not a screen
    if (sending) setBadges(el, sending);
  }

  // --- remote tiles ---

  /** ensure returns the tile of peerId, creating it; name updates its label. */
  ensure(peerId, name) {
    let t = this.tiles.get(peerId);
    if (!t) {
      const el = this.template.content.firstElementChild.cloneNode(true);
      el.dataset.peerId = peerId;
      el.setAttribute('role', 'group');
      const video = el.querySelector('video');
      t = { el, video, stream: new MediaStream() };
      this.tiles.set(peerId, t);
      this.watchFirstFrame(peerId, video);
      el.querySelector('.play').addEventListener('click', () => this.unblock());
      this.setState(peerId, 'connecting');
      this.grid.append(el);
    }
    if (name !== undefined || !t.el.getAttribute('aria-label')) this.setName(peerId, name);
    return t;
  }

  setName(peerId, name) {
    const t = this.tiles.get(peerId);
    if (!t) return;
    t.el.querySelector('.tile-name').textContent = displayName(name);
    t.el.querySelector('.initial').textContent = displayName(name).slice(0, 1).toUpperCase();
    t.el.setAttribute('aria-label', displayName(name));
  }

  /** setTrack puts a remote track into the peer's stream, replacing one of its kind. */
  setTrack(peerId, track) {
    const t = this.ensure(peerId);
    for (const old of t.stream.getTracks()) {
      if (old.kind === track.kind && old !== track) t.stream.removeTrack(old);
    }
    if (!t.stream.getTracks().includes(track)) t.stream.addTrack(track);
    if (t.video.srcObject !== t.stream) t.video.srcObject = t.stream;
    this.play(t.video);
  }

  /** setMedia shows what a peer says it is sending (a media message). */
  setMedia(peerId, { audio, video, screen }) {
    const t = this.tiles.get(peerId);
    if (t) setBadges(t.el, { audio, video, screen });
  }

  /** setState shows the connection state on the tile. */
  setState(peerId, state) {
    const t = this.tiles.get(peerId);
    if (!t) return;
    const text = { connecting: 'connecting…', reconnecting: 'reconnecting…' }[state] ?? '';
    t.el.querySelector('.tile-state').textContent = text;
    t.el.dataset.state = state;
  }

  remove(peerId) {
    const t = this.tiles.get(peerId);
    if (!t) return;
    this.tiles.delete(peerId);
    this.blocked.delete(t.video);
    t.video.srcObject = null;
    t.el.remove();
  }

  clear() {
    for (const id of [...this.tiles.keys()]) this.remove(id);
  }

  // --- playback ---

  /**
   * play starts a remote video with its sound. Browsers may refuse to
   * autoplay sound without a click on the page: then it plays muted (so the
   * picture runs) and a "Click to play" button turns the sound on.
   */
  play(video) {
    video.play().catch((err) => {
      if (err.name !== 'NotAllowedError' || !video.srcObject) return; // AbortError: a newer load
      this.blocked.add(video);
      video.muted = true;
      video.play().catch(() => {});
      video.closest('.tile')?.querySelector('.play')?.removeAttribute('hidden');
    });
  }

  /** unblock, on a click, plays every held-back video with its sound. */
  unblock() {
    for (const video of this.blocked) {
      this.blocked.delete(video);
      video.closest('.tile')?.querySelector('.play')?.setAttribute('hidden', '');
      video.muted = false;
      this.play(video); // refused again (no real click): back to muted, button back
    }
  }

  watchFirstFrame(peerId, video) {
    const seen = () => {
      if (video.videoWidth > 0) this.onFirstFrame(peerId);
    };
    video.addEventListener('resize', seen);
    video.addEventListener('loadeddata', seen);
    if (typeof video.requestVideoFrameCallback === 'function') {
      video.requestVideoFrameCallback(() => this.onFirstFrame(peerId));
    }
  }
}

/** setBadges marks a tile's mic and camera as off (data attributes drive CSS). */
function setBadges(el, { audio, video, screen }) {
  el.dataset.audio = audio ? 'on' : 'off';
  el.dataset.video = video ? 'on' : 'off';
  el.dataset.screen = screen ? 'on' : 'off';
  el.querySelector('.badge-mic').hidden = !!audio;
  el.querySelector('.badge-cam').hidden = !!video;
}

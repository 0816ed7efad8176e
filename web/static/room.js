// room.js: the room page. It ties the parts together: the room check, the
// lobby, the join/leave state machine, signaling messages to peer
// connections, local media to senders, and the controls.
//
// States (window.parley.state):
//   idle          lobby: preview, devices, name, Join
//   joining       Join clicked; connecting the WebSocket / waiting for "joined"
//   joined        in the room
//   reconnecting  the WebSocket dropped; retrying, then joining the room again
//   left          the user clicked Leave
//   error         the room does not exist, is full, or the page cannot work
//
// Test hooks (the end-to-end tests rely on exactly these; keep them small):
//   window.parley.state         one of the states above
//   window.parley.id            own participant id once joined, else null
//   window.parley.mode          "p2p" or "sfu" (from the room check, then from "joined")
//   window.parley.connections() [{peerId, pc}] for the current RTCPeerConnections
//   window.parley.timings       {joinClicked, firstRemoteFrame}: performance.now()
//                               of the last Join (or Rejoin) click, and of the first
//                               decoded remote video frame after it (null until then)
//   window.parley.lastError     the last "error" message received, or null

import { getRoom } from './api.js';
import { LocalMedia } from './media.js';
import { Peer } from './peer.js';
import { Signaling } from './signaling.js';
import { load, save, loadSession, saveSession, roomPasswordKey } from './store.js';
import * as ui from './ui.js';

const NAME_KEY = 'parley.name';

const parley = {
  state: 'idle',
  id: null,
  mode: null,
  connections: () => Array.from(peers, ([peerId, peer]) => ({ peerId, pc: peer.pc })),
  timings: { joinClicked: null, firstRemoteFrame: null },
  lastError: null,
};
window.parley = parley;

const roomId = roomIdFromPath(window.location.pathname);
const media = new LocalMedia();
const signaling = new Signaling();
const peers = new Map();   // participant id → Peer (current connections only)
const names = new Map();   // participant id → display name as sent
const tiles = new ui.Tiles(onFirstFrame);
let iceServers = [];
let myName = '';           // as the server echoed it, or as typed before joining
let mediaProblem = null;   // a sentence about missing devices, or null
let serverLeaving = false; // a "bye" came: the coming close is a shutdown

const el = (id) => document.getElementById(id);
const nameInput = el('name');
const passwordInput = el('password');

init();

async function init() {
  bindControls();
  bindMedia();
  bindSignaling();
  if (!roomId) {
    showMissing();
    return;
  }
  try {
    const room = await getRoom(roomId);
    parley.mode = room.mode ?? null;
    if (room.password === true) askPassword(null);
  } catch (err) {
    if (err.status === 404) {
      showMissing();
      return;
    }
    // The join will tell for sure; do not lock people out over a hiccup.
    console.warn('parley: room check failed', err);
  }
  if (typeof RTCPeerConnection !== 'function') {
    setState('error');
    ui.showView('loading');
    ui.setStatus('This browser cannot make video calls (no WebRTC).');
    return;
  }

  myName = load(NAME_KEY);
  nameInput.value = myName;
  ui.showView('lobby');
  refreshSelf();
  ui.setStatus('Asking for your camera and microphone…');
  await startMedia();
  // A join refused for its password while the camera started: that message
  // says what to do next.
  const refused = ['password_required', 'bad_password'].includes(parley.lastError?.code);
  if (!refused && (mediaProblem || parley.state === 'idle')) {
    ui.setStatus(mediaProblem ?? 'Ready when you are: check your picture and sound, then join.');
  }
}

// --- joining and leaving ---

function join() {
  if (parley.state !== 'idle' && parley.state !== 'left' && parley.state !== 'error') return;
  parley.timings.joinClicked = performance.now();
  parley.timings.firstRemoteFrame = null;
  parley.lastError = null;
  myName = nameInput.value.trim().slice(0, 64);
  save(NAME_KEY, myName);
  setState('joining');
  ui.showView('joining');
  ui.setStatus('Connecting…');
  if (signaling.isOpen) sendJoin();
  else signaling.connect(); // "open" sends the join
}

function sendJoin() {
  const msg = { type: 'join', room: roomId, name: myName };
  if (!el('password-field').hidden && passwordInput.value) msg.password = passwordInput.value;
  signaling.send(msg);
}

/**
 * askPassword shows the password field; with a message (a join was
 * refused for the password) it goes back to the lobby and says why. The
 * WebSocket stays open for the next try.
 */
function askPassword(message) {
  el('password-field').hidden = false;
  if (!passwordInput.value) passwordInput.value = loadSession(roomPasswordKey(roomId));
  if (message === null) return;
  endCall();
  setState('idle');
  ui.showView('lobby');
  passwordInput.setAttribute('aria-invalid', 'true');
  ui.setStatus(message);
  passwordInput.focus();
}

function onJoined(msg) {
  if (parley.state !== 'joining' && parley.state !== 'reconnecting') {
    // A join answered after Leave: step out again.
    signaling.send({ type: 'leave' });
    return;
  }
  endCall(); // connections from before a reconnect belong to an old id
  if (!el('password-field').hidden) saveSession(roomPasswordKey(roomId), passwordInput.value);
  parley.id = msg.id;
  parley.mode = msg.mode ?? parley.mode;
  iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
  if (typeof msg.name === 'string') myName = msg.name;
  signaling.resetBackoff();
  setState('joined');
  ui.showView('joined');
  refreshSelf();

  const others = Array.isArray(msg.peers) ? msg.peers : [];
  for (const p of others) {
    names.set(p.id, p.name);
    tiles.ensure(p.id, p.name);
    // Mesh: the newcomer offers to everyone already there.
    if (parley.mode !== 'sfu') connect(p.id, true);
  }
  // SFU: one connection to the server, which we offer first; from then on
  // the server offers whenever the tracks it forwards to us change.
  if (parley.mode === 'sfu') connect(SFU_PEER, true);
  sendMedia();
  const n = others.length;
  ui.setStatus(n === 0
    ? 'You are the first one here. Copy the link and send it to the people you want to talk to.'
    : `You joined. ${n === 1 ? '1 other person is' : `${n} other people are`} here.`);
}

function leave() {
  if (parley.state === 'left') return;
  signaling.send({ type: 'leave' });
  signaling.close();
  endCall();
  media.stop();
  parley.id = null;
  setState('left');
  ui.showView('left');
  ui.setStatus('You left the room.');
  el('rejoin').focus();
}

async function rejoin() {
  ui.showView('lobby');
  join();
  await startMedia(); // tracks arriving after the join are switched in by replaceTrack
  if (mediaProblem) ui.setStatus(mediaProblem);
}

/** endCall closes every peer connection and removes the remote tiles. */
function endCall() {
  for (const peer of peers.values()) peer.close();
  peers.clear();
  names.clear();
  tiles.clear();
}

function showMissing() {
  setState('error');
  endCall();
  media.stop();
  ui.showView('missing');
  ui.setStatus('This room does not exist or has expired.');
}

// --- peer connections ---

/** connect creates the connection to peerId; the offerer adds its transceivers. */
/** SFU_PEER is the participant id that stands for the server in SFU rooms. */
const SFU_PEER = 'sfu';

function connect(peerId, offerer) {
  const peer = new Peer({
    id: peerId,
    // The SFU side is the server; it drives negotiation, so we yield.
    // (Its id, "sfu", cannot collide with a participant id: those are 12
    // characters.)
    polite: parley.mode === 'sfu' || parley.id < peerId,
    iceServers,
    stream: media.stream,
    track: (kind) => media.outgoing(kind),
    send: (m) => signaling.send(m),
    onTrack: (track, streams) => {
      // Mesh: the connection is the participant. SFU: the server's one
      // connection carries everyone, one stream per participant id.
      const owner = parley.mode === 'sfu' ? (streams[0]?.id ?? peerId) : peerId;
      tiles.setTrack(owner, track);
    },
    onState: (state) => {
      if (parley.mode !== 'sfu') tiles.setState(peerId, state);
    },
  });
  peers.set(peerId, peer);
  if (offerer) peer.start();
  return peer;
}

function onDescription(msg) {
  if (parley.state !== 'joined' || typeof msg.from !== 'string' || msg.from === parley.id) return;
  let peer = peers.get(msg.from);
  if (!peer) {
    if (msg.type !== 'offer') return;
    // Mesh: someone new offers first; their tile may not exist yet if the
    // offer overtook peer-joined.
    if (parley.mode !== 'sfu') tiles.ensure(msg.from, names.get(msg.from));
    peer = connect(msg.from, false);
  }
  peer.receive(msg);
}

function onCandidate(msg) {
  if (parley.state !== 'joined') return;
  peers.get(msg.from)?.receive(msg);
}

function onPeerJoined({ peer }) {
  if (parley.state !== 'joined' || !peer || typeof peer.id !== 'string') return;
  names.set(peer.id, peer.name);
  tiles.ensure(peer.id, peer.name);
  // Media states are not kept by the server: tell the newcomer ours.
  sendMedia();
  ui.setStatus(`${ui.displayName(peer.name)} joined.`);
}

function onPeerLeft({ id }) {
  if (parley.state !== 'joined') return;
  const name = ui.displayName(names.get(id));
  peers.get(id)?.close();
  peers.delete(id);
  names.delete(id);
  tiles.remove(id);
  ui.setStatus(`${name} left.`);
}

function onFirstFrame() {
  if (parley.timings.firstRemoteFrame === null && parley.timings.joinClicked !== null) {
    parley.timings.firstRemoteFrame = performance.now();
  }
}

// --- signaling ---

function bindSignaling() {
  signaling.on('open', () => {
    if (parley.state === 'joining' || parley.state === 'reconnecting') sendJoin();
  });
  signaling.on('close', ({ retryInMs }) => {
    if (parley.state === 'joined') {
      // The server reports us gone to the others; we come back with a new
      // id, so every connection is rebuilt from scratch.
      endCall();
      setState('reconnecting');
    }
    const said = serverLeaving;
    serverLeaving = false;
    if (retryInMs === null) return;
    const secs = Math.max(1, Math.round(retryInMs / 1000));
    if (parley.state === 'reconnecting') {
      ui.setStatus(said ? `The server is restarting. Reconnecting in ${secs} s…`
        : `Lost the connection to the server. Reconnecting in ${secs} s…`);
    } else if (parley.state === 'joining') {
      ui.setStatus(`Cannot reach the server. Trying again in ${secs} s…`);
    }
  });
  signaling.on('joined', onJoined);
  signaling.on('peer-joined', onPeerJoined);
  signaling.on('peer-left', onPeerLeft);
  signaling.on('offer', onDescription);
  signaling.on('answer', onDescription);
  signaling.on('candidate', onCandidate);
  signaling.on('media', (msg) => {
    if (parley.state === 'joined') tiles.setMedia(msg.from, msg);
  });
  signaling.on('bye', () => {
    // The socket closes next (1001); the close handler reconnects.
    serverLeaving = true;
    if (parley.state === 'joined') ui.setStatus('The server is going away. Reconnecting…');
  });
  signaling.on('error', onError);
}

function onError(msg) {
  parley.lastError = msg;
  const joining = parley.state === 'joining' || parley.state === 'reconnecting';
  switch (msg.code) {
    case 'room_full':
      if (!joining) break;
      signaling.close();
      endCall();
      setState('error');
      ui.showView('lobby');
      ui.setStatus('This room is full.');
      return;
    case 'room_not_found':
      if (!joining) break;
      signaling.close();
      showMissing();
      return;
    case 'password_required':
      if (!joining) break;
      askPassword('This room needs a password. Enter it, then click Join.');
      return;
    case 'bad_password':
      if (!joining) break;
      saveSession(roomPasswordKey(roomId), '');
      askPassword('Wrong password for this room. Check it, then click Join again.');
      return;
  }
  console.warn(`parley: server error ${msg.code}: ${msg.message ?? ''}`, msg);
}

// --- local media ---

async function startMedia() {
  mediaProblem = await media.start();
  await refreshDevices();
  refreshSelf();
}

function bindMedia() {
  media.addEventListener('trackchange', ({ detail: { kind } }) => {
    const track = media.outgoing(kind);
    for (const peer of peers.values()) peer.replaceTrack(kind, track);
    refreshSelf();
  });
  media.addEventListener('change', () => {
    ui.updateControls(media);
    refreshSelf();
    sendMedia();
  });
  media.addEventListener('lost', ({ detail: { kind } }) => {
    ui.setStatus(kind === 'audio' ? 'The microphone stopped working or was unplugged.'
      : 'The camera stopped working or was unplugged.');
    refreshDevices();
  });
  navigator.mediaDevices?.addEventListener?.('devicechange', () => refreshDevices());
}

function sendMedia() {
  if (parley.state === 'joined') signaling.send({ type: 'media', ...media.sending() });
}

function refreshSelf() {
  tiles.setSelf({
    name: parley.state === 'joined' ? myName : nameInput.value.trim(),
    track: media.outgoing('video'),
    sending: media.sending(),
    screen: !!media.screen,
  });
  ui.updateControls(media);
}

async function refreshDevices() {
  try {
    const list = await media.devices();
    ui.fillDevices(el('camera-select'), list.video, media.deviceId('video'), 'No camera');
    ui.fillDevices(el('mic-select'), list.audio, media.deviceId('audio'), 'No microphone');
  } catch (err) {
    console.warn('parley: cannot list devices', err);
  }
}

async function chooseDevice(kind, select) {
  if (!select.value) return;
  try {
    await media.useDevice(kind, select.value);
  } catch (err) {
    ui.setStatus(`Could not switch the ${kind === 'audio' ? 'microphone' : 'camera'}: ${err.message || err.name}`);
  }
  refreshDevices();
}

// --- controls ---

function bindControls() {
  el('lobby').addEventListener('submit', (ev) => {
    ev.preventDefault();
    join();
  });
  nameInput.addEventListener('input', refreshSelf);
  passwordInput.addEventListener('input', () => passwordInput.removeAttribute('aria-invalid'));
  el('rejoin').addEventListener('click', rejoin);
  el('leave').addEventListener('click', leave);
  el('mute').addEventListener('click', () => media.setMicOn(!media.micOn));
  el('camera').addEventListener('click', () => media.setCameraOn(!media.cameraOn));
  el('share').addEventListener('click', toggleScreen);
  el('copy').addEventListener('click', copyLink);
  el('camera-select').addEventListener('change', (ev) => chooseDevice('video', ev.target));
  el('mic-select').addEventListener('change', (ev) => chooseDevice('audio', ev.target));
  window.addEventListener('pagehide', () => {
    if (parley.state === 'joined') signaling.send({ type: 'leave' });
  });
}

async function toggleScreen() {
  if (media.screen) {
    media.stopScreen();
    return;
  }
  try {
    await media.startScreen();
    ui.setStatus('You are sharing your screen.');
  } catch (err) {
    ui.setStatus(err.name === 'NotAllowedError'
      ? 'Screen sharing was cancelled.'
      : `Could not share the screen: ${err.message || err.name}`);
  }
}

async function copyLink() {
  const link = window.location.href;
  try {
    await navigator.clipboard.writeText(link);
    ui.flashCopied();
    ui.setStatus('Link copied. Send it to the people you want to talk to.');
  } catch {
    // No clipboard (plain http, or refused): the link is still there to copy by hand.
    ui.setStatus(`Copy this link: ${link}`);
  }
}

// --- helpers ---

function setState(state) {
  parley.state = state;
  document.body.dataset.state = state;
}

/** roomIdFromPath returns ID from /r/ID, or "". */
function roomIdFromPath(path) {
  const m = /^\/r\/([^/]+)$/.exec(path);
  if (!m) return '';
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return '';
  }
}

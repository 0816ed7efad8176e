// peer.js: one RTCPeerConnection to one remote participant.
//
// Perfect negotiation (the pattern of the WebRTC spec, section 10.7): both
// sides may offer at any time; in a glare the polite side rolls back and
// answers, the impolite side ignores the other's offer. Trickle ICE: our
// candidates go out as they come, theirs wait until a remote description
// is set. Media flows over two transceivers (audio, video) that exist
// whether or not we have a device, so that we always receive, and so that
// switching camera/screen/nothing is a replaceTrack, never a renegotiation.

const KINDS = ['audio', 'video'];
// A new connection's video starts at 1/START_SCALE of the width and height,
// and goes to full size after FULL_SIZE_AFTER_MS (see setVideo).
const START_SCALE = 2;
const FULL_SIZE_AFTER_MS = 1500;
// ICE restarts (see scheduleRestart): how long "disconnected" may last
// before a restart (browsers may stay there without ever saying "failed"),
// how long the polite side waits for the other's restart, and how long a
// restart gets before the next one.
const DISCONNECTED_RESTART_MS = 5000;
const POLITE_RESTART_DELAY_MS = 4000;
const RESTART_RETRY_MS = 10_000;

export class Peer {
  /**
   * @param {object} o
   * @param {string} o.id           the remote participant id
   * @param {boolean} o.polite      whether we yield in a glare
   * @param {RTCIceServer[]} o.iceServers  from the joined message, never anyone else's
   * @param {MediaStream} o.stream  the local stream our senders belong to
   * @param {(kind: string) => MediaStreamTrack|null} o.track  what to send for kind now
   * @param {(msg: object) => void} o.send          sends a signaling message
   * @param {(track: MediaStreamTrack, streams: MediaStream[]) => void} o.onTrack
   * @param {(state: string) => void} o.onState     "connecting", "connected", "reconnecting", "closed"
   */
  constructor(o) {
    this.id = o.id;
    this.polite = o.polite;
    this.stream = o.stream;
    this.track = o.track;
    this.send = o.send;
    this.onTrack = o.onTrack;
    this.onState = o.onState;

    this.pc = new RTCPeerConnection({ iceServers: o.iceServers ?? [] });
    this.senders = { audio: null, video: null };
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.isSettingRemoteAnswerPending = false;
    this.pendingCandidates = [];
    this.inbox = Promise.resolve(); // remote messages, handled one at a time, in order
    this.connectedOnce = false;
    this.state = '';
    this.closed = false;
    this.restartTimer = null;
    this.restartAt = 0;

    const pc = this.pc;
    pc.onnegotiationneeded = () => this.offer();
    pc.onicecandidate = ({ candidate }) => {
      if (candidate?.component === 'rtcp') return; // see withoutRTCPCandidates
      // A null candidate is the end of gathering; the protocol spells it
      // as an empty candidate string.
      const c = candidate ? candidate.toJSON() : {};
      this.send({
        type: 'candidate',
        to: this.id,
        candidate: {
          candidate: c.candidate ?? '',
          sdpMid: c.sdpMid ?? null,
          sdpMLineIndex: c.sdpMLineIndex ?? null,
          usernameFragment: c.usernameFragment ?? null,
        },
      });
    };
    pc.ontrack = ({ track, streams }) => this.onTrack(track, streams);
    pc.onconnectionstatechange = () => this.updateState();
    pc.oniceconnectionstatechange = () => this.updateState();
    this.updateState();
  }

  /**
   * start makes us the offerer: it adds our audio and video transceivers,
   * and the negotiationneeded event that follows sends the first offer.
   */
  start() {
    for (const kind of KINDS) {
      const init = { direction: 'sendrecv', streams: [this.stream] };
      // Video starts small (see setVideo).
      if (kind === 'video') init.sendEncodings = [{ scaleResolutionDownBy: START_SCALE }];
      const t = this.pc.addTransceiver(kind, init);
      this.senders[kind] = t.sender;
      t.sender.replaceTrack(this.track(kind) || null).catch((err) => this.warn('replaceTrack', err));
    }
  }

  /** receive handles an offer, answer or candidate message from this peer. */
  receive(msg) {
    this.inbox = this.inbox
      .then(() => (msg.type === 'candidate' ? this.addCandidate(msg.candidate) : this.describe(msg)))
      .catch((err) => this.warn(`handling ${msg.type}`, err));
  }

  /** replaceTrack sends track (or nothing, for null) as our kind. */
  replaceTrack(kind, track) {
    const sender = this.senders[kind];
    if (!sender || this.closed) return;
    sender.replaceTrack(track || null).catch((err) => this.warn('replaceTrack', err));
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.restartTimer);
    const pc = this.pc;
    pc.onnegotiationneeded = pc.onicecandidate = pc.ontrack = null;
    pc.onconnectionstatechange = pc.oniceconnectionstatechange = null;
    pc.close();
    this.onState('closed');
  }

  // --- perfect negotiation ---

  async offer() {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      if (this.closed) return;
      const { type, sdp } = this.pc.localDescription;
      this.send({ type, to: this.id, sdp: withoutRTCPCandidates(sdp) });
    } catch (err) {
      this.warn('making an offer', err);
    } finally {
      this.makingOffer = false;
    }
  }

  async describe({ type, sdp }) {
    if (this.closed) return;
    const pc = this.pc;
    const readyForOffer = !this.makingOffer &&
      (pc.signalingState === 'stable' || this.isSettingRemoteAnswerPending);
    const offerCollision = type === 'offer' && !readyForOffer;
    this.ignoreOffer = !this.polite && offerCollision;
    if (this.ignoreOffer) return;

    this.isSettingRemoteAnswerPending = type === 'answer';
    try {
      await pc.setRemoteDescription({ type, sdp }); // rolls back our offer if needed
    } finally {
      this.isSettingRemoteAnswerPending = false;
    }
    if (type === 'offer') {
      await this.claimTransceivers();
      await pc.setLocalDescription();
      if (this.closed) return;
      this.send({ type: 'answer', to: this.id, sdp: withoutRTCPCandidates(pc.localDescription.sdp) });
    }
    await this.flushCandidates();
  }

  /**
   * claimTransceivers, on the answering side, makes the first transceiver
   * of each kind that the offer created carry our media both ways. It runs
   * between setRemoteDescription(offer) and setLocalDescription().
   */
  async claimTransceivers() {
    for (const t of this.pc.getTransceivers()) {
      const kind = t.receiver.track.kind;
      if (this.senders[kind] || t.mid === null || t.currentDirection === 'stopped') continue;
      t.direction = 'sendrecv';
      this.senders[kind] = t.sender;
      await t.sender.replaceTrack(this.track(kind) || null);
      t.sender.setStreams?.(this.stream);
      if (kind === 'video') await this.setVideo({ scaleResolutionDownBy: START_SCALE });
    }
  }

  /**
   * A new connection's video starts at a quarter of the pixels: its
   * bandwidth estimate starts low, so a full-size first keyframe would be
   * paced out over a few hundred milliseconds before the other side sees
   * anything. Once connected, and the estimate has had a moment to grow, the
   * video goes to full size.
   */
  async setVideo(changes) {
    const sender = this.senders.video;
    if (!sender || this.closed) return;
    try {
      const params = sender.getParameters();
      if (!params.encodings || params.encodings.length === 0) return;
      for (const e of params.encodings) Object.assign(e, changes);
      await sender.setParameters(params);
    } catch (err) {
      this.warn('setting video parameters', err);
    }
  }

  fullSizeVideoSoon() {
    setTimeout(() => this.setVideo({ scaleResolutionDownBy: 1 }), FULL_SIZE_AFTER_MS);
  }

  // --- ICE ---

  async addCandidate(init) {
    if (this.closed || !init || typeof init !== 'object') return;
    if (!this.pc.remoteDescription) {
      this.pendingCandidates.push(init);
      return;
    }
    try {
      await this.pc.addIceCandidate(init);
    } catch (err) {
      // Candidates of an offer we ignored, and end-of-candidates markers
      // some browsers do not take, fail harmlessly.
      if (!this.ignoreOffer && init.candidate) this.warn('addIceCandidate', err);
    }
  }

  async flushCandidates() {
    const queued = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const c of queued) await this.addCandidate(c);
  }

  updateState() {
    if (this.closed) return;
    const pc = this.pc;
    // connectionState is the better summary; older Firefox only has ICE's.
    const s = pc.connectionState ?? pc.iceConnectionState;
    if (this.failed()) {
      this.scheduleRestart(0);
    } else if (this.unhealthy()) {
      this.scheduleRestart(DISCONNECTED_RESTART_MS);
    } else if (this.connected()) {
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
    }
    let state;
    if (s === 'connected' || s === 'completed') {
      if (!this.connectedOnce) this.fullSizeVideoSoon();
      this.connectedOnce = true;
      state = 'connected';
    } else if (s === 'disconnected' || s === 'failed' || this.connectedOnce) {
      state = 'reconnecting';
    } else {
      state = 'connecting';
    }
    if (state !== this.state) {
      this.state = state;
      this.onState(state);
    }
  }

  failed() {
    return this.pc.connectionState === 'failed' || this.pc.iceConnectionState === 'failed';
  }

  connected() {
    const s = this.pc.connectionState ?? this.pc.iceConnectionState;
    return s === 'connected' || s === 'completed';
  }

  unhealthy() {
    return this.failed() || this.pc.connectionState === 'disconnected' ||
      this.pc.iceConnectionState === 'disconnected';
  }

  /**
   * scheduleRestart restarts ICE after delay (plus a head start for the
   * other side when we are polite), and again while the connection stays
   * unhealthy. Both sides usually see a failure at once; two restart
   * offers at once would collide and the polite side would roll its offer
   * back. That collision is avoided on purpose: besides being wasted work,
   * a rollback on the side that answered the first offer leaves its remote
   * video frozen in Chromium (frames are decoded but never reach the
   * <video>; seen in Chromium 156). So the impolite side restarts first and
   * the polite side only if that did not happen or did not help.
   */
  scheduleRestart(delay) {
    const wait = delay + (this.polite ? POLITE_RESTART_DELAY_MS : 0);
    const at = performance.now() + wait;
    if (this.restartTimer && this.restartAt <= at) return;
    clearTimeout(this.restartTimer);
    this.restartAt = at;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.closed || this.connected()) return;
      this.pc.restartIce();
      this.scheduleRestart(RESTART_RETRY_MS);
    }, wait);
  }

  warn(what, err) {
    if (!this.closed) console.warn(`parley: peer ${this.id}: ${what}:`, err);
  }
}

/**
 * withoutRTCPCandidates drops the RTCP (component 2) candidates from an SDP
 * we send. Both ends always multiplex RTCP with RTP (rtcp-mux), yet Firefox
 * gathers RTCP candidates too, and signals them. They are worse than
 * useless: the SFU's ICE (pion) does not look at the component, may pick a
 * pair with such a candidate, and then sends media and DTLS to a socket
 * that Firefox reads as RTCP and drops — no media at all, or never
 * connected.
 */
function withoutRTCPCandidates(sdp) {
  return sdp.replace(/^a=candidate:\S+ 2 .*\r?\n/gm, '');
}

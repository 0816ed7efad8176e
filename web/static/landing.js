// landing.js: the start page. "New room" creates a room (with an optional
// password) and goes there; the form goes to a room from a pasted link or ID.
// A server started with --create-token answers "create_token_required": the
// page then asks for the token, and remembers it in this browser.

import { createRoom, roomIdFrom, roomPath } from './api.js';
import { load, save, saveSession, roomPasswordKey } from './store.js';

const TOKEN_KEY = 'parley.createToken';

const newRoom = document.getElementById('new-room');
const form = document.getElementById('open-room');
const input = document.getElementById('room-input');
const status = document.getElementById('status');
const password = document.getElementById('room-password');
const tokenField = document.getElementById('token-field');
const token = document.getElementById('create-token');

token.value = load(TOKEN_KEY);
tokenField.hidden = !token.value;

newRoom.addEventListener('click', async () => {
  newRoom.disabled = true;
  status.textContent = 'Creating a room…';
  const options = {};
  const mode = document.getElementById('room-mode').value;
  if (mode) options.mode = mode;
  if (password.value) options.password = password.value;
  const tok = token.value.trim();
  try {
    const room = await createRoom(options, tok);
    save(TOKEN_KEY, tok);
    // The creator joins without typing the password again (this tab only).
    saveSession(roomPasswordKey(room.id), password.value);
    window.location.assign(sameOrigin(room.url) ?? roomPath(room.id));
  } catch (err) {
    newRoom.disabled = false;
    switch (err.code) {
      case 'create_token_required':
        askForToken(tok ? 'That room-creation token is not right.'
          : 'This server needs a room-creation token to create rooms. Enter it, then click New room again.');
        return;
      case 'bad_create_token':
        save(TOKEN_KEY, '');
        askForToken('That room-creation token is not right. Check it, then click New room again.');
        return;
    }
    status.textContent = `Could not create a room: ${err.message}`;
  }
});

token.addEventListener('input', () => token.removeAttribute('aria-invalid'));

/** askForToken shows the token field, marked as needing attention. */
function askForToken(message) {
  tokenField.hidden = false;
  token.setAttribute('aria-invalid', 'true');
  status.textContent = message;
  token.focus();
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const id = roomIdFrom(input.value);
  if (!id) {
    input.setAttribute('aria-invalid', 'true');
    status.textContent = 'That is not a room link or ID. A room link ends in /r/ and the ID.';
    input.focus();
    return;
  }
  input.removeAttribute('aria-invalid');
  window.location.assign(roomPath(id));
});

/**
 * sameOrigin returns url (resolved against this page) when it points to
 * this server, else null: behind a proxy the server may not know the
 * address people reach it by, and the page must never send anyone away.
 */
function sameOrigin(url) {
  if (typeof url !== 'string' || !url) return null;
  try {
    const u = new URL(url, window.location.href);
    return u.origin === window.location.origin ? u.href : null;
  } catch {
    return null;
  }
}

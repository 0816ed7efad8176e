// landing.js: the start page. "New room" creates a room and goes there;
// the form goes to a room from a pasted link or ID.

import { createRoom, roomIdFrom, roomPath } from './api.js';

const newRoom = document.getElementById('new-room');
const form = document.getElementById('open-room');
const input = document.getElementById('room-input');
const status = document.getElementById('status');

newRoom.addEventListener('click', async () => {
  newRoom.disabled = true;
  status.textContent = 'Creating a room…';
  try {
    const mode = document.getElementById('room-mode').value;
    const room = await createRoom(mode ? { mode } : {});
    window.location.assign(sameOrigin(room.url) ?? roomPath(room.id));
  } catch (err) {
    status.textContent = `Could not create a room: ${err.message}`;
    newRoom.disabled = false;
  }
});

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

// store.js: small preferences (display name, chosen devices, the
// room-creation token) in localStorage, and what only this tab should keep
// (a room's password) in sessionStorage.
//
// Storage can be missing or throw (private windows, disabled cookies);
// preferences are a convenience, so failures are ignored.

/** load returns the stored string for key, or "". */
export function load(key, storage = 'localStorage') {
  try {
    return window[storage].getItem(key) ?? '';
  } catch {
    return '';
  }
}

/** save stores value under key; an empty value removes the key. */
export function save(key, value, storage = 'localStorage') {
  try {
    if (value) window[storage].setItem(key, value);
    else window[storage].removeItem(key);
  } catch {
    // ignored: see above
  }
}

/** loadSession is load from this tab's sessionStorage. */
export function loadSession(key) {
  return load(key, 'sessionStorage');
}

/** saveSession is save to this tab's sessionStorage. */
export function saveSession(key, value) {
  save(key, value, 'sessionStorage');
}

/** roomPasswordKey is where a tab keeps the password of room id. */
export function roomPasswordKey(id) {
  return `parley.roomPassword.${id}`;
}

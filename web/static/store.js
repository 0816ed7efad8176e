// store.js: small preferences (display name, chosen devices) in localStorage.
//
// Storage can be missing or throw (private windows, disabled cookies);
// preferences are a convenience, so failures are ignored.

/** load returns the stored string for key, or "". */
export function load(key) {
  try {
    return window.localStorage.getItem(key) ?? '';
  } catch {
    return '';
  }
}

/** save stores value under key; an empty value removes the key. */
export function save(key, value) {
  try {
    if (value) window.localStorage.setItem(key, value);
    else window.localStorage.removeItem(key);
  } catch {
    // ignored: see above
  }
}

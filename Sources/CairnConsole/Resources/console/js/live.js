// Shared live state: the unread badge and the listeners of notifications arriving over the
// WebSocket (kept apart from app.js so pages do not import the shell).

/** Listeners of live notifications (the inbox page adds one while it is open). */
export const live = new Set();

/** Shows `count` in the navigation's unread badge. */
export function setUnread(count) {
  const badge = document.getElementById('unread-badge');
  badge.textContent = String(count);
  badge.dataset.count = String(count);
  badge.setAttribute('aria-label', `${count} unread`);
}

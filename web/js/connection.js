// The connection indicator shared by the dashboard and the session page.
//
// Markup it expects (see index.html / session.html):
//   <div id="conn" class="conn" data-state="connecting">
//     <span class="conn-dot" aria-hidden="true"></span>
//     <span class="conn-text">Connecting…</span>
//     <span class="conn-help" hidden>…</span>
//     <button type="button" class="conn-retry" hidden>Retry now</button>
//   </div>
//   <div id="conn-announce" class="visually-hidden" aria-live="polite"></div>
//
// Visible text: "Live" while the stream is open, "Reconnecting in Ns…" (N counting down) while
// waiting, "Reconnecting…" while a retry is in flight. Offline turns the element into a fixed,
// coloured banner at the top of the page. Screen readers hear only the transitions (the per-second
// countdown would be noise), through the separate polite live region.

import { secondsUntil } from './util.js';

export function connectionIndicator(el, { announceEl = null, onRetry = null, now = () => Date.now() } = {}) {
  const text = el.querySelector('.conn-text');
  const help = el.querySelector('.conn-help');
  const retry = el.querySelector('.conn-retry');
  let status = { state: 'connecting' };
  let ticker = null;
  let lastAnnounced = '';

  if (retry && onRetry) retry.addEventListener('click', () => onRetry());

  function announce(msg) {
    if (!announceEl || msg === lastAnnounced) return;
    lastAnnounced = msg;
    announceEl.textContent = msg;
  }

  function render() {
    let label;
    let state;
    switch (status.state) {
      case 'open':
        label = 'Live';
        state = 'live';
        announce('Connected.');
        break;
      case 'waiting':
        label = `Reconnecting in ${Math.max(1, secondsUntil(status.retryAt, now()))}s…`;
        state = 'offline';
        announce('Connection lost. Reconnecting automatically.');
        break;
      case 'connecting':
        label = status.reconnecting ? 'Reconnecting…' : 'Connecting…';
        state = status.reconnecting ? 'offline' : 'connecting';
        break;
      case 'stopped':
      default:
        label = 'Offline';
        state = 'stopped';
        break;
    }
    if (text.textContent !== label) text.textContent = label;
    el.dataset.state = state;
    const offline = state === 'offline';
    if (help) help.hidden = !offline;
    if (retry) retry.hidden = !(offline && status.state === 'waiting' && onRetry);
    setOffline(offline && !el.hidden);
  }

  // The offline banner is position:fixed; push the page down by its real height (which
  // depends on how the text wraps) so it never covers the header.
  function setOffline(on) {
    document.body.classList.toggle('is-offline', on);
    document.body.style.paddingTop = on ? `${el.offsetHeight}px` : '';
  }
  window.addEventListener('resize', () => {
    if (document.body.classList.contains('is-offline')) setOffline(true);
  });

  function update(s) {
    status = s;
    if (s.state === 'waiting') {
      if (ticker == null) ticker = setInterval(render, 250);
    } else if (ticker != null) {
      clearInterval(ticker);
      ticker = null;
    }
    render();
  }

  function hide(hidden) {
    el.hidden = hidden;
    if (hidden) setOffline(false);
    else render();
  }

  render();
  return { update, hide };
}

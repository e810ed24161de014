// /session/expired: which ending to explain. `?reason=unused` is a link that ran out before
// anyone started with it — that page must not say answers were saved; anything else (the
// default, also without scripts) is a session whose time is up.

if (new URLSearchParams(location.search).get('reason') === 'unused') {
  document.getElementById('ended').hidden = true;
  document.getElementById('unused').hidden = false;
  document.title = 'catalytic — invite link expired';
}

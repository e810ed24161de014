// Small DOM helpers shared by the dashboard's modules. Each writes only when something
// changes, so a live update never rewrites a node that already says the right thing.

/** Show `text` in `el` (hidden when empty). */
export function show(el, text) {
  el.textContent = text || '';
  el.hidden = !text;
}

/** Disable a form's controls while its request is in flight. */
export function setBusy(form, busy) {
  for (const b of form.querySelectorAll('button, input, textarea')) b.disabled = busy;
  form.setAttribute('aria-busy', String(busy));
}

export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

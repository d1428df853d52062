"""A self-contained interactive API page (no CDN: the scheduler may run offline).

It reads /v1/openapi.json, lists every operation with its parameters, and sends
requests with the API key typed into the page.
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>OTA scheduler API</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;max-width:70em}
details{border:1px solid #ccc;border-radius:4px;margin:.4em 0;padding:.3em .6em}
summary{cursor:pointer}.m{display:inline-block;width:4.5em;font-weight:bold}
input,textarea{font:13px monospace;width:100%;box-sizing:border-box}
pre{background:#f4f4f4;padding:.6em;overflow:auto;max-height:30em}
</style></head><body>
<h1>OTA scheduler API</h1>
<p>OpenAPI document: <a href="/v1/openapi.json">/v1/openapi.json</a>.
API key: <input id="key" placeholder="bearer key" style="width:20em"></p>
<div id="ops"></div>
<script>
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
fetch('/v1/openapi.json').then(r => r.json()).then(doc => {
  const root = document.getElementById('ops');
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const d = document.createElement('details');
      const params = (op.parameters || []).map(p =>
        `<label>${esc(p.name)} (${p.in}) ${esc(p.description || '')}<input data-in="${p.in}" data-name="${esc(p.name)}"></label>`).join('');
      const body = op.requestBody ? '<label>body<textarea rows="6"></textarea></label>' : '';
      d.innerHTML = `<summary><span class="m">${method.toUpperCase()}</span>${esc(path)} — ${esc(op.summary)}</summary>
        ${params}${body}<button>Send</button><pre></pre>`;
      d.querySelector('button').onclick = async () => {
        let url = path; const query = new URLSearchParams();
        d.querySelectorAll('input[data-name]').forEach(i => {
          if (!i.value) return;
          if (i.dataset.in === 'path') url = url.replace('{' + i.dataset.name + '}', encodeURIComponent(i.value));
          else query.append(i.dataset.name, i.value);
        });
        const headers = {};
        const key = document.getElementById('key').value;
        if (key) headers['Authorization'] = 'Bearer ' + key;
        const ta = d.querySelector('textarea');
        const init = {method: method.toUpperCase(), headers};
        if (ta && ta.value) { init.body = ta.value; headers['Content-Type'] = 'application/json'; }
        const res = await fetch(url + (query.toString() ? '?' + query : ''), init);
        d.querySelector('pre').textContent = res.status + ' ' + res.statusText + '\\n' + await res.text();
      };
      root.appendChild(d);
    }
  }
});
</script></body></html>
"""

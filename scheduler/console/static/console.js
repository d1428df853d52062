// The console's own script: package uploads with a progress bar. Everything else is
// plain HTML forms and links, plus htmx attributes (search as you type, live task SSE).
// The File object itself is the request body: the browser streams it from disk and
// never reads the whole file into memory.
"use strict";

(function () {
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function uploadQuery(form, file) {
    var params = new URLSearchParams();
    params.set("file_name", file.name);
    ["type", "version", "product", "allowed_sources", "custom_info", "description"].forEach(function (name) {
      var value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    });
    return params.toString();
  }

  function explain(xhr) {
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && body.error) {
        return body.error.message + " (" + body.error.code + (body.error.field ? ", field " + body.error.field : "") + ")";
      }
    } catch (ignored) { /* not JSON: an HTML refusal (CSRF, scope) */ }
    return "HTTP " + xhr.status + ": refused";
  }

  function startUpload(form) {
    var file = form.elements.file.files[0];
    var bar = document.getElementById("upload-progress");
    var status = document.getElementById("upload-status");
    var button = form.querySelector("button[type=submit]");
    if (!file) { status.textContent = "Choose a file first."; return; }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.action + "?" + uploadQuery(form, file));
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    var signature = form.elements.signature.value.trim();
    if (signature) xhr.setRequestHeader("X-OTA-Signature", signature);
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) {
        bar.value = Math.floor((100 * event.loaded) / event.total);
        status.textContent = "Uploading " + file.name + ": " + bar.value + "%";
      }
    });
    xhr.addEventListener("load", function () {
      button.disabled = false;
      if (xhr.status === 200 || xhr.status === 201) {
        var pkg = JSON.parse(xhr.responseText);
        bar.value = 100;
        status.textContent = (pkg.deduplicated ? "Already stored: " : "Stored: ") + pkg.file_name + " " + pkg.version;
        status.dataset.packageId = pkg.id;
        status.className = "ok";
        window.location.assign(form.dataset.done + "/" + encodeURIComponent(pkg.id));
      } else {
        status.textContent = "Upload refused: " + explain(xhr);
        status.className = "error";
      }
    });
    xhr.addEventListener("error", function () {
      button.disabled = false;
      status.textContent = "Upload failed: the connection broke.";
      status.className = "error";
    });
    button.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    status.className = "";
    status.textContent = "Uploading " + file.name + "…";
    xhr.send(file);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("upload-form");
    if (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        startUpload(form);
      });
    }
  });
})();

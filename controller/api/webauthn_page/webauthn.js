// Postern WebAuthn ceremony page. The ceremony's secret is the URL
// fragment (never sent to a server in a request line or Referer); the
// controller's options go to navigator.credentials and the result is posted
// back. Served with a CSP that allows only same-origin scripts: no inline
// code here or in index.html.
"use strict";

(function () {
  const what = document.getElementById("what");
  const go = document.getElementById("go");
  const status = document.getElementById("status");
  const secret = decodeURIComponent(location.hash.replace(/^#/, ""));
  // The secret leaves the address bar (and history) once read.
  history.replaceState(null, "", location.pathname);

  function show(msg, cls) {
    status.textContent = msg;
    status.className = cls || "";
  }

  function b64urlToBuf(s) {
    const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function bufToB64url(buf) {
    const bytes = new Uint8Array(buf);
    let bin = "";
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  async function post(path, body) {
    const resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(data.error || ("HTTP " + resp.status));
    return data;
  }

  // Options from the controller (base64url strings) to the binary form
  // navigator.credentials wants.
  function decodeOptions(kind, pk) {
    pk.challenge = b64urlToBuf(pk.challenge);
    if (kind === "register") {
      pk.user.id = b64urlToBuf(pk.user.id);
      (pk.excludeCredentials || []).forEach((c) => { c.id = b64urlToBuf(c.id); });
    } else {
      (pk.allowCredentials || []).forEach((c) => { c.id = b64urlToBuf(c.id); });
    }
    return pk;
  }

  // The PublicKeyCredential in its JSON form (base64url members).
  function encodeCredential(kind, cred) {
    const r = cred.response;
    const out = {
      id: cred.id,
      rawId: bufToB64url(cred.rawId),
      type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: { clientDataJSON: bufToB64url(r.clientDataJSON) },
    };
    if (kind === "register") {
      out.response.attestationObject = bufToB64url(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = bufToB64url(r.authenticatorData);
      out.response.signature = bufToB64url(r.signature);
      if (r.userHandle) out.response.userHandle = bufToB64url(r.userHandle);
    }
    return out;
  }

  // run asks the authenticator, then the controller. A refusal by the
  // browser or the key (cancelled, timed out, no user gesture) leaves the
  // ceremony open: the button tries again. The controller's verdict is
  // final (a ceremony is single use).
  async function run(opts, auto) {
    go.disabled = true;
    show("Waiting for your security key…");
    let cred;
    try {
      const pk = decodeOptions(opts.kind, JSON.parse(JSON.stringify(opts.publicKey)));
      cred = opts.kind === "register"
        ? await navigator.credentials.create({ publicKey: pk })
        : await navigator.credentials.get({ publicKey: pk });
      if (!cred) throw new Error("the browser returned no credential");
    } catch (e) {
      go.disabled = false;
      show((auto ? "Press the button to use your security key." : "The security key did not answer: " + (e && e.message ? e.message : e)), auto ? "" : "err");
      return;
    }
    try {
      const res = await post("/api/v1/webauthn/finish", { secret: secret, credential: encodeCredential(opts.kind, cred) });
      show(res.kind === "register"
        ? "Security key enrolled. You may close this window and return to the terminal."
        : "Second factor accepted. You may close this window and return to the terminal.", "ok");
      document.body.dataset.result = "done";
    } catch (e) {
      show("Failed: " + (e && e.message ? e.message : e), "err");
      document.body.dataset.result = "failed";
    }
  }

  async function start() {
    if (!secret) {
      what.textContent = "This page is opened by postern mfa --webauthn; open the link it printed.";
      return;
    }
    if (!window.PublicKeyCredential || !navigator.credentials) {
      what.textContent = "This browser does not support security keys (WebAuthn).";
      return;
    }
    let opts;
    try {
      opts = await post("/api/v1/webauthn/options", { secret: secret });
    } catch (e) {
      what.textContent = "Cannot continue: " + e.message;
      document.body.dataset.result = "failed";
      return;
    }
    what.textContent = opts.kind === "register"
      ? "Enroll a security key for " + opts.user + "."
      : "Confirm it is you, " + opts.user + ", with your security key.";
    go.hidden = false;
    go.addEventListener("click", () => run(opts, false));
    document.body.dataset.ready = "1";
    // Browsers may require a user gesture; try at once and fall back to the button.
    run(opts, true);
  }

  // Opening another ceremony's link in this tab only changes the fragment:
  // start over with it.
  window.addEventListener("hashchange", () => location.reload());

  start();
})();

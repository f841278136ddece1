// Sandbox dashboard login: sign in with the identity toolkit stand-in, then hand the session to
// the Sentry Node extension with an external message, as the real dashboard does.
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("sandbox-config").textContent);
  const form = document.getElementById("login-form");
  const statusEl = document.getElementById("login-status");

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  function sendToExtension(message) {
    return new Promise((resolve) => {
      const runtime = typeof chrome !== "undefined" ? chrome.runtime : undefined;
      if (!runtime || typeof runtime.sendMessage !== "function") {
        resolve({ ok: false, error: "extension not reachable: chrome.runtime is undefined" });
        return;
      }
      try {
        runtime.sendMessage(cfg.extensionId, message, (response) => {
          const err = chrome.runtime.lastError;
          if (err) {
            resolve({ ok: false, error: "extension not reachable: " + (err.message || err) });
          } else if (response && response.ok) {
            resolve({ ok: true });
          } else {
            const why = (response && response.error) || "no answer";
            resolve({ ok: false, error: "extension refused the login: " + why });
          }
        });
      } catch (e) {
        resolve({ ok: false, error: "extension not reachable: " + (e && e.message ? e.message : e) });
      }
    });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = form.elements.email.value.trim();
    const password = form.elements.password.value;
    setStatus("pending", "Logging in...");
    let auth;
    try {
      const url = cfg.identityUrl + "/accounts:signInWithPassword?key=" + encodeURIComponent(cfg.apiKey);
      const resp = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ email, password, returnSecureToken: true }),
      });
      auth = await resp.json().catch(() => ({}));
      if (!resp.ok) {
        const reason = (auth && auth.error && auth.error.message) || "HTTP " + resp.status;
        setStatus("error", "Login failed: " + reason);
        return;
      }
    } catch (e) {
      setStatus("error", "Login failed: " + (e && e.message ? e.message : e));
      return;
    }
    const data = {
      uid: auth.localId,
      email: auth.email,
      refreshToken: auth.refreshToken,
      idToken: auth.idToken,
      expiresAt: Date.now() + Number(auth.expiresIn || 3600) * 1000,
    };
    const answer = await sendToExtension({ action: "login", data });
    if (answer.ok) {
      setStatus("ok", "Logged in");
    } else {
      setStatus("error", answer.error);
    }
  });
})();

// Sandbox dashboard, laid out as the real one: a sign-in form at the root (placeholders
// "Enter Email" / "Enter Password", Enter submits) and a signed-in page under /dashboard that
// sends a signed-out browser back to the form. Signing in hands the session to the Sentry Node
// extension with an external message `action: "login"`, as the real dashboard does; the signed-in
// page hands it again on every visit. The session lives in this origin's localStorage.
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("sandbox-config").textContent);
  const KEY = "gradient.session";
  const onForm = !/\/dashboard\/?$/.test(location.pathname);

  function session() {
    try {
      return JSON.parse(localStorage.getItem(KEY) || "null");
    } catch (e) {
      return null;
    }
  }

  function sendToExtension(message) {
    return new Promise((resolve) => {
      const runtime = typeof chrome !== "undefined" ? chrome.runtime : undefined;
      if (!runtime || typeof runtime.sendMessage !== "function") {
        resolve({ ok: false, error: "the Sentry Node extension is not installed in this browser" });
        return;
      }
      try {
        runtime.sendMessage(cfg.extensionId, message, (response) => {
          const err = chrome.runtime.lastError;
          if (err) resolve({ ok: false, error: "extension not reachable: " + (err.message || err) });
          else if (response === "OK") resolve({ ok: true }); // the extension's own answer
          else resolve({ ok: false, error: "the extension refused the session: " + (response || "no answer") });
        });
      } catch (e) {
        resolve({ ok: false, error: "extension not reachable: " + (e && e.message ? e.message : e) });
      }
    });
  }

  // loginInfo as the extension keeps it: {uid, token (the ID token), refresh (the refresh token)}
  function handOver(s) {
    return sendToExtension({
      action: "login",
      data: { uid: s.uid, token: s.idToken, refresh: s.refreshToken, email: s.email },
    });
  }

  async function postJson(url, body) {
    const resp = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error((data && data.error && data.error.message) || "HTTP " + resp.status);
    return data;
  }

  async function signIn(form) {
    const message = form.querySelector("[role=alert]");
    const email = form.querySelector("input[type=email]").value.trim();
    const password = form.querySelector("input[type=password]").value;
    message.textContent = "";
    if (!email || !password) {
      message.textContent = "Enter your email and password.";
      return;
    }
    let auth;
    try {
      auth = await postJson(cfg.identityUrl + "/accounts:signInWithPassword?key=" + encodeURIComponent(cfg.apiKey), {
        email, password, returnSecureToken: true,
      });
    } catch (e) {
      message.textContent = "Sign-in failed: " + (e && e.message ? e.message : e);
      return;
    }
    const s = {
      uid: auth.localId,
      email: auth.email,
      refreshToken: auth.refreshToken,
      idToken: auth.idToken,
      expiresAt: Date.now() + Number(auth.expiresIn || 3600) * 1000,
    };
    localStorage.setItem(KEY, JSON.stringify(s));
    await handOver(s);
    location.replace("dashboard");
  }

  async function showDashboard() {
    let s = session();
    if (!s) {
      location.replace("./");
      return;
    }
    try {
      const fresh = await postJson(cfg.tokenUrl + "?key=" + encodeURIComponent(cfg.apiKey), {
        grant_type: "refresh_token", refresh_token: s.refreshToken,
      });
      // The extension takes a session it already holds as it is, and starts over on a new one
      // (the real one registers its node again when that races): hand over the same ID token
      // while it has minutes left, a fresh one only after.
      if (!(Number(s.expiresAt) - Date.now() > 10 * 60 * 1000)) {
        s = { ...s, idToken: fresh.id_token, refreshToken: fresh.refresh_token || s.refreshToken,
              expiresAt: Date.now() + Number(fresh.expires_in || 3600) * 1000 };
        localStorage.setItem(KEY, JSON.stringify(s));
      }
    } catch (e) {
      localStorage.removeItem(KEY); // the session was revoked: sign in again
      location.replace("./");
      return;
    }
    const main = document.querySelector("main");
    main.querySelector(".who").textContent = s.email || s.uid;
    const answer = await handOver(s);
    main.querySelector(".extension").textContent = answer.ok
      ? "Your Sentry Node extension has your session."
      : answer.error;
    main.querySelector(".sign-out").addEventListener("click", async () => {
      localStorage.removeItem(KEY);
      await sendToExtension({ action: "logout" }); // the extension forgets the session too
      location.replace("./");
    });
    main.hidden = false;
  }

  if (onForm) {
    if (session()) {
      location.replace("dashboard");
      return;
    }
    const form = document.querySelector("form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      signIn(form);
    });
  } else {
    showDashboard();
  }
})();

// Shared by background.js (importScripts) and popup.html: session tokens and API calls.
"use strict";

const SENTRY_CONFIG = self.GRADIENT_CONFIG;
const TOKEN_MARGIN_MS = 60 * 1000;

function errorText(e) {
  return e && e.message ? e.message : String(e);
}

function tokenExpiry(token) {
  // ms since epoch when a JWT ID token expires (0 when unreadable)
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return Number(JSON.parse(atob(part + "===".slice((part.length + 3) % 4))).exp) * 1000 || 0;
  } catch (e) {
    return 0;
  }
}

// Trade the refresh token for a fresh ID token and keep it in loginInfo ({uid, token, refresh}).
async function refreshIdToken(loginInfo) {
  const url = SENTRY_CONFIG.securetokenUrl + "?key=" + encodeURIComponent(SENTRY_CONFIG.apiKey);
  const resp = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: loginInfo.refresh }),
  });
  const payload = await resp.json().catch(() => ({}));
  const token = payload.access_token || payload.id_token;
  if (!resp.ok || !token) {
    const reason = (payload.error && payload.error.message) || "HTTP " + resp.status;
    // The token service refused this session (revoked, expired, unknown): the user is logged
    // out, as the real extension shows it; a network fault or 5xx keeps the session.
    if (resp.status === 400 || resp.status === 401 || resp.status === 403) {
      const current = (await chrome.storage.local.get("loginInfo")).loginInfo;
      if (current && current.refresh === loginInfo.refresh) {
        await chrome.storage.local.remove("loginInfo");
      }
      throw new Error("logged out: " + reason);
    }
    throw new Error("token refresh failed: " + reason);
  }
  const updated = Object.assign({}, loginInfo, { token, refresh: payload.refresh_token || loginInfo.refresh });
  const current = (await chrome.storage.local.get("loginInfo")).loginInfo;
  if (current && current.uid === loginInfo.uid) {
    await chrome.storage.local.set({ loginInfo: updated });
  }
  return updated.token;
}

async function getIdToken(force) {
  const { loginInfo } = await chrome.storage.local.get("loginInfo");
  if (!loginInfo || !loginInfo.refresh) {
    throw new Error("logged out");
  }
  const fresh = loginInfo.token && tokenExpiry(loginInfo.token) - Date.now() > TOKEN_MARGIN_MS;
  if (!force && fresh) {
    return loginInfo.token;
  }
  return refreshIdToken(loginInfo);
}

// One API call; answers the envelope {code, msg, data}. A 401 refreshes the token once.
async function apiCall(method, path, body, auth = true) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = {};
    if (auth) {
      headers.Authorization = "Bearer " + (await getIdToken(attempt > 0));
    }
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
    }
    const resp = await fetch(SENTRY_CONFIG.apiBase + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let envelope = null;
    try {
      envelope = await resp.json();
    } catch (e) {
      envelope = null;
    }
    const unauthorized = resp.status === 401 || (envelope && envelope.code === 401);
    if (auth && unauthorized && attempt === 0) {
      continue;
    }
    if (!envelope || typeof envelope !== "object") {
      throw new Error(path + ": HTTP " + resp.status);
    }
    return envelope;
  }
  throw new Error(path + ": unauthorized");
}

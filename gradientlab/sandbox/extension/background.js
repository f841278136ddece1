// Sandbox Sentry Node service worker: takes the session from the dashboard and keeps the node
// present on the network with a heartbeat.
importScripts("config.js", "api.js");

const ALARM = "sentry-heartbeat";
let heartbeatTimer = null;
let heartbeatRunning = null;

function newClientId() {
  return crypto.randomUUID().replace(/-/g, "");
}

async function ensureClientId() {
  const { clientid } = await chrome.storage.local.get("clientid");
  if (clientid) {
    return clientid;
  }
  const id = newClientId();
  await chrome.storage.local.set({ clientid: id });
  return id;
}

async function doHeartbeat() {
  const { loginInfo } = await chrome.storage.local.get("loginInfo");
  if (!loginInfo) {
    stopHeartbeat();
    return { at: Date.now(), ok: false, error: "logged out" };
  }
  const clientid = await ensureClientId();
  const version = chrome.runtime.getManifest().version;
  let record;
  try {
    const env = await apiCall("POST", "/sentrynode/heartbeat", { clientid, version });
    if (env.code === 200 && env.data) {
      record = { at: Date.now(), ok: true, clientid, data: env.data };
    } else {
      record = { at: Date.now(), ok: false, clientid, error: "code " + env.code + ": " + env.msg };
    }
  } catch (e) {
    record = { at: Date.now(), ok: false, clientid, error: errorText(e) };
  }
  // Logged out while the call was in flight: do not leave a stale answer behind.
  if ((await chrome.storage.local.get("loginInfo")).loginInfo) {
    await chrome.storage.local.set({ lastHeartbeat: record });
  }
  return record;
}

function heartbeat() {
  if (!heartbeatRunning) {
    heartbeatRunning = doHeartbeat().finally(() => {
      heartbeatRunning = null;
    });
  }
  return heartbeatRunning;
}

function startHeartbeat() {
  if (heartbeatTimer === null) {
    const seconds = Number(SENTRY_CONFIG.heartbeatSeconds) || 10;
    heartbeatTimer = setInterval(heartbeat, seconds * 1000);
  }
  chrome.alarms.create(ALARM, { periodInMinutes: 0.5 });
  return heartbeat();
}

function stopHeartbeat() {
  if (heartbeatTimer !== null) {
    clearInterval(heartbeatTimer);
    heartbeatTimer = null;
  }
  chrome.alarms.clear(ALARM);
}

async function resume() {
  const { loginInfo } = await chrome.storage.local.get("loginInfo");
  if (loginInfo) {
    startHeartbeat();
  }
}

async function handleExternal(message) {
  if (!message || typeof message !== "object") {
    return { ok: false, error: "bad message" };
  }
  if (message.action === "login") {
    const d = message.data || {};
    if (!d.uid || !d.refreshToken) {
      return { ok: false, error: "login data needs uid and refreshToken" };
    }
    const loginInfo = {
      uid: d.uid,
      email: d.email || "",
      refreshToken: d.refreshToken,
      idToken: d.idToken || "",
      expiresAt: Number(d.expiresAt) || 0,
    };
    await chrome.storage.local.set({ loginInfo });
    await chrome.storage.local.remove("lastHeartbeat");
    const clientid = await ensureClientId();
    startHeartbeat();
    return { ok: true, clientid };
  }
  if (message.action === "logout") {
    stopHeartbeat();
    await chrome.storage.local.remove(["loginInfo", "lastHeartbeat"]);
    return { ok: true };
  }
  return { ok: false, error: "unknown action" };
}

chrome.runtime.onMessageExternal.addListener((message, sender, sendResponse) => {
  handleExternal(message).then(sendResponse, (e) => sendResponse({ ok: false, error: errorText(e) }));
  return true;
});

// From the popup: run a heartbeat now and answer its record.
chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (message && message.action === "heartbeat") {
    heartbeat().then(sendResponse, (e) => sendResponse({ ok: false, error: errorText(e) }));
    return true;
  }
  return false;
});

// Backup: an alarm wakes a stopped service worker, which restarts the heartbeat loop.
chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === ALARM) {
    if (heartbeatTimer === null) {
      resume();
    } else {
      heartbeat();
    }
  }
});

chrome.runtime.onStartup.addListener(resume);
chrome.runtime.onInstalled.addListener(resume);
resume();

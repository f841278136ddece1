// Popup, shaped as the real extension's: signed out it shows a "Log in" button and asks the API
// nothing; signed in it asks GET /sentrynode/get/<clientid> and POST /sentrynode/stats/<clientid>
// and shows a badge (Excellent | Good | Disconnected | Unsupported with the ban's reason), today's
// taps and uptime, and the node's IP, version and id. The first run shows an "I got it" dialog.
// As in the real one, the badge's Good / Disconnected is the extension's own MQTT connection (the
// service worker's answer to "checkMqttState"), and Unsupported comes from the API's `banned`.
"use strict";

const DAY_MS = 24 * 60 * 60 * 1000;
const $ = (selector) => document.querySelector(selector);

function show(selector, value) {
  $(selector).textContent = value === undefined || value === null ? "" : String(value);
}

function utcDayId(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return "" + d.getUTCFullYear() + pad(d.getUTCMonth() + 1) + pad(d.getUTCDate());
}

async function setupFirstRun() {
  const dialog = $("dialog.first-run");
  const { firstRunDone } = await chrome.storage.local.get("firstRunDone");
  if (!firstRunDone) dialog.show();
  dialog.querySelector("button").addEventListener("click", async () => {
    dialog.close();
    await chrome.storage.local.set({ firstRunDone: true });
  });
}

function connectionState() {
  return new Promise((resolve) => {
    chrome.runtime.sendMessage({ action: "checkMqttState" }, (answer) => {
      resolve(!chrome.runtime.lastError && answer === "Good" ? "Good" : "Disconnected");
    });
  });
}

async function readToday(clientid) {
  let now = Date.now();
  const status = await apiCall("GET", "/status", undefined, false);
  if (status.code === 200 && status.data && Number(status.data.time)) {
    now = Number(status.data.time); // the network's clock decides what "today" is
  }
  const start = Math.floor(now / DAY_MS) * DAY_MS;
  const env = await apiCall("POST", "/sentrynode/stats/" + encodeURIComponent(clientid), {
    start: start - 9 * DAY_MS,
    end: now,
    type: "DAY",
  });
  const items = env.code === 200 && Array.isArray(env.data) ? env.data : [];
  return items.find((item) => item && item.id === utcDayId(now)) || { duration: 0, latency: 0 };
}

function signedOut() {
  $("section.signed-in").hidden = true;
  $("section.signed-out").hidden = false;
}

async function render() {
  const { loginInfo, nodeMap } = await chrome.storage.local.get(["loginInfo", "nodeMap"]);
  const clientid = loginInfo && nodeMap && nodeMap[loginInfo.uid] ? nodeMap[loginInfo.uid].clientid : null;
  if (!loginInfo) {
    signedOut();
    return;
  }
  $("section.signed-out").hidden = true;
  $("section.signed-in").hidden = false;
  show(".account", loginInfo.email || "");
  show(".node-version", chrome.runtime.getManifest().version);
  show(".node-id", clientid || "unknown");
  let node = null;
  if (clientid) {
    try {
      const env = await apiCall("GET", "/sentrynode/get/" + encodeURIComponent(clientid));
      node = env.code === 200 ? env.data : null;
    } catch (e) {
      if (errorText(e).startsWith("logged out")) {
        signedOut();
        return;
      }
    }
  }
  let signal = await connectionState();
  let hint = signal === "Good" ? "Your node is all set." : "Your node is offline. Please check your network connection.";
  if (node && node.banned) {
    signal = "Unsupported";
    hint = node.bannedReason || "";
  }
  show(".signal-text", signal);
  $(".signal").dataset.signal = signal;
  show(".hint", hint);
  show(".node-ip", (node && node.ip) || "unknown");
  show(".reward", node ? (Number(node.today) || 0) / 100000 : 0);
  if (clientid) {
    try {
      const today = await readToday(clientid);
      show(".taps", Number(today.latency) || 0);
      show(".uptime", Math.floor((Number(today.duration) || 0) / 60) + " min");
    } catch (e) {
      show(".taps", "-");
    }
  }
}

async function main() {
  $(".log-in").addEventListener("click", () => {
    chrome.tabs.create({ url: SENTRY_CONFIG.dashboardUrl || "https://app.gradient.network/" });
  });
  try {
    await setupFirstRun();
  } catch (e) {
    console.warn("first run:", errorText(e));
  }
  await render();
  const every = Number(SENTRY_CONFIG.popupRefreshSeconds) || 5;
  setInterval(render, every * 1000);
}

main();

// Popup: shows the node's status. Element ids are a contract read by GradientLab's node runner:
// #status (Good | Disconnected | Unsupported | Logged out), #node-id, #ip, #version,
// #taps-today, #uptime-today (seconds), #points-today (raw points), #banned-reason, #error;
// body[data-ready="1"] once rendered (or failed).
"use strict";

const DAY_MS = 24 * 60 * 60 * 1000;

function setText(id, value) {
  const el = document.getElementById(id);
  el.textContent = value === undefined || value === null ? "" : String(value);
  return el;
}

function setStatus(status) {
  setText("status", status).dataset.status = status;
}

function utcDayId(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return "" + d.getUTCFullYear() + pad(d.getUTCMonth() + 1) + pad(d.getUTCDate());
}

async function setupFirstRun() {
  const dialog = document.getElementById("first-run");
  const { firstRunDone } = await chrome.storage.local.get("firstRunDone");
  if (firstRunDone) {
    dialog.open = false;
    dialog.hidden = true;
  }
  document.getElementById("first-run-ok").addEventListener("click", async () => {
    dialog.open = false;
    dialog.hidden = true;
    await chrome.storage.local.set({ firstRunDone: true });
  });
}

function askBackgroundHeartbeat() {
  return new Promise((resolve) => {
    try {
      chrome.runtime.sendMessage({ action: "heartbeat" }, (answer) => {
        void chrome.runtime.lastError;
        resolve(answer || null);
      });
    } catch (e) {
      resolve(null);
    }
  });
}

async function readNode(clientid) {
  let env = await apiCall("GET", "/sentrynode/get/" + encodeURIComponent(clientid));
  if (env.code === 404) {
    // Not registered yet: ask the service worker for a heartbeat, then look again.
    await askBackgroundHeartbeat();
    env = await apiCall("GET", "/sentrynode/get/" + encodeURIComponent(clientid));
  }
  if (env.code !== 200 || !env.data) {
    throw new Error("sentrynode/get: code " + env.code + ": " + env.msg);
  }
  return env.data;
}

async function readToday(clientid) {
  let now = Date.now();
  const status = await apiCall("GET", "/status", undefined, false);
  if (status.code === 200 && status.data && Number(status.data.time)) {
    now = Number(status.data.time); // the network's clock decides what "today" is
  }
  const start = Math.floor(now / DAY_MS) * DAY_MS;
  const env = await apiCall("POST", "/sentrynode/stats/" + encodeURIComponent(clientid), {
    start,
    end: now,
    type: "DAY",
  });
  if (env.code !== 200 || !Array.isArray(env.data)) {
    throw new Error("sentrynode/stats: code " + env.code + ": " + env.msg);
  }
  const today = utcDayId(now);
  return env.data.find((item) => item && item.id === today) || { id: today, duration: 0, latency: 0 };
}

async function render() {
  const errors = [];
  try {
    setText("version", chrome.runtime.getManifest().version);
    const { loginInfo, clientid, lastHeartbeat } = await chrome.storage.local.get([
      "loginInfo",
      "clientid",
      "lastHeartbeat",
    ]);
    setText("node-id", clientid || "");
    if (!loginInfo) {
      setStatus("Logged out");
      for (const id of ["ip", "taps-today", "uptime-today", "points-today", "banned-reason"]) {
        setText(id, "");
      }
      return;
    }
    if (!clientid) {
      setStatus("Disconnected");
      errors.push("no client id yet");
      return;
    }
    let node = null;
    try {
      node = await readNode(clientid);
    } catch (e) {
      errors.push(errorText(e));
      if (errorText(e).startsWith("logged out")) {
        setStatus("Logged out");
        return;
      }
    }
    if (node) {
      setStatus(node.banned ? "Unsupported" : node.connect ? "Good" : "Disconnected");
      setText("ip", node.ip);
      setText("banned-reason", node.banned ? node.bannedReason || "" : "");
      setText("points-today", Number(node.today) || 0);
    } else {
      // The API could not be read: fall back on the service worker's last heartbeat.
      const maxAge = 3 * (Number(SENTRY_CONFIG.heartbeatSeconds) || 10) * 1000;
      const hb = lastHeartbeat && lastHeartbeat.ok && Date.now() - lastHeartbeat.at < maxAge;
      const data = hb ? lastHeartbeat.data : null;
      setStatus(data ? (data.banned ? "Unsupported" : "Good") : "Disconnected");
      setText("ip", data ? data.ip : "");
      setText("banned-reason", data && data.banned ? data.bannedReason || "" : "");
    }
    try {
      const today = await readToday(clientid);
      setText("taps-today", Number(today.latency) || 0);
      setText("uptime-today", Math.floor(Number(today.duration) || 0));
    } catch (e) {
      errors.push(errorText(e));
    }
  } catch (e) {
    errors.push(errorText(e));
  } finally {
    setText("error", errors.join("; "));
    document.body.dataset.renderedAt = String(Date.now());
    document.body.dataset.ready = "1";
  }
}

async function main() {
  try {
    await setupFirstRun();
  } catch (e) {
    setText("error", errorText(e));
  }
  await render();
  const every = Number(SENTRY_CONFIG.popupRefreshSeconds) || 5;
  setInterval(render, every * 1000);
}

main();

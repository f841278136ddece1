// Sandbox Sentry Node service worker, on the real extension's protocol (v1.0.16):
// - the dashboard hands over the session with an external message {action: "login", data:
//   loginInfo} ({uid, token, refresh}); {action: "logout"} erases it;
// - the node: POST /sentrynode/register answers {clientid, username, password}, kept per account
//   (uid) in this profile, registered again only when there is none;
// - presence: MQTT v5 over WebSocket with those credentials; the node publishes
//   client/version/<clientid> on connecting and client/online/<clientid> every
//   `heartbeatSeconds`, subscribes to client/task/<clientid> and answers latency tasks on
//   client/latency/<clientid>. Its state (Good while connected, else Disconnected) is what the
//   popup's badge shows, as the real one's is.
importScripts("config.js", "api.js", "mqtt.js");

const ALARM = "sentry-node";
let mqtt = null; // the MqttClient of the current node
let mqttState = "Disconnected";
let starting = null;
let onlineTimer = null;
let retryTimer = null;
let retryDelay = 2000;

async function nodeFor(uid) {
  const { nodeMap } = await chrome.storage.local.get("nodeMap");
  return (nodeMap || {})[uid] || null;
}

async function keepNode(uid, node) {
  const { nodeMap } = await chrome.storage.local.get("nodeMap");
  const map = Object.assign({}, nodeMap || {});
  if (node) map[uid] = node;
  else delete map[uid];
  await chrome.storage.local.set({ nodeMap: map });
}

async function registerNode(uid) {
  const answer = await apiCall("POST", "/sentrynode/register");
  const creds = answer && answer.clientid ? answer : answer && answer.data;
  if (!creds || !creds.clientid) {
    throw new Error("register failed: code " + (answer && answer.code) + " " + (answer && answer.msg));
  }
  const node = { clientid: creds.clientid, username: creds.username, password: creds.password };
  await keepNode(uid, node);
  return node;
}

function message(node, fields) {
  return JSON.stringify(Object.assign({ clientid: node.clientid, timestamp: Date.now() }, fields));
}

function publish(topic, text) {
  if (mqtt && mqtt.connected) mqtt.publish(topic, text);
}

// A latency task: the sandbox has no WebRTC peer to reach, so the tap's figure is a round trip
// to the network itself; the network decides by its tap model whether the tap counted.
async function runTask(node, task) {
  const started = Date.now();
  try {
    await apiCall("GET", "/status", undefined, false);
  } catch (e) {
    return;
  }
  publish(
    "client/latency/" + node.clientid,
    message(node, { type: "latency", destcid: task.destcid, taskid: task.taskid, ttl: Date.now() - started })
  );
}

function stopNode() {
  if (onlineTimer !== null) {
    clearInterval(onlineTimer);
    onlineTimer = null;
  }
  if (retryTimer !== null) {
    clearTimeout(retryTimer);
    retryTimer = null;
  }
  if (mqtt) {
    const old = mqtt;
    mqtt = null;
    old.onclose = null;
    old.end();
  }
  mqttState = "Disconnected";
}

function retryLater() {
  if (retryTimer !== null) return;
  retryTimer = setTimeout(() => {
    retryTimer = null;
    startNode();
  }, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 30000);
}

async function connectNode() {
  const { loginInfo } = await chrome.storage.local.get("loginInfo");
  if (!loginInfo || !loginInfo.uid) {
    stopNode();
    return;
  }
  if (mqtt && mqtt.connected) return;
  let node = await nodeFor(loginInfo.uid);
  if (!node) node = await registerNode(loginInfo.uid);
  const client = new MqttClient(SENTRY_CONFIG.mqttUrl, {
    clientId: node.clientid,
    username: node.username,
    password: node.password,
    keepalive: 20, // the pings also keep this service worker awake
  });
  try {
    await client.connect();
  } catch (e) {
    if (/Bad User Name or Password|Not authorized/.test(errorText(e))) {
      await keepNode(loginInfo.uid, null); // the network no longer knows this node
    }
    throw e;
  }
  if (mqtt) mqtt.end();
  mqtt = client;
  mqttState = "Good";
  retryDelay = 2000;
  client.onmessage = (topic, text) => {
    let task = null;
    try {
      task = JSON.parse(text);
    } catch (e) {
      return;
    }
    if (task && task.type === "latency" && task.clientid === node.clientid) runTask(node, task);
  };
  client.onclose = () => {
    if (mqtt === client) {
      mqtt = null;
      mqttState = "Disconnected";
      retryLater();
    }
  };
  client.subscribe("client/task/" + node.clientid);
  const version = chrome.runtime.getManifest().version;
  publish("client/version/" + node.clientid, message(node, { type: "version", version }));
  const online = () => publish("client/online/" + node.clientid, message(node, { type: "online", account: node.username }));
  online();
  if (onlineTimer !== null) clearInterval(onlineTimer);
  onlineTimer = setInterval(online, (Number(SENTRY_CONFIG.heartbeatSeconds) || 600) * 1000);
}

function startNode() {
  chrome.alarms.create(ALARM, { periodInMinutes: 0.5 });
  if (!starting) {
    starting = connectNode()
      .catch((e) => {
        console.warn("sentry node:", errorText(e));
        mqttState = "Disconnected";
        if (errorText(e).startsWith("logged out")) stopNode();
        else retryLater();
      })
      .finally(() => {
        starting = null;
      });
  }
  return starting;
}

async function handleExternal(msg) {
  if (!msg || typeof msg !== "object") return "bad message";
  if (msg.action === "login") {
    const d = msg.data || {};
    if (!d.uid || !d.refresh) return "login data needs uid and refresh";
    const { loginInfo } = await chrome.storage.local.get("loginInfo");
    if (loginInfo && loginInfo.uid !== d.uid) stopNode(); // another account: another node
    await chrome.storage.local.set({ loginInfo: { uid: d.uid, token: d.token || "", refresh: d.refresh, email: d.email || "" } });
    startNode();
    return "OK";
  }
  if (msg.action === "logout") {
    stopNode();
    await chrome.storage.local.remove("loginInfo");
    chrome.alarms.clear(ALARM);
    return "OK";
  }
  return "unknown action";
}

chrome.runtime.onMessageExternal.addListener((msg, sender, sendResponse) => {
  handleExternal(msg).then(sendResponse, (e) => sendResponse(errorText(e)));
  return true;
});

// From the popup, as the real one asks its background: the MQTT connection's state.
chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (msg && msg.action === "checkMqttState") {
    sendResponse(mqtt && mqtt.connected ? "Good" : mqttState === "Good" ? "Good" : "Disconnected");
    return false;
  }
  return false;
});

// Backup: an alarm wakes a stopped service worker, which connects the node again.
chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === ALARM && !(mqtt && mqtt.connected)) startNode();
});

async function resume() {
  const { loginInfo } = await chrome.storage.local.get("loginInfo");
  if (loginInfo) startNode();
}

// Logged out by the token service (a revoked session) or by a logout: the node goes too.
chrome.storage.onChanged.addListener((changes, area) => {
  if (area === "local" && changes.loginInfo && !changes.loginInfo.newValue) stopNode();
});

chrome.runtime.onStartup.addListener(resume);
chrome.runtime.onInstalled.addListener(resume);
resume();

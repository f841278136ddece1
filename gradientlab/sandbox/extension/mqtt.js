// A small MQTT v5 client over WebSocket (subprotocol "mqtt"), written for the sandbox extension:
// CONNECT/CONNACK (username and password), SUBSCRIBE/SUBACK, PUBLISH at QoS 0 both ways,
// PINGREQ/PINGRESP and DISCONNECT. No QoS 1/2, no sessions, no will: what a Sentry Node needs.
"use strict";

const MQTT_REASONS = {
  0x80: "Unspecified error", 0x81: "Malformed Packet", 0x82: "Protocol Error",
  0x84: "Unsupported Protocol Version", 0x85: "Client Identifier not valid",
  0x86: "Bad User Name or Password", 0x87: "Not authorized", 0x88: "Server unavailable",
  0x89: "Server busy", 0x8a: "Banned", 0x8e: "Session taken over", 0x98: "Administrative action",
};

function mqttUtf8(text) {
  const bytes = new TextEncoder().encode(text);
  const out = new Uint8Array(2 + bytes.length);
  out[0] = bytes.length >> 8;
  out[1] = bytes.length & 0xff;
  out.set(bytes, 2);
  return out;
}

function mqttVarint(n) {
  const out = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return out;
}

function mqttPacket(first, parts) {
  const length = parts.reduce((sum, p) => sum + p.length, 0);
  const head = [first, ...mqttVarint(length)];
  const out = new Uint8Array(head.length + length);
  out.set(head, 0);
  let at = head.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

class MqttClient {
  // url: ws(s)://host:port/mqtt; options: clientId, username, password, keepalive (seconds)
  constructor(url, options) {
    this.url = url;
    this.options = options;
    this.connected = false;
    this.onmessage = null; // (topic, text)
    this.onclose = null; // (reason)
    this._ws = null;
    this._buffer = new Uint8Array(0);
    this._packetId = 1;
    this._ping = null;
    this._closed = false;
  }

  // Resolves on a successful CONNACK, rejects with the broker's reason otherwise.
  connect() {
    return new Promise((resolve, reject) => {
      let settled = false;
      const ws = new WebSocket(this.url, ["mqtt"]);
      ws.binaryType = "arraybuffer";
      this._ws = ws;
      this._connack = (code) => {
        settled = true;
        if (code === 0) {
          this.connected = true;
          const every = (Number(this.options.keepalive) || 60) * 1000 * 0.75;
          this._ping = setInterval(() => this._send(new Uint8Array([0xc0, 0x00])), every);
          resolve();
        } else {
          reject(new Error("MQTT connection refused: " + (MQTT_REASONS[code] || "reason " + code)));
          ws.close();
        }
      };
      ws.onopen = () => this._send(this._connectPacket());
      ws.onmessage = (event) => this._receive(new Uint8Array(event.data));
      ws.onerror = () => {
        if (!settled) {
          settled = true;
          reject(new Error("MQTT WebSocket error at " + this.url));
        }
      };
      ws.onclose = (event) => {
        const wasConnected = this.connected;
        this._teardown();
        if (!settled) {
          settled = true;
          reject(new Error("MQTT WebSocket closed before CONNACK (" + event.code + ")"));
        } else if (wasConnected && this.onclose) {
          this.onclose(this._reason || "connection closed");
        }
      };
    });
  }

  subscribe(topic) {
    const id = this._nextId();
    this._send(mqttPacket(0x82, [new Uint8Array([id >> 8, id & 0xff, 0x00]), mqttUtf8(topic), new Uint8Array([0x00])]));
  }

  publish(topic, text) {
    if (!this.connected) throw new Error("MQTT client is not connected");
    const payload = new TextEncoder().encode(text);
    this._send(mqttPacket(0x30, [mqttUtf8(topic), new Uint8Array([0x00]), payload]));
  }

  end() {
    this._closed = true;
    if (this._ws && this.connected) this._send(new Uint8Array([0xe0, 0x00]));
    if (this._ws) this._ws.close();
    this._teardown();
  }

  _connectPacket() {
    const o = this.options;
    const keepalive = Number(o.keepalive) || 60;
    // protocol name, level 5, flags (username, password, clean start), keep-alive, no properties
    const header = new Uint8Array([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x05, 0xc2, keepalive >> 8, keepalive & 0xff, 0x00]);
    return mqttPacket(0x10, [header, mqttUtf8(o.clientId), mqttUtf8(o.username), mqttUtf8(o.password)]);
  }

  _nextId() {
    this._packetId = (this._packetId % 65535) + 1;
    return this._packetId;
  }

  _send(bytes) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(bytes);
  }

  _teardown() {
    this.connected = false;
    if (this._ping !== null) {
      clearInterval(this._ping);
      this._ping = null;
    }
  }

  _receive(chunk) {
    const joined = new Uint8Array(this._buffer.length + chunk.length);
    joined.set(this._buffer, 0);
    joined.set(chunk, this._buffer.length);
    let at = 0;
    while (true) {
      if (joined.length - at < 2) break;
      let length = 0;
      let multiplier = 1;
      let i = at + 1;
      let complete = false;
      while (i < joined.length) {
        const byte = joined[i++];
        length += (byte & 0x7f) * multiplier;
        multiplier *= 128;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete || joined.length - i < length) break;
      this._packet(joined[at], joined.subarray(i, i + length));
      at = i + length;
    }
    this._buffer = joined.slice(at);
  }

  _packet(first, body) {
    const type = first >> 4;
    if (type === 2) {
      // CONNACK: acknowledge flags, reason code, properties
      this._connack(body[1]);
    } else if (type === 3) {
      const qos = (first >> 1) & 0x03;
      const topicLength = (body[0] << 8) | body[1];
      const topic = new TextDecoder().decode(body.subarray(2, 2 + topicLength));
      let at = 2 + topicLength + (qos > 0 ? 2 : 0);
      let propsLength = 0;
      let multiplier = 1;
      while (true) {
        const byte = body[at++];
        propsLength += (byte & 0x7f) * multiplier;
        multiplier *= 128;
        if ((byte & 0x80) === 0) break;
      }
      const text = new TextDecoder().decode(body.subarray(at + propsLength));
      if (this.onmessage) this.onmessage(topic, text);
    } else if (type === 14) {
      // the broker ends the session and says why
      const code = body.length ? body[0] : 0;
      this._reason = "disconnected by the broker: " + (MQTT_REASONS[code] || "reason " + code);
    }
    // SUBACK (9) and PINGRESP (13) need no action
  }
}

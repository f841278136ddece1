// Default settings for loading this folder by hand. The sandbox server replaces this file in
// the extension it serves with one that points at itself and at its MQTT broker.
self.GRADIENT_CONFIG = {
  apiBase: "http://127.0.0.1:8765/api",
  securetokenUrl: "http://127.0.0.1:8765/securetoken/v1/token",
  dashboardUrl: "http://127.0.0.1:8765/app/",
  mqttUrl: "ws://127.0.0.1:8766/mqtt",
  apiKey: "sandbox-web-api-key",
  heartbeatSeconds: 600,
  popupRefreshSeconds: 5,
};

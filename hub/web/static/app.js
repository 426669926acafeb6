// The dashboard's entry point: log in (the JWT kept in sessionStorage, so it ends with the tab), connect the
// dashboard WebSocket, and wire the device list, the device panel and the alerts list to it.
//
// Everything goes through the JavaScript client (clients/js, vendored into ./build by scripts/build-web), which
// speaks only the public contract. The selected device is in the URL (#/devices/<id>).

import { ApiError, HubClient, RestClient, SessionEnded } from "./build/telehub.js";
import { AlertList } from "./alerts.js";
import { DeviceView } from "./device_view.js";
import { DeviceList } from "./devices.js";
import { byId } from "./dom.js";

/**
 * @typedef {import("./build/telehub.js").Login} Login
 * @typedef {import("./build/telehub.js").HubState} HubState
 * @typedef {{token: string, user: Login["user"], expiresAt: number}} Session
 */

const SESSION_KEY = "telehub.session";
// The hub's base: the page is served at its root.
const HUB_URL = new URL(".", document.baseURI);
const DEVICE_HASH = "#/devices/";
/** @type {{[state in HubState]: string}} */
const STATE_TEXT = {
  idle: "offline",
  connecting: "connecting…",
  open: "live",
  reconnecting: "reconnecting…",
  closed: "offline",
};

const rest = new RestClient(HUB_URL);
const deviceView = new DeviceView(rest);
const devices = new DeviceList(
  {
    list: byId("device-list", HTMLUListElement),
    count: byId("device-count", HTMLElement),
    filter: byId("device-filter", HTMLInputElement),
  },
  rest,
  (deviceId) => {
    location.hash = DEVICE_HASH + encodeURIComponent(deviceId);
  },
);
const alerts = new AlertList(
  { list: byId("alert-list", HTMLUListElement), count: byId("alert-count", HTMLElement), error: byId("alert-error", HTMLElement) },
  rest,
);
const loginView = byId("login-view", HTMLElement);
const dashboardView = byId("dashboard-view", HTMLElement);
const loginForm = byId("login-form", HTMLFormElement);
const loginError = byId("login-error", HTMLElement);
const connection = byId("connection", HTMLElement);
const whoami = byId("whoami", HTMLElement);
const logoutButton = byId("logout", HTMLButtonElement);

/** @type {HubClient | null} */
let hub = null;

/** @returns {Session | null} */
function storedSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
    return session && typeof session.token === "string" && session.expiresAt > Date.now() ? session : null;
  } catch {
    return null;
  }
}

/** @param {string} [message] */
function showLogin(message = "") {
  const closing = hub;
  hub = null;
  closing?.close();
  devices.stop();
  alerts.stop();
  deviceView.hide();
  sessionStorage.removeItem(SESSION_KEY);
  rest.token = null;
  dashboardView.hidden = true;
  logoutButton.hidden = true;
  whoami.textContent = "";
  loginView.hidden = false;
  loginError.textContent = message;
  setConnection("idle");
}

/** @param {HubState} state */
function setConnection(state) {
  connection.textContent = STATE_TEXT[state];
  connection.dataset.state = state;
}

/** @param {Session} session */
async function openDashboard(session) {
  rest.token = session.token;
  loginView.hidden = true;
  dashboardView.hidden = false;
  logoutButton.hidden = false;
  whoami.textContent = `${session.user.email} (${session.user.role})`;
  const client = (hub = new HubClient(HUB_URL, {
    token: session.token,
    onStateChange: (state) => {
      if (client !== hub) return;
      setConnection(state);
      if (client.ended !== null) failed(client.ended); // the token expired or was revoked
    },
  }));
  try {
    await client.start();
    await Promise.all([devices.start(client), alerts.start(client)]);
    await showSelected();
  } catch (error) {
    failed(error);
  }
}

/** Show the device the URL names. */
async function showSelected() {
  if (hub === null) return;
  const deviceId = location.hash.startsWith(DEVICE_HASH)
    ? decodeURIComponent(location.hash.slice(DEVICE_HASH.length))
    : null;
  devices.select(deviceId);
  let device = deviceId === null ? null : devices.get(deviceId) ?? null;
  if (deviceId !== null && device === null) device = await rest.getDevice(deviceId);
  if (device === null) deviceView.hide();
  else await deviceView.show(hub, device);
}

/**
 * What a failed call means for the page: a refused or expired credential logs out.
 * @param {unknown} error
 */
function failed(error) {
  if ((error instanceof ApiError && error.status === 401) || (error instanceof SessionEnded && error.closeCode === 4001)) {
    showLogin("Your session ended; log in again.");
    return;
  }
  console.error("telehub dashboard:", error);
}

loginForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(loginForm);
  loginError.textContent = "";
  try {
    const login = await rest.login(String(form.get("email")), String(form.get("password")));
    /** @type {Session} */
    const session = { token: login.token, user: login.user, expiresAt: Date.now() + login.expires_in * 1000 };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    loginForm.reset();
    await openDashboard(session);
  } catch (error) {
    loginError.textContent =
      error instanceof ApiError && error.code === "invalid_credentials"
        ? "Wrong email or password."
        : error instanceof ApiError
          ? `${error.code}: ${error.message}`
          : String(error);
  }
});

logoutButton.addEventListener("click", () => showLogin());
window.addEventListener("hashchange", () => void showSelected().catch(failed));
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason instanceof ApiError || event.reason instanceof SessionEnded) {
    event.preventDefault();
    failed(event.reason);
  }
});

const session = storedSession();
if (session === null) showLogin();
else void openDashboard(session);

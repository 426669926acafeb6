// REST helpers over fetch (API.md §3): a method per operation a dashboard needs, errors as `ApiError`.
//
//   const rest = new RestClient(hubUrl);                 // the hub's base URL; "/" is the page's own origin
//   await rest.login("ops@example.com", "…");            // keeps the JWT for the calls that follow
//   const { data: devices } = await rest.listDevices({ status: "online" });
//
// Every non-2xx reply becomes an `ApiError` carrying the contract's `error.code` (`invalid_credentials`,
// `not_found`, `rate_limited`…), the HTTP status and the request id; a request that got no reply at all is an
// `ApiError` with status 0 and code `network_error`.

import { ApiError } from "./errors.js";

/**
 * @typedef {{[key: string]: unknown}} JsonObject
 * @typedef {string | number | boolean | Date | null | undefined | Array<string | number>} QueryValue
 * @typedef {{[name: string]: QueryValue}} Query
 * @typedef {{total: number, limit: number, offset: number}} OffsetMeta
 * @typedef {{limit: number, next_cursor: string | null}} CursorMeta
 */

/**
 * @template T
 * @typedef {{data: T[], meta: OffsetMeta}} OffsetPage
 */

/**
 * @template T
 * @typedef {{data: T[], meta: CursorMeta}} CursorPage
 */

/**
 * @typedef {{id: string, email: string, role: string, org_id: string}} User
 * @typedef {{token: string, expires_in: number, user: User}} Login
 * @typedef {{kind: "user" | "api_key" | "device", id: string, org_id: string, role: string}} Caller
 * @typedef {{
 *   id: string, name: string, type: string, manufacturer: string | null, model: string | null,
 *   location: unknown, metadata: JsonObject, tags: string[], status: "online" | "offline",
 *   last_seen: string | null, created_at: string, updated_at: string
 * }} Device
 * @typedef {{ts: string, metric: string, value: number}} Reading
 * @typedef {{start: string, end: string, metric: string, count?: number, sum?: number | null,
 *   min?: number | null, max?: number | null, avg?: number | null}} AggregateRow
 * @typedef {{data: AggregateRow[], meta: {interval: string, tz: string | null}}} Aggregates
 * @typedef {"queued" | "sent" | "completed" | "failed" | "timed_out" | "expired" | "canceled"} CommandStatus
 * @typedef {{
 *   command_id: string, device_id: string, command: string, params: JsonObject, status: CommandStatus,
 *   result: unknown, error: string | null, created_at: string, sent_at: string | null,
 *   completed_at: string | null
 * }} Command
 * @typedef {{
 *   id: string, rule_id: string, device_id: string, metric: string, value: number, severity: string,
 *   status: "active" | "acknowledged" | "resolved", triggered_at: string, resolved_at: string | null,
 *   acknowledged_at?: string | null
 * }} Alert
 * @typedef {{
 *   name: string, metric: string, op: "gt" | "gte" | "lt" | "lte" | "eq" | "ne", threshold: number,
 *   device_id?: string, device_type?: string, for_s?: number,
 *   severity: "critical" | "major" | "minor" | "warning" | "info"
 * }} AlertRuleInput
 * @typedef {AlertRuleInput & {id: string, created_at: string}} AlertRule
 * @typedef {{id: string, type: string, device_id: string | null, created_at: string, data: unknown}} HubEvent
 * @typedef {{command: string, params?: JsonObject, timeout_s?: number, ttl_s?: number}} CommandInput
 */

/**
 * The hub's base URL → its API root (`<base>/api/v1/`); relative bases resolve against the page.
 * @param {string | URL} base
 * @returns {URL}
 */
export function apiRoot(base) {
  const root = new URL(String(base), globalThis.location?.href);
  if (!root.pathname.endsWith("/")) root.pathname += "/";
  return new URL("api/v1/", root);
}

/**
 * @param {QueryValue} value
 * @returns {string}
 */
function queryText(value) {
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.join(",");
  return String(value);
}

export class RestClient {
  /**
   * @param {string | URL} [baseUrl] the hub's base URL; by default the page's own origin
   * @param {{token?: string | null, fetch?: typeof fetch}} [options]
   */
  constructor(baseUrl = "/", options = {}) {
    this.root = apiRoot(baseUrl);
    /** A user JWT or an API key, sent as `Authorization: Bearer …`. @type {string | null} */
    this.token = options.token ?? null;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * One call: `path` under `/api/v1/`; the parsed JSON reply (null for 204).
   * @param {string} method
   * @param {string} path
   * @param {{query?: Query, body?: unknown, headers?: Record<string, string>}} [options]
   * @returns {Promise<any>}
   */
  async request(method, path, options = {}) {
    const url = new URL(path.replace(/^\//, ""), this.root);
    for (const [name, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, queryText(value));
    }
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json", ...options.headers };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    /** @type {RequestInit} */
    const init = { method, headers };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await this.fetch(url, init);
    } catch (error) {
      throw new ApiError(0, "network_error", `no reply from the hub: ${error}`);
    }
    if (response.status === 204) return null;
    const text = await response.text();
    /** @type {any} */
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!response.ok) throw errorOf(response, body, text);
    return body;
  }

  // Authentication.

  /**
   * Log in and keep the JWT for the calls that follow.
   * @param {string} email
   * @param {string} password
   * @returns {Promise<Login>}
   */
  async login(email, password) {
    /** @type {Login} */
    const login = await this.request("POST", "auth/login", { body: { email, password } });
    this.token = login.token;
    return login;
  }

  /** @returns {Promise<Caller>} */
  me() {
    return this.request("GET", "auth/me");
  }

  // Devices.

  /**
   * @param {{status?: "online" | "offline", type?: string, q?: string, limit?: number, offset?: number}} [query]
   * @returns {Promise<OffsetPage<Device>>}
   */
  listDevices(query = {}) {
    return this.request("GET", "devices", { query });
  }

  /**
   * Every device (all pages), in creation order.
   * @param {{status?: "online" | "offline", type?: string, q?: string}} [query]
   * @returns {Promise<Device[]>}
   */
  async allDevices(query = {}) {
    /** @type {Device[]} */
    const devices = [];
    for (;;) {
      const page = await this.listDevices({ ...query, limit: 100, offset: devices.length });
      devices.push(...page.data);
      if (page.data.length === 0 || devices.length >= page.meta.total) return devices;
    }
  }

  /**
   * @param {string} deviceId
   * @returns {Promise<Device>}
   */
  getDevice(deviceId) {
    return this.request("GET", `devices/${encodeURIComponent(deviceId)}`);
  }

  /**
   * @param {{id?: string, name: string, type: string, manufacturer?: string, model?: string, location?: unknown,
   *   metadata?: JsonObject, tags?: string[]}} device
   * @returns {Promise<Device>}
   */
  createDevice(device) {
    return this.request("POST", "devices", { body: device });
  }

  /**
   * @param {string} deviceId
   * @returns {Promise<null>}
   */
  deleteDevice(deviceId) {
    return this.request("DELETE", `devices/${encodeURIComponent(deviceId)}`);
  }

  // Data.

  /**
   * Raw samples, one page (`meta.next_cursor` continues it).
   * @param {string} deviceId
   * @param {{metric?: string | string[], from?: Date | string | number, to?: Date | string | number,
   *   limit?: number, cursor?: string, order?: "asc" | "desc"}} [query]
   * @returns {Promise<CursorPage<Reading>>}
   */
  readings(deviceId, query = {}) {
    return this.request("GET", `devices/${encodeURIComponent(deviceId)}/readings`, { query });
  }

  /**
   * @param {string} deviceId
   * @param {string | string[]} [metric]
   * @returns {Promise<{data: {[metric: string]: {ts: string, value: number}}}>}
   */
  latestReadings(deviceId, metric) {
    return this.request("GET", `devices/${encodeURIComponent(deviceId)}/readings/latest`, { query: { metric } });
  }

  /**
   * Windows over the raw samples (`interval` such as `10s`, `1m`, `1h`, `1d`).
   * @param {string} deviceId
   * @param {{from: Date | string | number, to: Date | string | number, interval: string,
   *   metric?: string | string[], fn?: string | string[], tz?: string}} query
   * @returns {Promise<Aggregates>}
   */
  aggregate(deviceId, query) {
    return this.request("GET", `devices/${encodeURIComponent(deviceId)}/readings/aggregate`, { query });
  }

  // Commands.

  /**
   * Send a command; its status changes come on the `devices/{id}/commands` channel.
   * @param {string} deviceId
   * @param {CommandInput} command
   * @param {{idempotencyKey?: string}} [options]
   * @returns {Promise<{command_id: string, status: CommandStatus}>}
   */
  sendCommand(deviceId, command, options = {}) {
    /** @type {Record<string, string>} */
    const headers = options.idempotencyKey ? { "Idempotency-Key": options.idempotencyKey } : {};
    return this.request("POST", `devices/${encodeURIComponent(deviceId)}/commands`, { body: command, headers });
  }

  /**
   * @param {string} commandId
   * @returns {Promise<Command>}
   */
  getCommand(commandId) {
    return this.request("GET", `commands/${encodeURIComponent(commandId)}`);
  }

  /**
   * Cancel a command that is still queued.
   * @param {string} commandId
   * @returns {Promise<null>}
   */
  cancelCommand(commandId) {
    return this.request("DELETE", `commands/${encodeURIComponent(commandId)}`);
  }

  /**
   * The device's commands, newest first.
   * @param {string} deviceId
   * @param {{status?: CommandStatus, limit?: number, cursor?: string}} [query]
   * @returns {Promise<CursorPage<Command>>}
   */
  listCommands(deviceId, query = {}) {
    return this.request("GET", `devices/${encodeURIComponent(deviceId)}/commands`, { query });
  }

  // Alerts.

  /**
   * @param {{status?: "active" | "acknowledged" | "resolved", limit?: number, offset?: number}} [query]
   * @returns {Promise<OffsetPage<Alert>>}
   */
  listAlerts(query = {}) {
    return this.request("GET", "alerts", { query });
  }

  /**
   * @param {string} alertId
   * @returns {Promise<Alert>}
   */
  ackAlert(alertId) {
    return this.request("POST", `alerts/${encodeURIComponent(alertId)}/ack`);
  }

  /**
   * @param {{limit?: number, offset?: number}} [query]
   * @returns {Promise<OffsetPage<AlertRule>>}
   */
  listAlertRules(query = {}) {
    return this.request("GET", "alert-rules", { query });
  }

  /**
   * @param {AlertRuleInput} rule
   * @returns {Promise<AlertRule>}
   */
  createAlertRule(rule) {
    return this.request("POST", "alert-rules", { body: rule });
  }

  /**
   * @param {string} ruleId
   * @returns {Promise<null>}
   */
  deleteAlertRule(ruleId) {
    return this.request("DELETE", `alert-rules/${encodeURIComponent(ruleId)}`);
  }

  // The event log.

  /**
   * @param {{type?: string, device_id?: string, from?: Date | string | number, to?: Date | string | number,
   *   limit?: number, cursor?: string}} [query]
   * @returns {Promise<CursorPage<HubEvent>>}
   */
  listEvents(query = {}) {
    return this.request("GET", "events", { query });
  }
}

/**
 * @param {Response} response
 * @param {any} body
 * @param {string} text
 * @returns {ApiError}
 */
function errorOf(response, body, text) {
  const error = body && typeof body === "object" ? body.error : null;
  const retry = Number(response.headers.get("Retry-After"));
  const extra = {
    requestId: error?.request_id ?? response.headers.get("X-Request-ID"),
    details: error?.details ?? null,
    retryAfter: Number.isFinite(retry) && retry > 0 ? retry : null,
  };
  if (error && typeof error.code === "string") {
    return new ApiError(response.status, error.code, String(error.message ?? error.code), extra);
  }
  return new ApiError(response.status, "http_error", `HTTP ${response.status}: ${text.slice(0, 200)}`, extra);
}

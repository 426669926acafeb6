// The alerts list: `GET /alerts` and the `alerts` channel (alert.triggered, .acknowledged, .resolved), with an
// Ack button on active alerts (`POST /alerts/{id}/ack`).
//
// An alert's status only moves forward (active → acknowledged → resolved, or active → resolved), so whichever
// of the REST list and the channel is newer wins per alert, in any arrival order.

import { ApiError } from "./build/telehub.js";
import { h, formatTime, formatValue } from "./dom.js";

/**
 * @typedef {import("./build/telehub.js").Alert} Alert
 * @typedef {import("./build/telehub.js").RestClient} RestClient
 * @typedef {import("./build/telehub.js").HubClient} HubClient
 * @typedef {import("./build/telehub.js").Subscription} Subscription
 */

/** @type {{[status: string]: number}} */
const STAGE = { active: 0, acknowledged: 1, resolved: 2 };
const SHOWN = 50;

export class AlertList {
  /**
   * @param {{list: HTMLUListElement, count: HTMLElement, error: HTMLElement}} elements
   * @param {RestClient} rest
   */
  constructor(elements, rest) {
    this.elements = elements;
    this.rest = rest;
    /** @type {Map<string, Alert>} */
    this.alerts = new Map();
    /** @type {Subscription | null} */
    this.subscription = null;
  }

  /** @param {HubClient} hub */
  async start(hub) {
    this.subscription = await hub.subscribe("alerts", {
      onMessage: (message) => {
        const { type: _type, ...alert } = message.data;
        this.update(/** @type {Alert} */ (alert));
      },
      onGap: () => void this.load(),
    });
    await this.load();
  }

  stop() {
    void this.subscription?.unsubscribe();
    this.subscription = null;
  }

  async load() {
    const page = await this.rest.listAlerts({ limit: SHOWN });
    for (const alert of page.data) this.update(alert);
  }

  /** @param {Alert} alert */
  update(alert) {
    const known = this.alerts.get(alert.id);
    if (known !== undefined && (STAGE[known.status] ?? 0) > (STAGE[alert.status] ?? 0)) return;
    this.alerts.set(alert.id, { ...known, ...alert });
    this.render();
  }

  /** @param {string} alertId */
  async ack(alertId) {
    this.elements.error.textContent = "";
    try {
      this.update(await this.rest.ackAlert(alertId));
    } catch (error) {
      this.elements.error.textContent = error instanceof ApiError ? `${error.code}: ${error.message}` : String(error);
    }
  }

  render() {
    const newest = [...this.alerts.values()]
      .sort((a, b) => b.triggered_at.localeCompare(a.triggered_at))
      .slice(0, SHOWN);
    const active = newest.filter((a) => a.status === "active").length;
    this.elements.count.textContent = active ? `${active} active` : "";
    this.elements.list.replaceChildren(
      ...newest.map((alert) =>
        h(
          "li",
          { class: `alert ${alert.status}`, "data-alert-id": alert.id, "data-status": alert.status },
          h("span", { class: `severity ${alert.severity}` }, alert.severity),
          h("span", { class: "alert-what" }, `${alert.device_id} · ${alert.metric} = ${formatValue(alert.value)}`),
          h("span", { class: "time" }, formatTime(alert.triggered_at)),
          h("span", { class: `status ${alert.status}` }, alert.status),
          alert.status === "active"
            ? h("button", { type: "button", class: "ack", onclick: () => void this.ack(alert.id) }, "Ack")
            : null,
        ),
      ),
    );
  }
}

// One device's panel: live raw telemetry and 1-minute aggregates as charts, the latest value per metric, and
// the command console.
//
// Telemetry: `devices/{id}/telemetry` with `last` replays recent frames and continues live, no gap between
// the two; a gap the hub could not replay refills from `GET /devices/{id}/readings`. Aggregates: the closed
// windows of `devices/{id}/aggregates/1m` over the last hour from `GET /devices/{id}/readings/aggregate`; per
// (window, metric) the entry with the most samples is the truth (a late correction only adds samples).

import { TimeChart } from "./charts.js";
import { CommandConsole } from "./commands.js";
import { byId, h, formatTime, formatValue } from "./dom.js";

/**
 * @typedef {import("./build/telehub.js").RestClient} RestClient
 * @typedef {import("./build/telehub.js").HubClient} HubClient
 * @typedef {import("./build/telehub.js").Subscription} Subscription
 * @typedef {import("./build/telehub.js").Device} Device
 * @typedef {{count?: number, avg?: number | null}} WindowStats
 */

const REPLAYED_FRAMES = 300;
const HISTORY_MS = 60 * 60_000;
const REFILL_MS = 10 * 60_000;

export class DeviceView {
  /** @param {RestClient} rest */
  constructor(rest) {
    this.rest = rest;
    this.panel = byId("device-detail", HTMLElement);
    this.empty = byId("no-device", HTMLElement);
    this.title = byId("device-title", HTMLElement);
    this.meta = byId("device-meta", HTMLElement);
    this.latest = byId("latest", HTMLElement);
    this.telemetryChart = new TimeChart(byId("telemetry-chart", HTMLElement), { maxRows: 1000 });
    this.aggregateChart = new TimeChart(byId("aggregate-chart", HTMLElement), {
      maxRows: 240,
      suffix: " avg",
      minSpanS: HISTORY_MS / 1000,
    });
    this.console = new CommandConsole(
      {
        form: byId("command-form", HTMLFormElement),
        table: byId("command-rows", HTMLTableSectionElement),
        error: byId("command-error", HTMLElement),
      },
      rest,
    );
    /** @type {string | null} */
    this.deviceId = null;
    /** @type {Subscription[]} */
    this.subscriptions = [];
    /** Per metric: its latest sample. @type {Map<string, {ts: number, value: number}>} */
    this.latestValues = new Map();
    /** Samples per (window start, metric), to keep the fullest entry. @type {Map<string, number>} */
    this.windowCounts = new Map();
  }

  /**
   * Show `device` and follow it live.
   * @param {HubClient} hub
   * @param {Device} device
   */
  async show(hub, device) {
    this.stop();
    this.panel.hidden = false;
    this.empty.hidden = true;
    const deviceId = (this.deviceId = device.id);
    this.title.textContent = device.name;
    this.meta.textContent = `${device.id} · ${device.type}${device.model ? ` · ${device.model}` : ""}`;
    this.panel.dataset.deviceId = deviceId;
    const telemetry = hub.subscribe(`devices/${deviceId}/telemetry`, {
      last: REPLAYED_FRAMES,
      onMessage: (message) => this.telemetry(message.data),
      onGap: () => void this.refill(deviceId),
    });
    const aggregates = hub.subscribe(`devices/${deviceId}/aggregates/1m`, {
      onMessage: (message) => this.window(message.data),
      onGap: () => void this.history(deviceId),
    });
    for (const pending of [telemetry, aggregates]) {
      const subscription = await pending;
      if (deviceId === this.deviceId) this.subscriptions.push(subscription);
      else void subscription.unsubscribe();
    }
    if (deviceId !== this.deviceId) return;
    await Promise.all([this.history(deviceId), this.console.start(hub, deviceId)]);
  }

  /** Show no device. */
  hide() {
    this.stop();
    this.panel.hidden = true;
    this.empty.hidden = false;
  }

  stop() {
    for (const subscription of this.subscriptions) void subscription.unsubscribe();
    this.subscriptions = [];
    this.console.stop();
    this.deviceId = null;
    this.latestValues.clear();
    this.windowCounts.clear();
    this.telemetryChart.clear();
    this.aggregateChart.clear();
    this.renderLatest();
  }

  /**
   * A telemetry message: one point, or a columns frame (arrays).
   * @param {{ts: number | number[], metrics: {[name: string]: number | number[]}}} data
   */
  telemetry(data) {
    if (Array.isArray(data.ts)) {
      data.ts.forEach((ts, i) => {
        /** @type {{[name: string]: number}} */
        const point = {};
        for (const [name, values] of Object.entries(data.metrics)) {
          if (Array.isArray(values)) point[name] = values[i];
        }
        this.sample(ts, point);
      });
    } else {
      /** @type {{[name: string]: number}} */
      const point = {};
      for (const [name, value] of Object.entries(data.metrics)) {
        if (typeof value === "number") point[name] = value;
      }
      this.sample(data.ts, point);
    }
    this.renderLatest();
  }

  /**
   * @param {number} ts
   * @param {{[name: string]: number}} point
   */
  sample(ts, point) {
    this.telemetryChart.put(ts, point);
    for (const [metric, value] of Object.entries(point)) {
      const known = this.latestValues.get(metric);
      if (known === undefined || ts >= known.ts) this.latestValues.set(metric, { ts, value });
    }
  }

  /**
   * Missed telemetry the hub could not replay: read the recent samples over REST.
   * @param {string} deviceId
   */
  async refill(deviceId) {
    const page = await this.rest.readings(deviceId, { from: new Date(Date.now() - REFILL_MS), order: "desc", limit: 1000 });
    if (deviceId !== this.deviceId) return;
    for (const reading of page.data) this.sample(Date.parse(reading.ts), { [reading.metric]: reading.value });
    this.renderLatest();
  }

  /**
   * A closed 1-minute window (or a correction of one).
   * @param {{start: string, metrics: {[name: string]: WindowStats}}} data
   */
  window(data) {
    const start = Date.parse(data.start);
    for (const [metric, stats] of Object.entries(data.metrics)) this.windowStats(start, metric, stats);
  }

  /**
   * @param {number} start
   * @param {string} metric
   * @param {WindowStats} stats
   */
  windowStats(start, metric, stats) {
    const key = `${start}|${metric}`;
    const count = stats.count ?? 0;
    if ((this.windowCounts.get(key) ?? -1) > count) return;
    this.windowCounts.set(key, count);
    this.aggregateChart.put(start, { [metric]: stats.avg });
  }

  /**
   * The last hour's windows over REST (the channel brings the ones that close from now on).
   * @param {string} deviceId
   */
  async history(deviceId) {
    const to = new Date();
    const from = new Date(Math.floor((to.getTime() - HISTORY_MS) / 60_000) * 60_000);
    const reply = await this.rest.aggregate(deviceId, { from, to, interval: "1m", fn: ["count", "avg"] });
    if (deviceId !== this.deviceId) return;
    for (const row of reply.data) this.windowStats(Date.parse(row.start), row.metric, row);
  }

  renderLatest() {
    const metrics = [...this.latestValues.keys()].sort();
    this.latest.replaceChildren(
      ...metrics.map((metric) => {
        const { ts, value } = /** @type {{ts: number, value: number}} */ (this.latestValues.get(metric));
        return h(
          "div",
          { class: "latest-value", "data-metric": metric, "data-value": value, title: formatTime(ts) },
          h("span", { class: "metric" }, metric),
          h("span", { class: "value" }, formatValue(value)),
        );
      }),
    );
  }
}

// The device list: `GET /devices` (every page), kept live by the `devices/+/events` channel.
//
// The channel is subscribed first and its events are held while the list loads, then applied in order: an
// event that happened after the read is never overwritten by it. A gap the hub could not replay (`recovered:
// false`) reloads the list. A device that comes online unknown (created since) is fetched and added.

import { h, formatTime } from "./dom.js";

/**
 * @typedef {import("./build/telehub.js").Device} Device
 * @typedef {import("./build/telehub.js").RestClient} RestClient
 * @typedef {import("./build/telehub.js").HubClient} HubClient
 * @typedef {import("./build/telehub.js").Message} Message
 * @typedef {import("./build/telehub.js").Subscription} Subscription
 */

export class DeviceList {
  /**
   * @param {{list: HTMLUListElement, count: HTMLElement, filter: HTMLInputElement}} elements
   * @param {RestClient} rest
   * @param {(deviceId: string) => void} onSelect
   */
  constructor(elements, rest, onSelect) {
    this.elements = elements;
    this.rest = rest;
    this.onSelect = onSelect;
    /** @type {Map<string, Device>} */
    this.devices = new Map();
    /** @type {string | null} */
    this.selected = null;
    /** Events held while the list loads (null: not loading). @type {Message[] | null} */
    this.held = null;
    /** @type {Subscription | null} */
    this.subscription = null;
    elements.filter.addEventListener("input", () => this.render());
  }

  /** @param {HubClient} hub */
  async start(hub) {
    this.subscription = await hub.subscribe("devices/+/events", {
      onMessage: (message) => (this.held ? this.held.push(message) : this.apply(message)),
      onGap: () => void this.load(),
    });
    await this.load();
  }

  async load() {
    this.held = this.held ?? [];
    try {
      const devices = await this.rest.allDevices();
      this.devices = new Map(devices.map((device) => [device.id, device]));
    } finally {
      const held = this.held;
      this.held = null;
      for (const message of held) this.apply(message);
      this.render();
    }
  }

  /** @param {Message} message */
  apply(message) {
    const event = message.data;
    const status = event.type === "device.online" ? "online" : event.type === "device.offline" ? "offline" : null;
    if (status === null) return;
    const device = this.devices.get(event.device_id);
    if (device === undefined) {
      void this.fetch(event.device_id);
      return;
    }
    device.status = status;
    device.last_seen = event.created_at;
    this.render();
  }

  /** @param {string} deviceId */
  async fetch(deviceId) {
    try {
      const device = await this.rest.getDevice(deviceId);
      this.devices.set(device.id, device);
      this.render();
    } catch (error) {
      console.warn("telehub: could not read device", deviceId, error);
    }
  }

  /** @param {string | null} deviceId */
  select(deviceId) {
    this.selected = deviceId;
    this.render();
  }

  /**
   * @param {string} deviceId
   * @returns {Device | undefined}
   */
  get(deviceId) {
    return this.devices.get(deviceId);
  }

  stop() {
    void this.subscription?.unsubscribe();
    this.subscription = null;
  }

  render() {
    const text = this.elements.filter.value.trim().toLowerCase();
    const shown = [...this.devices.values()].filter(
      (d) => !text || d.id.toLowerCase().includes(text) || d.name.toLowerCase().includes(text),
    );
    const online = shown.filter((d) => d.status === "online").length;
    this.elements.count.textContent = `${online} online / ${shown.length}`;
    this.elements.list.replaceChildren(
      ...shown.map((device) =>
        h(
          "li",
          {
            class: device.id === this.selected ? "device selected" : "device",
            "data-device-id": device.id,
            "data-status": device.status,
          },
          h(
            "button",
            { type: "button", onclick: () => this.onSelect(device.id), title: `last seen ${formatTime(device.last_seen)}` },
            h("span", { class: `dot ${device.status}`, "aria-hidden": "true" }),
            h("span", { class: "device-name" }, device.name),
            h("span", { class: "device-id" }, device.id),
            h("span", { class: `status ${device.status}` }, device.status),
          ),
        ),
      ),
    );
  }
}

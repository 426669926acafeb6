// The command console of one device: send `POST /devices/{id}/commands`, and show every status change as the
// `devices/{id}/commands` channel brings it (results included), over the recent commands read from REST.
//
// A command's status only moves forward (queued → sent → completed | failed | timed_out; queued → expired |
// canceled), so whichever of the REST list and the channel is newer wins per command, in any arrival order.

import { ApiError } from "./build/telehub.js";
import { h, formatJson, formatTime } from "./dom.js";

/**
 * @typedef {import("./build/telehub.js").Command} Command
 * @typedef {import("./build/telehub.js").RestClient} RestClient
 * @typedef {import("./build/telehub.js").HubClient} HubClient
 * @typedef {import("./build/telehub.js").Subscription} Subscription
 * @typedef {Pick<Command, "command_id" | "status"> & Partial<Command>} CommandState
 */

/** @type {{[status: string]: number}} */
const STAGE = { queued: 0, sent: 1 };
const FINAL_STAGE = 2;
const SHOWN = 20;

/**
 * @param {string} status
 * @returns {number}
 */
function stage(status) {
  return STAGE[status] ?? FINAL_STAGE;
}

export class CommandConsole {
  /**
   * @param {{form: HTMLFormElement, table: HTMLTableSectionElement, error: HTMLElement}} elements
   * @param {RestClient} rest
   */
  constructor(elements, rest) {
    this.elements = elements;
    this.rest = rest;
    /** @type {string | null} */
    this.deviceId = null;
    /** @type {Map<string, CommandState>} */
    this.commands = new Map();
    /** @type {Subscription | null} */
    this.subscription = null;
    elements.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.send();
    });
  }

  /**
   * Follow a device's commands (after `stop` of the previous one).
   * @param {HubClient} hub
   * @param {string} deviceId
   */
  async start(hub, deviceId) {
    this.deviceId = deviceId;
    this.commands.clear();
    this.elements.error.textContent = "";
    this.render();
    this.subscription = await hub.subscribe(`devices/${deviceId}/commands`, {
      onMessage: (message) => this.update(message.data),
      onGap: () => void this.load(deviceId),
    });
    await this.load(deviceId);
  }

  stop() {
    void this.subscription?.unsubscribe();
    this.subscription = null;
    this.deviceId = null;
  }

  /** @param {string} deviceId */
  async load(deviceId) {
    const page = await this.rest.listCommands(deviceId, { limit: SHOWN });
    if (deviceId !== this.deviceId) return;
    for (const command of page.data) this.update(command);
  }

  /** @param {CommandState} command */
  update(command) {
    const known = this.commands.get(command.command_id);
    if (known !== undefined && stage(known.status) > stage(command.status)) return;
    this.commands.set(command.command_id, { ...known, ...command });
    this.render();
  }

  async send() {
    const deviceId = this.deviceId;
    if (deviceId === null) return;
    const form = new FormData(this.elements.form);
    const name = String(form.get("command") ?? "").trim();
    const paramsText = String(form.get("params") ?? "").trim();
    this.elements.error.textContent = "";
    let params;
    try {
      params = paramsText ? JSON.parse(paramsText) : {};
    } catch {
      this.elements.error.textContent = "params must be a JSON object";
      return;
    }
    if (params === null || typeof params !== "object" || Array.isArray(params)) {
      this.elements.error.textContent = "params must be a JSON object";
      return;
    }
    try {
      const sent = await this.rest.sendCommand(deviceId, { command: name, params });
      if (deviceId === this.deviceId) this.update({ ...sent, command: name, params, device_id: deviceId });
    } catch (error) {
      this.elements.error.textContent = error instanceof ApiError ? `${error.code}: ${error.message}` : String(error);
    }
  }

  render() {
    const newest = [...this.commands.values()]
      .sort((a, b) => String(b.created_at ?? "~").localeCompare(String(a.created_at ?? "~")))
      .slice(0, SHOWN);
    this.elements.table.replaceChildren(
      ...newest.map((command) =>
        h(
          "tr",
          { "data-command-id": command.command_id, "data-status": command.status },
          h("td", { class: "command-name" }, command.command ?? ""),
          h("td", { class: "command-params" }, formatJson(command.params)),
          h("td", {}, h("span", { class: `status ${command.status}` }, command.status)),
          h("td", { class: "command-result" }, command.error ? `error: ${command.error}` : formatJson(command.result)),
          h("td", { class: "time" }, formatTime(command.completed_at ?? command.sent_at ?? command.created_at)),
        ),
      ),
    );
  }
}

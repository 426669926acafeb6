// telehub's JavaScript client for browsers: an ES module with no dependencies and no build step.
//
//   import { RestClient, HubClient } from "/static/build/telehub.js";   // as the hub serves it
//
//   const rest = new RestClient("/");
//   const { token } = await rest.login(email, password);
//   const hub = new HubClient("/", { token });
//   await hub.start();
//   const sub = await hub.subscribe("devices/+/telemetry", { onMessage: (m) => draw(m.data) });
//   localStorage.setItem("resume", JSON.stringify(sub.since()));   // later: subscribe(…, { since })
//
// It speaks only the public contract (API.md): REST under /api/v1 and the dashboard WebSocket /api/v1/ws.

export { ApiError, ClientClosed, SessionEnded, SubscriptionError, TelehubError } from "./errors.js";
export { Backoff, HubClient, hubSocketUrl } from "./hub.js";
export { Position, channelLabel, compareOffsets, crc32, matches, messageLabel } from "./positions.js";
export { RestClient, apiRoot } from "./rest.js";
export { Subscription } from "./subscription.js";

/**
 * @typedef {import("./positions.js").Since} Since
 * @typedef {import("./subscription.js").Message} Message
 * @typedef {import("./subscription.js").SubscribeOptions} SubscribeOptions
 * @typedef {import("./hub.js").HubOptions} HubOptions
 * @typedef {import("./hub.js").HubState} HubState
 * @typedef {import("./rest.js").Device} Device
 * @typedef {import("./rest.js").Reading} Reading
 * @typedef {import("./rest.js").AggregateRow} AggregateRow
 * @typedef {import("./rest.js").Command} Command
 * @typedef {import("./rest.js").CommandStatus} CommandStatus
 * @typedef {import("./rest.js").Alert} Alert
 * @typedef {import("./rest.js").AlertRule} AlertRule
 * @typedef {import("./rest.js").HubEvent} HubEvent
 * @typedef {import("./rest.js").Login} Login
 */

// `HubClient`: a dashboard's side of `/api/v1/ws` (API.md §5) in the browser, resuming after any reconnect.
//
//   const hub = new HubClient("/", { token: jwt });
//   await hub.start();
//   const telemetry = await hub.subscribe("devices/+/telemetry", { last: 10 });
//   for await (const message of telemetry) {
//     if (message.gapBefore) reloadOverRest();   // the hub could not replay what was missed
//     draw(message.channel, message.data);
//   }
//
// Browsers cannot set headers on a WebSocket, so the client authenticates with a first message
// `{"op": "auth", "token": …}` and waits for its reply. Frames are JSON. Each subscription keeps, per stream, the
// last offset read (positions.js); after a reconnect (a dropped connection, a hub restarting with 1012, a
// 4008 `slow_consumer`, a missed pong) every subscription is made again with `since` that position, after a
// jittered exponential backoff: the hub replays what was missed, with no gap and no duplicate. When it
// cannot (`recovered: false`) the subscription's `gaps` grows, its next message has `gapBefore` set and
// `onGap` is called. A refused token (close 4001) ends the session (`SessionEnded`), unless `token` is a
// function, which is asked for a fresh one on every connection.

import { ClientClosed, SessionEnded, SubscriptionError } from "./errors.js";
import { apiRoot } from "./rest.js";
import { Subscription } from "./subscription.js";

/**
 * @typedef {"idle" | "connecting" | "open" | "reconnecting" | "closed"} HubState
 * @typedef {{initialMs?: number, maximumMs?: number, factor?: number}} BackoffOptions
 * @typedef {object} HubOptions
 * @property {string | (() => string | Promise<string>)} token a user JWT or an API key (or a function giving one)
 * @property {BackoffOptions} [backoff] reconnect delays: uniform in [0, min(maximumMs, initialMs * factor^n)]
 * @property {number} [pingIntervalMs] a ping after this long; no pong within as long again: reconnect (20 s)
 * @property {number} [openTimeoutMs] connecting and authenticating must take less (10 s)
 * @property {number} [bufferSize] messages an iterated subscription keeps (10,000)
 * @property {(state: HubState, hub: HubClient) => void} [onStateChange]
 * @property {typeof WebSocket} [WebSocket] another implementation (tests, non-browser runtimes)
 */

const UNAUTHENTICATED = 4001;
// Closes after which resubscribing at once is right: a hub restarting, a reader that fell behind.
const QUICK_CLOSES = new Set([1012, 4008]);

/** The connection an op was sent on went away before its answer. */
class Disconnected extends Error {}

/**
 * "Full jitter" exponential backoff: delay n is uniform in [0, min(maximumMs, initialMs * factor^n)].
 */
export class Backoff {
  /** @param {BackoffOptions} [options] */
  constructor(options = {}) {
    this.initialMs = options.initialMs ?? 500;
    this.maximumMs = options.maximumMs ?? 30_000;
    this.factor = options.factor ?? 2;
    this.attempts = 0;
  }

  /** The delay before the next attempt (and count the attempt). */
  nextDelayMs() {
    const ceiling = Math.min(this.maximumMs, this.initialMs * this.factor ** Math.min(this.attempts, 64));
    this.attempts += 1;
    return Math.random() * ceiling;
  }

  reset() {
    this.attempts = 0;
  }
}

/**
 * The dashboard WebSocket URL of a hub: `<base>/api/v1/ws`, `ws:` or `wss:` as the base is `http:` or `https:`.
 * @param {string | URL} base
 * @returns {string}
 */
export function hubSocketUrl(base) {
  const url = new URL("ws", apiRoot(base));
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/**
 * @typedef {{resolve: (result: any) => void, reject: (error: Error) => void,
 *   onReply: ((result: any) => void) | null}} Answer
 */

export class HubClient {
  /**
   * @param {string | URL} url the hub's base URL; "/" is the page's own origin
   * @param {HubOptions} options
   */
  constructor(url, options) {
    this.url = hubSocketUrl(url);
    this.token = options.token;
    this.backoff = new Backoff(options.backoff);
    this.pingIntervalMs = options.pingIntervalMs ?? 20_000;
    this.openTimeoutMs = options.openTimeoutMs ?? 10_000;
    this.bufferSize = options.bufferSize ?? 10_000;
    this.onStateChange = options.onStateChange ?? null;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    /** @type {HubState} */
    this.state = "idle";
    // Connections that authenticated, and the close code of the latest that ended (null: none has).
    this.connections = 0;
    /** @type {number | null} */
    this.lastCloseCode = null;
    /** Why the session ended for good. @type {SessionEnded | null} */
    this.ended = null;
    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    /** The authenticated connection, if any. @type {WebSocket | null} */
    this.socket = null;
    /** The connection being opened or held. @type {WebSocket | null} */
    this.attempt = null;
    this.generation = 0;
    this.nextId = 1;
    /** @type {Map<number, Answer>} */
    this.answers = new Map();
    // Per channel and epoch: the offset of the latest message and its index among the messages of that
    // entry's copy (one entry may give several; a subscribe reply starts new copies: its replay).
    /** @type {Map<string, {offset: string, index: number}>} */
    this.copies = new Map();
    /** @type {Array<{resolve: () => void, reject: (error: Error) => void}>} */
    this.connectWaiters = [];
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.pingTimer = null;
    this.onOnline = () => {
      if (this.state === "reconnecting" && this.attempt === null) this.connectNow();
    };
  }

  // Lifetime.

  /**
   * Connect, and keep reconnecting in the background. Resolves once connected and authenticated the first
   * time; rejects with `SessionEnded` if the hub refuses the token.
   * @returns {Promise<void>}
   */
  start() {
    if (this.state === "idle") {
      globalThis.addEventListener?.("online", this.onOnline);
      this.connectNow();
    }
    return this.waitConnected();
  }

  /** Close the connection and stop reconnecting; subscriptions end (their iterators finish). */
  close() {
    this.end(new ClientClosed());
  }

  get connected() {
    return this.socket !== null;
  }

  /**
   * Until the client is connected and authenticated (rejects with `SessionEnded` if the session ends first).
   * @returns {Promise<void>}
   */
  waitConnected() {
    if (this.socket !== null) return Promise.resolve();
    if (this.ended !== null) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
  }

  // Ops.

  /**
   * Subscribe to `channel` (MQTT wildcards `+`, `#`); resolves once the hub answered (replayed messages come
   * right after). Rejects with `SubscriptionError` (`invalid_channel`, `already_subscribed`…).
   * @param {string} channel
   * @param {import("./subscription.js").SubscribeOptions} [options]
   * @returns {Promise<Subscription>}
   */
  async subscribe(channel, options = {}) {
    if (this.ended !== null) throw this.ended;
    if (this.subscriptions.has(channel)) {
      throw new SubscriptionError("already_subscribed", `already subscribed to ${channel}`);
    }
    const owner = {
      unsubscribe: (/** @type {Subscription} */ s) => this.unsubscribe(s),
      resubscribe: (/** @type {Subscription} */ s) => this.resubscribe(s),
    };
    const subscription = new Subscription(channel, owner, { bufferSize: this.bufferSize, ...options });
    this.subscriptions.set(channel, subscription);
    if (this.socket !== null) this.subscribeOn(this.socket, this.generation, subscription);
    try {
      await subscription.ready.promise;
    } catch (error) {
      if (this.subscriptions.get(channel) === subscription) this.subscriptions.delete(channel);
      throw error;
    }
    return subscription;
  }

  /**
   * A round trip through the hub's session; resolves with its duration in ms.
   * @returns {Promise<number>}
   */
  async ping() {
    const started = performance.now();
    await this.ask({ op: "ping" });
    return performance.now() - started;
  }

  /** @param {Subscription} subscription */
  async unsubscribe(subscription) {
    if (this.subscriptions.get(subscription.channel) !== subscription) return;
    this.subscriptions.delete(subscription.channel);
    try {
      await this.ask({ op: "unsubscribe", channel: subscription.channel });
    } catch (error) {
      if (!(error instanceof Disconnected || error instanceof SubscriptionError)) throw error;
    }
  }

  /**
   * Subscribe again on this connection with `since` (an iterator's reader caught up after its buffer filled).
   * @param {Subscription} subscription
   */
  resubscribe(subscription) {
    subscription.liveOn = 0;
    subscription.generation = 0;
    const socket = this.socket;
    if (socket === null || this.subscriptions.get(subscription.channel) !== subscription) return;
    // Ops are handled in order: the hub leaves the channel before subscribing again.
    this.ask({ op: "unsubscribe", channel: subscription.channel }, socket).catch(() => {});
    this.subscribeOn(socket, this.generation, subscription);
  }

  /**
   * Send `op` with a fresh id and wait for its reply; `onReply` runs as the reply arrives, before any later
   * message is handled.
   * @param {{[key: string]: unknown}} op
   * @param {WebSocket | null} [socket]
   * @param {((result: any) => void) | null} [onReply]
   * @returns {Promise<any>}
   */
  ask(op, socket = this.socket, onReply = null) {
    if (socket === null || socket !== this.socket) return Promise.reject(new Disconnected());
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.answers.set(id, { resolve, reject, onReply });
      socket.send(JSON.stringify({ ...op, id }));
    });
  }

  /**
   * @param {WebSocket} socket
   * @param {number} generation
   * @param {Subscription} subscription
   */
  async subscribeOn(socket, generation, subscription) {
    if (subscription.generation === generation) return;
    subscription.generation = generation;
    const resume = subscription.resumeOp();
    const op = { op: "subscribe", channel: subscription.channel, ...resume };
    const replied = (/** @type {import("./subscription.js").SubscribeResult} */ result) => {
      this.copies.clear();
      subscription.replied(result, resume.since !== undefined);
      subscription.liveOn = generation;
    };
    try {
      await this.ask(op, socket, replied);
    } catch (error) {
      if (error instanceof Disconnected) return; // the next connection subscribes again
      if (!(error instanceof SubscriptionError)) throw error;
      if (this.subscriptions.get(subscription.channel) === subscription) {
        this.subscriptions.delete(subscription.channel);
      }
      subscription.refused(error);
    }
  }

  // The connection.

  connectNow() {
    this.clearTimer();
    this.setState(this.connections === 0 ? "connecting" : "reconnecting");
    this.open().catch((error) => this.end(new SessionEnded(1011, `unexpected error: ${error}`)));
  }

  async open() {
    const token = typeof this.token === "string" ? this.token : await this.token();
    if (this.ended !== null) return;
    const socket = new this.WebSocket(this.url);
    this.attempt = socket;
    let authenticated = false;
    const timeout = setTimeout(() => socket.close(), this.openTimeoutMs);
    socket.onopen = () => socket.send(JSON.stringify({ op: "auth", token }));
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(String(event.data));
      } catch {
        console.warn("telehub: a message from the hub is not JSON");
        return;
      }
      if (authenticated) {
        this.received(message);
      } else if (message.type === "reply" && message.result?.principal) {
        authenticated = true;
        clearTimeout(timeout);
        this.authenticated(socket);
      }
    };
    socket.onclose = (event) => {
      clearTimeout(timeout);
      this.closed(socket, event.code, event.reason);
    };
  }

  /** @param {WebSocket} socket */
  authenticated(socket) {
    this.generation += 1;
    this.socket = socket;
    this.copies.clear();
    this.connections += 1;
    this.backoff.reset();
    this.setState("open");
    for (const subscription of [...this.subscriptions.values()]) {
      this.subscribeOn(socket, this.generation, subscription);
    }
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const waiter of waiters) waiter.resolve();
    this.schedulePing(socket);
  }

  /** @param {WebSocket} socket */
  schedulePing(socket) {
    if (this.pingTimer !== null) clearTimeout(this.pingTimer);
    if (this.pingIntervalMs <= 0) return;
    this.pingTimer = setTimeout(async () => {
      const answered = this.ask({ op: "ping" }, socket).then(() => true);
      const late = new Promise((resolve) => setTimeout(() => resolve(false), this.pingIntervalMs));
      try {
        if (await Promise.race([answered, late])) this.schedulePing(socket);
        else socket.close(); // no pong: reconnect
      } catch {
        // the connection went away meanwhile
      }
    }, this.pingIntervalMs);
  }

  /**
   * @param {WebSocket} socket
   * @param {number} code
   * @param {string} reason
   */
  closed(socket, code, reason) {
    if (socket !== this.attempt) return;
    this.attempt = null;
    if (this.pingTimer !== null) clearTimeout(this.pingTimer);
    const wasOpen = this.socket === socket;
    this.socket = null;
    for (const answer of this.answers.values()) answer.reject(new Disconnected());
    this.answers.clear();
    this.lastCloseCode = code;
    if (this.ended !== null) return;
    if (code === UNAUTHENTICATED && typeof this.token === "string") {
      this.end(new SessionEnded(code, reason || "the hub refused the token (invalid or expired)"));
      return;
    }
    const quick = wasOpen && QUICK_CLOSES.has(code);
    const delay = this.backoff.nextDelayMs() / (quick ? 10 : 1);
    this.setState("reconnecting");
    this.timer = setTimeout(() => this.connectNow(), delay);
  }

  /** @param {any} message */
  received(message) {
    if (message.type === "message") {
      this.deliver(message);
      return;
    }
    const answer = typeof message.id === "number" ? this.answers.get(message.id) : undefined;
    if (answer === undefined) {
      if (message.type === "error") console.warn("telehub: dashboard error", message.error);
      return;
    }
    this.answers.delete(message.id);
    if (message.type === "error") {
      const error = message.error ?? {};
      answer.reject(new SubscriptionError(String(error.code), String(error.message)));
      return;
    }
    const result = message.result ?? {};
    answer.onReply?.(result);
    answer.resolve(result);
  }

  /** @param {{channel: string, offset: string, epoch: string, data?: unknown}} message */
  deliver(message) {
    const key = `${message.epoch} ${message.channel}`;
    const previous = this.copies.get(key);
    const index = previous !== undefined && previous.offset === message.offset ? previous.index + 1 : 0;
    this.copies.set(key, { offset: message.offset, index });
    const live = this.generation;
    // Only subscriptions answered on this connection: a message never runs ahead of its subscription's reply.
    let matching = [...this.subscriptions.values()].filter((s) => s.liveOn === live && s.matches(message.channel));
    if (matching.length > 1) {
      // Overlapping patterns: the epoch names the stream, and so the subscription.
      const exact = matching.filter((s) => s.position.hasEpoch(message.channel, message.epoch));
      if (exact.length > 0) matching = exact;
    }
    for (const subscription of matching) subscription.deliver(message, index);
  }

  /** @param {SessionEnded} error */
  end(error) {
    if (this.ended === null) {
      this.ended = error;
      if (!(error instanceof ClientClosed)) console.error(`telehub: ${error.message}; not reconnecting`);
    }
    this.clearTimer();
    if (this.pingTimer !== null) clearTimeout(this.pingTimer);
    globalThis.removeEventListener?.("online", this.onOnline);
    const socket = this.attempt;
    this.attempt = null;
    this.socket = null;
    socket?.close();
    for (const answer of this.answers.values()) answer.reject(new Disconnected());
    this.answers.clear();
    for (const subscription of this.subscriptions.values()) subscription.finish(error);
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const waiter of waiters) waiter.reject(error);
    this.setState("closed");
  }

  clearTimer() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** @param {HubState} state */
  setState(state) {
    if (this.state === state) return;
    this.state = state;
    if (this.onStateChange) {
      try {
        this.onStateChange(state, this);
      } catch (error) {
        console.error("telehub: onStateChange failed", error);
      }
    }
  }
}

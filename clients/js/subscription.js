// One dashboard subscription: where it has read to, and the messages received for it, handed to a callback or
// kept for an async iterator.
//
// A browser cannot stop reading a WebSocket, so an iterator whose reader falls behind is bounded another way:
// once `bufferSize` messages wait, further ones are left out (the position does not move past them) and the
// subscription goes quiet; when the reader has taken half of what waited, it subscribes again with `since` the
// last message kept, and the hub replays what was left out. Memory stays bounded and nothing is lost.

import { ClientClosed, SessionEnded } from "./errors.js";
import { Position, matches } from "./positions.js";

/**
 * A channel message. `gapBefore`: messages before this one were missed and could not be replayed (the hub
 * answered `recovered: false`): reload what the channel shows over REST.
 * @typedef {{channel: string, offset: string, epoch: string, data: any, gapBefore: boolean}} Message
 */

/**
 * The subscribe reply's result.
 * @typedef {{channel?: string, offset?: string, epoch?: string, recovered?: boolean}} SubscribeResult
 */

/**
 * @typedef {object} SubscribeOptions
 * @property {number} [last] replay the newest `last` messages first (1 to the hub's limit)
 * @property {import("./positions.js").Since} [since] replay everything after this position (an earlier
 *   subscription's `since()`), then continue live
 * @property {(message: Message) => void} [onMessage] called with each message; without it, messages wait for
 *   `for await (const message of subscription)`
 * @property {(subscription: Subscription) => void} [onGap] called when a resubscribe could not replay what was
 *   missed (`recovered: false`): reload over REST
 * @property {number} [bufferSize] messages kept for the iterator before the subscription goes quiet (10,000)
 */

/**
 * What a subscription asks of its client.
 * @typedef {{unsubscribe: (subscription: Subscription) => Promise<void>,
 *   resubscribe: (subscription: Subscription) => void}} SubscriptionOwner
 */

export class Subscription {
  /**
   * @param {string} channel
   * @param {SubscriptionOwner} owner
   * @param {SubscribeOptions} options
   */
  constructor(channel, owner, options) {
    this.channel = channel;
    this.position = options.since ? Position.fromSince(options.since) : new Position();
    this.last = options.last ?? null;
    this.onMessage = options.onMessage ?? null;
    this.onGap = options.onGap ?? null;
    this.bufferSize = Math.max(2, options.bufferSize ?? 10_000);
    /** The latest reply's `recovered`. @type {boolean | null} */
    this.recovered = null;
    // How many resubscribes could not replay what was missed.
    this.gaps = 0;
    // The connection (by number) this subscription was last sent on, and the one that answered it (0: none).
    this.generation = 0;
    this.liveOn = 0;
    /** @type {Message[]} */
    this.buffer = [];
    this.owner = owner;
    this.gapPending = false;
    // Buffer full: messages are left out until the reader catches up, then replayed with `since`.
    this.quiet = false;
    /** @type {SessionEnded | null} */
    this.end = null;
    /** @type {Array<() => void>} */
    this.waiting = [];
    /** Settles once the hub answered the first subscribe. */
    this.ready = deferred();
  }

  // The reader's side.

  /** @returns {AsyncIterator<Message>} */
  [Symbol.asyncIterator]() {
    return this;
  }

  /**
   * The next message; done once the subscription was left or the client closed and nothing waits. Throws
   * `SessionEnded` when the session ended for good. (Leaving a `for await` loop does not unsubscribe.)
   * @returns {Promise<IteratorResult<Message, undefined>>}
   */
  async next() {
    while (this.buffer.length === 0) {
      if (this.end !== null) {
        if (this.end instanceof ClientClosed) return { done: true, value: undefined };
        throw this.end;
      }
      await new Promise((wake) => this.waiting.push(() => wake(undefined)));
    }
    const message = /** @type {Message} */ (this.buffer.shift());
    if (this.quiet && this.buffer.length <= this.bufferSize / 2) {
      this.quiet = false;
      this.owner.resubscribe(this);
    }
    return { done: false, value: message };
  }

  /** `{offset, epoch}` right after what was received: keep it to subscribe again later with `since`. */
  since() {
    return this.position.since();
  }

  /** Leave the channel; messages already kept can still be read. */
  async unsubscribe() {
    await this.owner.unsubscribe(this);
    this.finish(new ClientClosed("unsubscribed"));
  }

  // The client's side.

  /**
   * @param {string} channel
   * @returns {boolean}
   */
  matches(channel) {
    return matches(this.channel, channel);
  }

  /**
   * The subscribe op's `since` or `last`: resume where reading stopped, once anything was known.
   * @returns {{since?: import("./positions.js").Since, last?: number}}
   */
  resumeOp() {
    if (this.position.known) return { since: this.position.since() };
    return this.last ? { last: this.last } : {};
  }

  /**
   * The hub answered a subscribe (`resumed`: it carried `since`).
   * @param {SubscribeResult} result
   * @param {boolean} resumed
   */
  replied(result, resumed) {
    const recovered = Boolean(result.recovered);
    this.recovered = recovered;
    this.position.replied(String(result.offset ?? ""), String(result.epoch ?? ""), recovered);
    if (resumed && !recovered) {
      this.gaps += 1;
      this.gapPending = true;
      if (this.onGap) report(() => this.onGap?.(this));
    }
    this.ready.resolve();
  }

  /** @param {import("./errors.js").SubscriptionError} error */
  refused(error) {
    if (!this.ready.settled) this.ready.reject(error);
    else this.finish(new SessionEnded(4000, `the hub refused to resubscribe ${this.channel}: ${error.message}`));
  }

  /**
   * A message from the hub for this subscription, the `index`-th of its copy of its stream entry.
   * @param {{channel: string, offset: string, epoch: string, data?: unknown}} raw
   * @param {number} index
   */
  deliver(raw, index) {
    if (this.end !== null || this.quiet) return;
    if (!this.onMessage && this.buffer.length >= this.bufferSize) {
      this.quiet = true; // left out, and replayed once the reader catches up
      return;
    }
    if (!this.position.advance(raw.channel, raw.offset, raw.epoch, index)) return;
    /** @type {Message} */
    const message = {
      channel: raw.channel,
      offset: raw.offset,
      epoch: raw.epoch,
      data: raw.data,
      gapBefore: this.gapPending,
    };
    this.gapPending = false;
    if (this.onMessage) {
      const onMessage = this.onMessage;
      report(() => onMessage(message));
      return;
    }
    this.buffer.push(message);
    this.wake();
  }

  /** @param {SessionEnded} error */
  finish(error) {
    if (this.end === null) this.end = error;
    this.ready.reject(error);
    this.wake();
  }

  wake() {
    const waiting = this.waiting;
    this.waiting = [];
    for (const wake of waiting) wake();
  }
}

/**
 * Run a user callback; what it throws is logged, not allowed to break the client.
 * @param {() => unknown} callback
 */
function report(callback) {
  try {
    const outcome = callback();
    if (outcome instanceof Promise) outcome.catch((error) => console.error("telehub: callback failed", error));
  } catch (error) {
    console.error("telehub: callback failed", error);
  }
}

/**
 * A promise with its settling functions; settling twice does nothing.
 * @returns {{promise: Promise<void>, settled: boolean, resolve: () => void, reject: (error: Error) => void}}
 */
function deferred() {
  /** @type {() => void} */
  let resolve = () => {};
  /** @type {(error: Error) => void} */
  let reject = () => {};
  const promise = new Promise((ok, fail) => {
    resolve = () => ok(undefined);
    reject = fail;
  });
  promise.catch(() => {}); // seen by whoever awaits it: never an unhandled rejection
  const settle = {
    promise,
    settled: false,
    resolve() {
      if (!settle.settled) {
        settle.settled = true;
        resolve();
      }
    },
    /** @param {Error} error */
    reject(error) {
      if (!settle.settled) {
        settle.settled = true;
        reject(error);
      }
    },
  };
  return settle;
}

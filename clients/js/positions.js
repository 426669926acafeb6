// Where a dashboard subscription has read to (API.md §5 recovery), and which channels a pattern matches; no I/O.
//
// A subscription reads one stream or several. Its reply's `offset` and `epoch` are then plain, or composite:
// `label=value` parts joined by `,`, one per stream, the label being a channel's levels after the device id
// (`telemetry`, `aggregates/1m`, `events`, `commands`; `alerts` for alerts). `devices/+/telemetry` reads the
// organization's stream, `devices/boiler-7/#` several (that device's). A hub that spreads each organization's
// devices over P partitions reads, for a wildcard device level, one stream per partition of telemetry,
// aggregates and events: their labels are `<label>.<p>` (`telemetry.3`), and a device's messages move part
// `p = CRC-32(device id) mod P` (messageLabel), P being how many such parts the reply has. Per stream a Position keeps the
// epoch, the offset the reply covered and the offset of the last message read. Resuming sends, per stream,
// the last message read (or, when none was, what the reply covered), so the hub replays exactly what came
// after: no gap and no duplicate. The same logic as the Python SDK's clients/positions.py, plus one thing: a
// stream entry may give several messages with one offset (a `points` frame gives one per point), so a stream
// also counts the messages read at its last offset. A message comes with its index among the messages of its
// copy of the entry (HubClient counts them); a second copy of an entry (another subscription's replay on the
// same connection, which the client hands to every subscription matching the channel) is then told from the
// rest of the first one.

const PARTS = ",";
const LABEL = "=";

/**
 * `{offset, epoch}` as a subscribe reply or `Subscription.since()` gives it.
 * @typedef {{offset: string, epoch: string}} Since
 */

/**
 * MQTT matching: `+` is one level, `#` (last) the rest.
 * @param {string} pattern
 * @param {string} channel
 * @returns {boolean}
 */
export function matches(pattern, channel) {
  const levels = channel.split("/");
  const wanted = pattern.split("/");
  for (let i = 0; i < wanted.length; i++) {
    const level = wanted[i];
    if (level === "#") return true;
    if (i >= levels.length || (level !== "+" && level !== levels[i])) return false;
  }
  return wanted.length === levels.length;
}

/**
 * A channel's stream label in composite positions: its levels after the device id (`alerts` as is).
 * @param {string} channel
 * @returns {string}
 */
export function channelLabel(channel) {
  const levels = channel.split("/");
  return levels[0] === "devices" && levels.length > 2 ? levels.slice(2).join("/") : channel;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * CRC-32 (IEEE, as zlib's) of a string's UTF-8 bytes.
 * @param {string} text
 * @returns {number}
 */
export function crc32(text) {
  let crc = 0xffffffff;
  for (const byte of new TextEncoder().encode(text)) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * The label of the stream a message on `channel` came from, given its subscription's partitioned labels
 * (base label -> number of partitions, from partitionCounts).
 * @param {string} channel
 * @param {Map<string, number>} partitions
 * @returns {string}
 */
export function messageLabel(channel, partitions) {
  const label = channelLabel(channel);
  const count = partitions.get(label);
  if (!count) return label;
  return `${label}.${crc32(channel.split("/")[1]) % count}`;
}

/**
 * Base label -> how many `<base>.<p>` labels there are.
 * @param {Iterable<string>} labels
 * @returns {Map<string, number>}
 */
function partitionCounts(labels) {
  /** @type {Map<string, number>} */
  const counts = new Map();
  for (const label of labels) {
    const dot = label.lastIndexOf(".");
    if (dot > 0 && /^[0-9]+$/.test(label.slice(dot + 1))) {
      const base = label.slice(0, dot);
      counts.set(base, (counts.get(base) ?? 0) + 1);
    }
  }
  return counts;
}

/**
 * Order two offsets (Redis stream ids, `<ms>-<n>`): negative, zero or positive as `a` is before, at or after `b`.
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
export function compareOffsets(a, b) {
  const [msA, serialA] = offsetKey(a);
  const [msB, serialB] = offsetKey(b);
  return msA !== msB ? msA - msB : serialA - serialB;
}

/**
 * @param {string} offset
 * @returns {[number, number]}
 */
function offsetKey(offset) {
  const dash = offset.indexOf("-");
  if (dash < 0) return [Number(offset), 0];
  return [Number(offset.slice(0, dash)), Number(offset.slice(dash + 1) || 0)];
}

/**
 * @param {string} text
 * @returns {Map<string, string>}
 */
function split(text) {
  const parts = new Map();
  if (!text.includes(LABEL)) {
    parts.set("", text);
    return parts;
  }
  for (const part of text.split(PARTS)) {
    const at = part.indexOf(LABEL);
    if (at > 0) parts.set(part.slice(0, at), part.slice(at + 1));
  }
  return parts;
}

/**
 * @param {Map<string, string>} parts
 * @returns {string}
 */
function join(parts) {
  if (parts.size === 1 && parts.has("")) return /** @type {string} */ (parts.get(""));
  return [...parts.keys()]
    .sort()
    .map((label) => `${label}${LABEL}${parts.get(label)}`)
    .join(PARTS);
}

/**
 * One stream of a subscription: its epoch, the offset the reply covered, the last offset read (or null) and how
 * many messages of that entry were read.
 */
class StreamPosition {
  /**
   * @param {string} epoch
   * @param {string} covered
   * @param {string | null} read
   * @param {number} readCount
   */
  constructor(epoch, covered, read, readCount) {
    this.epoch = epoch;
    this.covered = covered;
    this.read = read;
    this.readCount = readCount;
  }

  /** @returns {string} */
  get resumeAt() {
    return this.read ?? this.covered;
  }
}

/** Per stream of one subscription: its epoch, the offset its reply covered and the last offset read. */
export class Position {
  constructor() {
    /** @type {Map<string, StreamPosition>} */
    this.streams = new Map();
    /** Partitioned labels (`telemetry.3`): base label -> how many partitions. @type {Map<string, number>} */
    this.partitions = new Map();
  }

  /** Whether anything is known (a reply or a message came): a resubscribe then sends `since`. */
  get known() {
    return this.streams.size > 0;
  }

  /**
   * A position a caller kept (`since`): everything up to it was read.
   * @param {Since} since
   * @returns {Position}
   */
  static fromSince(since) {
    const position = new Position();
    const epochs = split(since.epoch);
    for (const [label, offset] of split(since.offset)) {
      const epoch = epochs.get(label);
      // The whole entry at `offset` was read.
      if (epoch !== undefined) position.streams.set(label, new StreamPosition(epoch, offset, offset, Infinity));
    }
    position.partitions = partitionCounts(position.streams.keys());
    return position;
  }

  /**
   * A subscribe reply. Recovered: what was read stands and the hub replays what follows it. Not recovered
   * (or first subscribed): reading starts after what the reply covered.
   * @param {string} offset
   * @param {string} epoch
   * @param {boolean} recovered
   */
  replied(offset, epoch, recovered) {
    const epochs = split(epoch);
    /** @type {Map<string, StreamPosition>} */
    const streams = new Map();
    for (const [label, covered] of split(offset)) {
      const before = this.streams.get(label);
      const streamEpoch = epochs.get(label) ?? "";
      const kept = recovered && before !== undefined && before.epoch === streamEpoch;
      streams.set(label, new StreamPosition(streamEpoch, covered, kept ? before.read : null, kept ? before.readCount : 0));
    }
    this.streams = streams;
    this.partitions = partitionCounts(streams.keys());
  }

  /**
   * Whether `channel`'s stream has this epoch (tells overlapping subscriptions apart).
   * @param {string} channel
   * @param {string} epoch
   * @returns {boolean}
   */
  hasEpoch(channel, epoch) {
    return this.streams.get(this.label(channel))?.epoch === epoch;
  }

  /**
   * A message arrived, the `index`-th of its copy of the entry at `offset`; false when it was read already (a
   * duplicate, to drop). A new epoch (the stream's history was lost and begun again) starts that stream over.
   * @param {string} channel
   * @param {string} offset
   * @param {string} epoch
   * @param {number} [index]
   * @returns {boolean}
   */
  advance(channel, offset, epoch, index = 0) {
    const label = this.label(channel);
    const stream = this.streams.get(label);
    if (stream === undefined || stream.epoch !== epoch) {
      this.streams.set(label, new StreamPosition(epoch, offset, offset, index + 1));
      return true;
    }
    const order = stream.read === null ? 1 : compareOffsets(offset, stream.read);
    if (order < 0) return false;
    if (order === 0) {
      // The next message of the entry read last, or a copy of one read already.
      if (index !== stream.readCount) return false;
      stream.readCount += 1;
      return true;
    }
    stream.read = offset;
    stream.readCount = index + 1;
    return true;
  }

  /**
   * The `since` that resumes right after what was read.
   * @returns {Since}
   */
  since() {
    /** @type {Map<string, string>} */
    const offsets = new Map();
    /** @type {Map<string, string>} */
    const epochs = new Map();
    for (const [label, stream] of this.streams) {
      offsets.set(label, stream.resumeAt);
      epochs.set(label, stream.epoch);
    }
    return { offset: join(offsets), epoch: join(epochs) };
  }

  /**
   * @param {string} channel
   * @returns {string}
   */
  label(channel) {
    return this.streams.size === 1 && this.streams.has("") ? "" : messageLabel(channel, this.partitions);
  }
}

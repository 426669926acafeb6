// The client's errors, under one root:
//
//   TelehubError
//    ├── ApiError            a REST call answered with the contract's error envelope (status, code, request id)
//    ├── SubscriptionError   the dashboard WebSocket refused an op (its `error` reply: code, message)
//    └── SessionEnded        the dashboard session ended for good: the client stops reconnecting
//         └── ClientClosed   the client was closed (or the subscription left) while something waited
//
// Every one carries `code`: the contract's error code, or for SessionEnded the WebSocket close code's name.

/** The root of every error the client throws on purpose. */
export class TelehubError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "TelehubError";
    this.code = code;
  }
}

/** An error reply of the hub's REST API (or no reply at all: status 0, code `network_error`). */
export class ApiError extends TelehubError {
  /**
   * @param {number} status HTTP status (0: no reply)
   * @param {string} code the contract's `error.code` (`invalid_credentials`, `not_found`, `rate_limited`…)
   * @param {string} message
   * @param {{requestId?: string | null, details?: {[key: string]: unknown} | null, retryAfter?: number | null}} [extra]
   */
  constructor(status, code, message, extra = {}) {
    super(code, message);
    this.name = "ApiError";
    this.status = status;
    this.requestId = extra.requestId ?? null;
    this.details = extra.details ?? null;
    // Seconds, from Retry-After (429, 503).
    this.retryAfter = extra.retryAfter ?? null;
  }
}

/** The hub refused a dashboard op: `invalid_channel`, `forbidden`, `already_subscribed`… */
export class SubscriptionError extends TelehubError {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(code, message);
    this.name = "SubscriptionError";
  }
}

/** The dashboard session ended for good (`closeCode` 4001: the token was refused or expired). */
export class SessionEnded extends TelehubError {
  /**
   * @param {number} closeCode
   * @param {string} message
   * @param {string} [code]
   */
  constructor(closeCode, message, code = closeCode === 4001 ? "unauthenticated" : "session_ended") {
    super(code, message);
    this.name = "SessionEnded";
    this.closeCode = closeCode;
  }
}

/** The client was closed, or the subscription left, while something waited. */
export class ClientClosed extends SessionEnded {
  /** @param {string} [message] */
  constructor(message = "the client was closed") {
    super(1000, message, "client_closed");
    this.name = "ClientClosed";
  }
}

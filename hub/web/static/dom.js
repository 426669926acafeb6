// Small DOM helpers for the dashboard: elements are built with textContent only (no HTML from data).

/**
 * @typedef {{[name: string]: string | number | boolean | null | undefined | ((event: Event) => void)}} Props
 * @typedef {Node | string | number | null | undefined | false} Child
 */

/**
 * An element: `props` are attributes (`class`, `data-*`, `hidden`…) or `on<event>` listeners.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Props} [props]
 * @param {...Child} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else if (value !== false && value !== null && value !== undefined) {
      element.setAttribute(name, String(value));
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/**
 * The element with this id (which the page must have).
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} type
 * @returns {T}
 */
export function byId(id, type) {
  const element = document.getElementById(id);
  if (!(element instanceof type)) throw new Error(`the page has no ${type.name} #${id}`);
  return element;
}

/**
 * A timestamp (ISO text or ms) as local time, `HH:MM:SS` today, with the date otherwise.
 * @param {string | number | null | undefined} when
 * @returns {string}
 */
export function formatTime(when) {
  if (when === null || when === undefined || when === "") return "—";
  const date = new Date(when);
  if (Number.isNaN(date.getTime())) return String(when);
  const time = date.toLocaleTimeString([], { hour12: false });
  return date.toDateString() === new Date().toDateString() ? time : `${date.toLocaleDateString()} ${time}`;
}

/**
 * A number as the dashboard shows it (at most 4 significant decimals).
 * @param {unknown} value
 * @returns {string}
 */
export function formatValue(value) {
  if (typeof value !== "number") return value === null || value === undefined ? "—" : String(value);
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
}

/**
 * Any JSON value as short text.
 * @param {unknown} value
 * @returns {string}
 */
export function formatJson(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

/**
 * Run `draw` at most once per animation frame, however often it is asked for.
 * @param {() => void} draw
 * @returns {() => void}
 */
export function throttled(draw) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw();
    });
  };
}

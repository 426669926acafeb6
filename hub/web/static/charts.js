// Time-series charts over uPlot (vendored into ./build by scripts/build-web): one line per metric.
//
// A chart keeps rows by time (ms), each a value per metric, at most `maxRows` (the oldest go first), and
// redraws at most once per animation frame. Its container's `data-points` attribute says how many rows are
// plotted and `data-metrics` which series, so a test (or a person with dev tools) can see it update.

import uPlot from "./build/uPlot.esm.js";
import { throttled } from "./dom.js";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
const HEIGHT = 220;

/** @typedef {{t: number, values: Map<string, number>}} Row */

export class TimeChart {
  /**
   * @param {HTMLElement} container
   * @param {{maxRows?: number, suffix?: string, minSpanS?: number}} [options] `suffix` follows each metric's
   *   name in the legend; the time axis spans at least `minSpanS` seconds, ending at the newest row
   */
  constructor(container, options = {}) {
    this.container = container;
    this.maxRows = options.maxRows ?? 1000;
    this.suffix = options.suffix ?? "";
    this.minSpanS = options.minSpanS ?? 10;
    /** Sorted by `t`. @type {Row[]} */
    this.rows = [];
    /** @type {string[]} */
    this.metrics = [];
    /** @type {uPlot | null} */
    this.plot = null;
    this.redraw = throttled(() => this.draw());
    this.onResize = throttled(() => this.plot?.setSize({ width: this.width(), height: HEIGHT }));
    window.addEventListener("resize", this.onResize);
    this.container.dataset.points = "0";
  }

  /**
   * Set values at `t` (ms); a value already there for a metric is replaced.
   * @param {number} t
   * @param {{[metric: string]: number | null | undefined}} values
   */
  put(t, values) {
    const row = this.rowAt(t);
    for (const [metric, value] of Object.entries(values)) {
      if (typeof value !== "number" || !Number.isFinite(value)) continue;
      row.values.set(metric, value);
      if (!this.metrics.includes(metric)) {
        this.metrics.push(metric);
        this.metrics.sort(); // a metric keeps its colour from chart to chart
      }
    }
    if (this.rows.length > this.maxRows) this.rows.splice(0, this.rows.length - this.maxRows);
    this.redraw();
  }

  /**
   * The value of `metric` at `t`, if any.
   * @param {number} t
   * @param {string} metric
   * @returns {number | undefined}
   */
  valueAt(t, metric) {
    const index = this.search(t);
    return this.rows[index]?.t === t ? this.rows[index].values.get(metric) : undefined;
  }

  clear() {
    this.rows = [];
    this.redraw();
  }

  destroy() {
    window.removeEventListener("resize", this.onResize);
    this.plot?.destroy();
    this.plot = null;
  }

  /**
   * @param {number} t
   * @returns {Row}
   */
  rowAt(t) {
    const index = this.search(t);
    const found = this.rows[index];
    if (found?.t === t) return found;
    const row = { t, values: new Map() };
    this.rows.splice(index, 0, row);
    return row;
  }

  /**
   * The index of the first row at or after `t`.
   * @param {number} t
   * @returns {number}
   */
  search(t) {
    let low = 0;
    let high = this.rows.length;
    if (high > 0 && this.rows[high - 1].t < t) return high; // the usual case: newer than everything
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.rows[middle].t < t) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  width() {
    return Math.max(320, this.container.clientWidth || 640);
  }

  draw() {
    /** @type {uPlot.AlignedData} */
    const data = [
      this.rows.map((row) => row.t / 1000),
      ...this.metrics.map((metric) => this.rows.map((row) => row.values.get(metric) ?? null)),
    ];
    const seriesCount = this.plot ? this.plot.series.length - 1 : -1;
    if (this.plot === null || seriesCount !== this.metrics.length) {
      this.plot?.destroy();
      this.plot = new uPlot(this.options(), data, this.container);
    } else {
      this.plot.setData(data);
    }
    this.container.dataset.points = String(this.rows.length);
    this.container.dataset.metrics = this.metrics.join(",");
  }

  /** @returns {uPlot.Options} */
  options() {
    return {
      width: this.width(),
      height: HEIGHT,
      scales: {
        x: {
          time: true,
          // From the rows, not uPlot's min and max: for one row it makes those a thousand days apart.
          range: (_plot, min, max) => {
            if (this.rows.length === 0) return [min, max];
            const first = this.rows[0].t / 1000;
            const last = this.rows[this.rows.length - 1].t / 1000;
            return [Math.min(first, last - this.minSpanS), last];
          },
        },
      },
      legend: { live: true },
      series: [
        {},
        ...this.metrics.map((metric, i) => ({
          label: `${metric}${this.suffix}`,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          spanGaps: true,
          points: { show: this.rows.length < 120 },
        })),
      ],
    };
  }
}

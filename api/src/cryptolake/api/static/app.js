// CryptoLake dashboard: candles, volume, SMA 5m and VWAP of one symbol, KPI tiles, latest trades,
// live over the API's SSE stream. Plain JS against the /v1 JSON API, no build step.
// window.__dashboard exposes what was drawn, for the browser test and for debugging.
"use strict";

(() => {
  const INTERVAL_MS = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
  };
  const MINUTE_MS = 60_000;
  const CANDLE_LIMIT = 500;
  const SMA_MAX_POINTS = 1000;
  const TRADES_LIMIT = 50;
  const ALERTS_LIMIT = 200;
  const ALERTS_SPAN_MS = 30 * 86_400_000;
  const VISIBLE_BARS = 150;
  const REFRESH_DEBOUNCE_MS = 400;
  const KPI_POLL_MS = 15_000;
  const RETRY_MS = 5_000;
  const KEY_STORAGE = "cryptolake.apiKey";
  const COLORS = {
    up: "#26a69a",
    down: "#ef5350",
    upVolume: "rgba(38, 166, 154, 0.5)",
    downVolume: "rgba(239, 83, 80, 0.5)",
    sma: "#f5a623",
    alert: "#f5a623",
    incomplete: "#9aa4b1", // bars with trades missing (a gap the producer could not close yet)
    vwap: "#4aa3ff",
    text: "#d7dde4",
    panel: "#161d26",
    grid: "#1f2833",
    border: "#25303d",
  };

  const dashboard = {
    ready: false,
    bars: 0,
    lastBarTime: null, // epoch ms of the newest bar drawn
    incomplete: 0, // bars drawn whose trades are known to be incomplete (complete === false)
    updates: 0, // candle events received over SSE (all selections)
    alerts: 0, // alerts of the selection listed
    alertMarkers: 0, // of those, the ones marked on a drawn bar
    stream: "closed", // the EventSource: connecting | open | closed
    exchange: null,
    symbol: null,
    interval: null,
    status: "loading",
    statusText: "loading…",
    error: null,
  };
  window.__dashboard = dashboard;

  const $ = (id) => document.getElementById(id);
  const ui = {
    symbol: $("symbol"),
    interval: $("interval"),
    status: $("status"),
    kpis: $("kpis"),
    chart: $("chart"),
    chartTitle: $("chart-title"),
    chartInfo: $("chart-info"),
    trades: document.querySelector("#trades tbody"),
    alerts: $("alerts"),
  };

  const state = {
    symbols: [], // [{exchange, symbol, ...}] from /v1/symbols
    exchange: null,
    symbol: null,
    interval: "1m",
    bars: [], // chart candles, ascending: {time (s), open, high, low, close, volume, vwap, timeMs,
    // complete}
    lastSmaTime: null, // chart time (s) of the newest SMA point drawn
    alerts: [], // the selection's alerts from /v1/alerts and the stream, newest first
    loadSeq: 0, // bumped on every selection change; late answers of older loads are dropped
    source: null, // the EventSource of the current selection
    refreshTimer: null,
    retryTimer: null,
  };

  // --- API key: ?api_key=K once, then localStorage; sent as X-API-Key (fetch) and api_key (SSE).

  function takeApiKeyFromUrl() {
    const url = new URL(location.href);
    const key = url.searchParams.get("api_key");
    if (key === null) return;
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    // Keep the key out of the address bar, bookmarks and screenshots.
    url.searchParams.delete("api_key");
    history.replaceState(null, "", url);
  }

  const apiKey = () => localStorage.getItem(KEY_STORAGE);

  // --- HTTP

  class ApiError extends Error {
    constructor(status, code, message, parameter) {
      const where = parameter ? `, parameter ${parameter}` : "";
      const http = status ? `, HTTP ${status}` : "";
      super(`${message} (${code}${where}${http})`);
      this.status = status;
      this.code = code;
      this.parameter = parameter;
    }
  }

  function apiUrl(path, params = {}) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    return url;
  }

  // The API's error body: {"error": {"status", "code", "message", "parameter"}}.
  async function apiErrorFrom(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON (a proxy's page, an empty body): fall back to the status line
    }
    const error = body && body.error;
    if (error && error.message) {
      return new ApiError(error.status || response.status, error.code || "error", error.message,
        error.parameter);
    }
    return new ApiError(response.status, `http_${response.status}`,
      response.statusText || "request failed", null);
  }

  async function api(path, params, signal) {
    const headers = { Accept: "application/json" };
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    let response;
    try {
      response = await fetch(apiUrl(path, params), { headers, signal });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", `cannot reach the API: ${error.message}`, null);
    }
    if (!response.ok) throw await apiErrorFrom(response);
    return response.json();
  }

  // --- status line

  function setStatus(kind, text) {
    ui.status.className = `status status-${kind}`;
    ui.status.textContent = text;
    ui.status.title = text;
    dashboard.status = kind;
    dashboard.statusText = text;
    dashboard.error = kind === "error" ? text : null;
  }

  function showError(error, what) {
    if (error.name === "AbortError") return;
    const hint = error.status === 401 ? " — open the page with ?api_key=YOUR_KEY" : "";
    setStatus("error", `${what}: ${error.message}${hint}`);
  }

  // --- formatting

  function decimalsFor(price) {
    const abs = Math.abs(price);
    if (abs >= 100) return 2;
    if (abs >= 1) return 4;
    if (abs >= 0.01) return 6;
    return 8;
  }

  function formatNumber(value, decimals) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return value.toLocaleString("en-US", {
      minimumFractionDigits: decimals,
      maximumFractionDigits: decimals,
    });
  }

  const formatPrice = (price) => formatNumber(price, decimalsFor(price));

  function formatQty(qty) {
    if (qty === null || qty === undefined) return "–";
    return qty.toLocaleString("en-US", { maximumFractionDigits: 8 });
  }

  function formatCompact(value) {
    if (value === null || value === undefined) return "–";
    return value.toLocaleString("en-US", { notation: "compact", maximumFractionDigits: 2 });
  }

  const utcTime = (ms) => new Date(ms).toISOString().slice(11, 23);
  const utcMinute = (ms) => new Date(ms).toISOString().slice(0, 16).replace("T", " ");

  // A signed percentage with ▲ (green) / ▼ (red); null when the API has no reference price.
  function changeElement(pct, label) {
    const span = document.createElement("span");
    if (pct === null || pct === undefined) {
      span.className = "muted";
      span.textContent = `${label} –`;
    } else if (pct > 0) {
      span.className = "up";
      span.textContent = `${label} ▲ ${pct.toFixed(2)}%`;
    } else if (pct < 0) {
      span.className = "down";
      span.textContent = `${label} ▼ ${Math.abs(pct).toFixed(2)}%`;
    } else {
      span.className = "muted";
      span.textContent = `${label} 0.00%`;
    }
    return span;
  }

  // --- chart: candles + SMA + VWAP in the main pane, volume in a pane below

  const LC = window.LightweightCharts;
  const chart = LC.createChart(ui.chart, {
    autoSize: true,
    layout: {
      background: { type: LC.ColorType.Solid, color: COLORS.panel },
      textColor: COLORS.text,
      panes: { separatorColor: COLORS.border },
    },
    grid: { vertLines: { color: COLORS.grid }, horzLines: { color: COLORS.grid } },
    rightPriceScale: { borderColor: COLORS.border },
    timeScale: { borderColor: COLORS.border, timeVisible: true, secondsVisible: false },
    crosshair: { mode: LC.CrosshairMode.Normal },
  });
  const candleSeries = chart.addSeries(LC.CandlestickSeries, {
    upColor: COLORS.up,
    downColor: COLORS.down,
    wickUpColor: COLORS.up,
    wickDownColor: COLORS.down,
    borderVisible: false,
  });
  const smaSeries = chart.addSeries(LC.LineSeries, {
    color: COLORS.sma,
    lineWidth: 2,
    priceLineVisible: false,
    lastValueVisible: false,
    crosshairMarkerVisible: false,
  });
  const vwapSeries = chart.addSeries(LC.LineSeries, {
    color: COLORS.vwap,
    lineWidth: 2,
    lineStyle: LC.LineStyle.Dashed,
    priceLineVisible: false,
    lastValueVisible: false,
    crosshairMarkerVisible: false,
  });
  const volumeSeries = chart.addSeries(LC.HistogramSeries, {
    priceFormat: { type: "volume" },
    priceLineVisible: false,
    lastValueVisible: false,
  }, 1);
  const alertMarkers = LC.createSeriesMarkers(candleSeries, []);
  chart.panes()[0].setStretchFactor(3);
  chart.panes()[1].setStretchFactor(1);

  // API bar → chart candle; lightweight-charts takes UTC seconds. A bar known to miss trades
  // (complete === false; null is unknown) is drawn grey: its figures are not final.
  function toCandle(bar, intervalMs) {
    const timeMs = Math.floor(bar.time_ms / intervalMs) * intervalMs;
    const candle = {
      time: timeMs / 1000,
      timeMs,
      open: bar.open,
      high: bar.high,
      low: bar.low,
      close: bar.close,
      volume: bar.volume,
      vwap: bar.vwap,
      complete: bar.complete,
    };
    if (bar.complete === false) {
      candle.color = COLORS.incomplete;
      candle.wickColor = COLORS.incomplete;
      candle.borderColor = COLORS.incomplete;
    }
    return candle;
  }

  const volumeOf = (c) => ({
    time: c.time,
    value: c.volume,
    color: c.close >= c.open ? COLORS.upVolume : COLORS.downVolume,
  });
  const hasVwap = (c) => c.vwap !== null && c.vwap !== undefined;
  const vwapOf = (c) => ({ time: c.time, value: c.vwap });

  // SMA points are per minute (plotted at the last minute of their window); on a coarser interval
  // the last point inside each bar stands for the bar. Only times that have a bar are kept, so
  // the line adds no empty slots to the time scale.
  function smaLine(points, intervalMs, barTimes) {
    const byBar = new Map();
    for (const p of points) {
      if (p.sma === null || p.sma === undefined) continue;
      const time = (Math.floor(p.time_ms / intervalMs) * intervalMs) / 1000;
      if (barTimes.has(time)) byBar.set(time, { time, value: p.sma });
    }
    return [...byBar.values()].sort((a, b) => a.time - b.time);
  }

  function setPriceFormat(lastClose) {
    const precision = decimalsFor(lastClose);
    candleSeries.applyOptions({
      priceFormat: { type: "price", precision, minMove: 10 ** -precision },
    });
  }

  function drawBars(candles, smaPoints) {
    const intervalMs = INTERVAL_MS[state.interval];
    state.bars = candles;
    candleSeries.setData(candles);
    volumeSeries.setData(candles.map(volumeOf));
    vwapSeries.setData(candles.filter(hasVwap).map(vwapOf));
    const sma = smaLine(smaPoints, intervalMs, new Set(candles.map((c) => c.time)));
    smaSeries.setData(sma);
    state.lastSmaTime = sma.length ? sma[sma.length - 1].time : null;
    if (candles.length) setPriceFormat(candles[candles.length - 1].close);
    const n = candles.length;
    if (n > VISIBLE_BARS) {
      chart.timeScale().setVisibleLogicalRange({ from: n - VISIBLE_BARS, to: n + 2 });
    } else {
      chart.timeScale().fitContent();
    }
    noteBarsDrawn();
  }

  function noteBarsDrawn() {
    const last = state.bars[state.bars.length - 1];
    const incomplete = state.bars.filter((c) => c.complete === false).length;
    dashboard.bars = state.bars.length;
    dashboard.lastBarTime = last ? last.timeMs : null;
    dashboard.incomplete = incomplete;
    ui.chartInfo.textContent = last
      ? `${state.bars.length} bars · last ${utcMinute(last.timeMs)} UTC` +
        ` · close ${formatPrice(last.close)}` +
        (incomplete ? ` · ${incomplete} incomplete (grey)` : "")
      : "no bars yet";
  }

  // One bar from the stream or a tail refresh: replaces the bar at its time or appends a newer one.
  function applyBar(candle) {
    const bars = state.bars;
    const last = bars[bars.length - 1];
    if (!last || candle.time > last.time) {
      bars.push(candle);
    } else if (candle.time === last.time) {
      bars[bars.length - 1] = candle;
    } else {
      // A revision of an older bar (late trades): redraw the series, keep the viewport.
      const index = bars.findIndex((c) => c.time >= candle.time);
      if (bars[index].time === candle.time) bars[index] = candle;
      else bars.splice(index, 0, candle);
      candleSeries.setData(bars);
      volumeSeries.setData(bars.map(volumeOf));
      vwapSeries.setData(bars.filter(hasVwap).map(vwapOf));
      noteBarsDrawn();
      return;
    }
    candleSeries.update(candle);
    volumeSeries.update(volumeOf(candle));
    if (hasVwap(candle)) vwapSeries.update(vwapOf(candle));
    noteBarsDrawn();
  }

  // --- alerts: a feed beside the chart and a marker on the bar whose window they closed

  function drawAlerts() {
    const intervalMs = INTERVAL_MS[state.interval];
    const first = state.bars.length ? state.bars[0].timeMs : Infinity;
    const markers = state.alerts
      .map((alert) => ({
        // The window's last minute, on the bar that holds it.
        time: (Math.floor((alert.window_end_ms - MINUTE_MS) / intervalMs) * intervalMs) / 1000,
        position: "aboveBar",
        shape: "arrowDown",
        color: COLORS.alert,
        text: alert.rule,
      }))
      .filter((marker) => marker.time * 1000 >= first)
      .sort((a, b) => a.time - b.time);
    alertMarkers.setMarkers(markers);
    dashboard.alertMarkers = markers.length;
    const items = state.alerts.map((alert) => {
      const item = document.createElement("li");
      item.className = `alert delivery-${alert.delivery}`;
      const what = alert.kind === "price_cross"
        ? `crossed ${alert.threshold.replace(/\.?0+$/, "")}`
        : `${alert.value.replace(/\.?0+$/, "")}% (≥ ${alert.threshold.replace(/\.?0+$/, "")}%)`;
      item.textContent = `${utcMinute(alert.window_end_ms - MINUTE_MS)} · ${alert.rule} · ${what}`;
      item.title = `${alert.kind} over ${alert.window_minutes} min · ${alert.delivery}` +
        (alert.last_error ? ` (${alert.last_error})` : "");
      return item;
    });
    if (!items.length) {
      const none = document.createElement("li");
      none.className = "muted";
      none.textContent = "no alerts on these bars";
      items.push(none);
    }
    ui.alerts.replaceChildren(...items);
    dashboard.alerts = state.alerts.length;
  }

  // The alerts of the drawn bars (at most the newest ALERTS_SPAN_MS of them).
  async function loadAlerts(seq) {
    const bars = state.bars;
    if (!bars.length) return;
    const end = bars[bars.length - 1].timeMs + INTERVAL_MS[state.interval] + MINUTE_MS;
    const body = await api("/v1/alerts", {
      symbol: state.symbol,
      exchange: state.exchange,
      start: Math.max(bars[0].timeMs, end - ALERTS_SPAN_MS),
      end,
      limit: ALERTS_LIMIT,
    });
    if (seq !== state.loadSeq) return;
    state.alerts = body.alerts;
    drawAlerts();
  }

  function onAlert(alert) {
    if (alert.symbol !== state.symbol || alert.exchange !== state.exchange) return;
    if (state.alerts.some((known) => known.alert_id === alert.alert_id)) return;
    state.alerts = [alert, ...state.alerts].slice(0, ALERTS_LIMIT);
    drawAlerts();
  }

  // --- loading one selection

  function smaLimit(intervalMs) {
    return Math.min(SMA_MAX_POINTS, CANDLE_LIMIT * (intervalMs / MINUTE_MS));
  }

  async function loadSelection() {
    const seq = ++state.loadSeq;
    closeStream();
    const { exchange, symbol, interval } = state;
    Object.assign(dashboard, { exchange, symbol, interval });
    ui.chartTitle.textContent = symbol ? `${symbol} · ${exchange} · ${interval}` : "";
    if (!symbol) {
      drawBars([], []);
      dashboard.ready = true;
      setStatus("error", "no symbols in the lake yet");
      scheduleRetry(init);
      return;
    }
    setStatus("loading", `loading ${symbol} ${interval}…`);
    const intervalMs = INTERVAL_MS[interval];
    const base = { symbol, exchange };
    const [candles, sma] = await Promise.allSettled([
      api("/v1/candles", { ...base, interval, limit: CANDLE_LIMIT }),
      api("/v1/indicators/sma", { ...base, window: "5m", limit: smaLimit(intervalMs) }),
    ]);
    if (seq !== state.loadSeq) return;
    if (candles.status === "rejected") {
      showError(candles.reason, "candles");
      scheduleRetry(loadSelection);
      return;
    }
    drawBars(
      candles.value.bars.map((bar) => toCandle(bar, intervalMs)),
      sma.status === "fulfilled" ? sma.value.points : [],
    );
    dashboard.ready = true;
    loadAlerts(seq).catch((error) => showError(error, "alerts"));
    if (sma.status === "rejected") showError(sma.reason, "SMA");
    else setStatus("loading", `${symbol}: connecting to the live stream…`);
    openStream(seq);
    refreshSide(seq);
  }

  function scheduleRetry(fn) {
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(fn, RETRY_MS);
  }

  // --- live: SSE candle events for the selected symbol

  function streamUrl() {
    return apiUrl("/v1/stream/candles", {
      symbol: state.symbol,
      exchange: state.exchange,
      api_key: apiKey(),
    });
  }

  function openStream(seq) {
    const url = streamUrl();
    const source = new EventSource(url);
    state.source = source;
    const current = () => source === state.source && seq === state.loadSeq;
    dashboard.stream = "connecting";
    source.addEventListener("open", () => {
      if (!current()) return;
      dashboard.stream = "open";
      setStatus("connected", `live · ${state.symbol} (${state.exchange})`);
    });
    source.addEventListener("candle", (event) => {
      if (current()) onCandle(JSON.parse(event.data), seq);
    });
    source.addEventListener("alert", (event) => {
      if (current()) onAlert(JSON.parse(event.data));
    });
    source.addEventListener("error", (event) => {
      if (!current()) return;
      // An `event: error` sent by the API carries its error body; a transport error has no data.
      if (event.data) {
        try {
          const body = JSON.parse(event.data);
          const e = body.error || body;
          setStatus("error", `stream: ${e.message || event.data}`);
        } catch {
          setStatus("error", `stream: ${event.data}`);
        }
        return;
      }
      if (source.readyState === EventSource.CLOSED) {
        dashboard.stream = "closed";
        probeStream(url, seq);
      } else {
        dashboard.stream = "connecting";
        setStatus("reconnecting", "stream lost, reconnecting…");
      }
    });
  }

  // The browser gives up on a stream answered with an error status and hides the body; ask again
  // with fetch to show the API's message, then retry later.
  async function probeStream(url, seq) {
    closeStream();
    const controller = new AbortController();
    try {
      const headers = {};
      const key = apiKey();
      if (key) headers["X-API-Key"] = key;
      const response = await fetch(url, { headers, signal: controller.signal });
      if (!response.ok) throw await apiErrorFrom(response);
      setStatus("reconnecting", "stream closed by the API, reconnecting…");
    } catch (error) {
      if (seq === state.loadSeq) showError(error, "stream");
    } finally {
      controller.abort();
    }
    setTimeout(() => {
      if (seq === state.loadSeq && !state.source) openStream(seq);
    }, RETRY_MS);
  }

  function closeStream() {
    if (state.source) state.source.close();
    state.source = null;
    dashboard.stream = "closed";
    clearTimeout(state.refreshTimer);
    clearTimeout(state.retryTimer);
  }

  function onCandle(message, seq) {
    if (message.symbol !== state.symbol || message.exchange !== state.exchange) return;
    dashboard.updates += 1;
    if (state.interval === "1m") applyBar(toCandle(message.bar, MINUTE_MS));
    // Coarser intervals: the stream's 1-minute bar is folded in by re-reading the newest bars.
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(() => refreshSide(seq), REFRESH_DEBOUNCE_MS);
  }

  // After each burst of stream events: the tail of the bars (coarse intervals), the SMA tail,
  // the trades table and the KPI tiles.
  async function refreshSide(seq) {
    const { exchange, symbol, interval } = state;
    const intervalMs = INTERVAL_MS[interval];
    const base = { symbol, exchange };
    // Enough SMA points to cover the last two bars (plus the windows not yet full).
    const smaTail = Math.min(SMA_MAX_POINTS, (2 * intervalMs) / MINUTE_MS + 10);
    const tasks = [
      loadTrades(seq),
      loadKpis(),
      api("/v1/indicators/sma", { ...base, window: "5m", limit: smaTail }),
    ];
    if (interval !== "1m") tasks.push(api("/v1/candles", { ...base, interval, limit: 2 }));
    const [trades, kpis, sma, candles] = await Promise.allSettled(tasks);
    if (seq !== state.loadSeq) return;
    if (candles && candles.status === "fulfilled") {
      for (const bar of candles.value.bars) applyBar(toCandle(bar, intervalMs));
    }
    if (sma.status === "fulfilled") {
      const barTimes = new Set(state.bars.map((c) => c.time));
      for (const point of smaLine(sma.value.points, intervalMs, barTimes)) {
        if (state.lastSmaTime === null || point.time >= state.lastSmaTime) {
          smaSeries.update(point);
          state.lastSmaTime = point.time;
        }
      }
    }
    const failed = [["trades", trades], ["KPIs", kpis], ["SMA", sma], ["candles", candles]]
      .find(([, result]) => result && result.status === "rejected");
    if (failed) {
      showError(failed[1].reason, failed[0]);
      // Try again even if the stream stays quiet, so the status line recovers by itself.
      clearTimeout(state.refreshTimer);
      state.refreshTimer = setTimeout(() => refreshSide(seq), RETRY_MS);
    } else if (state.source && state.source.readyState === EventSource.OPEN) {
      setStatus("connected", `live · ${symbol} (${exchange})`);
    }
  }

  // --- trades table

  async function loadTrades(seq) {
    const body = await api("/v1/trades/latest", {
      symbol: state.symbol,
      exchange: state.exchange,
      limit: TRADES_LIMIT,
    });
    if (seq !== state.loadSeq) return;
    const rows = body.trades.map((trade) => {
      const row = document.createElement("tr");
      const cells = [
        [utcTime(trade.time_ms), ""],
        [trade.side, `side-${trade.side}`],
        [formatPrice(trade.price), "num"],
        [formatQty(trade.qty), "num"],
      ];
      for (const [text, className] of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        if (className) cell.className = className;
        row.append(cell);
      }
      row.title = `trade ${trade.trade_id} · ${trade.time}`;
      return row;
    });
    ui.trades.replaceChildren(...rows);
  }

  // --- KPI tiles: one per (exchange, symbol); a click selects it

  async function loadKpis() {
    const body = await api("/v1/kpis");
    const tiles = body.kpis.map((kpi) => {
      const tile = document.createElement("button");
      tile.type = "button";
      tile.className = "kpi";
      tile.dataset.exchange = kpi.exchange;
      tile.dataset.symbol = kpi.symbol;
      if (kpi.exchange === state.exchange && kpi.symbol === state.symbol) {
        tile.classList.add("selected");
      }

      const title = document.createElement("div");
      const name = document.createElement("span");
      name.className = "kpi-symbol";
      name.textContent = kpi.symbol;
      const exchange = document.createElement("span");
      exchange.className = "kpi-exchange";
      exchange.textContent = kpi.exchange;
      title.append(name, exchange);

      const price = document.createElement("div");
      price.className = "kpi-price";
      price.textContent = formatPrice(kpi.last_price);

      const change = document.createElement("div");
      change.className = "kpi-change";
      change.append(changeElement(kpi.change_1h_pct, "1h"));

      const meta = document.createElement("div");
      meta.className = "kpi-meta";
      meta.append(changeElement(kpi.change_24h_pct, "24h"));
      meta.append(` · vol ${formatCompact(kpi.volume_24h)}`);

      tile.title = `last trade ${kpi.last_time}`;
      tile.append(title, price, change, meta);
      tile.addEventListener("click", () => select(kpi.exchange, kpi.symbol, state.interval));
      return tile;
    });
    ui.kpis.replaceChildren(...tiles);
  }

  // --- selectors and the address bar (?symbol=&exchange=&interval=)

  const optionValue = (exchange, symbol) => `${exchange}|${symbol}`;

  function select(exchange, symbol, interval) {
    state.exchange = exchange;
    state.symbol = symbol;
    state.interval = interval in INTERVAL_MS ? interval : "1m";
    if (symbol) ui.symbol.value = optionValue(exchange, symbol);
    ui.interval.value = state.interval;
    for (const tile of ui.kpis.querySelectorAll(".kpi")) {
      const selected = tile.dataset.exchange === exchange && tile.dataset.symbol === symbol;
      tile.classList.toggle("selected", selected);
    }
    const url = new URL(location.href);
    if (symbol) {
      url.searchParams.set("symbol", symbol);
      url.searchParams.set("exchange", exchange);
    }
    url.searchParams.set("interval", state.interval);
    history.replaceState(null, "", url);
    loadSelection();
  }

  async function init() {
    setStatus("loading", "loading symbols…");
    let body;
    try {
      body = await api("/v1/symbols");
    } catch (error) {
      showError(error, "symbols");
      // A missing or wrong key needs the user (?api_key=); anything else may pass by itself.
      if (error.status !== 401 && error.status !== 403) scheduleRetry(init);
      return;
    }
    state.symbols = body.symbols;
    ui.symbol.replaceChildren(...state.symbols.map((s) => {
      const option = document.createElement("option");
      option.value = optionValue(s.exchange, s.symbol);
      option.textContent = `${s.symbol} (${s.exchange})`;
      return option;
    }));
    ui.symbol.disabled = state.symbols.length === 0;

    // The address bar picks the selection (?symbol=&exchange=&interval=), else the first symbol.
    const params = new URL(location.href).searchParams;
    const wanted = (s) =>
      s.symbol === params.get("symbol") &&
      (!params.get("exchange") || s.exchange === params.get("exchange"));
    const found = state.symbols.find(wanted) || state.symbols[0];
    const interval = params.get("interval") || "1m";
    select(found ? found.exchange : null, found ? found.symbol : null, interval);
  }

  ui.symbol.addEventListener("change", () => {
    const [exchange, symbol] = ui.symbol.value.split("|");
    select(exchange, symbol, state.interval);
  });
  ui.interval.addEventListener("change", () => {
    select(state.exchange, state.symbol, ui.interval.value);
  });

  // KPIs of the other symbols move while the selected one is quiet.
  setInterval(() => loadKpis().catch((error) => showError(error, "KPIs")), KPI_POLL_MS);

  takeApiKeyFromUrl();
  init();
})();

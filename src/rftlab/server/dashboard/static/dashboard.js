// rftlab dashboard: fills the page shell named by <body data-page> from the server's REST routes, and polls them
// while a job runs. Model output is untrusted: text only ever reaches the page as text nodes, never as HTML.
"use strict";

const BODY = document.body;
const ACCOUNT = BODY.dataset.account;
const API = `/v1/accounts/${encodeURIComponent(ACCOUNT || "")}`;
const POLL_MS = 3000;
const MAX_PAGES = 25;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
const TERMINAL = new Set(["JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
  "JOB_STATE_EARLY_STOPPED", "JOB_STATE_EXPIRED"]);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "on") for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// replaceChildren, leaving out the parts a page does not have (null, undefined, false)
function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error?.message || message; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${message}`);
  }
  return response.json();
}

async function allPages(path, key, params = {}) {
  const items = [];
  let token = "";
  for (let page = 0; page < MAX_PAGES; page++) {
    const query = new URLSearchParams({ ...params, pageSize: "200" });
    if (token) query.set("pageToken", token);
    const answer = await getJSON(`${path}?${query}`);
    items.push(...(answer[key] || []));
    token = answer.nextPageToken;
    if (!token) break;
  }
  return items;
}

const lastPart = (name) => (name || "").split("/").pop();
const shortState = (state) => (state || "").replace(/^JOB_STATE_/, "").toLowerCase();
const num = (x, digits = 3) => (x === null || x === undefined || Number.isNaN(Number(x)) ? "–" : Number(x).toFixed(digits));
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

function outputMetrics(job) {
  try { return job.outputMetrics ? JSON.parse(job.outputMetrics) : {}; } catch (_) { return {}; }
}

// A sweep label: the W&B group when the job has one, else its id without the trailing content hash (the jobs of
// one `rftlab launch -m` share the readable slug and differ in the hash).
function sweepLabel(job) {
  const group = job.wandbConfig && job.wandbConfig.group;
  return group || lastPart(job.name).replace(/-[0-9a-f]{6,}$/, "");
}

function stateBadge(state) {
  return el("span", { class: `state ${shortState(state)}`, text: shortState(state) || "?" });
}

function section(title, ...children) {
  return el("section", {}, el("h2", { text: title }), ...children);
}

function showError(error) {
  let box = document.getElementById("error");
  if (!box) {
    box = el("p", { id: "error", class: "error" });
    document.getElementById("main").prepend(box);
  }
  box.textContent = String(error.message || error);
}

function clearError() {
  document.getElementById("error")?.remove();
}

// Runs `refresh` now and every POLL_MS until it returns true (done).
function poll(refresh) {
  const tick = async () => {
    let done = false;
    try { done = await refresh(); clearError(); } catch (error) { showError(error); }
    if (!done) setTimeout(tick, POLL_MS);
  };
  tick();
}

// ---- charts ---------------------------------------------------------------------------------------------------

class Chart {
  constructor(parent, id, title, seriesLabels) {
    this.box = el("div", { class: "chart", id: `chart-${id}`, "data-points": "0" });
    this.title = title;
    this.labels = seriesLabels;
    this.caption = el("p", { class: "caption" });
    parent.append(el("figure", {}, this.box, this.caption));
    this.plot = null;
  }

  // data: [xs, ys1, ys2, ...]
  draw(data) {
    const points = data[0].length;
    this.box.dataset.points = String(points);
    this.caption.textContent = `${this.title}: ${points} point${points === 1 ? "" : "s"}`;
    if (typeof uPlot === "undefined") return;
    if (this.plot && this.plot.series.length === data.length) {
      this.plot.setData(data);
      return;
    }
    this.plot?.destroy();
    this.plot = new uPlot({
      title: this.title,
      width: Math.max(320, this.box.clientWidth || 480),
      height: 220,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, {}],
      series: [{ label: "step" }, ...this.labels.map((label, i) => ({
        label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: points < 200 },
      }))],
    }, data, this.box);
  }
}

function series(metrics, keys) {
  const rows = metrics.filter((m) => keys.some((k) => m[k] !== undefined && m[k] !== null));
  return [rows.map((m) => m.step), ...keys.map((k) => rows.map((m) => (m[k] === undefined ? null : m[k])))];
}

// ---- jobs -----------------------------------------------------------------------------------------------------

function jobsTable(jobs) {
  const table = el("table", { class: "jobs", id: "jobs" },
    el("thead", {}, el("tr", {}, ...["job", "state", "progress", "eval reward before → after", "last reward",
      "sweep", "created"].map((h) => el("th", { text: h })))));
  const body = el("tbody");
  for (const job of jobs) {
    const id = lastPart(job.name);
    const out = outputMetrics(job);
    const progress = job.jobProgress || {};
    const label = sweepLabel(job);
    body.append(el("tr", { "data-job": id },
      el("td", {}, el("a", { href: `/dashboard/fine-tuning/reinforcement/${encodeURIComponent(id)}`, text: id }),
        job.displayName && job.displayName !== id ? el("div", { class: "muted", text: job.displayName }) : null),
      el("td", {}, stateBadge(job.state)),
      el("td", {}, el("progress", { max: "100", value: String(progress.percent || 0) }),
        ` ${progress.step || 0}/${progress.totalSteps || "?"}`),
      el("td", { text: evalChange(out) ?? "–" }),
      el("td", { text: num(out.reward_last) }),
      el("td", {}, el("a", { href: `/dashboard/sweeps/${encodeURIComponent(label)}`, text: label })),
      el("td", { text: when(job.createTime) })));
  }
  table.append(body);
  return table;
}

function jobsPage() {
  const main = document.getElementById("main");
  poll(async () => {
    const jobs = await allPages(`${API}/reinforcementFineTuningJobs`, "reinforcementFineTuningJobs",
      { orderBy: "createTime desc" });
    main.replaceChildren(el("h1", { text: `Jobs (${jobs.length})` }),
      jobs.length ? jobsTable(jobs) : el("p", { class: "muted", text: "No jobs yet: rftlab launch wait=true" }));
    return false;
  });
}

// ---- one job --------------------------------------------------------------------------------------------------

const SETTINGS_KEYS = ["dataset", "evaluationDataset", "evaluator", "evalAutoCarveout", "evalPasses",
  "trainingConfig", "inferenceParameters", "lossConfig", "chunkSize", "mcpServer", "wandbConfig"];

// "before → after" of the eval reward: the sampled pass's, else the greedy one's for a job that measured only that
function evalChange(out) {
  for (const [key, label] of [["eval_reward", ""], ["eval_reward_greedy", " (greedy)"]]) {
    if (out[`${key}_before`] !== undefined) return `${num(out[`${key}_before`])} → ${num(out[`${key}_after`])}${label}`;
  }
  return null;
}

function resourceLink(name) {
  const kind = (name || "").split("/")[2];
  const page = { datasets: "datasets", evaluators: "evaluators" }[kind];
  return page ? el("a", { href: `/dashboard/${page}/${encodeURIComponent(lastPart(name))}`, text: name }) : name;
}

function settingsView(job) {
  const list = el("dl", { class: "settings" });
  for (const key of SETTINGS_KEYS) {
    if (job[key] === undefined || job[key] === null) continue;
    const value = job[key];
    const shown = typeof value === "string" ? resourceLink(value) : el("pre", { text: JSON.stringify(value, null, 2) });
    list.append(el("dt", { text: key }), el("dd", {}, shown));
  }
  return list;
}

function duration(ms) {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

// Every state the job entered (from its stateHistory route): a strip with one band per state as wide as the time
// spent in it, then the list with times, durations and the status message of each.
function timeline(history, job) {
  if (!history.length) return el("p", { class: "muted", text: "no state recorded" });
  const starts = history.map((entry) => Date.parse(entry.time));
  const ended = TERMINAL.has(job.state);
  const end = ended ? starts[starts.length - 1] : Math.max(Date.now(), starts[starts.length - 1]);
  const until = (i) => (i + 1 < starts.length ? starts[i + 1] : end);
  const strip = el("div", { class: "timeline-strip", id: "state-strip" });
  history.forEach((entry, i) => {
    const band = el("span", { class: `state ${shortState(entry.state)}`,
      title: `${shortState(entry.state)} ${duration(until(i) - starts[i])}` });
    band.style.flexGrow = String(Math.max(until(i) - starts[i], 1));
    strip.append(band);
  });
  const list = el("ol", { class: "timeline", id: "state-history" }, ...history.map((entry, i) => {
    const last = i === history.length - 1;
    const spent = last && ended ? "" : ` · ${duration(until(i) - starts[i])}${last ? " so far" : ""}`;
    return el("li", { "data-state": entry.state }, stateBadge(entry.state), " ",
      el("time", { datetime: entry.time, text: when(entry.time) }), el("span", { class: "muted", text: spent }),
      entry.message ? el("div", { class: "message", text: entry.message }) : null);
  }));
  return [strip, list];
}

function highlighted(text, spans) {
  const box = el("pre", { class: "completion" });
  if (!spans || !spans.length) { box.textContent = text; return box; }
  let at = 0;
  for (const [start, end] of [...spans].sort((a, b) => a[0] - b[0])) {
    if (start > at) box.append(text.slice(at, start));
    box.append(el("mark", { class: "trained", text: text.slice(Math.max(start, at), end) }));
    at = Math.max(at, end);
  }
  if (at < text.length) box.append(text.slice(at));
  return box;
}

function messageText(message) {
  const content = message.content;
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((part) => part.text ?? JSON.stringify(part)).join("");
  return content === null || content === undefined ? "" : JSON.stringify(content);
}

function promptOf(rollout) {
  const messages = rollout.messages || [];
  const users = messages.filter((m) => m.role === "user");
  return users.length ? messageText(users[users.length - 1]) : "";
}

function messageView(message, trained) {
  const calls = (message.tool_calls || []).map((call) => `${call.function?.name}(${call.function?.arguments ?? ""})`);
  const text = [messageText(message), ...calls].filter((part) => part).join("\n");
  const label = message.role + (message.name ? ` ${message.name}` : "");
  const note = trained ? ` · trained on ${trained} token${trained === 1 ? "" : "s"}`
    : trained === 0 ? " · not trained on" : "";
  return el("div", { class: `msg ${message.role}` }, el("b", { text: label }), el("span", { class: "muted", text: note }),
    el("pre", { class: "completion" }, trained ? el("mark", { class: "trained", text }) : text));
}

// A rollout whose record counts the trained tokens of each message (`trained_tokens`: null for the row's own
// messages, 0 for tool results, each turn's count from the trained mask) shows every message it added, the ones
// it trained on highlighted; older records mark spans of the final reply only (`trained_spans`).
function rolloutBody(rollout) {
  const messages = rollout.messages || [];
  const counts = rollout.trained_tokens;
  if (!Array.isArray(counts)) {
    return [highlighted(rollout.completion_text || "", rollout.trained_spans), conversation(messages)];
  }
  let first = counts.findIndex((n) => n !== null && n !== undefined);
  if (first < 0) first = messages.length;
  return [el("div", { class: "turns" }, ...messages.slice(first).map((m, i) => messageView(m, counts[first + i]))),
    conversation(messages.slice(0, first), "prompt")];
}

function conversation(messages, what = "conversation") {
  return el("details", { class: "conversation" }, el("summary", { text: `${what} (${messages.length} messages)` }),
    ...messages.map((m) => el("div", { class: `msg ${m.role}` }, el("b", { text: m.role }),
      el("pre", { text: messageText(m) }),
      m.tool_calls ? el("pre", { class: "tools", text: JSON.stringify(m.tool_calls, null, 2) }) : null)));
}

function rank(rollout) {
  return rollout.valid && typeof rollout.reward === "number" ? rollout.reward : -Infinity;
}

function rolloutCard(rollout, role) {
  const facts = [`row ${rollout.row_index}`, `candidate ${rollout.candidate}`,
    `reward ${rollout.reward === null || rollout.reward === undefined ? "invalid" : num(rollout.reward)}`,
    rollout.valid ? "valid" : "invalid", `finish ${rollout.finish_reason || "?"}`,
    `tokens ${rollout.prompt_tokens ?? "?"}+${rollout.completion_tokens ?? "?"}`];
  if (rollout.turns > 1) facts.push(`${rollout.turns} turns, ${rollout.tool_calls ?? 0} tool calls`);
  if (rollout.advantage !== null && rollout.advantage !== undefined) facts.push(`advantage ${num(rollout.advantage)}`);
  return el("div", { class: `card ${role}${rollout.valid ? "" : " invalid"}` },
    el("div", { class: "facts" }, el("b", { text: role }), ` ${facts.join(" · ")}`),
    ...rolloutBody(rollout),
    rollout.reason ? el("p", { class: "reason" }, el("b", { text: "evaluator: " }), rollout.reason) : null,
    rollout.error ? el("p", { class: "error", text: rollout.error }) : null,
    rollout.metrics && Object.keys(rollout.metrics).length
      ? el("p", { class: "muted", text: `metrics ${JSON.stringify(rollout.metrics)}` }) : null);
}

function groupsView(rollouts) {
  const groups = new Map();
  for (const rollout of rollouts) {
    const key = rollout.group ?? 0;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(rollout);
  }
  const box = el("div", { class: "groups", id: "groups" });
  for (const [group, members] of [...groups.entries()].sort((a, b) => a[0] - b[0])) {
    const ranked = [...members].sort((a, b) => rank(b) - rank(a));
    const best = ranked[0];
    const worst = ranked.length > 1 ? ranked[ranked.length - 1] : null;
    const others = ranked.slice(1, ranked.length - 1);
    box.append(el("div", { class: "group", "data-group": String(group) },
      el("h3", {}, `group ${group} · row ${best.row_index} · `, el("span", { class: "prompt", text: promptOf(best) }),
        el("span", { class: "muted", text: ` (${members.length} kept)` })),
      el("div", { class: "pair" }, rolloutCard(best, "best"), worst ? rolloutCard(worst, "worst") : null),
      others.length ? el("details", {}, el("summary", { text: `${others.length} other candidate(s)` }),
        el("div", { class: "pair" }, ...others.map((r) => rolloutCard(r, "other")))) : null));
  }
  return box;
}

class RolloutBrowser {
  constructor(parent, jobId) {
    this.base = `${API}/reinforcementFineTuningJobs/${encodeURIComponent(jobId)}`;
    this.steps = [];
    this.kind = el("select", { id: "rollout-kind", on: { change: () => this.pickKind() } },
      el("option", { value: "train", text: "training steps" }), el("option", { value: "eval", text: "eval passes" }));
    this.valid = el("select", { id: "rollout-valid", on: { change: () => this.load() } },
      el("option", { value: "", text: "valid and invalid" }), el("option", { value: "true", text: "valid only" }),
      el("option", { value: "false", text: "invalid only" }));
    this.slider = el("input", { type: "range", id: "step-slider", min: "0", max: "0", value: "0",
      on: { input: () => this.showLabel(), change: () => this.load() } });
    this.label = el("span", { id: "step-label", class: "step-label" });
    this.legend = el("p", { class: "muted" }, "best and worst of each group side by side; ",
      el("mark", { class: "trained", text: "highlighted" }), " text was trained on (each of the model's turns; not the prompt or tool results).");
    this.view = el("div", { id: "rollouts" });
    parent.append(el("div", { class: "controls" }, this.kind, this.valid, el("label", {}, "step ", this.slider), this.label),
      this.legend, this.view);
  }

  kindSteps() {
    return this.steps.filter((s) => s.kind === this.kind.value);
  }

  async refreshSteps() {
    const answer = await getJSON(`${this.base}/rolloutSteps`);
    const before = this.kindSteps().length;
    const following = Number(this.slider.value) === before - 1;
    this.steps = answer.steps;
    const steps = this.kindSteps();
    this.slider.max = String(Math.max(0, steps.length - 1));
    if (steps.length !== before && (following || before === 0)) {
      this.slider.value = String(steps.length - 1); // stay on the newest step while the job runs
      await this.load();
    }
    this.showLabel();
  }

  pickKind() {
    const steps = this.kindSteps();
    this.slider.max = String(Math.max(0, steps.length - 1));
    this.slider.value = String(Math.max(0, steps.length - 1));
    this.showLabel();
    this.load();
  }

  current() {
    return this.kindSteps()[Number(this.slider.value)];
  }

  showLabel() {
    const step = this.current();
    this.label.textContent = step
      ? `step ${step.step}: ${step.count} kept, ${step.validCount} valid, mean reward ${num(step.rewardMean)}`
      : "no rollouts kept yet";
  }

  async load() {
    const step = this.current();
    if (!step) { this.view.replaceChildren(el("p", { class: "muted", text: "no rollouts kept yet" })); return; }
    const params = { kind: this.kind.value, step: String(step.step) };
    if (this.valid.value) params.valid = this.valid.value;
    const rollouts = await allPages(`${this.base}/rollouts`, "rollouts", params);
    this.view.replaceChildren(rollouts.length ? groupsView(rollouts) : el("p", { class: "muted", text: "none match" }));
  }
}

function jobPage() {
  const jobId = BODY.dataset.id;
  const base = `${API}/reinforcementFineTuningJobs/${encodeURIComponent(jobId)}`;
  const main = document.getElementById("main");
  const head = el("div", { id: "job-head" });
  const charts = el("div", { class: "charts" });
  const settings = el("div");
  const history = el("div");
  const browserBox = el("div");
  main.replaceChildren(head, section("Curves", charts), section("Rollouts", browserBox),
    section("Settings", settings), section("State history", history));
  const reward = new Chart(charts, "reward", "reward (mean of valid rollouts)", ["reward_mean"]);
  const evalReward = new Chart(charts, "eval", "eval reward", ["eval_reward", "eval_reward_greedy"]);
  const kl = new Chart(charts, "kl", "KL", ["kl"]);
  const loss = new Chart(charts, "loss", "loss", ["loss"]);
  const timing = new Chart(charts, "timing", "seconds per step", ["step_seconds", "gen_seconds", "update_seconds"]);
  const browser = new RolloutBrowser(browserBox, jobId);

  poll(async () => {
    const job = await getJSON(base); // first: a job read as ended has its last metrics and state recorded
    const [metrics, states] = await Promise.all([getJSON(`${base}/metrics`), getJSON(`${base}/stateHistory`)]);
    const rows = metrics.metrics || [];
    const out = outputMetrics(job);
    const progress = job.jobProgress || {};
    fill(head, el("h1", {}, jobId, " ", stateBadge(job.state)),
      el("p", {}, el("progress", { max: "100", value: String(progress.percent || 0) }),
        ` step ${progress.step || 0} of ${progress.totalSteps || "?"} · ${job.status?.message || ""}`),
      evalChange(out) ? el("p", { id: "eval-summary", text: `eval reward ${evalChange(out)}` }) : null,
      job.wandbConfig?.url ? el("p", {}, "W&B run: ", el("code", { text: job.wandbConfig.url })) : null);
    reward.draw(series(rows, ["reward_mean"]));
    const evalData = series(rows, ["eval_reward", "eval_reward_greedy"]);
    if (evalChange(out) && !evalData[0].includes(0)) {
      evalData[0].unshift(0);
      evalData[1].unshift(out.eval_reward_before ?? null);
      evalData[2].unshift(out.eval_reward_greedy_before ?? null);
    }
    evalReward.draw(evalData);
    kl.draw(series(rows, ["kl"]));
    loss.draw(series(rows, ["loss"]));
    timing.draw(series(rows, ["step_seconds", "gen_seconds", "update_seconds"]));
    settings.replaceChildren(settingsView(job));
    fill(history, timeline(states.stateHistory || [], job));
    await browser.refreshSteps();
    return TERMINAL.has(job.state);
  });
}

// ---- datasets, evaluators, sweeps ------------------------------------------------------------------------------

function resourceHead(resource) {
  return [el("h1", {}, lastPart(resource.name), " ", el("span", { class: "state", text: (resource.state || "").toLowerCase() })),
    resource.status?.message ? el("pre", { class: "log", id: "status-message", text: resource.status.message }) : null];
}

function datasetPage() {
  const id = BODY.dataset.id;
  const main = document.getElementById("main");
  poll(async () => {
    const [dataset, preview] = await Promise.all([getJSON(`${API}/datasets/${encodeURIComponent(id)}`),
      getJSON(`/dashboard/api/datasets/${encodeURIComponent(id)}/rows`)]);
    fill(main, ...resourceHead(dataset),
      el("p", { text: `${dataset.exampleCount ?? "?"} rows · created ${when(dataset.createTime)}` }),
      section(`First ${preview.rows.length} rows`, el("ol", { class: "rows", id: "rows" },
        ...preview.rows.map((row) => el("li", {}, el("pre", { text: JSON.stringify(row) }))))),
      section("Resource", el("pre", { text: JSON.stringify(dataset, null, 2) })));
    return dataset.state === "READY";
  });
}

async function buildLog(id) {
  try {
    const endpoint = await getJSON(`${API}/evaluators/${encodeURIComponent(id)}:getBuildLogEndpoint`);
    const response = await fetch(endpoint.buildLogSignedUri, { credentials: "same-origin" });
    if (response.ok) return el("pre", { class: "log", id: "build-log", text: await response.text() });
  } catch (_) { /* no build log yet */ }
  return el("p", { class: "muted", text: "no build log" });
}

function evaluatorPage() {
  const id = BODY.dataset.id;
  const main = document.getElementById("main");
  poll(async () => {
    const evaluator = await getJSON(`${API}/evaluators/${encodeURIComponent(id)}`);
    fill(main, ...resourceHead(evaluator),
      el("p", { text: `entry point ${evaluator.entryPoint || "?"} · created ${when(evaluator.createTime)}` }),
      section("Build log", await buildLog(id)),
      section("Resource", el("pre", { text: JSON.stringify(evaluator, null, 2) })));
    return evaluator.state === "ACTIVE" || evaluator.state === "BUILD_FAILED";
  });
}

function sweepPage() {
  const label = BODY.dataset.id;
  const main = document.getElementById("main");
  const tableBox = el("div");
  const charts = el("div", { class: "charts" });
  main.replaceChildren(el("h1", { text: `Sweep ${label}` }),
    el("p", { class: "muted", text: "jobs with this W&B group, or whose ids share this slug" }), tableBox, charts);
  let chart = null;
  poll(async () => {
    const jobs = (await allPages(`${API}/reinforcementFineTuningJobs`, "reinforcementFineTuningJobs"))
      .filter((job) => sweepLabel(job) === label).slice(0, COLORS.length);
    tableBox.replaceChildren(jobsTable(jobs));
    const tables = await Promise.all(jobs.map(async (job) => {
      const rows = (await getJSON(`${API}/reinforcementFineTuningJobs/${encodeURIComponent(lastPart(job.name))}/metrics`)).metrics;
      return series(rows, ["reward_mean"]);
    }));
    if (!jobs.length) return false;
    const joined = typeof uPlot === "undefined" ? tables[0] : uPlot.join(tables.map((t) => [t[0], t[1]]));
    if (!chart || chart.labels.length !== jobs.length) {
      charts.replaceChildren();
      chart = new Chart(charts, "sweep", "reward (mean of valid rollouts)", jobs.map((job) => lastPart(job.name)));
    }
    chart.draw(joined);
    return jobs.every((job) => TERMINAL.has(job.state));
  });
}

function missingPage() {
  document.getElementById("main").replaceChildren(el("h1", { text: "Not found" }),
    el("p", { id: "missing", text: `No ${BODY.dataset.missing} in account ${ACCOUNT}.` }),
    el("p", {}, el("a", { href: "/dashboard", text: "all jobs" })));
}

const PAGES = { jobs: jobsPage, job: jobPage, dataset: datasetPage, evaluator: evaluatorPage, sweep: sweepPage,
  missing: missingPage };
window.addEventListener("DOMContentLoaded", () => (PAGES[BODY.dataset.page] || (() => {}))());

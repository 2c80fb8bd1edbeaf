// ntd's web view: polls /state and keeps one card per machine with its live screen, drawn
// by the host's noVNC through ntd's WebSocket proxy. Screens are view-only until the user
// ticks a machine's "keyboard and mouse" box.

const POLL_MS = 500;
const RETRY_MS = 1000;
// Failed polls in a row before the page says the driver has gone.
const GONE_AFTER = 3;
const machines = new Map();
let RFB = null;
let lastLogLines = -1;
// The log follows its end, unless the user scrolled back to read.
let followLog = true;

const $ = (id) => document.getElementById(id);
const element = (tag, props = {}, children = []) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

async function loadNoVnc() {
  try {
    RFB = (await import("./novnc/core/rfb.js")).default;
  } catch (error) {
    $("notice").textContent = `noVNC did not load (${error}): screens are not shown; connect a VNC viewer instead.`;
  }
}

function card(machine) {
  const input = element("input", { type: "checkbox" });
  const entry = {
    screen: element("div", { className: "screen" }),
    busy: element("span", { className: "busy" }),
    hint: element("p", { className: "hint" }),
    input,
    rfb: null,
    retryAt: 0,
  };
  entry.card = element("article", { className: "machine" }, [
    element("header", {}, [
      element("h2", { textContent: machine.name }),
      entry.busy,
      element("label", { title: "send this machine your keys and pointer" }, [input, " keyboard and mouse"]),
    ]),
    entry.screen,
    entry.hint,
  ]);
  Object.assign(entry.card.dataset, { machine: machine.name, connected: "false", input: "off" });
  input.addEventListener("change", () => {
    entry.card.dataset.input = input.checked ? "on" : "off";
    if (entry.rfb) {
      entry.rfb.viewOnly = !input.checked;
      if (input.checked) entry.rfb.focus();
    }
  });
  $("machines").append(entry.card);
  machines.set(machine.name, entry);
  return entry;
}

function placeholder(entry, text) {
  if (entry.rfb) return;
  entry.screen.replaceChildren(element("div", { className: "placeholder", textContent: text }));
}

function connect(entry, name) {
  entry.screen.replaceChildren();
  const url = new URL(`vnc/${encodeURIComponent(name)}`, location.href);
  url.protocol = "ws:";
  const rfb = new RFB(entry.screen, url.href, { shared: true });
  rfb.viewOnly = !entry.input.checked;
  rfb.scaleViewport = true;
  rfb.background = "transparent";
  rfb.addEventListener("connect", () => { entry.card.dataset.connected = "true"; });
  rfb.addEventListener("disconnect", () => {
    entry.card.dataset.connected = "false";
    entry.rfb = null;
    entry.retryAt = Date.now() + RETRY_MS;
    placeholder(entry, "disconnected");
  });
  entry.rfb = rfb;
}

function showMachine(machine, novnc) {
  const entry = machines.get(machine.name) ?? card(machine);
  entry.card.dataset.running = machine.running;
  entry.busy.textContent = machine.busy ? `${machine.busy.what} (${machine.busy.time})` : "";
  entry.hint.textContent = machine.vnc_command ?? "";
  if (machine.kind !== "vm") {
    placeholder(entry, "a container: it has no screen");
  } else if (!machine.vnc_command) {
    placeholder(entry, "no VNC server (the driver runs without --vnc)");
  } else if (!machine.running) {
    placeholder(entry, "not running");
  } else if (!novnc || !RFB) {
    placeholder(entry, "no noVNC here: connect with the command below");
  } else if (!machine.vnc) {
    placeholder(entry, "starting: no VNC server yet");
  } else if (!entry.rfb && Date.now() >= entry.retryAt) {
    connect(entry, machine.name);
  }
}

function progressLine(state) {
  const busy = state.machines.filter((m) => m.busy).map((m) => `${m.name}: ${m.busy.what} (${m.busy.time})`);
  const parts = [];
  if (state.subtest) parts.push(`subtest: ${state.subtest}`);
  if (busy.length) parts.push(busy.join(" · "));
  return parts.join(" › ") || (state.outcome ? "" : "idle");
}

function showArtifacts(artifacts) {
  $("artifacts").hidden = artifacts.length === 0;
  const shown = new Set([...$("artifact-list").children].map((node) => node.dataset.file));
  for (const artifact of artifacts) {
    if (shown.has(artifact.file)) continue;
    const url = `artifacts/${encodeURIComponent(artifact.file)}`;
    const body = artifact.file.endsWith(".png")
      ? element("img", { src: url, alt: artifact.file })
      : element("a", { href: url, textContent: "open", target: "_blank" });
    const figure = element("figure", {}, [body, element("figcaption", { textContent: `${artifact.machine}'s ${artifact.what}: ${artifact.file}` })]);
    figure.dataset.file = artifact.file;
    $("artifact-list").append(figure);
  }
}

function show(state) {
  $("test").textContent = state.test;
  document.title = `ntd: ${state.test}`;
  $("progress").textContent = progressLine(state);
  $("outcome").textContent = state.outcome ?? "running";
  $("outcome").dataset.outcome = state.outcome ?? "running";
  for (const machine of state.machines) showMachine(machine, state.novnc);
  showArtifacts(state.artifacts);
  if (state.log_lines !== lastLogLines) {
    lastLogLines = state.log_lines;
    $("log").textContent = state.log.join("\n");
    if (followLog) $("log").scrollTop = $("log").scrollHeight;
  }
  if (!state.novnc) $("notice").textContent = "This host has no noVNC (Debian: novnc; or set NTD_NOVNC): screens are not shown.";
}

let failedPolls = 0;

async function poll() {
  let state;
  try {
    const response = await fetch("state", { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    state = await response.json();
    failedPolls = 0;
  } catch (error) {
    failedPolls += 1;
    if (failedPolls < GONE_AFTER) {
      setTimeout(poll, POLL_MS * 2 ** failedPolls);
    } else {
      // The driver has exited: what is on the page stays, as the run's last view.
      if ($("outcome").dataset.outcome === "running") {
        $("outcome").dataset.outcome = "gone";
        $("outcome").textContent = "the driver has exited";
      }
      $("notice").textContent = `The driver has exited (${error.message}); this page shows its last state.`;
    }
    return;
  }
  try {
    show(state);
  } catch (error) {
    $("notice").textContent = `The page could not show the state: ${error}`;
  }
  setTimeout(poll, POLL_MS);
}

$("log").addEventListener("scroll", () => {
  const log = $("log");
  followLog = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
});
await loadNoVnc();
poll();

// The dashboard's few behaviours, no framework: sort/filter the run list, the sweep page's live
// progress (server-sent events, the page is never reloaded), and the launch form's recipe copy.
// The pages hold no script of their own (their Content-Security-Policy runs none): <body data-page>
// names the function below that starts a page, and data comes as JSON that is only ever parsed, and
// shown through textContent, never as HTML.
const peftlab = {
  // a folder path as a URL path: each part percent-encoded, the slashes kept
  path(rel) { return rel.split("/").map(encodeURIComponent).join("/"); },

  listPage() {
    const table = document.getElementById("runs"), filter = document.getElementById("filter");
    const rows = () => Array.from(table.tBodies[0].rows);
    const count = () => { document.getElementById("shown-count").textContent =
      rows().filter(r => r.style.display !== "none").length + " of " + rows().length + " shown"; };
    filter.addEventListener("input", () => {
      const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
      rows().forEach(r => { const t = r.textContent.toLowerCase();
        r.style.display = words.every(w => t.includes(w)) ? "" : "none"; });
      count();
    });
    table.querySelectorAll("th[data-sort]").forEach(th => th.addEventListener("click", () => {
      const i = th.cellIndex, num = th.dataset.sort === "num", asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(h => h.classList.remove("asc", "desc"));
      th.classList.add(asc ? "asc" : "desc");
      const key = r => { const t = r.cells[i].textContent.trim();
        return num ? (t === "-" || t === "" ? -Infinity : parseFloat(t)) : t.toLowerCase(); };
      const sorted = rows().sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (asc ? 1 : -1));
      sorted.forEach(r => table.tBodies[0].appendChild(r));
    }));
    document.getElementById("select-shown").addEventListener("click", () =>
      rows().forEach(r => { if (r.style.display !== "none") r.cells[0].firstElementChild.checked = true; }));
    count();
  },

  duration(s) {
    if (s === null || s === undefined) return "-";
    s = Math.round(s); const m = Math.floor(s / 60);
    return m ? m + " min " + (s % 60) + " s" : s + " s";
  },

  drawLoss(svg, points) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (!points.length) return;
    const W = 640, H = 220, pad = 30, xs = points.map(p => p[0]), ys = points.map(p => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
    const sx = x => pad + (W - 2 * pad) * (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5);
    const sy = y => H - pad - (H - 2 * pad) * (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5);
    const ns = "http://www.w3.org/2000/svg", line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map(p => sx(p[0]) + "," + sy(p[1])).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#1f77b4"); line.setAttribute("stroke-width", "1.5");
    line.setAttribute("data-n", points.length);
    svg.appendChild(line);
    [[pad, 14, "loss " + y1.toFixed(3)], [pad, H - 4, "loss " + y0.toFixed(3) + "   epoch " + x0.toFixed(2) + " → " + x1.toFixed(2)]]
      .forEach(([x, y, t]) => { const e = document.createElementNS(ns, "text"); e.setAttribute("x", x);
        e.setAttribute("y", y); e.setAttribute("font-size", "11"); e.textContent = t; svg.appendChild(e); });
  },

  showProgress(p) {
    const $ = id => document.getElementById(id);
    const running = p.live || p.job_running;
    const finished = !running && p.total > 0 && p.done === p.total;
    $("state").textContent = running ? (p.total ? "running" : "starting") : (finished ? "finished" : "not running");
    $("counts").textContent = p.done + " of " + p.total + " completed";
    $("current").textContent = p.current || "-";
    $("epoch").textContent = p.current ? (p.epoch || "0") + " / " + (p.epochs_planned || "?") : "-";
    $("eta").textContent = running ? peftlab.duration(p.eta_s) : "-";
    $("stop").disabled = !running; $("resume").disabled = running || finished || !p.total;
    const body = $("sweep-runs").tBodies[0];
    body.innerHTML = "";
    p.runs.forEach(r => { const tr = body.insertRow();
      tr.dataset.run = r.name;
      const a = document.createElement("a"); a.href = "/run/" + peftlab.path(r.id); a.textContent = r.name;
      tr.insertCell().appendChild(a);
      const st = tr.insertCell(); st.textContent = r.status; st.className = "status-" + r.status;
      tr.insertCell().textContent = r.epoch === null ? "-" : r.epoch;
      tr.insertCell().textContent = peftlab.duration(r.duration_s);
      tr.insertCell().textContent = r.error || ""; });
    peftlab.drawLoss($("loss"), p.loss || []);
    $("log").textContent = (p.log || []).join("\n");
    if (p.job_log && p.job_log.length) $("job-log").textContent = p.job_log.join("\n");
    document.body.dataset.updates = (parseInt(document.body.dataset.updates || "0") + 1).toString();
  },

  sweepPage() {
    const initial = JSON.parse(document.getElementById("initial").textContent);
    peftlab.showProgress(initial.progress);
    const source = new EventSource("/events/" + peftlab.path(initial.rel));
    source.onmessage = ev => peftlab.showProgress(JSON.parse(ev.data));
  },

  launchPage() {
    document.getElementById("edit-recipe").addEventListener("click", async () => {
      const name = document.getElementById("recipe").value;
      const r = await fetch("/recipe/" + peftlab.path(name));
      document.getElementById("yaml").value = await r.text();
      document.getElementById("source-yaml").checked = true;
    });
  },
};

const page = document.body.dataset.page;
if (page) peftlab[page]();

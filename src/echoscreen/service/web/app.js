// echoscreen web page: sign in with a token, upload one study, poll its job, show the result.
// Plain browser JavaScript, no build step and nothing loaded from outside the service.
// API (docs/service.md): POST /v1/studies (multipart, field "files", one part per file)
// -> 202 {"job", "status_url"}; GET /v1/jobs/{id} -> {"status", "reason", "result"};
// explanation PNGs need the same bearer token, so they are fetched into blob: URLs.
import { zipNames } from "./zip.js";

(() => {
  const TOKEN_KEY = "echoscreen.token";
  const POLL_MS = 700;
  const $ = (id) => document.getElementById(id);

  // What the page remembers about the current study. `names[i]` is the name of the file
  // uploaded at position i: results name clips by that position ("file_index") only.
  // For a zip, `names` are its members as the service expands them (when they can be read).
  const study = { files: [], names: [], zip: null, jobId: null, timer: null, blobs: [] };

  // ---------------------------------------------------------------- small helpers

  const token = () => sessionStorage.getItem(TOKEN_KEY);
  const authHeaders = () => ({ Authorization: `Bearer ${token()}` });
  const fmt = (x, digits = 3) =>
    x === null || x === undefined ? "—" : Number(x).toFixed(digits);

  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(text) {
    const box = $("error");
    box.textContent = text;
    box.hidden = !text;
  }

  function show(section) {
    for (const id of ["signin", "upload", "result"]) $(id).hidden = id !== section;
    $("signout").hidden = section === "signin";
  }

  // The service answers errors as {"error": message}; anything else falls back to text.
  async function reasonOf(status, body, headers) {
    let reason = "";
    try {
      const doc = JSON.parse(body);
      reason = doc.error || (typeof doc.detail === "string" ? doc.detail : "") || "";
    } catch (_) {
      reason = (body || "").trim().slice(0, 300);
    }
    return explain(status, reason, headers("Retry-After"));
  }

  function explain(status, reason, retryAfter) {
    if (status === 401 || status === 403) {
      return `The service did not accept your token (${status}${reason ? `: ${reason}` : ""}). ` +
        "Sign in again with a valid token.";
    }
    if (status === 503) {
      const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again shortly.";
      return `The service is busy (503${reason ? `: ${reason}` : ""}).${wait}`;
    }
    if (status === 413) return `The study is too large (413): ${reason || "upload refused"}`;
    if (status >= 400 && status < 500) {
      return `The service refused the study (${status}): ${reason || "no reason given"}`;
    }
    return `The service failed (${status}): ${reason || "no details"}. Try again; if it ` +
      "keeps failing, tell your screening programme's support.";
  }

  async function api(path, options = {}) {
    const response = await fetch(path, { ...options, headers: { ...authHeaders() } });
    if (!response.ok) {
      const body = await response.text();
      const err = new Error(await reasonOf(response.status, body, (h) => response.headers.get(h)));
      err.status = response.status;
      err.retryAfter = Number(response.headers.get("Retry-After")) || 0;
      throw err;
    }
    return response;
  }

  // ---------------------------------------------------------------- sign in / out

  async function signIn(event) {
    event.preventDefault();
    showError("");
    const secret = $("token").value.trim();
    if (!secret) {
      showError("Enter your access token.");
      $("token").focus();
      return;
    }
    setStatus("Checking your token…");
    sessionStorage.setItem(TOKEN_KEY, secret);
    try {
      // Any authenticated route tells a refused token (401) from a valid one: a job id
      // that cannot exist answers 404 to a valid token.
      await api(`/v1/jobs/${"0".repeat(32)}`);
    } catch (err) {
      if (err.status === 401 || err.status === 403 || err.status === undefined) {
        sessionStorage.removeItem(TOKEN_KEY);
        setStatus("");
        showError(err.status === undefined ? `Cannot reach the service: ${err.message}` : err.message);
        $("token").focus();
        return;
      }
    }
    $("token").value = "";
    setStatus("Signed in. Choose a study to screen.");
    resetStudy();
    show("upload");
  }

  function signOut(message = "") {
    sessionStorage.removeItem(TOKEN_KEY);
    resetStudy();
    show("signin");
    setStatus(message ? "" : "Signed out.");
    showError(message);
    $("token").focus();
  }

  // ---------------------------------------------------------------- choosing a study

  const hidden = (name) => name.split("/").some((part) => part.startsWith("."));

  function choose(files, zip) {
    showError("");
    const kept = files.filter((f) => !hidden(f.path)).sort((a, b) => (a.path < b.path ? -1 : 1));
    if (!kept.length) {
      showError("That folder holds no files. Choose the folder of one echo study.");
      return;
    }
    study.files = kept.map((f) => f.file);
    study.names = zip ? [] : kept.map((f) => f.path);
    study.zip = zip ? kept[0].path : null;
    if (zip) {
      zipNames(kept[0].file).then((names) => { study.names = names || []; }, () => {
        study.names = [];
      });
    }
    const bytes = study.files.reduce((sum, f) => sum + f.size, 0);
    const what = zip ? `zip file ${study.zip}` : `${kept.length} file${kept.length === 1 ? "" : "s"}`;
    $("selection-summary").textContent = `Selected ${what} (${(bytes / 1048576).toFixed(1)} MB).`;
    $("selection").hidden = false;
    setStatus(`Selected ${what}. Press "Screen this study" to upload it.`);
    $("screen-button").focus();
  }

  function fromInput(input, zip) {
    const files = Array.from(input.files).map((file) => ({
      file, path: file.webkitRelativePath || file.name,
    }));
    input.value = "";
    choose(files, zip);
  }

  // Folders dropped on the page: walk FileSystemEntry trees (readEntries answers in chunks).
  async function walk(entry, out) {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      out.push({ file, path: entry.fullPath.replace(/^\//, "") });
      return;
    }
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const child of batch) await walk(child, out);
    }
  }

  async function onDrop(event) {
    event.preventDefault();
    $("dropzone").classList.remove("over");
    // Entries must be taken synchronously, before the first await, or the list is emptied.
    const entries = Array.from(event.dataTransfer.items || [])
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
      .filter(Boolean);
    const out = [];
    try {
      if (entries.length) {
        for (const entry of entries) await walk(entry, out);
      } else {
        for (const file of event.dataTransfer.files) out.push({ file, path: file.name });
      }
    } catch (err) {
      showError(`Could not read the dropped files: ${err.message || err}`);
      return;
    }
    const isZip = out.length === 1 && /\.zip$/i.test(out[0].path);
    choose(out, isZip);
  }

  // ---------------------------------------------------------------- upload and polling

  function upload() {
    showError("");
    const form = new FormData();
    study.files.forEach((file, i) => form.append("files", file, study.names[i]));
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/studies");
    xhr.setRequestHeader("Authorization", `Bearer ${token()}`);
    xhr.setRequestHeader("X-Echoscreen-Source", "web"); // jobs are counted by where they came from
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      const pct = Math.round((100 * e.loaded) / e.total);
      $("progress").value = pct;
      $("progress-text").textContent = `${pct}%`;
    };
    xhr.upload.onload = () => setStatus("Upload complete; the service is checking the files…");
    xhr.onerror = () => uploadFailed("Cannot reach the service; check the connection and try again.");
    xhr.onload = async () => {
      if (xhr.status === 202 || xhr.status === 200) {
        const doc = JSON.parse(xhr.responseText);
        study.jobId = doc.job;
        $("progress-label").textContent = "Screening";
        $("progress").removeAttribute("value"); // indeterminate while the job runs
        $("progress-text").textContent = "";
        setStatus("Screening the study…");
        poll(doc.status_url || `/v1/jobs/${doc.job}`);
        return;
      }
      const message = await reasonOf(xhr.status, xhr.responseText, (h) => xhr.getResponseHeader(h));
      if (xhr.status === 401) signOut(message);
      else uploadFailed(withNames(message));
    };
    $("selection").hidden = true;
    $("progress-box").hidden = false;
    $("progress-label").textContent = "Uploading";
    $("progress").value = 0;
    setStatus(`Uploading ${study.files.length} file${study.files.length === 1 ? "" : "s"}…`);
    xhr.send(form);
  }

  function uploadFailed(message) {
    $("progress-box").hidden = true;
    $("selection").hidden = false;
    setStatus("The study was not screened.");
    showError(message);
  }

  async function poll(url) {
    let job;
    try {
      job = await (await api(url)).json();
    } catch (err) {
      if (err.status === 401) return signOut(err.message);
      if (err.status === 503) {
        setStatus(`The service is busy; checking again in ${err.retryAfter || 5} s…`);
        study.timer = setTimeout(() => poll(url), 1000 * (err.retryAfter || 5));
        return;
      }
      return uploadFailed(err.status === 404
        ? "The result of this study has expired or was never stored; screen it again."
        : err.message);
    }
    if (job.status === "done") return showResult(job);
    if (job.status === "failed" || job.status === "interrupted") {
      return uploadFailed(withNames(`The study could not be screened: ${job.reason || job.status}`));
    }
    setStatus(job.status === "queued" ? "Waiting in the queue…" : "Screening the study…");
    study.timer = setTimeout(() => poll(url), POLL_MS);
  }

  // ---------------------------------------------------------------- the result

  const DECISIONS = {
    "screen-positive": "Screen-positive: refer for a cardiologist's review",
    normal: "Normal: below the screening threshold",
    inconclusive: "Inconclusive",
  };

  // The name of a result's file (clip or skipped) from its position in the upload.
  function fileName(entry) {
    const i = entry.file_index;
    if (i === undefined || i === null) return entry.file || "—";
    if (study.zip) return study.names[i] ? `${study.zip}/${study.names[i]}` : `${study.zip}, entry ${i + 1}`;
    return study.names[i] || `file ${i + 1}`;
  }

  // Reasons name files by position ("file 3"); say which file of the upload that is.
  function withNames(message) {
    const named = [...new Set(Array.from(message.matchAll(/\bfile (\d+)\b/g), (m) => Number(m[1])))]
      .filter((i) => study.names[i]).slice(0, 10);
    if (!named.length) return message;
    return `${message} (${named.map((i) => `file ${i} is ${fileName({ file_index: i })}`).join("; ")})`;
  }

  function cell(row, text, value) {
    const td = document.createElement("td");
    td.textContent = text;
    if (value !== undefined) td.dataset.value = value === null ? "" : String(value);
    row.appendChild(td);
    return td;
  }

  function showResult(job) {
    const r = job.result;
    $("progress-box").hidden = true;
    // Zip member names are used only when they account for every file the service saw.
    if (study.zip && study.names.length !== r.clips.length + (r.skipped || []).length) study.names = [];
    const banner = $("decision");
    banner.dataset.decision = r.decision;
    $("decision-text").textContent = DECISIONS[r.decision] || r.decision;
    $("decision-reason").hidden = !r.reason;
    $("decision-reason").textContent = r.reason ? `Reason: ${r.reason}` : "";
    $("probability").textContent = fmt(r.p_screen);
    $("probability").dataset.value = r.p_screen === null ? "" : String(r.p_screen);
    $("threshold").textContent = fmt(r.threshold);
    $("threshold").dataset.value = String(r.threshold);
    const name = (r.model || "").split(":")[0];
    $("model-version").textContent = `${name}, version ${r.model_version}`;
    $("job-id").textContent = r.job || job.id;

    const warnings = $("warnings");
    warnings.replaceChildren(...(r.warnings || []).map((w) => {
      const li = document.createElement("li");
      li.textContent = w;
      return li;
    }));
    warnings.hidden = !warnings.children.length;

    const body = $("clips").querySelector("tbody");
    body.replaceChildren();
    for (const c of r.clips) {
      const row = document.createElement("tr");
      row.dataset.clip = String(c.index);
      if (c.evidence) row.classList.add("evidence");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = fileName(c);
      row.appendChild(th);
      cell(row, c.view, c.view);
      cell(row, fmt(c.confidence, 2), c.confidence);
      cell(row, c.doppler ? "yes" : "no");
      cell(row, c.evidence ? "yes" : "no");
      cell(row, fmt(c.attention, 2), c.attention);
      cell(row, fmt(c.p_clip_screen, 2), c.p_clip_screen);
      body.appendChild(row);
    }

    const skipped = r.skipped || [];
    $("skipped").replaceChildren(...skipped.map((s) => {
      const li = document.createElement("li");
      li.textContent = `${fileName(s)}: ${s.reason}`;
      return li;
    }));
    $("skipped-box").hidden = !skipped.length;

    showKeyFrames(r);
    show("result");
    const label = { "screen-positive": "screen-positive", normal: "normal" }[r.decision];
    setStatus(`Result ready: ${label || `inconclusive (${r.reason})`}.`);
    $("result-title").focus();
  }

  async function showKeyFrames(r) {
    const box = $("keyframes");
    box.replaceChildren();
    const items = r.explanations || [];
    $("keyframes-box").hidden = !items.length;
    const clips = new Map(r.clips.map((c) => [c.index, c]));
    for (const ex of items) {
      const clip = clips.get(ex.clip) || {};
      const figure = document.createElement("figure");
      figure.dataset.clip = String(ex.clip);
      figure.dataset.frame = String(ex.frame);
      const img = document.createElement("img");
      const what = `${fileName(clip)} (${clip.view || "view unknown"})`;
      img.alt = `Key frame ${ex.frame + 1} of ${what} with the saliency overlay`;
      const caption = document.createElement("figcaption");
      caption.textContent = `${what}, frame ${ex.frame + 1}`;
      figure.append(img, caption);
      box.appendChild(figure);
      try {
        const blob = await (await api(ex.url)).blob();
        const url = URL.createObjectURL(blob);
        study.blobs.push(url);
        img.src = url;
      } catch (err) {
        caption.textContent += ` (image not available: ${err.message})`;
        figure.classList.add("missing");
      }
    }
  }

  function resetStudy() {
    clearTimeout(study.timer);
    study.blobs.forEach((url) => URL.revokeObjectURL(url));
    Object.assign(study, { files: [], names: [], zip: null, jobId: null, timer: null, blobs: [] });
    $("selection").hidden = true;
    $("progress-box").hidden = true;
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", () => signOut());
    $("folder-input").addEventListener("change", (e) => fromInput(e.target, false));
    $("zip-input").addEventListener("change", (e) => fromInput(e.target, true));
    $("screen-button").addEventListener("click", upload);
    $("clear-button").addEventListener("click", () => {
      resetStudy();
      setStatus("Choose a study to screen.");
    });
    $("again-button").addEventListener("click", () => {
      resetStudy();
      showError("");
      show("upload");
      setStatus("Choose a study to screen.");
    });
    const zone = $("dropzone");
    zone.addEventListener("dragover", (e) => {
      e.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", onDrop);
    // A file dropped beside the zone must not make the browser navigate away from the page.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
    $("result-title").tabIndex = -1;
    show(token() ? "upload" : "signin");
  }

  init();
})();

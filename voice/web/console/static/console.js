/* Warmline rep console: keeps the live panels current and submits the controls with fetch. Plain JavaScript, no
   build step, no dependency.

   Live state comes as four pieces — floor, me, screen, work — each {detected_at, data} (voice/web/console/wire.py):
   from the live-events stream (EventSource on data-events-url: one SSE event per piece, its data the piece plus
   event, reason and sent_at), or, when there is no stream or it fails, by polling data-state-url (the four pieces
   in one object) every data-poll-seconds. The page starts from the same object, embedded in #console-state.

   On the stream the floor comes whole once (event: floor, with its version), then as what changed (event:
   floor-changes: the version it applies to, base, and the one it makes): rows that changed, rows removed, the
   floor's own fields, the order of the rows when it moved. A change is applied only to the version it names; any
   other means this page missed something, and it asks for the whole floor again rather than show a wrong one. */
(() => {
    "use strict";

    const body = document.body;
    const config = {
        eventsUrl: body.dataset.eventsUrl || "",
        stateUrl: body.dataset.stateUrl,
        signInUrl: body.dataset.signInUrl,
        pollMs: Math.max(500, Number(body.dataset.pollSeconds || 2) * 1000),
        repId: Number(body.dataset.repId),
        supervisor: body.dataset.supervisor === "true",
        page: body.dataset.page,
    };
    const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
    const PIECES = ["floor", "me", "screen", "work"];
    /* The floor's lists of rows and the field that tells their rows apart (wire.FLOOR_ROWS). */
    const FLOOR_ROWS = { departments: "department", reps: "id" };
    /* A stream that has sent nothing this long after opening is given up for polling. */
    const STREAM_GRACE_MS = 5000;
    /* While polling for want of a stream, the stream is tried again this often. */
    const STREAM_RETRY_MS = 30000;

    const STATE_LABELS = {
        available: "Available",
        reserved: "Ringing",
        on_call: "On a call",
        wrap_up: "Wrap-up",
        away: "Away",
        offline: "Offline",
    };
    const STAGES = {
        offered: { state: "reserved", label: "Incoming call — listen to the whisper, press 1 to take it" },
        talking: { state: "on_call", label: "On the call" },
        "wrap-up": { state: "wrap_up", label: "Wrap-up" },
        ended: { state: "offline", label: "Call ended" },
        "in progress": { state: "on_call", label: "Call in progress" },
    };
    const HANDOFF_WORDS = {
        moving: (h) => `Moving you into the transfer to ${target(h)}…`,
        dialing: (h) => `Ringing ${target(h)} — the caller is on hold with music.`,
        consulting: (h) => `${target(h)} is on the line: tell them about the caller, then hang up to hand over.`,
        completed: (h) => `Done: the caller is with ${target(h)}.`,
        failed: (h) => `${target(h)} could not take the call (${h.failure || "no answer"}). The caller is back with you.`,
        cancelled: () => "The transfer was cancelled: the caller hung up.",
    };
    const target = (handoff) => handoff.to_rep || humanize(handoff.to_department || "a colleague");

    /* --- time --------------------------------------------------------------------------------------------------- */

    let clockOffsetMs = 0; // the server's clock minus the browser's, from each message's sent_at
    const serverNow = () => Date.now() + clockOffsetMs;
    const parseTime = (iso) => (iso ? Date.parse(iso) : NaN);

    function duration(seconds) {
        seconds = Math.max(0, Math.floor(seconds));
        const h = Math.floor(seconds / 3600);
        const m = Math.floor((seconds % 3600) / 60);
        const s = seconds % 60;
        const two = (n) => String(n).padStart(2, "0");
        return h ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
    }

    function longDuration(seconds) {
        seconds = Math.max(0, Math.round(seconds));
        if (seconds < 60) return `${seconds} s`;
        const minutes = Math.floor(seconds / 60);
        if (minutes < 60) return `${minutes} min ${String(seconds % 60).padStart(2, "0")} s`;
        return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
    }

    function relative(iso) {
        const seconds = (parseTime(iso) - serverNow()) / 1000;
        const size = Math.abs(seconds);
        const words =
            size < 60 ? "less than a minute" :
            size < 3600 ? `${Math.round(size / 60)} min` :
            size < 86400 ? `${Math.round(size / 3600)} h` : `${Math.round(size / 86400)} days`;
        return seconds >= 0 ? `in ${words}` : `${words} ago`;
    }

    const dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
    const shortDate = (iso) => (iso ? dateFormat.format(new Date(iso)) : "");
    /* +15551230001 → +1 555 123 0001 (North American numbers; others as stored, E.164). */
    const phone = (number) => {
        const match = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(number || "");
        return match ? `+1 ${match[1]} ${match[2]} ${match[3]}` : number || "";
    };
    const humanize = (key) => {
        const words = String(key || "").replace(/[_-]+/g, " ").trim();
        return words ? words[0].toUpperCase() + words.slice(1) : "";
    };
    const sentence = (text) => {
        text = String(text || "").trim();
        if (!text) return text;
        text = text[0].toUpperCase() + text.slice(1);
        return /[.!?]$/.test(text) ? text : `${text}.`;
    };

    /* --- DOM ---------------------------------------------------------------------------------------------------- */

    function el(tag, attributes = {}, ...children) {
        const node = document.createElement(tag);
        for (const [name, value] of Object.entries(attributes)) {
            if (value === null || value === undefined || value === false) continue;
            if (name === "class") node.className = value;
            else if (name === "text") node.textContent = value;
            else if (name.startsWith("data-") || name.startsWith("aria-") || name === "role") node.setAttribute(name, value);
            else node[name] = value;
        }
        for (const child of children.flat()) {
            if (child === null || child === undefined || child === false) continue;
            node.append(child instanceof Node ? child : document.createTextNode(String(child)));
        }
        return node;
    }
    /* replaceChildren, leaving out the parts that are not there (null, false). */
    const fill = (node, ...children) => node.replaceChildren(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
    const $ = (selector, root = document) => root.querySelector(selector);
    const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
    const bind = (root, name) => root && root.querySelector(`[data-bind="${name}"]`);
    const live = (name) => document.querySelector(`[data-live="${name}"]`);
    function setText(node, text) {
        if (node && node.textContent !== text) node.textContent = text;
    }
    function showStatus(node, text, kind = "") {
        if (!node) return;
        node.textContent = text;
        node.className = `status-line ${kind}`.trim();
    }

    /* --- the server --------------------------------------------------------------------------------------------- */

    class RequestFailed extends Error {
        constructor(status, code, message) {
            super(message);
            this.status = status;
            this.code = code;
        }
    }

    async function call(method, url, payload) {
        const response = await fetch(url, {
            method,
            credentials: "same-origin",
            headers: {
                Accept: "application/json",
                ...(payload !== undefined ? { "Content-Type": "application/json" } : {}),
                ...(method !== "GET" ? { "X-CSRF-Token": csrfToken } : {}),
            },
            body: payload !== undefined ? JSON.stringify(payload) : undefined,
        });
        let answer = null;
        try {
            answer = await response.json();
        } catch (_) {
            answer = null;
        }
        if (response.status === 401) {
            window.location.assign(`${config.signInUrl}?next=${encodeURIComponent(location.pathname + location.search)}`);
        }
        if (!response.ok) {
            const error = (answer && answer.error) || {};
            throw new RequestFailed(response.status, error.code || "error", error.message || `${response.status} ${response.statusText}`);
        }
        return answer;
    }

    /* --- live state ----------------------------------------------------------------------------------------------- */

    const state = { floor: null, me: null, screen: null, work: null };
    const detectedAt = { floor: 0, me: 0, screen: 0, work: 0 };
    const renders = []; // {piece, detected_at, sent_at, shown_at}: how late each change reached the screen
    let mode = "starting";

    function noteClock(sentAt) {
        const sent = parseTime(sentAt);
        if (!Number.isNaN(sent)) clockOffsetMs = sent - Date.now();
    }

    function apply(name, piece, sentAt) {
        if (!piece || !PIECES.includes(name)) return;
        const detected = parseTime(piece.detected_at);
        if (!Number.isNaN(detected) && detected < detectedAt[name]) return; // older than what is shown
        if (!Number.isNaN(detected)) detectedAt[name] = detected;
        state[name] = piece.data;
        RENDER[name]();
        renders.push({ piece: name, detected_at: piece.detected_at, sent_at: sentAt || null, shown_at: Date.now() });
        if (renders.length > 500) renders.splice(0, renders.length - 500);
    }

    function applySnapshot(snapshot) {
        noteClock(snapshot.sent_at);
        for (const name of PIECES) apply(name, snapshot[name], snapshot.sent_at);
    }

    let polling = false;
    let pollAgain = false; // asked for while a poll was out: its answer may be from before the change
    async function poll() {
        if (polling) {
            pollAgain = true;
            return;
        }
        polling = true;
        try {
            do {
                pollAgain = false;
                applySnapshot(await call("GET", config.stateUrl));
            } while (pollAgain);
        } catch (error) {
            console.warn("console: could not refresh", error);
        } finally {
            polling = false;
        }
    }

    let floorResyncs = 0; // floor changes that did not fit the page's floor (each: one poll and a new stream)
    let pollTimer = null;
    let visibilityHooked = false;
    function startPolling(why) {
        // The stream may come back (the server restarted, or was still starting): it is tried again now and then.
        if (config.eventsUrl && "EventSource" in window) setTimeout(() => startStream(), STREAM_RETRY_MS);
        if (mode === "polling") return;
        mode = "polling";
        body.dataset.live = "polling";
        if (why) console.info(`console: polling ${config.stateUrl} every ${config.pollMs} ms (${why})`);
        poll();
        pollTimer = setInterval(poll, config.pollMs);
        // A tab in the background polls rarely (browsers slow its timers down): catch up as soon as it is seen.
        if (!visibilityHooked) {
            document.addEventListener("visibilitychange", () => mode !== "polling" || document.hidden || poll());
        }
        visibilityHooked = true;
    }

    function stopPolling() {
        clearInterval(pollTimer);
        pollTimer = null;
    }

    function startStream() {
        let stream;
        try {
            stream = new EventSource(config.eventsUrl, { withCredentials: true });
        } catch (error) {
            startPolling(`the live-updates stream cannot be opened: ${error}`);
            return;
        }
        if (mode !== "polling") mode = "connecting"; // polling goes on until the stream is heard
        let heard = false;
        let over = false;
        const giveUp = (why) => {
            if (over) return; // once per stream: each failed stream schedules one more try, not several
            over = true;
            stream.close();
            startPolling(why);
        };
        const grace = setTimeout(() => heard || giveUp("the live-updates stream sent nothing"), STREAM_GRACE_MS);
        const take = (event) => {
            heard = true;
            if (mode !== "stream") {
                stopPolling();
                mode = "stream";
                body.dataset.live = "stream";
                clearTimeout(grace);
            }
            const message = JSON.parse(event.data);
            noteClock(message.sent_at);
            return message;
        };
        for (const name of PIECES) {
            stream.addEventListener(name, (event) => {
                const message = take(event);
                if (name === "floor") takeWholeFloor(message);
                else apply(name, message, message.sent_at);
            });
        }
        stream.addEventListener("floor-changes", (event) => {
            if (over || takeFloorChanges(take(event))) return;
            // Not the floor this change was made from (the server sends every change in order, so this is a page
            // that missed one): the whole state now by one poll, and a new stream, which starts with a whole floor.
            console.warn("console: a floor change for another version than the page's; reading the whole floor");
            over = true;
            stream.close();
            streamFloor = null;
            floorResyncs += 1;
            poll();
            startStream();
        });
        stream.addEventListener("signed-out", () => {
            stream.close();
            window.location.assign(config.signInUrl);
        });
        let reopening = null;
        stream.addEventListener("open", () => {
            clearTimeout(reopening);
            reopening = null;
        });
        stream.addEventListener("error", () => {
            // Before anything was heard, or once the browser stops retrying, the stream is not going to work.
            if (!heard || stream.readyState === EventSource.CLOSED) {
                giveUp("the live-updates stream failed");
                return;
            }
            // The browser retries a dropped stream by itself, forever if the server is gone: a stream not back
            // within the grace period is given up, and the page polls (it shows what changed meanwhile at once).
            if (reopening === null) {
                reopening = setTimeout(() => giveUp("the live-updates stream did not come back"), STREAM_GRACE_MS);
            }
        });
    }

    /* The floor as the open stream last sent it: its changes apply to this copy, not to state.floor, which a poll
       (after the page's own actions) may have replaced with a reading of its own that the next change was not
       made from. null: no whole floor from this stream yet, or one it could not follow. */
    let streamFloor = null; // {version, data}

    /* The floor `changes` (wire.floor_changes) make of `floor`; null when they do not fit it. */
    function applyFloorChanges(floor, changes) {
        const next = { ...changes.fields };
        for (const [name, key] of Object.entries(FLOOR_ROWS)) {
            const rows = changes[name] || {};
            const removed = new Set(rows.removed || []);
            // A Map keeps the kept rows in place and puts new ones last: the order the server compares with.
            const byKey = new Map();
            for (const row of floor[name] || []) if (!removed.has(row[key])) byKey.set(row[key], row);
            for (const row of rows.changed || []) byKey.set(row[key], row);
            next[name] = rows.order ? rows.order.map((rowKey) => byKey.get(rowKey)) : Array.from(byKey.values());
            if (next[name].includes(undefined)) return null;
        }
        return next;
    }

    /* A whole floor from the stream: the version its changes will name. */
    function takeWholeFloor(message) {
        streamFloor = Number.isInteger(message.version) ? { version: message.version, data: message.data } : null;
        apply("floor", message, message.sent_at);
    }

    /* A change to the floor; false when it does not apply to the floor this stream has. */
    function takeFloorChanges(message) {
        if (!streamFloor || message.base !== streamFloor.version) return false;
        const floor = applyFloorChanges(streamFloor.data, message.data);
        if (!floor) return false;
        streamFloor = { version: message.version, data: floor };
        apply("floor", { detected_at: message.detected_at, data: floor }, message.sent_at);
        return true;
    }

    /* After one of this page's own changes: show its effect now, whichever way updates come. */
    const refresh = () => poll();

    /* --- rendering: the rep's own presence (top bar) ------------------------------------------------------------- */

    function presenceValue(me) {
        const chosen = me.after_call || (["available", "away", "offline"].includes(me.state) ? me.state : "available");
        const reason = me.after_call ? me.away_reason : me.state === "away" ? me.away_reason : null;
        return chosen === "away" && reason ? `away:${reason}` : chosen;
    }

    function renderMe() {
        const me = state.me;
        const pill = $("#my-state");
        if (!pill || !me) return;
        pill.dataset.state = me.state;
        const label = me.state === "away" && me.away_reason ? `Away · ${me.away_reason}` : STATE_LABELS[me.state] || me.state;
        setText(bind(pill, "label"), label);
        bind(pill, "time").dataset.since = me.since;
        const select = $("#presence");
        if (select && !select.dataset.busy) {
            const value = presenceValue(me);
            if (!Array.from(select.options).some((option) => option.value === value)) {
                select.append(el("option", { value, text: humanize(value.replace(":", " · ")) }));
            }
            select.value = value;
        }
        // Calling a customer back needs a rep who is working (available, in wrap-up, or away on follow-ups).
        const working = ["available", "wrap_up", "away"].includes(me.state);
        for (const button of $$('[data-task-action="call-back"]')) {
            button.disabled = !working;
            button.title = working ? "" : "Set your presence to Available or Away to call customers back";
        }
        renderReady();
        const after = $("#after-call");
        if (after) {
            after.hidden = !me.after_call;
            const reason = me.after_call === "away" && me.away_reason ? ` (${me.away_reason})` : "";
            setText(after, me.after_call ? `${STATE_LABELS[me.after_call]}${reason} after this call` : "");
        }
        tick();
    }

    /* With no call in front of them, what the rep can expect. */
    function renderReady() {
        const me = state.me;
        const ready = $('[data-bind="ready"]');
        const hint = $('[data-bind="ready-hint"]');
        if (!ready || !hint || !me) return;
        const departments = (me.departments || []).map(humanize);
        const list = departments.length > 1 ? `${departments.slice(0, -1).join(", ")} and ${departments.at(-1)}` : departments[0] || "";
        const words = {
            available: ["Ready for calls", `Calls for ${list} ring your phone. The caller's record appears here the moment one is offered to you, while you hear the whisper.`],
            away: [`Away${me.away_reason ? ` · ${me.away_reason}` : ""}`, "No calls ring for you. Choose Available in Presence when you are back; meanwhile the work queue has your follow-ups."],
            offline: ["Offline", "No calls ring for you. Choose Available in Presence to start taking calls."],
            wrap_up: ["Wrap-up", "Your next call comes when the wrap-up time ends."],
        }[me.state] || [STATE_LABELS[me.state] || "", ""];
        ready.dataset.state = me.state;
        fill(ready, el("span", { class: "pill", "data-state": me.state }, el("span", { class: "dot", "aria-hidden": "true" }), words[0]));
        setText(hint, words[1]);
    }

    function renderWork() {
        const work = state.work || { open: 0, overdue: 0 };
        const badge = $("#work-badge");
        if (badge) {
            setText(badge, String(work.open));
            badge.classList.toggle("alert", work.overdue > 0);
            badge.setAttribute("aria-label", `${work.open} open, ${work.overdue} overdue`);
        }
        setText(live("work-open"), String(work.open));
        const overdue = live("work-overdue");
        setText(overdue, String(work.overdue));
        if (overdue) overdue.classList.toggle("alert", work.overdue > 0);
    }

    /* --- rendering: the floor (the line per department, the team, the supervisor's floor) ----------------------- */

    function renderFloor() {
        const floor = state.floor;
        if (!floor) return;
        renderQueue(floor);
        renderTeam(floor);
        renderFloorPage(floor);
        refreshTransferTargets();
        tick();
    }

    function waitCell(department, at) {
        return el("span", { "data-base-seconds": department.longest_wait_seconds, "data-at": at, "data-ticks": "wait" },
            department.waiting ? duration(department.longest_wait_seconds) : "—");
    }

    function lineClass(department) {
        if (!department.waiting) return "";
        return department.longest_wait_seconds >= 60 ? "hot" : "busy";
    }

    function renderQueue(floor) {
        const rows = $("#queue-rows");
        if (!rows) return;
        rows.replaceChildren(...floor.departments.map((department) =>
            el("tr", { class: lineClass(department), "data-department": department.department },
                el("td", {}, humanize(department.name)),
                el("td", { class: "num" }, el("span", { class: "waiting-count" }, department.waiting)),
                el("td", { class: "num" }, waitCell(department, floor.at)),
                el("td", { class: "num" }, `${department.reps_available} / ${department.reps_on_duty}`))));
        const waiting = floor.departments.reduce((total, department) => total + department.waiting, 0);
        setText(live("queue-total"), waiting ? `${waiting} caller${waiting === 1 ? "" : "s"} waiting` : "Nobody waiting");
    }

    function stateDot(row) {
        const label = row.state === "away" && row.away_reason ? `Away · ${row.away_reason}` : STATE_LABELS[row.state] || row.state;
        return el("span", { class: "state-dot", "data-state": row.state }, el("span", { class: "dot", "aria-hidden": "true" }), label);
    }

    function renderTeam(floor) {
        const list = $("#team-list");
        if (!list) return;
        const others = floor.reps.filter((rep) => rep.id !== config.repId);
        list.replaceChildren(...others.map((rep) =>
            el("li", { "data-rep": rep.name, "data-state": rep.state },
                el("span", { class: "name" }, rep.name),
                stateDot(rep),
                el("span", { class: "time", "data-since": rep.since }, duration(rep.seconds_in_state)))));
        const free = others.filter((rep) => rep.state === "available").length;
        setText(live("team-available"), `${free} of ${others.length} available`);
    }

    function renderFloorPage(floor) {
        const lines = $("#floor-lines");
        if (!lines) return;
        lines.replaceChildren(...floor.departments.map((department) =>
            el("tr", { class: lineClass(department), "data-department": department.department },
                el("th", { scope: "row" }, humanize(department.name)),
                el("td", { class: "num" }, el("span", { class: "waiting-count" }, department.waiting)),
                el("td", { class: "num" }, waitCell(department, floor.at)),
                el("td", { class: "num" }, `${department.reps_available} / ${department.reps_on_duty}`),
                el("td", { class: "num" }, department.answered_today),
                el("td", { class: "num" }, department.abandoned_today),
                el("td", { class: "num" }, serviceLevel(department.service_level)),
                el("td", { class: "num" }, department.average_handle_seconds === null ? "—" : duration(department.average_handle_seconds)))));
        const total = (key) => floor.departments.reduce((sum, department) => sum + department[key], 0);
        setText(live("kpi-waiting"), String(total("waiting")));
        const longest = live("kpi-longest");
        if (longest) {
            const worst = Math.max(0, ...floor.departments.map((department) => department.longest_wait_seconds));
            longest.dataset.baseSeconds = worst;
            longest.dataset.at = floor.at;
            longest.dataset.ticks = "wait";
            longest.classList.toggle("bad", worst >= 60);
        }
        setText(live("kpi-available"), String(floor.reps.filter((rep) => rep.state === "available").length));
        setText(live("kpi-answered"), String(total("answered_today")));
        setText(live("kpi-abandoned"), String(total("abandoned_today")));
        const answered = total("answered_today");
        const offered = answered + total("abandoned_today");
        const within = floor.departments.reduce((sum, d) => sum + (d.service_level === null ? 0 : d.service_level * (d.answered_today + d.abandoned_today)), 0);
        const service = live("kpi-service");
        if (service) {
            setText(service, offered ? serviceLevel(within / offered) : "—");
            service.classList.toggle("good", offered > 0 && within / offered >= 0.8);
            service.classList.toggle("bad", offered > 0 && within / offered < 0.8);
        }
        renderFloorReps(floor);
        const onCall = floor.reps.filter((rep) => rep.state === "on_call").length;
        setText(live("reps-summary"), `${floor.reps.length} reps · ${onCall} on a call`);
        setText(live("floor-updated"), `Updated ${new Date(parseTime(floor.at)).toLocaleTimeString()}`);
    }

    const serviceLevel = (share) => (share === null || share === undefined ? "—" : `${Math.round(share * 100)} %`);

    function renderFloorReps(floor) {
        const tbody = $("#floor-reps");
        const known = new Map($$("tr[data-rep-id]", tbody).map((row) => [Number(row.dataset.repId), row]));
        const rows = floor.reps.map((rep) => {
            let row = known.get(rep.id);
            if (!row) {
                const select = presenceSelect(`Set status of ${rep.name}`, rep.id);
                row = el("tr", { "data-rep-id": rep.id },
                    el("th", { scope: "row" }, rep.name),
                    el("td", { "data-cell": "state" }),
                    el("td", { class: "num", "data-cell": "time" }),
                    el("td", { "data-cell": "call" }),
                    el("td", { class: "skills" }, rep.departments.map(humanize).join(", ")),
                    el("td", {}, select));
            }
            row.dataset.state = rep.state;
            fill(row.querySelector('[data-cell="state"]'),
                el("span", { class: "pill", "data-state": rep.state }, el("span", { class: "dot", "aria-hidden": "true" }),
                    rep.state === "away" && rep.away_reason ? `Away · ${rep.away_reason}` : STATE_LABELS[rep.state] || rep.state),
                rep.after_call ? el("div", { class: "muted", text: `${STATE_LABELS[rep.after_call]} after this call` }) : null);
            const time = row.querySelector('[data-cell="time"]');
            time.dataset.since = rep.since;
            fill(row.querySelector('[data-cell="call"]'),
                rep.call_sid
                    ? el("span", {}, el("a", { class: "caller", href: `/console/calls/${encodeURIComponent(rep.call_sid)}` }, rep.caller || "Caller"),
                        rep.call_department ? el("div", { class: "dept" }, humanize(rep.call_department)) : null)
                    : el("span", { class: "muted" }, "—"));
            const select = row.querySelector("select");
            if (!select.dataset.busy) select.value = presenceValue(rep);
            return row;
        });
        tbody.replaceChildren(...rows);
    }

    /* --- rendering: the call in front of the rep ------------------------------------------------------------------ */

    let shownCall = null; // the call_sid the forms were filled for

    function renderScreen() {
        renderCall(state.screen);
    }

    function renderCall(screen) {
        const panel = $("#screen");
        if (!panel) return;
        const empty = $('[data-part="empty"]', panel);
        const card = $('[data-part="call"]', panel);
        const forms = $('[data-part="forms"]');
        if (!screen) {
            empty.hidden = false;
            card.hidden = true;
            if (forms) forms.hidden = true;
            shownCall = null;
            return;
        }
        empty.hidden = true;
        card.hidden = false;
        const stage = STAGES[screen.stage] || { state: "on_call", label: humanize(screen.stage) };
        const banner = $('[data-part="stage"]', card);
        banner.dataset.state = stage.state;
        setText(bind(banner, "stage-label"), stage.label);
        const stageTime = bind(banner, "stage-time");
        delete stageTime.dataset.until;
        delete stageTime.dataset.since;
        if (screen.stage === "wrap-up" && screen.wrap_up_until) stageTime.dataset.until = screen.wrap_up_until;
        else if (state.me && screen.stage !== "ended" && screen.stage !== "in progress") stageTime.dataset.since = state.me.since;
        else setText(stageTime, "");

        setText(bind(card, "caller"), screen.caller);
        const tier = bind(card, "tier");
        tier.hidden = !screen.tier;
        tier.dataset.tier = screen.tier || "";
        setText(tier, screen.tier || "");
        setText(bind(card, "number"), phone(screen.caller_number));
        const link = bind(card, "customer-link");
        link.hidden = !screen.customer_id;
        if (screen.customer_id) link.href = `/console/customers/${screen.customer_id}`;
        setText(bind(card, "waited"), longDuration(screen.waited_seconds));
        $('[data-part="issue"]', card).hidden = !screen.issue;
        setText(bind(card, "issue"), screen.issue ? `“${screen.issue}”` : "");
        setText(bind(card, "department"), screen.department_name ? humanize(screen.department_name) : "Not routed yet");
        const confidence = bind(card, "confidence");
        if (screen.confidence === null || screen.confidence === undefined) fill(confidence);
        else {
            const share = Math.round(screen.confidence * 100);
            fill(confidence,
                el("span", { class: `meter ${share < 50 ? "low" : ""}`, role: "img", "aria-label": `${share} % sure` },
                    el("span", { style: `width: ${share}%` })),
                el("span", { class: "muted", text: ` ${share} %` }));
            confidence.querySelector(".meter > span").style.width = `${share}%`;
        }
        const departments = new Map(screen.departments);
        $('[data-part="corrected"]', card).hidden = !screen.corrected_department;
        setText(bind(card, "corrected"), humanize(departments.get(screen.corrected_department) || screen.corrected_department || ""));
        $('[data-part="disposition"]', card).hidden = !screen.disposition;
        setText(bind(card, "disposition"), humanize(screen.disposition || ""));
        $('[data-part="whisper"]', card).hidden = !screen.summary;
        setText(bind(card, "summary"), screen.summary || "");

        fill(bind(card, "history"), (screen.history.length ? screen.history.map((past) =>
            el("li", {},
                el("span", { class: "when" }, shortDate(past.when)),
                el("div", {},
                    el("span", { class: "what" }, humanize(past.department || "Call")),
                    el("span", { class: "outcome", "data-outcome": past.outcome }, humanize(past.outcome || "")),
                    past.rep ? el("span", { class: "muted" }, ` with ${past.rep}`) : null,
                    past.disposition || past.notes
                        ? el("div", { class: "notes" }, [past.disposition ? humanize(past.disposition) : null, past.notes].filter(Boolean).join(" — "))
                        : null))) : [el("li", { class: "empty-line" }, "First contact: nothing on record.")]));
        fill(bind(card, "tasks"), (screen.open_tasks.length ? screen.open_tasks.map((task) =>
            el("li", {}, el("span", { class: "kind", "data-kind": task.kind }, humanize(task.kind)), " ", task.note,
                task.due_at ? el("span", { class: "muted" }, ` · due ${shortDate(task.due_at)}`) : null))
            : [el("li", { class: "empty-line" }, "None.")]));

        renderForms(screen, forms);
        tick();
    }

    function renderForms(screen, forms) {
        if (!forms) return;
        const canWrapUp = ["talking", "wrap-up", "ended", "in progress"].includes(screen.stage);
        forms.hidden = !canWrapUp;
        const transfer = $('[data-part="transfer"]', forms);
        if (transfer) transfer.hidden = !(screen.stage === "talking" && config.page === "home");
        const newCall = shownCall !== screen.call_sid;
        shownCall = screen.call_sid;
        const wrap = $("#wrap-up-form");
        if (!wrap) return;
        const departmentOfCall = screen.corrected_department || screen.department;
        const disposition = $("#wrap-up-disposition");
        const chosen = newCall ? screen.disposition || "" : disposition.value;
        disposition.replaceChildren(el("option", { value: "", text: "Choose how it ended…" }),
            ...screen.dispositions.map((code) => el("option", { value: code, text: humanize(code) })));
        disposition.value = screen.dispositions.includes(chosen) ? chosen : "";
        const department = $("#wrap-up-department");
        const picked = newCall ? departmentOfCall || "" : department.value;
        department.replaceChildren(
            ...(screen.department ? [] : [el("option", { value: "", text: "Not routed" })]),
            ...screen.departments.map(([key, name]) =>
                el("option", { value: key, text: key === screen.department ? `${humanize(name)} (detected)` : humanize(name) })));
        department.value = picked;
        if (newCall) {
            $("#wrap-up-notes").value = screen.notes || "";
            showStatus(bind(forms, "wrap-up-status"), "");
            showStatus(bind(forms, "transfer-status"), "");
            $("#transfer-note") && ($("#transfer-note").value = "");
        }
        const left = bind(forms, "wrap-up-left");
        delete left.dataset.until;
        if (screen.stage === "wrap-up" && screen.wrap_up_until) left.dataset.until = screen.wrap_up_until;
        else setText(left, screen.stage === "talking" ? "Notes can be saved during the call" : "");
        refreshTransferTargets();
    }

    function refreshTransferTargets() {
        const select = $("#transfer-target");
        const screen = state.screen;
        if (!select || !screen || document.activeElement === select) return;
        const previous = select.value;
        const colleagues = (state.floor ? state.floor.reps : []).filter((rep) => rep.id !== config.repId);
        select.replaceChildren(
            el("option", { value: "", text: "Choose a department or a colleague…" }),
            el("optgroup", { label: "Departments" },
                ...screen.departments.map(([key, name]) => el("option", { value: `department:${key}`, text: humanize(name) }))),
            el("optgroup", { label: "Colleagues" },
                ...colleagues.map((rep) => el("option", {
                    value: `rep:${rep.name}`,
                    disabled: rep.state !== "available",
                    text: `${rep.name} — ${(STATE_LABELS[rep.state] || rep.state).toLowerCase()}`,
                }))));
        const stillThere = Array.from(select.options).find((option) => option.value === previous && !option.disabled);
        select.value = stillThere ? previous : "";
    }

    const RENDER = { floor: renderFloor, me: renderMe, screen: renderScreen, work: renderWork };

    /* --- clocks on screen (once a second, from the last known state and the server's clock) --------------------- */

    function tick() {
        const now = serverNow();
        for (const node of $$("[data-since]")) {
            const since = parseTime(node.dataset.since);
            if (!Number.isNaN(since)) setText(node, duration((now - since) / 1000));
        }
        for (const node of $$("[data-until]")) {
            const until = parseTime(node.dataset.until);
            if (Number.isNaN(until)) continue;
            const left = (until - now) / 1000;
            setText(node, left > 0 ? `${duration(left)} left` : "ending…");
        }
        for (const node of $$('[data-ticks="wait"]')) {
            const base = Number(node.dataset.baseSeconds);
            const at = parseTime(node.dataset.at);
            if (!base || Number.isNaN(at)) {
                if (node.dataset.live === "kpi-longest") setText(node, "0:00");
                continue;
            }
            setText(node, duration(base + (now - at) / 1000));
        }
        for (const node of $$("time[data-relative]")) setText(node, relative(node.dateTime));
        for (const node of $$("time:not([data-relative])")) {
            if (!node.dataset.formatted) {
                node.textContent = shortDate(node.dateTime);
                node.dataset.formatted = "1";
            }
        }
    }

    /* --- controls ------------------------------------------------------------------------------------------------- */

    function presenceSelect(label, repId) {
        const own = $("#presence");
        const select = el("select", { "aria-label": label, "data-rep-id": repId });
        for (const option of own ? own.options : []) select.append(el("option", { value: option.value, text: option.textContent }));
        return select;
    }

    async function setPresence(select) {
        const [chosen, reason] = select.value.split(":");
        select.dataset.busy = "1";
        try {
            const answer = await call("POST", `/console/reps/${select.dataset.repId}/presence`, { state: chosen, reason: reason || null });
            select.title = answer.immediate ? "" : "Taken when the call ends";
        } catch (error) {
            alertError(error);
        } finally {
            delete select.dataset.busy;
            await refresh();
        }
    }

    document.addEventListener("change", (event) => {
        const select = event.target;
        if (select instanceof HTMLSelectElement && select.dataset.repId) setPresence(select);
    });

    /* A short confirmation at the top of the page, for changes whose form goes away (a saved wrap-up). */
    let noticeTimer = null;
    function notify(text) {
        let box = $("#page-notice");
        if (!box) {
            box = el("div", { id: "page-notice", class: "notice ok", role: "status" });
            document.querySelector("main").prepend(box);
        }
        box.textContent = text;
        box.hidden = false;
        clearTimeout(noticeTimer);
        noticeTimer = setTimeout(() => { box.hidden = true; }, 10000);
    }

    function alertError(error) {
        let box = $("#page-error");
        if (!box) {
            box = el("div", { id: "page-error", class: "notice error", role: "alert" });
            document.querySelector("main").prepend(box);
        }
        box.textContent = sentence(error.message);
        box.hidden = false;
        setTimeout(() => { box.hidden = true; }, 8000);
    }

    /* Wrap-up: the rep who took the call (or a supervisor), during the call, in wrap-up time or later. */
    const wrapForm = $("#wrap-up-form");
    if (wrapForm) {
        wrapForm.addEventListener("submit", async (event) => {
            event.preventDefault();
            const screen = currentCall();
            const status = bind(wrapForm, "wrap-up-status");
            if (!screen) return;
            const button = wrapForm.querySelector('button[type="submit"]');
            button.disabled = true;
            showStatus(status, "Saving…");
            try {
                const department = $("#wrap-up-department").value;
                const saved = await call("POST", `/console/calls/${encodeURIComponent(screen.call_sid)}/wrap-up`, {
                    disposition: $("#wrap-up-disposition").value || null,
                    notes: $("#wrap-up-notes").value,
                    department: department || null,
                });
                showStatus(status, saved.wrap_up_ended ? "Saved. You are available for the next caller." : "Saved.", "ok");
                if (saved.wrap_up_ended) notify(`Wrap-up saved for ${screen.caller}. You are available for the next caller.`);
                if (config.page === "call") {
                    callScreen = { ...callScreen, disposition: saved.disposition, notes: saved.notes, corrected_department: saved.corrected_department };
                    renderCall(callScreen);
                }
            } catch (error) {
                showStatus(status, sentence(error.message), "error");
            } finally {
                button.disabled = false;
                await refresh();
            }
        });
    }

    /* Warm transfer: to a department or a colleague, with a note; then follow the hand-off until it is over. */
    const transferForm = $("#transfer-form");
    if (transferForm) {
        transferForm.addEventListener("submit", async (event) => {
            event.preventDefault();
            const screen = currentCall();
            const status = bind(transferForm, "transfer-status");
            const choice = $("#transfer-target").value;
            if (!screen || !choice) {
                showStatus(status, "Choose a department or a colleague first.", "error");
                return;
            }
            const [kind, ...rest] = choice.split(":");
            const button = transferForm.querySelector('button[type="submit"]');
            button.disabled = true;
            try {
                const handoff = await call("POST", `/console/calls/${encodeURIComponent(screen.call_sid)}/transfer`, {
                    [kind]: rest.join(":"),
                    note: $("#transfer-note").value,
                });
                follow(handoff, status, button);
            } catch (error) {
                showStatus(status, sentence(error.message), "error");
                button.disabled = false;
            }
        });
    }

    async function follow(handoff, status, button) {
        for (;;) {
            const words = HANDOFF_WORDS[handoff.state];
            const over = ["completed", "failed", "cancelled"].includes(handoff.state);
            showStatus(status, words ? words(handoff) : humanize(handoff.state), handoff.state === "failed" ? "error" : over ? "ok" : "");
            status.dataset.handoff = handoff.state;
            if (over) break;
            await new Promise((resolve) => setTimeout(resolve, 700));
            try {
                handoff = await call("GET", `/console/handoffs/${handoff.id}`);
            } catch (error) {
                showStatus(status, sentence(error.message), "error");
                break;
            }
        }
        button.disabled = false;
        refresh();
    }

    /* The work queue: claim, release, call back, close with a note; the list is read again after each. */
    const workStatus = $("#work-status");
    document.addEventListener("click", async (event) => {
        const button = event.target instanceof Element && event.target.closest("[data-task-action]");
        if (!button) return;
        const task = button.closest("[data-task-id]");
        button.disabled = true;
        try {
            const answer = await call("POST", `/console/tasks/${task.dataset.taskId}/${button.dataset.taskAction}`);
            if (button.dataset.taskAction === "call-back") {
                showStatus(workStatus, "Calling the customer: your phone rings with a whisper when they answer.", "ok");
                sessionStorage.setItem("warmline-notice", "Calling the customer: your phone rings with a whisper when they answer.");
            }
            void answer;
            window.location.reload();
        } catch (error) {
            showStatus(workStatus, sentence(error.message), "error");
            button.disabled = false;
        }
    });
    document.addEventListener("submit", async (event) => {
        const form = event.target;
        if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-task-close")) return;
        event.preventDefault();
        const task = form.closest("[data-task-id]");
        try {
            await call("POST", `/console/tasks/${task.dataset.taskId}/close`, { note: form.elements.note.value });
            sessionStorage.setItem("warmline-notice", "Task closed.");
            window.location.reload();
        } catch (error) {
            showStatus(workStatus, sentence(error.message), "error");
        }
    });
    const notice = sessionStorage.getItem("warmline-notice");
    if (notice && workStatus) {
        showStatus(workStatus, notice, "ok");
        sessionStorage.removeItem("warmline-notice");
    }

    /* A customer's contact details and notes. */
    const customerForm = $("#customer-form");
    if (customerForm) {
        customerForm.addEventListener("submit", async (event) => {
            event.preventDefault();
            const status = $("#customer-status");
            const fields = customerForm.elements;
            try {
                await call("POST", `/console/customers/${customerForm.dataset.customerId}`, {
                    name: fields.name.value,
                    phone: fields.phone.value,
                    email: fields.email.value || null,
                    tier: fields.tier.value,
                    notes: fields.notes.value,
                });
                sessionStorage.setItem("warmline-customer-notice", "Saved.");
                window.location.reload();
            } catch (error) {
                showStatus(status, sentence(error.message), "error");
            }
        });
        const saved = sessionStorage.getItem("warmline-customer-notice");
        if (saved) {
            showStatus($("#customer-status"), saved, "ok");
            sessionStorage.removeItem("warmline-customer-notice");
        }
    }

    /* --- start ---------------------------------------------------------------------------------------------------- */

    let callScreen = null; // call.html: the one call this page is about
    const currentCall = () => (config.page === "call" ? callScreen : state.screen);

    const initial = $("#console-state");
    if (initial) applySnapshot(JSON.parse(initial.textContent));
    const callData = $("#call-screen");
    if (callData) {
        callScreen = JSON.parse(callData.textContent);
        RENDER.screen = () => {}; // this page shows one call, not the live one
        renderCall(callScreen);
    }
    tick();
    setInterval(tick, 1000);
    if (config.eventsUrl && "EventSource" in window) startStream();
    else startPolling(config.eventsUrl ? "this browser has no EventSource" : "no live-updates stream");

    window.warmline = {
        state, renders, refresh, mode: () => mode,
        floorVersion: () => (streamFloor ? streamFloor.version : null),
        floorResyncs: () => floorResyncs,
    };
})();

// kiln console: the library (upload, search, filter, live over SSE), the
// asset page (player with a quality menu and storyboard scrub previews,
// renditions, plan decisions, playback URLs, actions), webhooks (endpoints,
// delivery log, replay), the tenant's API keys and the operator's
// operations view. It is a plain ES module without a build step. Every
// request goes to the public API (relative to this page, so any public URL
// or path prefix works) with the key the user entered; there is no other
// door. State for people and tests: window.kilnConsole, and
// window.kilnPlayer while the asset page plays.
'use strict';

const KEY_STORAGE = 'kiln.apiKey';
const PAGE = 20;
// Files from this size go up as resumable multipart direct uploads; the
// local storage item kiln.multipartFrom (bytes) changes it.
const MULTIPART_FROM = 64 << 20;
function multipartFrom() {
	try {
		return +localStorage.getItem('kiln.multipartFrom') || MULTIPART_FROM;
	} catch (e) {
		return MULTIPART_FROM;
	}
}
const STATES = ['queued', 'probing', 'transcoding', 'packaging', 'ready'];
const TERMINAL = new Set(['ready', 'failed', 'canceled']);

const $ = (id) => document.getElementById(id);
const api = (path) => new URL('../v1/' + path, document.baseURI).toString();

const ui = (window.kilnConsole = {
	view: '',
	live: false, // the tenant's event stream is open
	events: 0, // events received on it
	rows: {}, // job id -> state shown in the library
	uploads: [], // {name, state, jobId, assetId, error}
	job: null, // the asset page's job and asset
	asset: null,
	storyboard: 0, // cues of the asset page's storyboard
	scrub: null, // the last scrub preview shown: {time, image, x, y}
	me: null, // GET /v1/tenant
	ops: null, // GET /v1/operations, on the operations view
	replayed: 0, // webhook deliveries replayed
	playerStartedIn: '', // the job's state when the asset page's player started
	errors: [],
});

// --- helpers ---------------------------------------------------------------

let apiKey = '';
try {
	apiKey = localStorage.getItem(KEY_STORAGE) || '';
} catch (e) {
	// storage disabled: the key works for this page only
}

class APIError extends Error {
	constructor(status, code, message) {
		super(code + ': ' + message);
		this.status = status;
		this.code = code;
	}
}

async function call(method, path, body) {
	const headers = { Authorization: 'Bearer ' + apiKey, Accept: 'application/json' };
	const init = { method, headers, cache: 'no-store' };
	if (body !== undefined) {
		headers['Content-Type'] = 'application/json';
		init.body = JSON.stringify(body);
	}
	let resp;
	try {
		resp = await fetch(api(path), init);
	} catch (e) {
		throw new APIError(0, 'network', 'the API did not answer');
	}
	const text = await resp.text();
	let data = null;
	try {
		data = text ? JSON.parse(text) : null;
	} catch (e) {
		// not JSON: reported by status
	}
	if (!resp.ok) {
		const e = (data && data.error) || {};
		throw new APIError(resp.status, e.code || 'http_' + resp.status, e.message || 'HTTP ' + resp.status);
	}
	return data;
}

// h builds an element: h('a', {href: '#', class: 'x'}, 'text', child…).
function h(tag, attrs, ...children) {
	const el = document.createElement(tag);
	for (const [k, v] of Object.entries(attrs || {})) {
		if (v === undefined || v === null || v === false) continue;
		if (k === 'class') el.className = v;
		else if (k === 'text') el.textContent = v;
		else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
		else if (k === 'dataset') Object.assign(el.dataset, v);
		else el.setAttribute(k, v === true ? '' : v);
	}
	for (const c of children.flat()) {
		if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
	}
	return el;
}

const show = (el, text) => {
	el.textContent = text || '';
	el.hidden = !text;
};

function fail(e) {
	const msg = e instanceof Error ? e.message : String(e);
	ui.errors.push(msg);
	show($('banner'), msg);
}

function bytes(n) {
	if (!n && n !== 0) return '–';
	const units = ['B', 'kB', 'MB', 'GB', 'TB'];
	let i = 0;
	while (n >= 1000 && i < units.length - 1) {
		n /= 1000;
		i++;
	}
	return (i ? n.toFixed(1) : n) + ' ' + units[i];
}

function bitrate(bps) {
	if (!bps) return '–';
	return bps >= 1e6 ? (bps / 1e6).toFixed(2) + ' Mb/s' : Math.round(bps / 1e3) + ' kb/s';
}

function duration(s) {
	if (!s) return '–';
	s = Math.round(s);
	const m = Math.floor(s / 60);
	const hh = Math.floor(m / 60);
	const pad = (n) => String(n).padStart(2, '0');
	return (hh ? hh + ':' + pad(m % 60) : m) + ':' + pad(s % 60);
}

function when(iso) {
	if (!iso) return '–';
	const d = new Date(iso);
	return h('time', { datetime: iso, title: iso }, d.toLocaleString());
}

const fileName = (job) => ((job.source && job.source.key) || '').split('/').pop() || job.id;
const jobOfAsset = (assetId) => 'job_' + assetId.replace(/^ast_/, '');
const mediaDuration = (job) => job.media && (job.media.decoded_duration_seconds || job.media.duration_seconds);
// newer reports whether job is not older than seen (the same job as shown
// before): an action's answer and the stream's events may cross.
const newer = (job, seen) => !seen || seen.id !== job.id || !seen.updated_at || !job.updated_at || Date.parse(job.updated_at) >= Date.parse(seen.updated_at);
const playable = (job) => job.state === 'ready' || (!!job.playable_at && !TERMINAL.has(job.state));

function badge(state) {
	return h('span', { class: 'badge', dataset: { state }, text: state });
}

// overall is a job's progress through the pipeline, 0 to 1.
function overall(job) {
	if (job.state === 'ready') return 1;
	const at = STATES.indexOf(job.state);
	if (at < 0) return 0;
	return (at + (job.progress || 0)) / (STATES.length - 1);
}

function stageText(job) {
	if (TERMINAL.has(job.state)) return job.state;
	let t = job.state + ' ' + Math.round(100 * (job.progress || 0)) + '%';
	if (job.chunks) t += ' · chunks ' + job.chunks.done + '/' + job.chunks.total;
	if (job.playable_at) t += ' · playable';
	return t;
}

// copyButton copies text to the clipboard (or selects it where the
// clipboard API is not allowed).
function copyButton(text, label) {
	const b = h('button', { type: 'button', class: 'secondary small', 'aria-label': 'Copy ' + label, text: 'Copy' });
	b.addEventListener('click', async () => {
		try {
			await navigator.clipboard.writeText(text);
			b.textContent = 'Copied';
		} catch (e) {
			const sel = window.getSelection();
			const code = b.previousElementSibling;
			if (code) {
				const r = document.createRange();
				r.selectNodeContents(code);
				sel.removeAllRanges();
				sel.addRange(r);
			}
			b.textContent = 'Selected: press Ctrl+C';
		}
		setTimeout(() => (b.textContent = 'Copy'), 2000);
	});
	return b;
}

// confirm asks in a modal dialog; resolves true when the user confirms.
function confirmDialog(text, yes) {
	const d = $('confirm');
	$('confirm-text').textContent = text;
	$('confirm-yes').textContent = yes || 'Delete';
	d.returnValue = '';
	return new Promise((resolve) => {
		// A close event of the dialog's previous opening may still be
		// queued: only a close that left it closed answers.
		const closed = () => {
			if (d.open) return;
			d.removeEventListener('close', closed);
			resolve(d.returnValue === 'ok');
		};
		d.addEventListener('close', closed);
		d.showModal();
		$('confirm-no').focus();
	});
}

function secretBox(box, label, secret, note) {
	box.textContent = '';
	box.append(
		h('p', {}, h('strong', { text: label })),
		h('p', { class: 'secret' }, h('code', { text: secret }), ' ', copyButton(secret, label)),
		h('p', { class: 'hint', text: note }),
	);
	box.hidden = false;
}

// --- key and identity ------------------------------------------------------

$('api-key').value = apiKey;
$('key-form').addEventListener('submit', (ev) => {
	ev.preventDefault();
	apiKey = $('api-key').value.trim();
	try {
		localStorage.setItem(KEY_STORAGE, apiKey);
	} catch (e) {
		// ignore
	}
	start();
});

async function whoAmI() {
	try {
		ui.me = await call('GET', 'tenant');
		const k = ui.me.key;
		$('whoami').textContent = 'tenant ' + ui.me.tenant.name + ' · ' + (k.name || 'key') + ' (' + k.scope + ')';
		$('nav-ops').hidden = !ui.me.operator;
	} catch (e) {
		ui.me = null;
		$('whoami').textContent = e.status === 401 ? 'unknown key' : '';
		$('nav-ops').hidden = true;
		if (e.status === 401) fail(new Error('This API key is not valid: ' + e.message));
	}
}

// --- the tenant's event stream (GET /v1/events) ----------------------------

let stream = null; // AbortController of the open stream
let backoff = 1000;

function openStream() {
	if (stream) stream.abort();
	const ctl = (stream = new AbortController());
	const setLive = (on, text) => {
		ui.live = on;
		$('live').dataset.live = on ? 'on' : 'off';
		$('live').textContent = text;
	};
	(async () => {
		try {
			const resp = await fetch(api('events'), {
				headers: { Authorization: 'Bearer ' + apiKey, Accept: 'text/event-stream' },
				cache: 'no-store',
				signal: ctl.signal,
			});
			if (!resp.ok) throw new Error('HTTP ' + resp.status);
			const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
			let buf = '';
			for (;;) {
				const { value, done } = await reader.read();
				if (done) break;
				buf += value.replace(/\r\n/g, '\n');
				let i;
				while ((i = buf.indexOf('\n\n')) >= 0) {
					const block = buf.slice(0, i);
					buf = buf.slice(i + 2);
					let name = 'message';
					let data = '';
					for (const line of block.split('\n')) {
						if (line.startsWith('event: ')) name = line.slice(7);
						else if (line.startsWith('data: ')) data += line.slice(6);
					}
					if (!data) continue; // a heartbeat
					backoff = 1000;
					if (name === 'ready') setLive(true, 'live');
					dispatch(name, JSON.parse(data));
				}
			}
		} catch (e) {
			if (ctl.signal.aborted) return;
		}
		if (ctl.signal.aborted) return;
		setLive(false, 'reconnecting…');
		setTimeout(() => stream === ctl && openStream(), backoff);
		backoff = Math.min(2 * backoff, 30000);
	})();
}

function dispatch(name, data) {
	ui.events++;
	switch (name) {
		case 'ready':
		case 'resync':
			// From now on no change is missed: read the state once.
			if (ui.view === 'library') library.load(true);
			if (ui.view === 'asset' && assetPage.id) assetPage.load();
			break;
		case 'job':
			library.onJob(data);
			uploads.onJob(data);
			assetPage.onJob(data);
			break;
		case 'deleted':
			library.onDeleted(data.id);
			if (assetPage.id === data.asset_id) assetPage.deleted();
			break;
	}
}

// --- library ---------------------------------------------------------------

const library = {
	jobs: new Map(), // id -> job, in the table
	cursor: null,
	loading: 0,

	filter() {
		return { q: $('search').value.trim(), state: $('state-filter').value };
	},

	matches(job) {
		const f = this.filter();
		if (f.state && job.state !== f.state) return false;
		if (f.q) {
			const words = f.q.toLowerCase().replace(/[^a-z0-9._/-]+/g, '_');
			if (!fileName(job).toLowerCase().includes(words) && !((job.source && job.source.key) || '').toLowerCase().includes(words)) return false;
		}
		return true;
	},

	async load(reset) {
		const seq = ++this.loading;
		const q = new URLSearchParams({ limit: String(PAGE) });
		const f = this.filter();
		if (f.q) q.set('q', f.q);
		if (f.state) q.set('state', f.state);
		if (!reset && this.cursor) q.set('cursor', this.cursor);
		try {
			const page = await call('GET', 'jobs?' + q.toString());
			if (seq !== this.loading) return; // a newer listing is under way
			if (reset) {
				this.jobs.clear();
				$('library').tBodies[0].textContent = '';
			}
			for (const j of page.jobs) this.upsert(j, false);
			this.cursor = page.next_cursor;
			$('more').hidden = !this.cursor;
			this.empty();
		} catch (e) {
			fail(e);
		}
	},

	empty() {
		$('library-empty').hidden = this.jobs.size > 0;
	},

	row(job) {
		const name = fileName(job);
		let poster = h('span', { class: 'noposter', 'aria-hidden': 'true', text: '▶' });
		// The poster exists once the job is ready (a signed asset's needs a
		// token: the asset page has it).
		if (job.state === 'ready' && job.playback_policy !== 'signed') {
			poster = h('img', { src: api('play/' + encodeURIComponent(job.asset_id) + '/poster.jpg'), alt: '', loading: 'lazy', width: 96, height: 54 });
			poster.addEventListener('error', () => poster.replaceWith(h('span', { class: 'noposter', 'aria-hidden': 'true', text: '▶' })), { once: true });
		}
		const stateCell = h('td', { class: 'state' }, badge(job.state));
		if (!TERMINAL.has(job.state)) {
			stateCell.append(
				h('progress', { max: 1, value: overall(job), 'aria-label': name + ' progress' }),
				h('span', { class: 'muted small', text: stageText(job) }),
			);
		} else if (job.error && job.error.code) {
			stateCell.append(h('span', { class: 'muted small', text: job.error.code }));
		}
		if (playable(job) && job.state !== 'ready') stateCell.append(h('span', { class: 'pill', text: 'playable' }));
		return h(
			'tr',
			{ dataset: { jobId: job.id, assetId: job.asset_id, state: job.state, playable: String(playable(job)) } },
			h('td', { class: 'poster' }, poster),
			h('td', { class: 'file' }, h('a', { href: '#/assets/' + encodeURIComponent(job.asset_id), text: name })),
			h('td', { text: duration(mediaDuration(job)) }),
			h('td', { text: bytes(job.source && job.source.size) }),
			stateCell,
			h('td', {}, when(job.created_at)),
		);
	},

	// upsert shows job: in place when listed, else at its place by
	// created_at (newest first), or at the top (live).
	upsert(job, live) {
		const prev = this.jobs.get(job.id);
		if (!newer(job, prev)) return;
		ui.rows[job.id] = job.state;
		const tbody = $('library').tBodies[0];
		const old = tbody.querySelector('tr[data-job-id="' + CSS.escape(job.id) + '"]');
		// The poster cell stays while the row is rebuilt (no new request).
		const tr = this.row(job);
		if (old && prev && (prev.state === 'ready') === (job.state === 'ready')) tr.cells[0].replaceWith(old.cells[0]);
		this.jobs.set(job.id, job);
		if (old) {
			old.replaceWith(tr);
		} else if (live) {
			const at = Date.parse(job.created_at);
			const after = [...tbody.rows].find((r) => {
				const other = this.jobs.get(r.dataset.jobId);
				return other && Date.parse(other.created_at) < at;
			});
			if (!after && this.cursor) {
				this.jobs.delete(job.id); // it belongs to a later page
				return;
			}
			tbody.insertBefore(tr, after || null);
		} else {
			tbody.append(tr);
		}
		this.empty();
	},

	onJob(job) {
		if (this.jobs.has(job.id) && !this.matches(job)) {
			this.onDeleted(job.id);
			return;
		}
		if (this.matches(job)) this.upsert(job, true);
	},

	onDeleted(id) {
		this.jobs.delete(id);
		delete ui.rows[id];
		const tr = $('library').tBodies[0].querySelector('tr[data-job-id="' + CSS.escape(id) + '"]');
		if (tr) tr.remove();
		this.empty();
	},
};

let searchTimer = 0;
$('search').addEventListener('input', () => {
	clearTimeout(searchTimer);
	searchTimer = setTimeout(() => library.load(true), 250);
});
$('library-filter').addEventListener('submit', (ev) => {
	ev.preventDefault();
	library.load(true);
});
$('state-filter').addEventListener('change', () => library.load(true));
$('more').addEventListener('click', () => library.load(false));

// --- uploads ---------------------------------------------------------------

const uploads = {
	items: ui.uploads,

	add(file) {
		const item = { name: file.name, size: file.size, state: 'uploading', jobId: '', assetId: '', error: '', multipart: file.size >= multipartFrom() };
		const bar = h('progress', { max: 1, value: 0, 'aria-label': 'Upload of ' + file.name });
		const text = h('span', { class: 'muted small', text: 'waiting…' });
		const li = h('li', { dataset: { state: 'uploading' } }, h('span', { class: 'name', text: file.name + ' (' + bytes(file.size) + ')' }), bar, text);
		$('uploads').prepend(li);
		item.el = { li, bar, text };
		this.items.push(item);
		return item;
	},

	set(item, state, text, progress) {
		item.state = state;
		item.el.li.dataset.state = state;
		if (text !== undefined) item.el.text.textContent = text;
		if (progress !== undefined) item.el.bar.value = progress;
	},

	async start(files) {
		if (!apiKey) return fail(new Error('Enter an API key first.'));
		const opts = { preset: $('preset').value, policy: $('policy').value };
		const queue = [...files].map((f) => [f, this.add(f)]);
		// Two at a time: each has its own progress.
		const next = async () => {
			for (let e; (e = queue.shift()); ) await this.one(e[0], e[1], opts);
		};
		await Promise.all([next(), next()]);
	},

	async one(file, item, opts) {
		try {
			const res = file.size >= multipartFrom() ? await multipart(file, item, opts) : await simpleUpload(file, item, opts);
			item.jobId = res.job_id;
			item.assetId = res.asset_id;
			const link = h('a', { href: '#/assets/' + encodeURIComponent(res.asset_id), text: 'open' });
			this.set(item, 'queued', 'uploaded · queued ', 1);
			item.el.text.append(link);
			// In the library at once (unless the stream was first); the
			// stream brings its stages.
			if (!library.jobs.has(res.job_id)) library.onJob({
				id: res.job_id, asset_id: res.asset_id, state: 'queued', progress: 0, playback_policy: opts.policy,
				source: { key: (res.key || 'uploads/-/') + (res.key ? '' : file.name), size: file.size }, created_at: new Date().toISOString(),
			});
		} catch (e) {
			item.error = e.message;
			this.set(item, 'failed', 'failed: ' + e.message, 0);
			ui.errors.push(e.message);
		}
	},

	onJob(job) {
		for (const item of this.items) {
			if (item.jobId !== job.id) continue;
			const link = item.el.text.querySelector('a');
			const st = TERMINAL.has(job.state) ? job.state : playable(job) ? 'playable' : job.state;
			this.set(item, st, (st === 'playable' ? 'playable while it encodes · ' : stageText(job) + ' · '), overall(job));
			if (link) item.el.text.append(link);
		}
	},
};

function simpleUpload(file, item, opts) {
	return new Promise((resolve, reject) => {
		const q = new URLSearchParams({ preset: opts.preset, playback_policy: opts.policy, filename: file.name });
		const data = new FormData();
		data.append('file', file, file.name);
		const xhr = new XMLHttpRequest();
		xhr.open('POST', api('uploads?' + q.toString()));
		xhr.setRequestHeader('Authorization', 'Bearer ' + apiKey);
		xhr.responseType = 'json';
		xhr.upload.addEventListener('progress', (e) => {
			if (!e.lengthComputable) return;
			uploads.set(item, 'uploading', 'uploading ' + Math.floor((100 * e.loaded) / e.total) + '%', e.loaded / e.total);
		});
		xhr.addEventListener('loadend', () => {
			const body = xhr.response;
			if ((xhr.status === 202 || xhr.status === 200) && body && body.job_id) return resolve(body);
			const e = (body && body.error) || {};
			reject(new APIError(xhr.status, e.code || 'http_' + xhr.status, e.message || (xhr.status ? 'HTTP ' + xhr.status : 'the API did not answer')));
		});
		xhr.send(data);
	});
}

// putPart PUTs one part to its presigned URL, reporting bytes sent.
function putPart(part, blob, onProgress) {
	return new Promise((resolve, reject) => {
		const xhr = new XMLHttpRequest();
		xhr.open(part.method || 'PUT', part.url);
		for (const [k, v] of Object.entries(part.headers || {})) {
			if (k.toLowerCase() !== 'content-length') xhr.setRequestHeader(k, v); // the browser sets it
		}
		xhr.upload.addEventListener('progress', (e) => onProgress(e.loaded));
		xhr.addEventListener('loadend', () => (xhr.status >= 200 && xhr.status < 300 ? resolve() : reject(new Error('part ' + part.part_number + ': HTTP ' + xhr.status))));
		xhr.send(blob);
	});
}

// multipart uploads a large file in parts straight to storage
// (POST /v1/direct-uploads, multipart), resuming an upload of the same file
// that was interrupted (its id is kept in local storage until it completes).
async function multipart(file, item, opts) {
	const resumeKey = 'kiln.upload.' + [file.name, file.size, file.lastModified].join('.');
	let up = null;
	const stored = new Set();
	let id = '';
	try {
		id = localStorage.getItem(resumeKey) || '';
	} catch (e) {
		// ignore
	}
	if (id) {
		try {
			const st = await call('GET', 'direct-uploads/' + encodeURIComponent(id));
			up = st;
			for (const p of st.parts || []) stored.add(p.part_number);
			uploads.set(item, 'uploading', 'resuming (' + stored.size + ' parts stored)');
		} catch (e) {
			id = '';
		}
	}
	if (!up) {
		up = await call('POST', 'direct-uploads', { filename: file.name, size: file.size, preset: opts.preset, playback_policy: opts.policy, multipart: true });
		id = up.upload_id;
		try {
			localStorage.setItem(resumeKey, id);
		} catch (e) {
			// not resumable then
		}
	}
	let sent = 0;
	for (const n of stored) sent += Math.min(up.part_size, file.size - (n - 1) * up.part_size);
	for (let from = 1; from <= up.part_count; from += 100) {
		const batch = await call('POST', 'direct-uploads/' + encodeURIComponent(id) + '/parts?from=' + from + '&count=100');
		for (const part of batch.parts) {
			if (stored.has(part.part_number)) continue;
			const start = (part.part_number - 1) * up.part_size;
			await putPart(part, file.slice(start, start + part.size), (n) => {
				const p = (sent + n) / file.size;
				uploads.set(item, 'uploading', 'uploading part ' + part.part_number + '/' + up.part_count + ' · ' + Math.floor(100 * p) + '%', p);
			});
			sent += part.size;
		}
	}
	const res = await call('POST', 'direct-uploads/' + encodeURIComponent(id) + '/complete', {});
	try {
		localStorage.removeItem(resumeKey);
	} catch (e) {
		// ignore
	}
	return res;
}

const drop = $('drop');
$('files').addEventListener('change', () => {
	uploads.start($('files').files);
	$('files').value = '';
});
drop.addEventListener('click', (ev) => {
	if (!ev.target.closest('label, input')) $('files').click(); // the label opens it itself
});
drop.addEventListener('keydown', (ev) => {
	if (ev.key === 'Enter' || ev.key === ' ') {
		ev.preventDefault();
		$('files').click();
	}
});
drop.addEventListener('dragover', (ev) => {
	ev.preventDefault();
	drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (ev) => {
	ev.preventDefault();
	drop.classList.remove('over');
	if (ev.dataTransfer && ev.dataTransfer.files.length) uploads.start(ev.dataTransfer.files);
});

// --- asset page ------------------------------------------------------------

const assetPage = {
	id: '',
	player: null,
	cues: [],
	mp4Tries: 0,
	mp4Timer: 0,

	async open(id) {
		this.close();
		this.id = id;
		$('asset-id').textContent = id;
		$('asset-title').textContent = 'Asset';
		for (const el of ['urls', 'decisions', 'source']) $(el).textContent = '';
		$('renditions').tBodies[0].textContent = '';
		await this.load();
	},

	close() {
		clearTimeout(this.mp4Timer);
		if (this.player) this.player.destroy();
		this.player = null;
		window.kilnPlayer = undefined;
		this.id = '';
		this.cues = [];
		this.mp4Tries = 0;
		ui.job = ui.asset = ui.scrub = null;
		ui.storyboard = 0;
		$('video').hidden = true;
		$('video').removeAttribute('poster');
		$('scrubber').hidden = true;
		$('player-wait').hidden = false;
		$('quality').disabled = true;
		$('quality').length = 1;
		for (const b of ['act-cancel', 'act-retry', 'act-delete', 'new-token', 'token-info']) $(b).hidden = true;
		$('asset-state').textContent = '–';
		$('asset-state').dataset.state = '';
		$('asset-progress').textContent = '';
		$('asset-bar').value = 0;
		show($('player-error'), '');
		show($('asset-error'), '');
	},

	async load() {
		const id = this.id;
		try {
			const [job, asset] = await Promise.all([call('GET', 'jobs/' + encodeURIComponent(jobOfAsset(id))), call('GET', 'assets/' + encodeURIComponent(id))]);
			if (id !== this.id) return;
			this.showJob(job);
			this.showAsset(asset);
		} catch (e) {
			if (id !== this.id) return;
			if (e.status === 404) show($('asset-error'), 'No such asset (it was deleted, or belongs to another tenant).');
			else fail(e);
		}
	},

	onJob(job) {
		if (!this.id || job.asset_id !== this.id || !newer(job, ui.job)) return;
		const before = ui.job;
		this.showJob(job);
		// A change of stage or playability changes the asset: read it again.
		if (!before || before.state !== job.state || before.attempt !== job.attempt || !!before.playable_at !== !!job.playable_at) {
			call('GET', 'assets/' + encodeURIComponent(this.id))
				.then((a) => a.id === this.id && this.showAsset(a))
				.catch(fail);
		}
	},

	deleted() {
		const id = this.id;
		this.close();
		this.id = id;
		show($('asset-error'), 'This asset was deleted.');
		for (const b of ['act-cancel', 'act-retry', 'act-delete']) $(b).hidden = true;
	},

	showJob(job) {
		if (!newer(job, ui.job)) return;
		ui.job = job;
		$('asset-title').textContent = fileName(job);
		const b = $('asset-state');
		b.textContent = job.state;
		b.dataset.state = job.state;
		$('asset-progress').textContent = TERMINAL.has(job.state) ? (job.attempt > 1 ? 'attempt ' + job.attempt : '') : stageText(job);
		$('asset-bar').value = job.state === 'failed' || job.state === 'canceled' ? 0 : overall(job);
		show($('asset-error'), job.error ? job.state + ' — ' + job.error.code + ': ' + job.error.message : '');
		$('act-cancel').hidden = TERMINAL.has(job.state);
		$('act-retry').hidden = !(job.state === 'failed' || job.state === 'canceled');
		$('act-delete').hidden = !TERMINAL.has(job.state);
		if ((job.state === 'failed' || job.state === 'canceled') && this.player) {
			// It played while encoding, and will not be finished.
			this.player.destroy();
			this.player = null;
			window.kilnPlayer = undefined;
			$('video').hidden = true;
			$('scrubber').hidden = true;
			$('player-wait').hidden = false;
		}
		const ul = $('decisions');
		ul.textContent = '';
		const decisions = (job.plan && job.plan.decisions) || [];
		for (const d of decisions) ul.append(h('li', { text: d }));
		if (!decisions.length) ul.append(h('li', { class: 'muted', text: job.plan ? 'none recorded' : 'not planned yet' }));
		const m = job.media || {};
		const v = m.video;
		const a = m.audio;
		const src = [
			['File', fileName(job)],
			['Size', bytes(job.source && job.source.size)],
			['Duration', duration(mediaDuration(job))],
			['Container', m.format || '–'],
			['Video', v ? v.codec + ' ' + v.width + '×' + v.height + (v.frame_rate ? ' @ ' + +v.frame_rate.toFixed(3) + ' fps' : '') : '–'],
			['Audio', a ? a.codec + (a.channels ? ' · ' + a.channels + ' ch' : '') : '–'],
			['Preset', job.preset],
			['Priority', job.priority],
			['Attempt', job.attempt],
			['Created', when(job.created_at)],
			['Job', h('code', { text: job.id })],
		];
		const dl = $('source');
		dl.textContent = '';
		for (const [k, val] of src) dl.append(h('dt', { text: k }), h('dd', {}, val));
		this.showRenditions();
	},

	showAsset(asset) {
		ui.asset = asset;
		this.showRenditions();
		const dl = $('urls');
		dl.textContent = '';
		const pb = asset.playback;
		const th = asset.thumbnails || {};
		const url = (label, u) => {
			if (!u) return;
			dl.append(h('dt', { text: label }), h('dd', {}, h('code', { class: 'url', text: u }), ' ', copyButton(u, label + ' URL')));
		};
		if (pb) {
			url('HLS', pb.hls);
			url('MP4 download', pb.mp4);
			url('Poster', pb.poster);
			url('Storyboard', th.storyboard_vtt);
			if (pb.mp4) dl.append(h('dt', { class: 'sr-only', text: 'Download' }), h('dd', {}, h('a', { id: 'mp4-link', href: pb.mp4, download: '', text: 'Download the MP4' })));
		} else {
			dl.append(h('dd', { class: 'muted', text: 'Playback URLs appear once the asset is playable.' }));
		}
		const signed = asset.playback_policy === 'signed';
		$('new-token').hidden = !signed || !pb;
		$('token-info').hidden = !signed;
		$('token-info').textContent = signed
			? asset.playback_token_expires_at
				? 'Signed: these URLs carry a token until ' + new Date(asset.playback_token_expires_at).toLocaleString() + '.'
				: 'Signed: a read key gets no token; use a write key.'
			: '';
		if (pb && asset.state === 'ready' && !pb.mp4 && this.mp4Tries < 40) {
			// The download is built after READY, and no event says when.
			this.mp4Tries++;
			clearTimeout(this.mp4Timer);
			this.mp4Timer = setTimeout(() => call('GET', 'assets/' + encodeURIComponent(asset.id)).then((a) => a.id === this.id && this.showAsset(a), fail), 1500);
		}
		if (pb && !this.player) this.play(asset);
	},

	showRenditions() {
		const job = ui.job;
		const asset = ui.asset;
		if (!job) return;
		const byName = new Map();
		for (const r of job.renditions || []) byName.set(r.name, { name: r.name, width: r.width, height: r.height, state: r.state });
		for (const r of (asset && asset.renditions) || []) byName.set(r.name, Object.assign(byName.get(r.name) || {}, r));
		const tbody = $('renditions').tBodies[0];
		tbody.textContent = '';
		const rows = [...byName.values()].sort((x, y) => (y.height || 0) - (x.height || 0));
		for (const r of rows) {
			const action = h('td');
			if (r.state === 'failed' && job.state === 'ready') {
				action.append(h('button', { type: 'button', class: 'secondary small', text: 'Retry rendition', onclick: () => this.retryRendition(r.name) }));
			}
			const st = h('td', {}, badge(r.state));
			if (r.error) st.append(h('span', { class: 'muted small', text: ' ' + r.error.code + ': ' + r.error.message }));
			tbody.append(
				h(
					'tr',
					{ dataset: { rendition: r.name, state: r.state } },
					h('th', { scope: 'row', text: r.name }),
					h('td', { text: r.width ? r.width + '×' + r.height : '–' }),
					h('td', { text: bitrate(r.bandwidth) }),
					h('td', { text: bitrate(r.average_bandwidth) }),
					h('td', { class: 'mono', text: r.codecs || '–' }),
					st,
					action,
				),
			);
		}
		if (!rows.length) tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'muted', text: 'The ladder is planned after the probe.' })));
	},

	play(asset) {
		const video = $('video');
		video.hidden = false;
		$('player-wait').hidden = true;
		if (asset.playback.poster) video.poster = asset.playback.poster;
		this.player = window.KilnPlayer.attach(video, asset.playback.hls, {
			onChange: (s) => show($('player-error'), s.error ? 'Playback error: ' + s.error : ''),
		});
		window.kilnPlayer = this.player.state;
		ui.playerStartedIn = ui.job ? ui.job.state : '';
		const hls = this.player.hls;
		const q = $('quality');
		if (hls) {
			hls.on(window.Hls.Events.MANIFEST_PARSED, () => {
				q.length = 1;
				hls.levels.forEach((l, i) => q.append(h('option', { value: String(i), text: (l.height ? l.height + 'p' : l.name || 'level ' + i) + ' · ' + bitrate(l.bitrate) })));
				q.disabled = hls.levels.length < 2;
			});
			hls.on(window.Hls.Events.LEVEL_SWITCHED, (_, d) => {
				q.title = 'playing ' + (hls.levels[d.level] ? hls.levels[d.level].height + 'p' : '');
			});
		}
		if (asset.thumbnails && asset.thumbnails.storyboard_vtt) this.storyboard(asset.thumbnails.storyboard_vtt);
	},

	async storyboard(vttURL) {
		try {
			const resp = await fetch(vttURL, { cache: 'no-store' });
			if (!resp.ok) throw new Error('HTTP ' + resp.status);
			this.cues = parseVTT(await resp.text(), resp.url);
			ui.storyboard = this.cues.length;
			$('scrubber').hidden = !this.cues.length;
		} catch (e) {
			ui.errors.push('storyboard: ' + e.message);
		}
	},

	preview(t, x) {
		const cue = this.cues.find((c) => t >= c.start && t < c.end) || this.cues[this.cues.length - 1];
		const box = $('scrub-preview');
		if (!cue) return;
		const img = $('scrub-image');
		img.style.width = cue.w + 'px';
		img.style.height = cue.h + 'px';
		img.style.backgroundImage = 'url("' + cue.image.replace(/"/g, '%22') + '")';
		img.style.backgroundPosition = -cue.x + 'px ' + -cue.y + 'px';
		$('scrub-time').textContent = duration(t) + (t < 60 ? ' (' + t.toFixed(1) + ' s)' : '');
		const bar = $('scrub').getBoundingClientRect();
		const left = Math.max(0, Math.min(bar.width - cue.w, x - cue.w / 2));
		box.style.left = left + 'px';
		box.hidden = false;
		ui.scrub = { time: t, image: cue.image, x: cue.x, y: cue.y };
	},

	async act(what, fn) {
		try {
			await fn();
		} catch (e) {
			fail(new Error(what + ': ' + e.message));
		}
	},

	retryRendition(name) {
		this.act('retry rendition', async () => this.showAsset(await call('POST', 'assets/' + encodeURIComponent(this.id) + '/renditions/' + encodeURIComponent(name) + '/retry')));
	},
};

// parseVTT reads a storyboard: cues "start --> end" whose text is an image
// URL with #xywh=x,y,w,h, resolved against the storyboard's own URL.
function parseVTT(text, base) {
	const secs = (s) => {
		const p = s.trim().split(':').map(Number);
		return p.reduce((acc, v) => acc * 60 + v, 0);
	};
	const cues = [];
	for (const block of text.replace(/\r\n/g, '\n').split(/\n\n+/)) {
		const lines = block.split('\n');
		const i = lines.findIndex((l) => l.includes('-->'));
		if (i < 0 || !lines[i + 1]) continue;
		const [a, b] = lines[i].split('-->');
		const m = /^(.*?)#xywh=(\d+),(\d+),(\d+),(\d+)/.exec(lines[i + 1].trim());
		if (!m) continue;
		let image = '';
		try {
			image = new URL(m[1], base).toString();
		} catch (e) {
			continue;
		}
		cues.push({ start: secs(a), end: secs(b.trim().split(/\s/)[0]), image, x: +m[2], y: +m[3], w: +m[4], h: +m[5] });
	}
	return cues;
}

{
	const video = $('video');
	const scrub = $('scrub');
	let dragging = false;
	video.addEventListener('durationchange', () => {
		if (isFinite(video.duration)) scrub.max = String(video.duration);
	});
	video.addEventListener('timeupdate', () => {
		if (!dragging) scrub.value = String(video.currentTime);
	});
	const at = (ev) => {
		const r = scrub.getBoundingClientRect();
		const f = Math.max(0, Math.min(1, (ev.clientX - r.left) / r.width));
		return [f * (+scrub.max || 0), ev.clientX - r.left];
	};
	scrub.addEventListener('pointermove', (ev) => assetPage.preview(...at(ev)));
	scrub.addEventListener('pointerdown', () => (dragging = true));
	scrub.addEventListener('pointerup', () => (dragging = false));
	scrub.addEventListener('pointerleave', () => ($('scrub-preview').hidden = true));
	scrub.addEventListener('input', () => {
		const t = +scrub.value;
		const r = scrub.getBoundingClientRect();
		assetPage.preview(t, (t / (+scrub.max || 1)) * r.width);
		video.currentTime = t;
	});
	scrub.addEventListener('blur', () => ($('scrub-preview').hidden = true));
	$('quality').addEventListener('change', () => {
		const hls = assetPage.player && assetPage.player.hls;
		if (hls) hls.currentLevel = +$('quality').value;
	});
}

$('act-cancel').addEventListener('click', () =>
	assetPage.act('cancel', async () => assetPage.showJob(await call('POST', 'jobs/' + encodeURIComponent(ui.job.id) + '/cancel'))),
);
$('act-retry').addEventListener('click', () =>
	assetPage.act('retry', async () => {
		const job = await call('POST', 'jobs/' + encodeURIComponent(ui.job.id) + '/retry');
		assetPage.mp4Tries = 0;
		assetPage.showJob(job);
	}),
);
$('act-delete').addEventListener('click', async () => {
	const name = ui.job ? fileName(ui.job) : assetPage.id;
	if (!(await confirmDialog('Delete “' + name + '”? Its renditions, download, thumbnails and source are removed for good.', 'Delete'))) return;
	assetPage.act('delete', async () => {
		const id = assetPage.id;
		await call('DELETE', 'assets/' + encodeURIComponent(id));
		library.onDeleted(jobOfAsset(id));
		location.hash = '#/';
	});
});
$('new-token').addEventListener('click', () =>
	assetPage.act('token', async () => {
		const t = await call('POST', 'assets/' + encodeURIComponent(assetPage.id) + '/playback-token', {});
		const a = Object.assign({}, ui.asset, {
			playback: { hls: t.hls, mp4: t.mp4, poster: t.poster },
			playback_token_expires_at: t.expires_at,
		});
		assetPage.showAsset(a);
		secretBoxAfter($('urls'), 'Token', t.token);
	}),
);

function secretBoxAfter(el, label, value) {
	el.append(h('dt', { text: label }), h('dd', {}, h('code', { class: 'url', text: value }), ' ', copyButton(value, label)));
}

// --- webhooks --------------------------------------------------------------

const webhooks = {
	async load() {
		const box = $('endpoints');
		try {
			const res = await call('GET', 'webhooks');
			box.textContent = '';
			const eps = res.webhooks || res.endpoints || [];
			if (!eps.length) box.append(h('p', { class: 'muted', text: 'No endpoints yet.' }));
			for (const ep of eps) box.append(this.card(ep));
		} catch (e) {
			fail(e);
		}
	},

	card(ep) {
		const log = h('div', { class: 'tablewrap' });
		log.status = h('p', { class: 'ok', role: 'status', hidden: true });
		const card = h(
			'article',
			{ class: 'card endpoint', dataset: { endpointId: ep.id } },
			h('h2', {}, h('code', { text: ep.url })),
			h(
				'p',
				{ class: 'muted' },
				ep.id + ' · ' + (ep.event_types && ep.event_types.length ? ep.event_types.join(', ') : 'all events') + (ep.job_id ? ' · one upload: ' + ep.job_id : ''),
				ep.disabled ? h('span', { class: 'badge', dataset: { state: 'failed' }, text: 'disabled' + (ep.disabled_reason ? ': ' + ep.disabled_reason : '') }) : '',
			),
			h(
				'div',
				{ class: 'actions' },
				h('button', { type: 'button', class: 'secondary small', text: 'Refresh deliveries', onclick: () => this.deliveries(ep, log) }),
				ep.disabled ? h('button', { type: 'button', class: 'secondary small', text: 'Enable', onclick: () => this.enable(ep) }) : '',
				h('button', { type: 'button', class: 'danger small', text: 'Delete…', onclick: () => this.remove(ep) }),
			),
			log.status,
			log,
		);
		this.deliveries(ep, log);
		return card;
	},

	async deliveries(ep, box) {
		try {
			const res = await call('GET', 'webhooks/' + encodeURIComponent(ep.id) + '/deliveries?limit=50');
			const rows = (res.deliveries || []).slice().sort((a, b) => Date.parse(b.at) - Date.parse(a.at)); // newest first
			box.textContent = '';
			if (!rows.length) return box.append(h('p', { class: 'muted', text: 'No deliveries yet.' }));
			const tbody = h('tbody');
			for (const d of rows) {
				const ok = d.status_code >= 200 && d.status_code < 300;
				tbody.append(
					h(
						'tr',
						{ dataset: { eventId: d.event_id, status: String(d.status_code) } },
						h('td', {}, when(d.at)),
						h('td', { text: d.event_type }),
						h('td', { class: 'mono', text: d.event_id }),
						h('td', { text: d.attempt }),
						h('td', {}, h('span', { class: 'badge', dataset: { state: ok ? 'ready' : 'failed' }, text: d.status_code || 'no answer' })),
						h('td', { text: d.latency_ms + ' ms' }),
						h('td', { class: 'small', text: d.error || '' }),
						h('td', {}, h('button', { type: 'button', class: 'secondary small', text: 'Replay', 'aria-label': 'Replay ' + d.event_type + ' ' + d.event_id, onclick: () => this.replay(ep, d.event_id, box) })),
					),
				);
			}
			box.append(
				h(
					'table',
					{ class: 'deliveries' },
					h('caption', { class: 'sr-only', text: 'Deliveries to ' + ep.url }),
					h('thead', {}, h('tr', {}, ['At', 'Event', 'Event id', 'Attempt', 'Status', 'Latency', 'Error', ''].map((t) => h('th', { scope: 'col', text: t })))),
					tbody,
				),
			);
		} catch (e) {
			fail(e);
		}
	},

	async replay(ep, eventId, box) {
		try {
			const res = await call('POST', 'webhook-events/' + encodeURIComponent(eventId) + '/replay');
			ui.replayed++;
			show($('banner'), '');
			show(box.status, 'Replayed ' + eventId + ': ' + (res.deliveries || []).length + ' new deliveries.');
			setTimeout(() => this.deliveries(ep, box), 1500);
		} catch (e) {
			fail(e);
		}
	},

	async enable(ep) {
		try {
			await call('POST', 'webhooks/' + encodeURIComponent(ep.id) + '/enable');
			this.load();
		} catch (e) {
			fail(e);
		}
	},

	async remove(ep) {
		if (!(await confirmDialog('Delete the endpoint ' + ep.url + ' and its delivery log?', 'Delete'))) return;
		try {
			await call('DELETE', 'webhooks/' + encodeURIComponent(ep.id));
			this.load();
		} catch (e) {
			fail(e);
		}
	},
};

$('webhook-form').addEventListener('submit', async (ev) => {
	ev.preventDefault();
	const types = [...document.querySelectorAll('#webhook-form input[name=event]:checked')].map((c) => c.value);
	const body = { url: $('webhook-url').value.trim() };
	if (types.length) body.event_types = types;
	try {
		const ep = await call('POST', 'webhooks', body);
		secretBox($('webhook-secret'), 'Signing secret of ' + ep.url, ep.secret, 'Shown once: verify deliveries with it (Standard Webhooks).');
		$('webhook-url').value = '';
		webhooks.load();
	} catch (e) {
		fail(e);
	}
});

// --- API keys --------------------------------------------------------------

const keys = {
	async load() {
		try {
			const res = await call('GET', 'tenant/keys');
			const tbody = $('keys').tBodies[0];
			tbody.textContent = '';
			for (const k of res.keys) {
				const mine = ui.me && ui.me.key.id === k.id;
				tbody.append(
					h(
						'tr',
						{ dataset: { keyId: k.id, revoked: String(k.revoked) } },
						h('th', { scope: 'row', text: k.name + (mine ? ' (this key)' : '') }),
						h('td', { class: 'mono', text: k.id }),
						h('td', { text: k.scope }),
						h('td', {}, when(k.created_at)),
						h('td', {}, k.revoked ? badge('revoked') : badge('active')),
						h('td', {}, k.revoked ? '' : h('button', { type: 'button', class: 'danger small', text: 'Revoke…', 'aria-label': 'Revoke ' + k.name, onclick: () => this.revoke(k) })),
					),
				);
			}
			if (!res.keys.length) tbody.append(h('tr', {}, h('td', { colspan: 6, class: 'muted', text: 'No keys made here yet.' })));
		} catch (e) {
			fail(e);
		}
	},

	async revoke(k) {
		const mine = ui.me && ui.me.key.id === k.id;
		if (!(await confirmDialog('Revoke the key “' + k.name + '”? Everything using it stops within seconds.' + (mine ? ' It is the key this console uses.' : ''), 'Revoke'))) return;
		try {
			await call('DELETE', 'tenant/keys/' + encodeURIComponent(k.id));
			this.load();
		} catch (e) {
			fail(e);
		}
	},
};

$('key-create').addEventListener('submit', async (ev) => {
	ev.preventDefault();
	try {
		const k = await call('POST', 'tenant/keys', { name: $('key-name').value.trim(), scope: $('key-scope').value });
		secretBox($('key-secret'), 'Secret of the new key “' + k.name + '”', k.secret, 'Shown once: copy it now. kiln keeps only its digest.');
		$('key-name').value = '';
		keys.load();
	} catch (e) {
		fail(e);
	}
});

// --- operations ------------------------------------------------------------

const ops = {
	timer: 0,

	async load() {
		clearTimeout(this.timer);
		try {
			const [s, dl] = await Promise.all([call('GET', 'operations'), call('GET', 'dead-letters?limit=50')]);
			ui.ops = s;
			$('ops-at').textContent = 'As of ' + new Date(s.generated_at).toLocaleTimeString() + ' (refreshes every 5 s).';
			const fill = (id, rows, empty) => {
				const tbody = $(id).tBodies[0];
				tbody.textContent = '';
				for (const r of rows) tbody.append(r);
				if (!rows.length) tbody.append(h('tr', {}, h('td', { colspan: $(id).tHead.rows[0].cells.length, class: 'muted', text: empty })));
			};
			fill(
				'ops-queues',
				s.queues.map((q) =>
					h('tr', { dataset: { queue: q.name } }, h('th', { scope: 'row', text: q.name }), [q.pending, q.active, q.scheduled, q.retry, q.archived].map((n) => h('td', { text: n })), h('td', { text: q.pending ? duration(q.oldest_pending_seconds) + ' (' + q.oldest_pending_seconds.toFixed(1) + ' s)' : '–' })),
				),
				s.queues_up ? 'No queues.' : 'The queues cannot be read (Redis).',
			);
			const jobs = $('ops-jobs');
			jobs.textContent = '';
			for (const st of [...STATES, 'failed', 'canceled']) jobs.append(h('dt', { text: st }), h('dd', { text: s.jobs_up ? s.jobs[st] || 0 : '?' }));
			fill(
				'ops-failures',
				s.recent_failures.map((f) =>
					h('tr', { dataset: { code: f.code } }, h('th', { scope: 'row', class: 'mono', text: f.code }), h('td', { text: f.count }), h('td', { class: 'small' }, when(f.last_at), ' ', h('code', { text: f.last_job_id }), h('br'), f.last_message)),
				),
				'No failures among the latest jobs.',
			);
			fill(
				'ops-workers',
				s.workers.map((w) =>
					h('tr', {}, h('th', { scope: 'row', text: w.host }), h('td', { text: w.pid }), h('td', { text: w.status }), h('td', { text: w.active + ' / ' + w.concurrency }), h('td', { class: 'small', text: Object.keys(w.queues || {}).sort().join(', ') }), h('td', {}, when(w.started_at))),
				),
				s.workers_up ? 'No worker has sent a heartbeat.' : 'The workers cannot be read (Redis).',
			);
			const counts = Object.entries(s.dead_letters);
			$('ops-dl-counts').textContent = s.dead_letters_up ? (counts.length ? counts.map(([c, n]) => c + ': ' + n).join(' · ') : 'None.') : 'Cannot be counted (NATS).';
			fill(
				'ops-deadletters',
				dl.dead_letters.map((d) =>
					h('tr', { dataset: { seq: String(d.seq) } }, h('th', { scope: 'row', text: d.seq }), h('td', { text: d.consumer }), h('td', { class: 'mono', text: d.subject }), h('td', { class: 'small', text: d.reason }), h('td', {}, when(d.failed_at)), h('td', {}, h('button', { type: 'button', class: 'secondary small', text: 'Replay', 'aria-label': 'Replay dead letter ' + d.seq, onclick: () => this.replay(d.seq) }))),
				),
				'No dead letters.',
			);
		} catch (e) {
			fail(e);
		}
		if (ui.view === 'operations') this.timer = setTimeout(() => this.load(), 5000);
	},

	async replay(seq) {
		try {
			await call('POST', 'dead-letters/' + seq + '/replay');
			this.load();
		} catch (e) {
			fail(e);
		}
	},
};
$('ops-refresh').addEventListener('click', () => ops.load());

// --- routing ---------------------------------------------------------------

function route() {
	const hash = location.hash || '#/';
	let view = 'library';
	let arg = '';
	let m;
	if ((m = /^#\/assets\/([\w-]+)$/.exec(hash))) [view, arg] = ['asset', m[1]];
	else if (hash === '#/webhooks') view = 'webhooks';
	else if (hash === '#/keys') view = 'keys';
	else if (hash === '#/operations') view = 'operations';
	if (!apiKey) view = 'signin';
	const was = ui.view;
	ui.view = view;
	show($('banner'), '');
	for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== 'view-' + view;
	for (const a of document.querySelectorAll('#nav a')) {
		if (a.dataset.view === (view === 'asset' ? 'library' : view)) a.setAttribute('aria-current', 'page');
		else a.removeAttribute('aria-current');
	}
	if (view !== 'asset') assetPage.close();
	if (view !== 'operations') clearTimeout(ops.timer);
	document.title = 'kiln · ' + (view === 'asset' ? 'asset' : view);
	switch (view) {
		case 'library':
			if (was !== 'library') library.load(true);
			break;
		case 'asset':
			if (assetPage.id !== arg) assetPage.open(arg);
			break;
		case 'webhooks':
			webhooks.load();
			break;
		case 'keys':
			keys.load();
			break;
		case 'operations':
			ops.load();
			break;
	}
	if (was && was !== view) {
		const title = document.querySelector('#view-' + view + ' h1');
		if (title) {
			title.tabIndex = -1;
			title.focus();
		}
	}
}

function start() {
	ui.view = '';
	if (apiKey) {
		whoAmI();
		openStream();
	} else if (stream) {
		stream.abort();
		stream = null;
	}
	route();
}

window.addEventListener('hashchange', route);
start();

// kiln simple upload page (upload.html): POST /v1/uploads (multipart, with upload progress), poll
// GET /v1/jobs/{id} until ready or failed, and play the asset
// (GET /v1/assets/{id}) as soon as the job is playable: while it still
// encodes (playable_at; its playlists grow), else once it is ready. Every API URL is relative to this page (served at <base>/ui/), so the
// UI works behind any public URL or path prefix.
(function () {
	'use strict';

	var KEY_STORAGE = 'kiln.apiKey';
	var POLL_MS = 1000;
	var api = function (path) {
		return new URL('../v1/' + path, document.baseURI).toString();
	};
	var $ = function (id) {
		return document.getElementById(id);
	};

	// Live state for people and tests: window.kilnUI, and window.kilnPlayer
	// once the asset plays. playerStartedIn is the job's state when the
	// player started ('transcoding' or 'packaging' when it played before
	// ready).
	var ui = (window.kilnUI = { jobId: '', assetId: '', state: '', progress: 0, error: null, asset: null, playableAt: '', playerStartedIn: '' });
	var player = null;
	var pollTimer = 0;

	// --- API key ---------------------------------------------------------
	var keyInput = $('api-key');
	try {
		keyInput.value = localStorage.getItem(KEY_STORAGE) || '';
	} catch (e) {
		// storage disabled: the field still works for this page
	}
	keyInput.addEventListener('input', function () {
		try {
			localStorage.setItem(KEY_STORAGE, keyInput.value.trim());
		} catch (e) {
			// ignore
		}
	});
	var key = function () {
		return keyInput.value.trim();
	};

	// --- helpers ---------------------------------------------------------
	var show = function (el, text) {
		el.textContent = text;
		el.hidden = !text;
	};
	var bytes = function (n) {
		var units = ['B', 'kB', 'MB', 'GB', 'TB'];
		var i = 0;
		while (n >= 1000 && i < units.length - 1) {
			n /= 1000;
			i++;
		}
		return (i ? n.toFixed(1) : n) + ' ' + units[i];
	};
	var bitrate = function (bps) {
		if (!bps) return '–';
		return bps >= 1e6 ? (bps / 1e6).toFixed(2) + ' Mb/s' : Math.round(bps / 1e3) + ' kb/s';
	};
	// apiError turns an error body {"error":{code,message}} into text.
	var apiError = function (status, body) {
		var e = body && body.error;
		if (e && e.code) return e.code + ': ' + (e.message || 'HTTP ' + status);
		if (status === 0) return 'network error: the API did not answer';
		return 'HTTP ' + status;
	};
	var getJSON = function (path) {
		return fetch(api(path), {
			headers: { Authorization: 'Bearer ' + key(), Accept: 'application/json' },
			cache: 'no-store',
		}).then(function (resp) {
			return resp.text().then(function (text) {
				var body = null;
				try {
					body = text ? JSON.parse(text) : null;
				} catch (e) {
					// not JSON: reported by status
				}
				return { status: resp.status, body: body };
			});
		});
	};

	// --- upload ----------------------------------------------------------
	var form = $('upload-form');
	var button = $('upload');
	form.addEventListener('submit', function (ev) {
		ev.preventDefault();
		var file = $('file').files[0];
		if (!key()) return show($('upload-error'), 'Enter an API key.');
		if (!file) return show($('upload-error'), 'Choose a file.');
		reset();
		upload(file);
	});

	function reset() {
		clearTimeout(pollTimer);
		clearTimeout(assetTimer);
		if (player) player.destroy();
		player = null;
		window.kilnPlayer = undefined;
		ui.jobId = ui.assetId = ui.state = ui.playableAt = ui.playerStartedIn = '';
		ui.progress = 0;
		ui.error = ui.asset = null;
		show($('upload-error'), '');
		$('job').hidden = true;
		$('asset').hidden = true;
	}

	function upload(file) {
		var q = new URLSearchParams({ preset: $('preset').value, playback_policy: $('policy').value });
		var data = new FormData();
		data.append('file', file, file.name);
		var xhr = new XMLHttpRequest();
		xhr.open('POST', api('uploads?' + q.toString()));
		xhr.setRequestHeader('Authorization', 'Bearer ' + key());
		xhr.responseType = 'json';
		var bar = $('upload-progress');
		var text = $('upload-text');
		$('upload-status').hidden = false;
		bar.value = 0;
		text.textContent = 'Uploading ' + file.name + ' (' + bytes(file.size) + ')…';
		button.disabled = true;
		xhr.upload.addEventListener('progress', function (e) {
			if (!e.lengthComputable) return;
			bar.value = e.loaded / e.total;
			text.textContent =
				'Uploading ' + file.name + ': ' + bytes(e.loaded) + ' of ' + bytes(e.total) + ' (' + Math.floor((100 * e.loaded) / e.total) + '%)';
		});
		xhr.addEventListener('loadend', function () {
			button.disabled = false;
			var body = xhr.response;
			if (xhr.status !== 202 || !body || !body.job_id) {
				bar.value = 0;
				text.textContent = 'Upload failed.';
				ui.error = apiError(xhr.status, body);
				show($('upload-error'), ui.error);
				return;
			}
			bar.value = 1;
			text.textContent = 'Uploaded ' + file.name + ' (' + bytes(file.size) + ').';
			follow(body.job_id, body.asset_id);
		});
		xhr.send(data);
	}

	// --- job -------------------------------------------------------------
	var steps = ['queued', 'probing', 'transcoding', 'packaging', 'ready'];

	function follow(jobId, assetId) {
		ui.jobId = jobId;
		ui.assetId = assetId || '';
		history.replaceState(null, '', '#job=' + encodeURIComponent(jobId));
		$('job-id').textContent = jobId;
		$('job').hidden = false;
		setState('queued', 0, null);
		poll(0);
	}

	function setState(state, progress, err) {
		ui.state = state;
		ui.progress = progress;
		var badge = $('job-state');
		badge.textContent = state;
		badge.dataset.state = state;
		var overall = state === 'ready' ? 1 : Math.max(0, steps.indexOf(state)) / (steps.length - 1) + progress / (steps.length - 1);
		$('job-progress').value = state === 'failed' ? 0 : overall;
		$('job-percent').textContent =
			state === 'ready' || state === 'failed' ? '' : Math.round(100 * progress) + '% of this step' + (ui.playableAt ? ' · playing while it encodes' : '');
		var at = steps.indexOf(state);
		document.querySelectorAll('#job-steps li').forEach(function (li, i) {
			li.className = state === 'failed' ? '' : i < at || state === 'ready' ? 'done' : i === at ? 'current' : '';
		});
		ui.error = err ? err.code + ': ' + err.message : null;
		show($('job-error'), ui.error ? 'Failed — ' + ui.error : '');
	}

	function poll(misses) {
		getJSON('jobs/' + encodeURIComponent(ui.jobId))
			.then(function (r) {
				if (r.status === 404 && misses < 30) {
					// The catalog records the job asynchronously: not there yet.
					pollTimer = setTimeout(poll, POLL_MS, misses + 1);
					return;
				}
				if (r.status !== 200) {
					show($('job-error'), 'Cannot read the job: ' + apiError(r.status, r.body));
					return;
				}
				var j = r.body;
				if (j.asset_id) ui.assetId = j.asset_id;
				var ended = j.state === 'failed' || j.state === 'canceled';
				ui.playableAt = ended ? '' : j.playable_at || '';
				setState(j.state, j.progress || 0, j.error);
				if (ended && player) {
					// It played while encoding, and will not be finished.
					player.destroy();
					player = null;
					window.kilnPlayer = undefined;
				}
				if (j.state === 'ready') return loadAsset(0);
				// Playable before ready: start playing now (the media
				// playlists grow while the encode goes on), keep following.
				if (ui.playableAt && !player && !loading) loadAsset(0);
				if (!ended) pollTimer = setTimeout(poll, POLL_MS, 0);
			})
			.catch(function (e) {
				show($('job-error'), 'Cannot reach the API (' + e.message + '), retrying…');
				pollTimer = setTimeout(poll, 3 * POLL_MS, misses);
			});
	}

	// --- asset -----------------------------------------------------------
	// loading: an asset request (of a playable job) is under way.
	var loading = false;
	var assetTimer = 0;

	// loadAsset shows the asset, playable or ready. Once ready, it looks
	// again for a while until the MP4 download (built after ready) is there.
	function loadAsset(tries) {
		clearTimeout(assetTimer);
		loading = true;
		var forJob = ui.jobId;
		getJSON('assets/' + encodeURIComponent(ui.assetId)).then(function (r) {
			loading = false;
			if (ui.jobId !== forJob) return; // another upload started meanwhile
			if (r.status !== 200 || !r.body.playback) {
				if (ui.state !== 'ready') return; // not playable yet: the job poll asks again
				if (tries < 10) {
					assetTimer = setTimeout(loadAsset, POLL_MS, tries + 1);
				} else {
					show($('job-error'), 'Cannot read the asset: ' + apiError(r.status, r.body));
				}
				return;
			}
			showAsset(r.body);
			if (r.body.state === 'ready' && !r.body.playback.mp4 && tries < 30) {
				assetTimer = setTimeout(loadAsset, 2 * POLL_MS, tries + 1);
			}
		});
	}

	// showAsset shows a's links and renditions, and starts the player the
	// first time (a player started while encoding goes on playing: its
	// playlists end when the asset is ready).
	function showAsset(a) {
		ui.asset = a;
		$('asset-id').textContent = a.id;
		$('asset').hidden = false;
		var pb = a.playback;
		$('hls-link').href = pb.hls;
		$('player-link').href = 'player.html?src=' + encodeURIComponent(pb.hls);
		$('mp4-link').hidden = !pb.mp4;
		if (pb.mp4) $('mp4-link').href = pb.mp4;
		$('poster-figure').hidden = !pb.poster;
		if (pb.poster) $('poster').src = pb.poster;

		var tbody = $('renditions').tBodies[0];
		tbody.textContent = '';
		(a.renditions || [])
			.slice()
			.sort(function (x, y) {
				return y.height - x.height;
			})
			.forEach(function (r) {
				var tr = tbody.insertRow();
				[r.name, r.width + '×' + r.height, r.frame_rate ? +r.frame_rate.toFixed(3) : '–', bitrate(r.bandwidth), bitrate(r.average_bandwidth), r.codecs].forEach(
					function (v) {
						tr.insertCell().textContent = v;
					},
				);
			});

		if (player) return;
		ui.playerStartedIn = ui.state;
		var perr = $('player-error');
		player = window.KilnPlayer.attach($('video'), pb.hls, {
			onChange: function (s) {
				show(perr, s.error ? 'Playback error: ' + s.error : '');
			},
		});
		window.kilnPlayer = player.state;
		if (pb.poster) $('video').poster = pb.poster;
	}

	// Reloading the page keeps following the job in the address (#job=…).
	var m = /^#job=([\w-]+)$/.exec(location.hash);
	if (m && key()) follow(decodeURIComponent(m[1]), '');
})();

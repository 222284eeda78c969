// kiln player: plays an HLS or MP4 URL in a <video> element and keeps a
// plain state object up to date (read by the pages and by browser tests).
//
// HLS: hls.js (vendor/hls.min.js) whenever the browser has MediaSource (or
// ManagedMediaSource), native HLS (older iOS) otherwise. hls.js goes first
// because it is what every MediaSource browser plays the same way; the
// native player (Chromium 156 answers "maybe" to
// canPlayType('application/vnd.apple.mpegurl') and plays kiln's playlists)
// runs in CORS mode, since segments come from the storage origin or a CDN.
// ?engine=native forces it.
// MP4: plain <video src>.
(function () {
	'use strict';

	function isMP4(src) {
		try {
			return new URL(src, location.href).pathname.toLowerCase().endsWith('.mp4');
		} catch (e) {
			return false;
		}
	}

	function nativeHLS(video) {
		return video.canPlayType('application/vnd.apple.mpegurl') !== '';
	}

	function hlsjsSupported() {
		return typeof window.Hls !== 'undefined' && window.Hls.isSupported();
	}

	var mediaErrors = {
		1: 'playback aborted',
		2: 'network error while loading the media',
		3: 'the media could not be decoded',
		4: 'the media format or URL is not supported',
	};

	// attach(video, src, {engine: 'auto'|'hls.js'|'native', onChange(state)})
	// returns {state, hls, destroy()}; hls is the hls.js instance (null for
	// the other engines), for a quality menu.
	function attach(video, src, opts) {
		opts = opts || {};
		var state = {
			src: src,
			engine: '',
			ready: false,
			playing: false,
			ended: false,
			error: null,
			currentTime: 0,
			duration: 0,
			autoplayBlocked: false,
			warnings: 0,
		};
		var hls = null;
		var recovered = false;
		var changed = function () {
			if (opts.onChange) opts.onChange(state);
		};
		var fail = function (msg) {
			if (state.error) return;
			state.error = msg;
			state.playing = false;
			changed();
		};

		var on = {
			loadedmetadata: function () {
				state.duration = video.duration;
			},
			loadeddata: function () {
				state.ready = true;
			},
			canplay: function () {
				state.ready = true;
			},
			playing: function () {
				state.playing = true;
				state.ended = false;
			},
			pause: function () {
				state.playing = false;
			},
			ended: function () {
				state.playing = false;
				state.ended = true;
			},
			timeupdate: function () {
				state.currentTime = video.currentTime;
			},
			durationchange: function () {
				state.duration = video.duration;
			},
			error: function () {
				var e = video.error;
				if (!e) return;
				fail('media error ' + e.code + ': ' + (e.message || mediaErrors[e.code] || 'unknown'));
			},
		};
		Object.keys(on).forEach(function (name) {
			video.addEventListener(name, function () {
				on[name]();
				changed();
			});
		});

		var play = function () {
			var p = video.play();
			if (p && p.catch) {
				p.catch(function (err) {
					// Autoplay refused (no user gesture): not an error, the
					// controls are there.
					if (err && err.name === 'NotAllowedError') {
						state.autoplayBlocked = true;
						changed();
					}
				});
			}
		};

		var want = opts.engine || 'auto';
		var protocol = '';
		try {
			protocol = new URL(src, location.href).protocol;
		} catch (e) {
			// leave it empty: refused below
		}
		if (protocol !== 'http:' && protocol !== 'https:') {
			fail('only http(s) URLs can be played');
		} else if (isMP4(src)) {
			state.engine = 'mp4';
			video.src = src;
			play();
		} else if (want === 'hls.js' || (want === 'auto' && hlsjsSupported())) {
			if (!hlsjsSupported()) {
				fail('hls.js is not supported in this browser (no MediaSource)');
			} else {
				state.engine = 'hls.js';
				// startPosition 0: a playlist still being encoded (EVENT, no
				// ENDLIST) is live to hls.js, which would start near its end;
				// kiln's always play from the start.
				hls = new window.Hls({ capLevelToPlayerSize: true, startPosition: 0 });
				hls.on(window.Hls.Events.ERROR, function (_, data) {
					if (!data.fatal) {
						state.warnings++;
						return;
					}
					if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR && !recovered) {
						recovered = true; // one recovery attempt, then give up
						hls.recoverMediaError();
						return;
					}
					var detail = data.details || 'unknown';
					if (data.response && data.response.code) detail += ' (HTTP ' + data.response.code + ')';
					fail('hls.js ' + data.type + ': ' + detail);
				});
				hls.on(window.Hls.Events.MANIFEST_PARSED, play);
				hls.loadSource(src);
				hls.attachMedia(video);
			}
		} else if (nativeHLS(video)) {
			state.engine = 'native';
			// Media playlists list segments on the storage origin (or a CDN):
			// a native player fetches media from another origin only in CORS
			// mode, which the outputs bucket allows.
			video.crossOrigin = 'anonymous';
			video.src = src;
			play();
		} else {
			fail('this browser cannot play HLS (no MediaSource and no native HLS)');
		}
		changed();

		return {
			state: state,
			hls: hls,
			destroy: function () {
				if (hls) hls.destroy();
				video.removeAttribute('src');
				video.load();
			},
		};
	}

	window.KilnPlayer = { attach: attach, isMP4: isMP4 };
})();

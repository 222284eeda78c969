// player.html?src=<url>[&engine=auto|hls.js|native]: a bare player. The
// live state is window.kilnPlayer ({ready, error, currentTime, engine, …});
// errors are also shown in #error.
(function () {
	'use strict';
	var params = new URLSearchParams(location.search);
	var src = params.get('src');
	var video = document.getElementById('video');
	var status = document.getElementById('status');
	var errorEl = document.getElementById('error');

	function show(state) {
		var t = state.currentTime.toFixed(1) + ' s';
		if (isFinite(state.duration) && state.duration > 0) t += ' / ' + state.duration.toFixed(1) + ' s';
		status.textContent = (state.engine || '–') + ' · ' + (state.playing ? 'playing' : state.ready ? 'ready' : 'loading') + ' · ' + t;
		if (state.error) {
			errorEl.textContent = state.error;
			errorEl.hidden = false;
		}
	}

	if (!src) {
		window.kilnPlayer = { ready: false, error: 'missing ?src=<url>', currentTime: 0 };
		errorEl.textContent = 'Nothing to play: add ?src=<HLS or MP4 URL> to the address.';
		errorEl.hidden = false;
		return;
	}
	var p = window.KilnPlayer.attach(video, src, { engine: params.get('engine') || 'auto', onChange: show });
	window.kilnPlayer = p.state;
	document.title = 'kiln player · ' + src.split('?')[0].split('/').slice(-2).join('/');
})();

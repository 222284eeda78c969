package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// consoleRun drives the web console in one chromium tab.
type consoleRun struct {
	t   *testing.T
	ctx context.Context
	s   stack
}

// eval evaluates expr in the page.
func eval[T any](c *consoleRun, expr string) T {
	c.t.Helper()
	v, err := chromedp.Run(c.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		c.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// wait polls expr (a boolean JS expression) until it holds, failing after
// timeout with the console's state and the page's text.
func (c *consoleRun) wait(what, expr string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !eval[bool](c, expr) {
		if time.Now().After(deadline) {
			st := eval[string](c, `JSON.stringify({view: kilnConsole.view, live: kilnConsole.live, rows: kilnConsole.rows, uploads: kilnConsole.uploads.map(u => [u.name, u.state, u.error]), errors: kilnConsole.errors, job: kilnConsole.job && [kilnConsole.job.state, kilnConsole.job.attempt]})`)
			c.t.Fatalf("timed out after %s waiting for %s\nkilnConsole: %s\npage: %s", timeout, what, st, pageText(c.ctx))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// open shows a view by its address (#/…), in the same document.
func (c *consoleRun) open(hash string) {
	c.t.Helper()
	eval[bool](c, `location.hash = '`+hash+`', true`)
}

func (c *consoleRun) do(actions ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	if err := chromedp.Do(c.ctx, actions...); err != nil {
		c.t.Fatalf("%v\npage: %s", err, pageText(c.ctx))
	}
}

// replayReceiver is a webhook endpoint on 127.0.0.1 that accepts every
// delivery and counts them per webhook-id.
type replayReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	ids map[string]int
}

func newReplayReceiver(t *testing.T) *replayReceiver {
	r := &replayReceiver{ids: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.mu.Lock()
		r.ids[req.Header.Get("webhook-id")]++
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *replayReceiver) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

// TestConsole drives the web console like a person, in headless chromium
// against the stack: enters the key; registers a webhook endpoint; uploads
// two files at once and watches both reach playable in the library, live,
// without a reload; searches and filters the library; opens an asset,
// plays it, reads its renditions, decisions and URLs, and sees a storyboard
// scrub preview; plays a signed asset with its token and mints a new one;
// uploads a long file, cancels it, retries it, cancels and
// deletes it (confirming in a dialog); replays a webhook delivery; creates
// and revokes an API key; reads the operations view and replays a dead
// letter there (a forged fact the intake refused). Another tenant
// sees none of it. Screenshots of every view go to KILN_TEST_SCREENSHOT_DIR
// when it is set.
func TestConsole(t *testing.T) {
	s := needStack(t)
	ctx := browser(t)
	c := &consoleRun{t: t, ctx: ctx, s: s}
	tag := make([]byte, 3)
	_, _ = rand.Read(tag)
	run := "console-" + hex.EncodeToString(tag) // this run's file names
	one, two := makeClip(t, run+" one.mp4", 6, "640x360"), makeClip(t, run+" two.mp4", 4, "480x270")
	long := makeClip(t, run+" long.mp4", 40, "640x360")
	signed := makeClip(t, run+" signed.mp4", 3, "320x180")
	rcv := newReplayReceiver(t)
	t.Cleanup(func() { // the endpoint goes with the test (t.Context() is canceled by now)
		var list struct {
			Webhooks []struct{ ID, URL string } `json:"webhooks"`
		}
		req, _ := http.NewRequest(http.MethodGet, s.APIURL+"/v1/webhooks", nil)
		req.Header.Set("Authorization", "Bearer "+s.APIKey)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&list)
			resp.Body.Close()
		}
		for _, ep := range list.Webhooks {
			if strings.HasPrefix(ep.URL, rcv.srv.URL) {
				req, _ := http.NewRequest(http.MethodDelete, s.APIURL+"/v1/webhooks/"+ep.ID, nil)
				req.Header.Set("Authorization", "Bearer "+s.APIKey)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}
	})

	// Signing in: the key goes in the header form, the library opens live.
	c.do(chromedp.Navigate(s.APIURL+"/ui/"), chromedp.WaitVisible(chromedp.ID("view-signin")))
	screenshot(t, ctx, "console-signin.png")
	c.do(chromedp.SendKeys(chromedp.ID("api-key"), s.APIKey), chromedp.Click(chromedp.CSS(`#key-form button`)))
	c.wait("the library, live", `kilnConsole.view === 'library' && kilnConsole.live && !document.getElementById('view-library').hidden`, 30*time.Second)
	c.wait("who am I", `!!kilnConsole.me && !document.getElementById('nav-ops').hidden`, 10*time.Second)
	eval[bool](c, `window.sameDocument = true`) // a reload would lose it

	// A webhook endpoint, before the uploads: their events are delivered.
	c.open("#/webhooks")
	c.do(chromedp.WaitVisible(chromedp.ID("webhook-url")))
	c.do(chromedp.SendKeys(chromedp.ID("webhook-url"), rcv.srv.URL+"/hook"), chromedp.Click(chromedp.CSS(`#webhook-form button[type=submit]`)))
	c.wait("the endpoint's secret, shown once", `!document.getElementById('webhook-secret').hidden && document.querySelector('#webhook-secret code').textContent.startsWith('whsec_')`, 10*time.Second)
	c.wait("the endpoint listed", `document.querySelectorAll('#endpoints article.endpoint').length >= 1`, 10*time.Second)

	// Two files at once; both appear at once and reach playable live.
	c.open("#/")
	c.do(chromedp.WaitVisible(chromedp.ID("drop")))
	// From 500 kB here (64 MB by default) files go up as resumable multipart
	// direct uploads, straight to storage: "one" does, "two" is posted.
	eval[bool](c, `localStorage.setItem('kiln.multipartFrom', '500000'), true`)
	c.do(chromedp.SetUploadFiles(chromedp.ID("files"), []string{one, two}))
	c.wait("both uploads accepted", `kilnConsole.uploads.filter(u => u.jobId).length === 2`, 2*time.Minute)
	if !eval[bool](c, `kilnConsole.uploads.find(u => u.name.includes('one')).multipart && !kilnConsole.uploads.find(u => u.name.includes('two')).multipart`) {
		t.Error("the uploads did not take the multipart and the simple path")
	}
	eval[bool](c, `localStorage.removeItem('kiln.multipartFrom'), true`)
	ids := eval[[]string](c, `kilnConsole.uploads.map(u => u.jobId)`)
	for _, id := range ids {
		c.wait("the upload's row", `!!document.querySelector('#library tr[data-job-id="`+id+`"]')`, 30*time.Second)
	}
	c.wait("a stage shown while they run", `kilnConsole.events > 1`, jobTimeout)
	screenshot(t, ctx, "console-library-uploading.png")
	for _, id := range ids {
		c.wait("playable in the library: "+id, `document.querySelector('#library tr[data-job-id="`+id+`"]').dataset.playable === 'true'`, jobTimeout)
	}
	for _, id := range ids {
		c.wait("ready in the library: "+id, `document.querySelector('#library tr[data-job-id="`+id+`"]').dataset.state === 'ready'`, jobTimeout)
	}
	if !eval[bool](c, `window.sameDocument === true`) {
		t.Fatal("the page was reloaded")
	}
	c.wait("the posters", `[...document.querySelectorAll('#library tbody tr')].slice(0, 2).every(r => r.querySelector('img') && r.querySelector('img').naturalWidth > 0)`, 30*time.Second)
	screenshot(t, ctx, "console-library.png")

	// Search and filter (the API's q and state).
	c.do(chromedp.SendKeys(chromedp.ID("search"), run+" TWO"))
	c.wait("the search", `document.querySelectorAll('#library tbody tr').length === 1 && document.querySelector('#library tbody tr a').textContent.includes('two')`, 10*time.Second)
	c.do(chromedp.SetValue(chromedp.ID("search"), run))
	eval[bool](c, `(f => (f.value = 'failed', f.dispatchEvent(new Event('change')), true))(document.getElementById('state-filter'))`)
	c.wait("the state filter", `document.querySelectorAll('#library tbody tr[data-job-id]').length === 0 && !document.getElementById('library-empty').hidden`, 10*time.Second)
	eval[bool](c, `(f => (f.selectedIndex = 0, f.dispatchEvent(new Event('change')), true))(document.getElementById('state-filter'))`)
	c.wait("both again", `document.querySelectorAll('#library tbody tr[data-job-id]').length === 2`, 10*time.Second)

	// The asset page: plays, with quality menu, renditions, decisions,
	// URLs, the MP4 download and a scrub preview from the storyboard.
	c.do(chromedp.Click(chromedp.CSS(`#library tr[data-job-id="` + ids[0] + `"] td.file a`)))
	c.wait("the asset page", `kilnConsole.view === 'asset' && !!kilnConsole.asset && !!window.kilnPlayer`, 30*time.Second)
	st := waitPlayed(t, ctx)
	t.Logf("asset page plays with %s at %.1f s of %.1f s", st.Engine, st.CurrentTime, st.Duration)
	c.wait("the quality menu", `document.getElementById('quality').options.length > 2 && !document.getElementById('quality').disabled`, 10*time.Second)
	c.wait("the MP4 download", `!!document.getElementById('mp4-link') && document.getElementById('mp4-link').href.includes('/download.mp4')`, 60*time.Second)
	if !eval[bool](c, `document.querySelectorAll('#renditions tbody tr[data-rendition]').length >= 2 &&
		[...document.querySelectorAll('#renditions tbody tr[data-rendition]')].every(r => r.dataset.state === 'ready' && /b\/s/.test(r.cells[2].textContent)) &&
		document.querySelectorAll('#decisions li:not(.muted)').length === (kilnConsole.job.plan.decisions || []).length &&
		[...document.querySelectorAll('#urls code.url')].some(e => e.textContent.endsWith('/master.m3u8')) &&
		document.querySelectorAll('#urls button').length >= 2`) {
		t.Fatalf("asset page details missing:\n%s", pageText(ctx))
	}
	// The plan's decisions are the API's.
	var planned struct {
		Plan struct {
			Decisions []string `json:"decisions"`
		} `json:"plan"`
	}
	if code := s.do(t, http.MethodGet, "/v1/jobs/"+ids[0], nil, "", &planned); code != http.StatusOK {
		t.Fatalf("GET job: %d", code)
	}
	if shown := eval[[]string](c, `[...document.querySelectorAll('#decisions li:not(.muted)')].map(li => li.textContent)`); strings.Join(shown, "|") != strings.Join(planned.Plan.Decisions, "|") {
		t.Errorf("decisions shown %q, planned %q", shown, planned.Plan.Decisions)
	}
	c.do(chromedp.SetValue(chromedp.ID("quality"), "0"))
	eval[bool](c, `document.getElementById('quality').dispatchEvent(new Event('change')), true`)
	c.wait("the storyboard", `kilnConsole.storyboard > 1 && !document.getElementById('scrubber').hidden`, 30*time.Second)
	box := eval[[]float64](c, `(r => [r.left, r.top, r.width, r.height])(document.getElementById('scrub').getBoundingClientRect())`)
	x, y := box[0]+box[2]*0.8, box[1]+box[3]/2
	c.do(chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, x-5, y), chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, x, y))
	c.wait("the scrub preview", `!document.getElementById('scrub-preview').hidden && !!kilnConsole.scrub && kilnConsole.scrub.time > 2`, 10*time.Second)
	sprite, err := chromedp.Run(ctx, chromedp.Evaluate[int](`new Promise((ok, bad) => { const i = new Image(); i.onload = () => ok(i.naturalWidth); i.onerror = () => bad(new Error('sprite did not load: ' + i.src)); i.src = kilnConsole.scrub.image; })`, chromedp.EvalAwaitPromise))
	if err != nil || sprite == 0 {
		t.Fatalf("the preview's sprite: %d, %v", sprite, err)
	}
	if img := eval[string](c, `getComputedStyle(document.getElementById('scrub-image')).backgroundImage`); !strings.Contains(img, "/thumbnails/") {
		t.Errorf("preview image %q, want a thumbnails sprite", img)
	}
	screenshot(t, ctx, "console-asset.png")

	// A signed asset: its URLs carry a token for this write key, the player
	// plays with it, and a new token can be minted.
	c.open("#/")
	c.do(chromedp.WaitVisible(chromedp.ID("drop")))
	eval[bool](c, `(p => (p.value = 'signed', true))(document.getElementById('policy'))`)
	c.do(chromedp.SetUploadFiles(chromedp.ID("files"), []string{signed}))
	c.wait("the signed upload accepted", `kilnConsole.uploads.filter(u => u.jobId).length === 3`, 2*time.Minute)
	eval[bool](c, `(p => (p.value = 'public', true))(document.getElementById('policy'))`)
	signedJob := eval[string](c, `kilnConsole.uploads.find(u => u.name.includes('signed')).jobId`)
	c.wait("the signed asset playable", `document.querySelector('#library tr[data-job-id="`+signedJob+`"]').dataset.playable === 'true'`, jobTimeout)
	c.do(chromedp.Click(chromedp.CSS(`#library tr[data-job-id="` + signedJob + `"] td.file a`)))
	c.wait("the signed asset's token", `kilnConsole.view === 'asset' && !!kilnConsole.asset && kilnConsole.asset.playback_policy === 'signed' &&
		!!kilnConsole.asset.playback && kilnConsole.asset.playback.hls.includes('token=') && !!kilnConsole.asset.playback_token_expires_at &&
		!document.getElementById('token-info').hidden && !document.getElementById('new-token').hidden`, 30*time.Second)
	st = waitPlayed(t, ctx)
	t.Logf("signed asset plays with %s at %.1f s", st.Engine, st.CurrentTime)
	c.do(chromedp.Click(chromedp.ID("new-token")))
	c.wait("a new token", `[...document.querySelectorAll('#urls dt')].some(d => d.textContent === 'Token')`, 10*time.Second)
	screenshot(t, ctx, "console-asset-signed.png")

	// A long upload: cancel it, retry it, cancel it again, delete it.
	c.open("#/")
	c.do(chromedp.WaitVisible(chromedp.ID("drop")))
	c.do(chromedp.SetUploadFiles(chromedp.ID("files"), []string{long}))
	c.wait("the long upload accepted", `kilnConsole.uploads.filter(u => u.jobId).length === 4`, 2*time.Minute)
	longJob := eval[string](c, `kilnConsole.uploads.find(u => u.name.includes('long')).jobId`)
	c.do(chromedp.Click(chromedp.CSS(`#library tr[data-job-id="` + longJob + `"] td.file a`)))
	c.wait("the cancel button", `kilnConsole.view === 'asset' && !!kilnConsole.job && !document.getElementById('act-cancel').hidden`, 60*time.Second)
	c.do(chromedp.Click(chromedp.ID("act-cancel")))
	c.wait("canceled, live", `kilnConsole.job.state === 'canceled' && document.getElementById('asset-state').textContent === 'canceled' && !document.getElementById('act-retry').hidden`, 2*time.Minute)
	screenshot(t, ctx, "console-asset-canceled.png")
	c.do(chromedp.Click(chromedp.ID("act-retry")))
	c.wait("the retry running", `kilnConsole.job.attempt === 2 && !['canceled', 'failed'].includes(kilnConsole.job.state) && !document.getElementById('act-cancel').hidden`, time.Minute)
	c.do(chromedp.Click(chromedp.ID("act-cancel")))
	c.wait("canceled again", `kilnConsole.job.state === 'canceled' && !document.getElementById('act-delete').hidden`, 2*time.Minute)
	c.do(chromedp.Click(chromedp.ID("act-delete")), chromedp.WaitVisible(chromedp.ID("confirm-yes")))
	screenshot(t, ctx, "console-delete-confirm.png")
	c.do(chromedp.Click(chromedp.ID("confirm-no")))
	if eval[bool](c, `kilnConsole.view !== 'asset' || document.getElementById('asset-state').textContent !== 'canceled'`) {
		t.Fatal("keeping it deleted it")
	}
	c.do(chromedp.Click(chromedp.ID("act-delete")), chromedp.WaitVisible(chromedp.ID("confirm-yes")), chromedp.Click(chromedp.ID("confirm-yes")))
	c.wait("back in the library without it", `kilnConsole.view === 'library' && !document.querySelector('#library tr[data-job-id="`+longJob+`"]')`, 30*time.Second)
	var gone apiError
	if code := s.do(t, http.MethodGet, "/v1/jobs/"+longJob, nil, "", &gone); code != http.StatusNotFound {
		t.Errorf("the deleted job: %d, want 404", code)
	}

	// Webhooks: the deliveries of the uploads are logged; replay one.
	c.open("#/webhooks")
	c.wait("the delivery log", `document.querySelectorAll('#endpoints table.deliveries tbody tr').length >= 2`, time.Minute)
	eventID := eval[string](c, `document.querySelector('#endpoints table.deliveries tbody tr').dataset.eventId`)
	before := rcv.count(eventID)
	if before == 0 {
		t.Fatalf("the receiver never saw %s", eventID)
	}
	c.do(chromedp.Click(chromedp.CSS(`#endpoints table.deliveries tbody tr button`)))
	c.wait("the replay confirmed", `kilnConsole.replayed === 1 && !document.querySelector('#endpoints p.ok').hidden`, 30*time.Second)
	eventually(t, time.Minute, "the replayed delivery at the receiver", func() bool { return rcv.count(eventID) > before })
	c.wait("the replay in the log", `[...document.querySelectorAll('#endpoints table.deliveries tbody tr')].filter(r => r.dataset.eventId === '`+eventID+`').length >= 2`, time.Minute)
	screenshot(t, ctx, "console-webhooks.png")

	// API keys: create one (its secret shown once, and working), revoke it.
	c.open("#/keys")
	c.do(chromedp.WaitVisible(chromedp.ID("key-name")))
	c.do(chromedp.SendKeys(chromedp.ID("key-name"), run+"-reader"), chromedp.SetValue(chromedp.ID("key-scope"), "read"),
		chromedp.Click(chromedp.CSS(`#key-create button[type=submit]`)))
	c.wait("the new key's secret", `!document.getElementById('key-secret').hidden`, 10*time.Second)
	secret := eval[string](c, `document.querySelector('#key-secret code').textContent`)
	reader := s
	reader.APIKey = secret
	if code := reader.do(t, http.MethodGet, "/v1/jobs?q="+url.QueryEscape(run), nil, "", nil); code != http.StatusOK {
		t.Fatalf("the new key: %d", code)
	}
	keyID := eval[string](c, `[...document.querySelectorAll('#keys tbody tr')].find(r => r.cells[0].textContent === '`+run+`-reader').dataset.keyId`)
	screenshot(t, ctx, "console-keys.png")

	// Another tenant sees nothing of this one's.
	if s.AdminKey != "" {
		admin := adminCLI(t, s)
		other := s
		other.APIKey = admin("keys", "create", admin("tenants", "create", run+"-other"), "--name", "ci")
		var page struct {
			Jobs []jobView `json:"jobs"`
		}
		if code := other.do(t, http.MethodGet, "/v1/jobs?q="+url.QueryEscape(run), nil, "", &page); code != http.StatusOK || len(page.Jobs) != 0 {
			t.Errorf("another tenant searches this one's: %d %+v", code, page.Jobs)
		}
		if code := other.do(t, http.MethodDelete, "/v1/tenant/keys/"+keyID, nil, "", nil); code != http.StatusNotFound {
			t.Errorf("another tenant revokes this one's key: %d, want 404", code)
		}
		if code := other.do(t, http.MethodGet, "/v1/operations", nil, "", nil); code != http.StatusForbidden {
			t.Errorf("another tenant reads the operations: %d, want 403", code)
		}
	}

	c.do(chromedp.Click(chromedp.CSS(`#keys tr[data-key-id="`+keyID+`"] button`)), chromedp.WaitVisible(chromedp.ID("confirm-yes")), chromedp.Click(chromedp.ID("confirm-yes")))
	c.wait("revoked", `document.querySelector('#keys tr[data-key-id="`+keyID+`"]').dataset.revoked === 'true'`, 10*time.Second)
	eventually(t, time.Minute, "the revoked key refused", func() bool {
		return reader.do(t, http.MethodGet, "/v1/jobs", nil, "", nil) == http.StatusUnauthorized
	})

	// A dead letter: an "object landed" fact of a bucket that is not the
	// sources bucket, as the ingest user may publish it; the intake refuses
	// it for good (wrong_bucket) and dead-letters it.
	type deadLetter struct {
		Seq      uint64 `json:"seq"`
		Consumer string `json:"consumer"`
	}
	listDead := func() []deadLetter {
		var page struct {
			DeadLetters []deadLetter `json:"dead_letters"`
		}
		if code := s.do(t, http.MethodGet, "/v1/dead-letters?consumer=ingest&limit=100", nil, "", &page); code != http.StatusOK {
			t.Fatalf("GET /v1/dead-letters: %d", code)
		}
		return page.DeadLetters
	}
	var lastSeq uint64
	for _, d := range listDead() {
		lastSeq = max(lastSeq, d.Seq)
	}
	forged, _ := proto.Marshal(&kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Bucket: "not-" + run, Key: "uploads/x/forged.mp4", Etag: "e1"}, Origin: "api"})
	nc := testenv.NATSConn(t, bus.UserIngest)
	if err := nc.Publish(bus.SubjectObjectLanded, forged); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	var dead uint64
	eventually(t, time.Minute, "the forged fact dead-lettered", func() bool {
		for _, d := range listDead() {
			if d.Seq > lastSeq {
				dead = d.Seq
				return true
			}
		}
		return false
	})
	seqSel := `#ops-deadletters tr[data-seq="` + strconv.FormatUint(dead, 10) + `"]`

	// Operations: the stage queues, workers, jobs and failures; the dead
	// letter, replayed with its button.
	c.open("#/operations")
	c.wait("the operations view", `!!kilnConsole.ops && kilnConsole.ops.queues_up && document.querySelectorAll('#ops-queues tbody tr[data-queue]').length >= 3 &&
		document.querySelectorAll('#ops-workers tbody tr').length >= 1 && !document.querySelector('#ops-workers tbody td.muted')`, 30*time.Second)
	if !eval[bool](c, `['probe', 'transcode', 'package'].every(q => !!document.querySelector('#ops-queues tr[data-queue="' + q + '"]')) && kilnConsole.ops.jobs_up && kilnConsole.ops.jobs.ready >= 2`) {
		t.Errorf("operations view: %s", pageText(ctx))
	}
	c.wait("the dead letter listed", `!!document.querySelector('`+seqSel+`')`, 30*time.Second)
	screenshot(t, ctx, "console-operations.png")
	c.do(chromedp.Click(chromedp.CSS(seqSel + ` button`)))
	c.wait("the dead letter replayed", `!document.querySelector('`+seqSel+`') && document.querySelectorAll('#ops-deadletters tr[data-seq]').length >= 1`, 30*time.Second)
	if code := s.do(t, http.MethodGet, "/v1/dead-letters/"+strconv.FormatUint(dead, 10), nil, "", nil); code != http.StatusNotFound {
		t.Errorf("the replayed dead letter %d: %d, want 404 (replayed and deleted)", dead, code)
	}
	// Replayed to its subject, the intake refused it again: a new one.
	eventually(t, time.Minute, "the replayed fact dead-lettered again", func() bool {
		for _, d := range listDead() {
			if d.Seq > dead {
				return true
			}
		}
		return false
	})

	// On a phone.
	c.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	c.open("#/")
	c.wait("the library on a phone", `kilnConsole.view === 'library' && document.querySelectorAll('#library tbody tr[data-job-id]').length >= 2`, 30*time.Second)
	if w := eval[float64](c, `document.documentElement.scrollWidth`); w > 400 {
		t.Errorf("the library is %.0f px wide on a 390 px phone", w)
	}
	screenshot(t, ctx, "console-library-phone.png")
	if errs := eval[[]string](c, `kilnConsole.errors`); len(errs) > 0 {
		t.Errorf("the console reported errors: %v", errs)
	}
}

package catalog_test

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/internal/jobid"
)

// FuzzPlaybackToken fuzzes the playback token's key, asset, expiry, clock and
// the token text itself. Seeds: tokens minted for a real asset id (valid,
// expired, for another asset, with another key), a forged expiry, and
// malformed shapes (padding, sign, leading zero, 19 digits, no dot).
//
// Properties: VerifyToken never panics and fails only with ErrTokenInvalid
// or ErrTokenExpired; a token it accepts (or finds expired) is exactly the
// one MintToken makes for that asset, key and expiry, so a token verifies
// only for the asset it was minted for, and the expiry is in the future
// (in the past when expired); a minted token needs no escaping in a query,
// verifies for its asset until its expiry (a positive expiry below 10^18 s
// and a non-empty key; anything else is invalid) and never for another
// asset.
func FuzzPlaybackToken(f *testing.F) {
	_, asset := jobid.FromObject("kiln-sources", "uploads/clip.mp4", "5d41402abc4b2a76b9719d911017c592")
	_, other := jobid.FromObject("kiln-sources", "uploads/other.mp4", "e1")
	key := []byte("0123456789abcdef0123456789abcdef")
	now := int64(1_750_000_000)
	valid := catalog.MintToken(key, asset, time.Unix(now+3600, 0))
	for _, tok := range []string{
		valid,
		catalog.MintToken(key, asset, time.Unix(now-1, 0)),
		catalog.MintToken(key, other, time.Unix(now+3600, 0)),
		catalog.MintToken([]byte("another key"), asset, time.Unix(now+3600, 0)),
		"1750007200" + valid[len("1750003600"):], // forged expiry
		valid + "=",
		"+" + valid,
		"0" + valid,
		"9999999999999999999" + valid[len("1750003600"):],
		"1750003600",
		".",
		"",
	} {
		f.Add(key, asset, other, now+3600, now, tok)
	}
	f.Add([]byte{}, asset, asset, now+3600, now, valid)
	f.Add(key, "", "ast_", int64(0), int64(-1), "0.")
	f.Add(key, asset, other, int64(999_999_999_999_999_999), now, "")
	f.Fuzz(func(t *testing.T, key []byte, asset, other string, expSecs, nowSecs int64, token string) {
		clock := time.Unix(nowSecs, 0)

		exp, err := catalog.VerifyToken(key, asset, token, clock)
		switch {
		case err == nil, errors.Is(err, catalog.ErrTokenExpired):
			if catalog.MintToken(key, asset, exp) != token {
				t.Fatalf("token %q verified for asset %q (expiry %v, %v) but is not the one minted for it", token, asset, exp, err)
			}
			if (err == nil) != clock.Before(exp) {
				t.Fatalf("token %q with expiry %v at %v: %v", token, exp, clock, err)
			}
		case err != catalog.ErrTokenInvalid:
			t.Fatalf("VerifyToken(%q): error %v, want ErrTokenInvalid or ErrTokenExpired", token, err)
		}

		minted := catalog.MintToken(key, asset, time.Unix(expSecs, 0))
		if url.QueryEscape(minted) != minted {
			t.Fatalf("minted token %q needs escaping in a query", minted)
		}
		got, err := catalog.VerifyToken(key, asset, minted, clock)
		switch {
		case len(key) == 0 || expSecs <= 0 || expSecs >= 1e18:
			if err != catalog.ErrTokenInvalid {
				t.Fatalf("token %q (key %q, expiry %d): %v, want ErrTokenInvalid", minted, key, expSecs, err)
			}
		case nowSecs < expSecs && err != nil, nowSecs >= expSecs && err != catalog.ErrTokenExpired:
			t.Fatalf("token %q expiring %d, at %d: %v", minted, expSecs, nowSecs, err)
		case got.Unix() != expSecs:
			t.Fatalf("token %q: expiry %v, minted for %d", minted, got, expSecs)
		}
		if other != asset {
			if _, err := catalog.VerifyToken(key, other, minted, clock); err != catalog.ErrTokenInvalid {
				t.Fatalf("token minted for %q verifies for %q: %v", asset, other, err)
			}
		}
	})
}

package catalog

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var tokenKey = []byte("0123456789abcdef0123456789abcdef")

func TestMintTokenFormat(t *testing.T) {
	_, asset := testJob("token")
	exp := time.Unix(1_750_000_000, 999_000_000) // fractions are dropped
	tok := MintToken(tokenKey, asset, exp)
	if !regexp.MustCompile(`^1750000000\.[A-Za-z0-9_-]{43}$`).MatchString(tok) {
		t.Fatalf("token %q: want <unix>.<unpadded base64url of 32 bytes>", tok)
	}
	// The documented construction, computed independently.
	m := hmac.New(sha256.New, tokenKey)
	m.Write([]byte("kiln-playback\x00" + asset + "\x00" + "1750000000"))
	if want := "1750000000." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)); tok != want {
		t.Fatalf("token = %q, want %q", tok, want)
	}
}

func TestVerifyToken(t *testing.T) {
	_, asset := testJob("token")
	_, other := testJob("other")
	now := time.Unix(1_750_000_000, 0)
	exp := now.Add(time.Hour)
	valid := MintToken(tokenKey, asset, exp)
	expSecs, sig, _ := strings.Cut(valid, ".")
	flip := func(s string, i int) string { // change one base64 character
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	tests := []struct {
		name  string
		key   []byte
		asset string
		token string
		now   time.Time
		err   error
	}{
		{name: "valid", token: valid, now: now},
		{name: "valid one second before expiry", token: valid, now: exp.Add(-time.Second)},
		{name: "expired at expiry", token: valid, now: exp, err: ErrTokenExpired},
		{name: "expired long ago", token: MintToken(tokenKey, asset, now.Add(-48*time.Hour)), now: now, err: ErrTokenExpired},
		{name: "tampered signature first char", token: expSecs + "." + flip(sig, 0), now: now, err: ErrTokenInvalid},
		{name: "tampered signature last char", token: expSecs + "." + flip(sig, len(sig)-1), now: now, err: ErrTokenInvalid},
		{name: "extended expiry", token: strconv.FormatInt(exp.Unix()+86400, 10) + "." + sig, now: now, err: ErrTokenInvalid},
		{name: "forged expiry in the past is invalid, not expired", token: "1." + sig, now: now, err: ErrTokenInvalid},
		{name: "another asset's token", asset: other, token: valid, now: now, err: ErrTokenInvalid},
		{name: "another key", key: []byte("fedcba9876543210fedcba9876543210"), token: valid, now: now, err: ErrTokenInvalid},
		{name: "no key", key: []byte{}, token: valid, now: now, err: ErrTokenInvalid},
		{name: "empty", token: "", now: now, err: ErrTokenInvalid},
		{name: "no dot", token: expSecs + sig, now: now, err: ErrTokenInvalid},
		{name: "no signature", token: expSecs + ".", now: now, err: ErrTokenInvalid},
		{name: "no expiry", token: "." + sig, now: now, err: ErrTokenInvalid},
		{name: "leading zero", token: "0" + valid, now: now, err: ErrTokenInvalid},
		{name: "signed expiry", token: "+" + valid, now: now, err: ErrTokenInvalid},
		{name: "negative expiry", token: "-" + valid, now: now, err: ErrTokenInvalid},
		{name: "letters in expiry", token: "17a0000000." + sig, now: now, err: ErrTokenInvalid},
		{name: "huge expiry", token: "99999999999999999999." + sig, now: now, err: ErrTokenInvalid},
		{name: "padded signature", token: valid + "=", now: now, err: ErrTokenInvalid},
		{name: "standard base64 alphabet", token: expSecs + "." + strings.NewReplacer("-", "+", "_", "/").Replace(sig) + "+/", now: now, err: ErrTokenInvalid},
		{name: "short signature", token: expSecs + "." + sig[:40], now: now, err: ErrTokenInvalid},
		{name: "long signature", token: valid + "AAAA", now: now, err: ErrTokenInvalid},
		{name: "extra part", token: valid + ".x", now: now, err: ErrTokenInvalid},
		{name: "whitespace", token: " " + valid, now: now, err: ErrTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, a := tokenKey, asset
			if tt.key != nil {
				key = tt.key
			}
			if tt.asset != "" {
				a = tt.asset
			}
			got, err := VerifyToken(key, a, tt.token, tt.now)
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("VerifyToken = %v, %v; want error %v", got, err, tt.err)
			}
			if err == nil && !got.Equal(exp) {
				t.Errorf("expiry = %v, want %v", got, exp)
			}
		})
	}
}

func FuzzVerifyToken(f *testing.F) {
	_, asset := testJob("token")
	now := time.Unix(1_750_000_000, 0)
	f.Add(MintToken(tokenKey, asset, now.Add(time.Hour)))
	f.Add("1750003600.AAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		exp, err := VerifyToken(tokenKey, asset, token, now)
		if err == nil && (MintToken(tokenKey, asset, exp) != token || !now.Before(exp)) {
			t.Fatalf("accepted %q (expiry %v), which is not the token minted for it", token, exp)
		}
	})
}

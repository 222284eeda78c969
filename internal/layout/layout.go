// Package layout is kiln's object-key layout: where sources land in the
// sources bucket and where every output of an asset lives in the outputs
// bucket. Every stage that writes or reads an object by key (ingest, the
// workers, the packager, the catalog) takes the key from here, so the layout
// is written once.
//
// Output keys are pure functions of the asset id (and rendition), so a re-run
// overwrites its own earlier partial output instead of leaving a second copy.
package layout

import (
	"crypto/rand"
	"encoding/hex"
	"path"
	"regexp"
	"strings"
	"unicode/utf8"
)

// AudioRendition is the name of the one rendition of an audio-only source.
const AudioRendition = "audio"

// Segment file names inside a rendition's HLS folder.
const (
	// PlaylistFile is a rendition's media playlist.
	PlaylistFile = "index.m3u8"
	// InitFile is a rendition's fMP4 initialisation segment (EXT-X-MAP).
	InitFile = "init.mp4"
	// SegmentPattern is the ffmpeg file pattern of media segments.
	SegmentPattern = "seg_%05d.m4s"
)

// SourcePrefix is the prefix of every uploaded source object.
const SourcePrefix = "uploads/"

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// NewSourceKey returns a fresh, unguessable key for an upload of a file
// called filename: "uploads/<24 hex>/<safe name>".
func NewSourceKey(filename string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return SourcePrefix + hex.EncodeToString(b) + "/" + SafeName(filename)
}

// SafeName keeps a readable, safe file name for an object key: the base name
// with every run of other characters than letters, digits, '.', '_' and '-'
// replaced by '_', at most 100 bytes, no leading dots; "source" when nothing
// is left.
func SafeName(name string) string {
	name = unsafeName.ReplaceAllString(path.Base(strings.ReplaceAll(name, `\`, "/")), "_")
	if len(name) > 100 {
		name = name[len(name)-100:]
	}
	name = strings.TrimLeft(name, ".")
	if name == "" || name == "_" {
		return "source"
	}
	return name
}

// AssetPrefix is the prefix of every output object of an asset.
func AssetPrefix(assetID string) string { return "assets/" + assetID + "/" }

// EncodedKey is the encoded object of one rendition: an MP4 per video rung
// (faststart; the top rung is also the download), the M4A of an audio-only
// asset (AudioRendition; also its download).
func EncodedKey(assetID, rendition string) string {
	if rendition == AudioRendition {
		return path.Join(AssetPrefix(assetID), "mp4", AudioRendition+".m4a")
	}
	return path.Join(AssetPrefix(assetID), "mp4", rendition+".mp4")
}

// HLSDir is the folder of one rendition's media playlist and segments.
func HLSDir(assetID, rendition string) string {
	return path.Join(AssetPrefix(assetID), "hls", rendition)
}

// PlaylistKey is one rendition's media playlist.
func PlaylistKey(assetID, rendition string) string {
	return path.Join(HLSDir(assetID, rendition), PlaylistFile)
}

// SegmentKey is a file (init segment or media segment) of one rendition's
// HLS folder.
func SegmentKey(assetID, rendition, file string) string {
	return path.Join(HLSDir(assetID, rendition), file)
}

// ThumbnailDir is the folder of an asset's thumbnails, sprite and storyboard.
func ThumbnailDir(assetID string) string { return path.Join(AssetPrefix(assetID), "thumbnails") }

// PosterKey is the asset's poster image.
func PosterKey(assetID string) string { return path.Join(ThumbnailDir(assetID), "poster.jpg") }

// UnderAsset reports whether key is an output object of assetID: a clean
// key (see IsSourceKey) under AssetPrefix(assetID), so no "..", "." or
// empty segment can lead it out of the asset.
func UnderAsset(assetID, key string) bool {
	rest, ok := strings.CutPrefix(key, AssetPrefix(assetID))
	return ok && cleanKey(key) && cleanKey(rest)
}

// MaxKeyBytes is the longest object key S3 accepts.
const MaxKeyBytes = 1024

// IsSourceKey reports whether key may name a source in the sources bucket:
// what NewSourceKey returns, and what any S3 client may have put there
// directly (the bucket notification starts those too), provided it is a
// clean relative path — no leading "/", no empty, "." or ".." segment, no
// trailing "/" (a folder marker) — of valid UTF-8 without control
// characters, at most MaxKeyBytes long. Nothing else is read as a source:
// such a key could name another object than the one it appears to (a
// path-normalising proxy or client), or break the logs and URLs it is put
// in.
func IsSourceKey(key string) bool { return cleanKey(key) }

// cleanKey is the key syntax IsSourceKey describes.
func cleanKey(key string) bool {
	if key == "" || len(key) > MaxKeyBytes || !utf8.ValidString(key) || path.Clean(key) != key ||
		strings.HasPrefix(key, "/") || key == "." || key == ".." || strings.HasPrefix(key, "../") {
		return false
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// User-metadata keys of a source object: what its upload chose, carried by
// the object itself, so every path that starts its job (the upload API's
// event, the bucket notification, the reconciler) starts the same one.
const (
	MetaPreset  = "Kiln-Preset"
	MetaPolicy  = "Kiln-Playback-Policy"
	MetaWebhook = "Kiln-Webhook-Url"
	// MetaTenant is the tenant of the key that uploaded the source (a
	// source without it belongs to the default tenant).
	MetaTenant = "Kiln-Tenant"
	// MetaPriority is the upload's priority (tasks.Priorities; absent: normal).
	MetaPriority = "Kiln-Priority"
)

// SourceMeta reads the user-metadata value of key (one of the Meta
// constants) from m, whatever its spelling there: any case, with or without
// the "X-Amz-Meta-" prefix that bucket notifications and HEAD responses use.
func SourceMeta(m map[string]string, key string) string {
	for k, v := range m {
		if strings.EqualFold(k, key) || strings.EqualFold(k, "X-Amz-Meta-"+key) {
			return v
		}
	}
	return ""
}

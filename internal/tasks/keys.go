package tasks

import "path"

// Object keys in the outputs bucket. They are pure functions of the asset id
// (and rung), so a re-run overwrites its own earlier partial output instead of
// leaving a second copy.

// AssetPrefix is the prefix of every output object of an asset.
func AssetPrefix(assetID string) string { return "assets/" + assetID + "/" }

// RenditionMP4Key is the encoded MP4 of one rung (faststart; also served as
// a download).
func RenditionMP4Key(assetID, rung string) string {
	return path.Join(AssetPrefix(assetID), "mp4", rung+".mp4")
}

// PosterKey is the asset's poster image.
func PosterKey(assetID string) string {
	return path.Join(AssetPrefix(assetID), "thumbnails", "poster.jpg")
}

// HLSDir is the folder of one rung's HLS media playlist and segments.
func HLSDir(assetID, rung string) string { return path.Join(AssetPrefix(assetID), "hls", rung) }

// MasterKey is the asset's HLS master playlist.
func MasterKey(assetID string) string { return path.Join(AssetPrefix(assetID), "hls", "master.m3u8") }

// AudioKey is the encoded M4A of an audio-only asset (also its download).
func AudioKey(assetID string) string { return path.Join(AssetPrefix(assetID), "mp4", "audio.m4a") }

// ThumbnailDir is the folder of an asset's thumbnails, sprite and storyboard.
func ThumbnailDir(assetID string) string { return path.Join(AssetPrefix(assetID), "thumbnails") }

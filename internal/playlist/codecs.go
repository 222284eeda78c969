package playlist

import (
	"bytes"
	"fmt"
)

// AudioCodecs is the CODECS value of kiln's audio: AAC-LC.
const AudioCodecs = "mp4a.40.2"

// AVC1FromInit is the exact RFC 6381 codecs value of the H.264 stream an
// fMP4 initialisation segment describes ("avc1.64001f"), read from its avcC
// box: profile, constraint flags and level as encoded (ffprobe names the
// profile but not the constraint flags, which differ between encoders:
// x264's Constrained Baseline is 42c0, not 42e0). ok is false when init
// has no avcC box.
func AVC1FromInit(init []byte) (codecs string, ok bool) {
	i := bytes.Index(init, []byte("avcC"))
	if i < 0 || i+8 > len(init) {
		return "", false
	}
	// avcC: configurationVersion, AVCProfileIndication,
	// profile_compatibility, AVCLevelIndication.
	return fmt.Sprintf("avc1.%02x%02x%02x", init[i+5], init[i+6], init[i+7]), true
}

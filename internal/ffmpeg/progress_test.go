package ffmpeg_test

import (
	"bufio"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
)

// sampleProgress is real ffmpeg 5.1 "-progress pipe:1" output.
const sampleProgress = `frame=1
fps=0.00
stream_0_0_q=-0.0
bitrate=N/A
total_size=N/A
out_time_us=92880
out_time_ms=92880
out_time=00:00:00.092880
dup_frames=0
drop_frames=0
speed=28.4x
progress=continue
frame=50
fps=0.00
stream_0_0_q=-0.0
bitrate=N/A
total_size=N/A
out_time_us=2020136
out_time_ms=2020136
out_time=00:00:02.020136
dup_frames=0
drop_frames=0
speed= 133x
progress=end
`

func TestParseProgress(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []ffmpeg.Progress
	}{
		{
			name: "captured",
			in:   sampleProgress,
			want: []ffmpeg.Progress{
				{Frame: 1, OutTime: 92880 * time.Microsecond, Speed: 28.4},
				{Frame: 50, OutTime: 2020136 * time.Microsecond, Speed: 133, Done: true},
			},
		},
		{
			name: "start of encode: N/A and negative time",
			in:   "frame=0\nfps=N/A\nout_time_us=-9223372036854775807\nout_time_ms=-9223372036854775807\nspeed=N/A\nprogress=continue\n",
			want: []ffmpeg.Progress{{}},
		},
		{
			name: "out_time_ms only, CRLF, fps",
			in:   "frame=300\r\nfps=29.97\r\nout_time_ms=10000000\r\nspeed=1.5x\r\nprogress=end\r\n",
			want: []ffmpeg.Progress{{Frame: 300, FPS: 29.97, OutTime: 10 * time.Second, Speed: 1.5, Done: true}},
		},
		{
			name: "garbage lines ignored, trailing partial block dropped",
			in:   "hello\n=\nframe=x\nprogress=continue\nframe=7\n",
			want: []ffmpeg.Progress{{}},
		},
		{name: "empty", in: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []ffmpeg.Progress
			if err := ffmpeg.ParseProgress(strings.NewReader(tt.in), func(p ffmpeg.Progress) { got = append(got, p) }); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d blocks %+v, want %d %+v", len(got), got, len(tt.want), tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("block %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseProgressLongLine(t *testing.T) {
	in := "frame=" + strings.Repeat("1", 1<<20) + "\nprogress=end\n"
	err := ffmpeg.ParseProgress(strings.NewReader(in), func(ffmpeg.Progress) {})
	if !errors.Is(err, bufio.ErrTooLong) {
		t.Fatalf("got %v, want bufio.ErrTooLong", err)
	}
}

func FuzzParseProgress(f *testing.F) {
	f.Add(sampleProgress)
	f.Add("out_time_us=9223372036854775807\nspeed=NaNx\nfps=Inf\nprogress=end\n")
	f.Add("progress=\n\n==\n")
	f.Fuzz(func(t *testing.T, in string) {
		_ = ffmpeg.ParseProgress(strings.NewReader(in), func(p ffmpeg.Progress) {
			if p.OutTime < 0 || p.Frame < 0 {
				t.Fatalf("negative progress %+v", p)
			}
		})
	})
}

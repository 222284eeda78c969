package ffmpeg

import (
	"strings"
	"testing"
)

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"fits", 10, []string{"ab", "cd"}, "abcd"},
		{"exactly full", 4, []string{"ab", "cd"}, "abcd"},
		{"drops oldest and partial line", 8, []string{"line1\n", "line2\n", "ln3\n"}, "…ln3\n"},
		{"no newline kept whole", 4, []string{"abc", "def"}, "…cdef"},
		{"one huge write", 4, []string{strings.Repeat("x", 100) + "tail"}, "…tail"},
		{"huge write exactly max", 4, []string{"tail"}, "tail"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newTailBuffer(tt.max)
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
				if len(b.buf) > tt.max {
					t.Fatalf("kept %d bytes > %d", len(b.buf), tt.max)
				}
			}
			if got := b.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRedactURLs(t *testing.T) {
	in := "https://s3.example/b/k.mp4?X-Amz-Signature=abc&X-Amz-Credential=x: Server returned 403 Forbidden"
	want := "https://s3.example/b/k.mp4?REDACTED: Server returned 403 Forbidden"
	if got := redactURLs(in); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

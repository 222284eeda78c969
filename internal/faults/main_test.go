package faults

import (
	"testing"

	"github.com/kilnvideo/kiln/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

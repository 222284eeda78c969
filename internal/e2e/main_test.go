package e2e

import (
	"testing"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestMain removes the kiln binary testenv.BuildKiln built for this run.
func TestMain(m *testing.M) { testenv.Main(m) }

package realfix_test

import (
	"os"
	"testing"

	"github.com/livefix/livefix/internal/e2etest"
)

func TestMain(m *testing.M) { os.Exit(e2etest.Main(m)) }

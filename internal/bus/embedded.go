package bus

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
)

// EmbeddedConfig configures the NATS server inside `kiln serve`.
type EmbeddedConfig struct {
	// Listen is host:port for clients (MinIO publishes here too).
	Listen string
	// StoreDir holds JetStream's file store.
	StoreDir string
	Logger   *zap.Logger
}

// Embedded is a running in-process NATS server with JetStream.
type Embedded struct {
	ns *server.Server
}

// StartEmbedded starts a NATS server with JetStream and waits until it
// accepts connections.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("bus: nats listen %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("bus: nats listen %q: %w", cfg.Listen, err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "kiln",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: nats server: %w", err)
	}
	if cfg.Logger != nil {
		ns.SetLoggerV2(natsLogger{cfg.Logger.Sugar().Named("nats")}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("bus: nats server on %s did not start", cfg.Listen)
	}
	return &Embedded{ns: ns}, nil
}

// ClientURL is the URL clients dial.
func (e *Embedded) ClientURL() string { return e.ns.ClientURL() }

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
}

type natsLogger struct{ s *zap.SugaredLogger }

func (l natsLogger) Noticef(f string, v ...any) { l.s.Debugf(f, v...) }
func (l natsLogger) Warnf(f string, v ...any)   { l.s.Warnf(f, v...) }
func (l natsLogger) Fatalf(f string, v ...any)  { l.s.Errorf(f, v...) }
func (l natsLogger) Errorf(f string, v ...any)  { l.s.Errorf(f, v...) }
func (l natsLogger) Debugf(f string, v ...any)  { l.s.Debugf(f, v...) }
func (l natsLogger) Tracef(f string, v ...any)  {}

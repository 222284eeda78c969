package bus

import (
	"errors"
	"fmt"
	"net"
	"slices"
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
	// Users may connect, each with its password and permissions; nobody
	// else may (at least one is required: the server never runs without
	// authentication).
	Users  []User
	Logger *zap.Logger
}

// User is a user of the embedded server.
type User struct {
	Name, Password string
	// Permission is what it may publish and subscribe to (Permissions of
	// its role); nil allows every subject (tests and operators' tools
	// only).
	Permission *Permission
}

// MinPasswordLength is the shortest password of an embedded server's user.
const MinPasswordLength = 16

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
	if len(cfg.Users) == 0 {
		return nil, errors.New("bus: the embedded NATS server needs at least one user")
	}
	var users []*server.User
	for _, u := range cfg.Users {
		if u.Name == "" || len(u.Password) < MinPasswordLength {
			return nil, fmt.Errorf("bus: embedded NATS user %q: a name and a password of at least %d characters are required", u.Name, MinPasswordLength)
		}
		su := &server.User{Username: u.Name, Password: u.Password}
		if p := u.Permission; p != nil {
			su.Permissions = &server.Permissions{Publish: allowOnly(p.Publish), Subscribe: allowOnly(p.Subscribe)}
		}
		users = append(users, su)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "kiln",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		Users:      users,
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

// allowOnly allows subjects and nothing else (NATS reads an empty allow
// list as "everything").
func allowOnly(subjects []string) *server.SubjectPermission {
	if len(subjects) == 0 {
		return &server.SubjectPermission{Deny: []string{">"}}
	}
	return &server.SubjectPermission{Allow: slices.Clone(subjects)}
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

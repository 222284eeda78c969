package bus

import (
	"fmt"
	"slices"
)

// NATS users: one per kiln role, one for the object store's bucket
// notifications, and the all-in-one process. The embedded server of
// `kiln serve` creates them (EmbeddedConfig.Users), and so does the sample
// configuration of an external server (deploy/nats/nats-server.conf); each
// may publish and subscribe to what its Permission lists, nothing else.
const (
	UserIngest  = "ingest"
	UserWorker  = "worker"
	UserCatalog = "catalog"
	// UserNotify is the object store (MinIO) publishing bucket
	// notifications.
	UserNotify = "notify"
	// UserServe is `kiln serve` connecting to its own embedded server
	// (never on an external one): every role's permissions.
	UserServe = "serve"
)

// Users lists the users of Permissions, UserServe last.
var Users = []string{UserIngest, UserWorker, UserCatalog, UserNotify, UserServe}

// InboxPrefix is the prefix of the reply subjects of user's connection
// (JetStream API answers, publish acknowledgements, pull consumer
// deliveries): a user subscribes only under its own, so no other user
// reads its replies. The object store's client cannot choose one: it uses
// NATS's default, "_INBOX".
func InboxPrefix(user string) string {
	if user == UserNotify {
		return "_INBOX"
	}
	return "_INBOX_" + user
}

// Permission is what a NATS user may publish and subscribe to (subjects,
// with NATS wildcards).
type Permission struct {
	Publish, Subscribe []string
}

// jsAPI is a JetStream API subject.
func jsAPI(format string, args ...any) string { return "$JS.API." + fmt.Sprintf(format, args...) }

// manageStreams creates, updates and looks up kiln's two streams
// (ensureStreams).
func manageStreams() []string {
	var s []string
	for _, name := range []string{StreamName, DeadLetterStream} {
		s = append(s, jsAPI("STREAM.CREATE.%s", name), jsAPI("STREAM.UPDATE.%s", name), jsAPI("STREAM.INFO.%s", name))
	}
	return s
}

// consume is what the durable consumer durable needs (Consume): create and
// look it up, pull its messages, acknowledge them and dead-letter them.
func consume(durable string) []string {
	return []string{
		jsAPI("CONSUMER.CREATE.%s.%s", StreamName, durable),
		jsAPI("CONSUMER.CREATE.%s.%s.>", StreamName, durable),
		jsAPI("CONSUMER.INFO.%s.%s", StreamName, durable),
		jsAPI("CONSUMER.MSG.NEXT.%s.%s", StreamName, durable),
		"$JS.ACK." + StreamName + "." + durable + ".>",
		DeadLetterSubject(durable),
	}
}

// jobEvents is every job's subject (JobSubject: job ids have no dot).
const jobEvents = "kiln.jobs.*"

// Permissions returns the permission of user (one of Users).
//
//   - ingest publishes "object landed" (the upload API) and the QUEUED of
//     the jobs it starts, and consumes bucket notifications and "object
//     landed" (the durable "ingest");
//   - worker publishes job events only (progress, READY, FAILED) and may
//     look the KILN stream up to wait for it: it may not publish "object
//     landed", bucket notifications or dead letters, nor manage streams or
//     consumers;
//   - catalog publishes job events (retry, cancel, the reconciler's
//     FAILED), "object landed" (the reconciler announcing a source again),
//     and whatever dead letter it replays to its original subject
//     (bucket notifications included); it consumes job events (the
//     durable "catalog"), reads and deletes dead letters, and publishes
//     and subscribes to the replicas' change notices (JobChanges);
//   - notify publishes bucket notifications only;
//   - serve is ingest, worker and catalog in one process.
//
// Only ingest and catalog (and serve) create or update the streams.
func Permissions(user string) (Permission, bool) {
	var pub []string
	switch user {
	case UserIngest:
		pub = slices.Concat([]string{SubjectObjectLanded, jobEvents}, manageStreams(), consume("ingest"))
	case UserWorker:
		pub = []string{jobEvents, jsAPI("STREAM.INFO.%s", StreamName)}
	case UserCatalog:
		pub = slices.Concat([]string{jobEvents, SubjectObjectLanded, SubjectS3Events, jobChanges}, manageStreams(), consume("catalog"),
			[]string{jsAPI("STREAM.MSG.GET.%s", DeadLetterStream), jsAPI("STREAM.MSG.DELETE.%s", DeadLetterStream)})
	case UserNotify:
		pub = []string{SubjectS3Events}
	case UserServe:
		for _, u := range []string{UserIngest, UserWorker, UserCatalog} {
			p, _ := Permissions(u)
			for _, s := range p.Publish {
				if !slices.Contains(pub, s) {
					pub = append(pub, s)
				}
			}
		}
	default:
		return Permission{}, false
	}
	sub := []string{InboxPrefix(user) + ".>"}
	if user == UserCatalog || user == UserServe {
		sub = append(sub, jobChanges) // the replicas' change notices (JobChanges)
	}
	return Permission{Publish: pub, Subscribe: sub}, true
}

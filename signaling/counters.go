package signaling

import (
	"sync/atomic"

	"github.com/parley-chat/parley/config"
)

// Label values of the counters that are not message types or error codes.
const (
	// MessageInvalid counts frames that did not decode to a known message.
	MessageInvalid = "invalid"
	// CounterOther counts a name that is not in a counter set (a code added
	// without adding it to the set below); it should stay at zero.
	CounterOther = "other"
)

// counterSet is a fixed set of named counters. The names are known when the
// set is made, so counting takes no lock: one atomic add on a slot found in
// a map that is never written after construction.
type counterSet struct {
	index map[string]int // static after construction
	names []string       // static after construction
	vals  []atomic.Uint64
}

func newCounterSet(names ...string) *counterSet {
	c := &counterSet{index: make(map[string]int, len(names)+1)}
	for _, n := range append(names, CounterOther) {
		if _, dup := c.index[n]; dup {
			continue
		}
		c.index[n] = len(c.names)
		c.names = append(c.names, n)
	}
	c.vals = make([]atomic.Uint64, len(c.names))
	return c
}

// inc adds one to the counter of name, or to CounterOther when name is not
// in the set.
func (c *counterSet) inc(name string) {
	i, ok := c.index[name]
	if !ok {
		i = c.index[CounterOther]
	}
	c.vals[i].Add(1)
}

// snapshot returns every counter, zeros included, so that a metric series
// exists from the first scrape on.
func (c *counterSet) snapshot() map[string]uint64 {
	m := make(map[string]uint64, len(c.names))
	for i, n := range c.names {
		m[n] = c.vals[i].Load()
	}
	return m
}

// counters are the server's running totals, for Counters.
type counters struct {
	messages    *counterSet // client messages handled, by type
	errors      *counterSet // error messages sent on WebSockets, by code
	httpErrors  *counterSet // API and upgrade requests refused, by code
	rooms       atomic.Uint64
	connections atomic.Uint64
	slowClients atomic.Uint64
}

func newCounters() counters {
	return counters{
		messages: newCounterSet(TypeJoin, TypeLeave, TypeOffer, TypeAnswer, TypeCandidate, TypeMedia, MessageInvalid),
		errors: newCounterSet(CodeBadMessage, CodeUnknownType, CodeTooLarge, CodeNotJoined, CodeAlreadyJoined,
			CodeRoomNotFound, CodeRoomFull, CodePeerNotFound, CodeRateLimited, CodeMediaUnavailable,
			CodePasswordRequired, CodeBadPassword),
		httpErrors: newCounterSet(CodeBadMessage, CodeTooLarge, CodeRoomNotFound, CodeBadMode, CodeUnsupportedMode,
			CodeCreateTokenRequired, CodeBadCreateToken, CodeTooManyRooms, CodeTooManyConnections,
			CodeShuttingDown, CodeBadHandshake),
	}
}

// Counters is a snapshot of the server's running totals and of the
// breakdowns behind Stats, for metrics. Totals count from New.
type Counters struct {
	// ParticipantsByMode are the joined participants by the mode of their
	// room; it always has an entry for every mode.
	ParticipantsByMode map[string]int
	// RoomsCreated counts rooms created through the API.
	RoomsCreated uint64
	// ConnectionsTotal counts WebSockets accepted.
	ConnectionsTotal uint64
	// Messages counts the client messages handled (those within the rate
	// limit), by type; MessageInvalid for frames that did not decode.
	Messages map[string]uint64
	// Errors counts the error messages sent on WebSockets, by code.
	Errors map[string]uint64
	// HTTPErrors counts API requests and WebSocket upgrades refused, by code.
	HTTPErrors map[string]uint64
	// SlowClients counts connections closed because their send queue filled.
	SlowClients uint64
}

// Counters returns a snapshot of the running totals.
func (s *Server) Counters() Counters {
	byMode := map[string]int{config.ModeP2P: 0, config.ModeSFU: 0}
	s.mu.Lock()
	for _, r := range s.byID {
		byMode[r.mode] += len(r.members)
	}
	s.mu.Unlock()
	return Counters{
		ParticipantsByMode: byMode,
		RoomsCreated:       s.counts.rooms.Load(),
		ConnectionsTotal:   s.counts.connections.Load(),
		Messages:           s.counts.messages.snapshot(),
		Errors:             s.counts.errors.snapshot(),
		HTTPErrors:         s.counts.httpErrors.snapshot(),
		SlowClients:        s.counts.slowClients.Load(),
	}
}

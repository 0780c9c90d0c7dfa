package manifest

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	// Time zones of cron triggers must validate the same on every machine,
	// with or without a system tzdata: embed the zone database as a
	// fallback (about 450KB).
	_ "time/tzdata"

	"gopkg.in/yaml.v3"

	"github.com/nimbus-dev/nimbus/internal/events/cron"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// The fields of topics, buckets and triggers, in documentation order. The
// schema test checks docs/manifest.schema.json lists exactly these.
var (
	topicFields         = []string{"max_event_size", "retention"}
	bucketFields        = []string{"ttl", "max_value_size", "history"}
	triggerKinds        = []string{model.TriggerTopic, model.TriggerCron, model.TriggerBucket}
	topicTriggerFields  = []string{"topic", "name", "filter", "ordering_key", "max_attempts", "backoff", "max_backoff", "dead_letter"}
	cronTriggerFields   = []string{"cron", "name", "timezone", "catch_up", "max_attempts", "backoff", "max_backoff", "dead_letter"}
	bucketTriggerFields = []string{"bucket", "name", "key_prefix", "ordering_key", "max_attempts", "backoff", "max_backoff", "dead_letter"}
	asyncFields         = []string{"max_attempts", "backoff", "max_backoff"}
	filterFields        = []string{"type", "source", "subject_prefix"}
)

// Defaults and limits of topics, buckets and triggers. docs/manifest.md
// documents them.
const (
	DefaultMaxEventBytes int64         = 256 << 10
	MaxEventBytes        int64         = 1 << 20
	DefaultRetention     time.Duration = 7 * 24 * time.Hour
	MinRetention         time.Duration = time.Minute
	MaxRetention         time.Duration = 365 * 24 * time.Hour

	DefaultMaxValueBytes int64         = 1 << 20
	MaxValueBytes        int64         = 1 << 20
	DefaultHistory                     = 1
	MaxHistory                         = 64
	MinBucketTTL         time.Duration = time.Second
	MaxBucketTTL         time.Duration = 10 * 365 * 24 * time.Hour

	DefaultMaxAttempts               = 5
	MaxMaxAttempts                   = 100
	DefaultBackoff     time.Duration = time.Second
	MinBackoff         time.Duration = 10 * time.Millisecond
	MaxBackoff         time.Duration = time.Hour
	DefaultMaxBackoff  time.Duration = 5 * time.Minute
	MaxMaxBackoff      time.Duration = 24 * time.Hour
	DefaultTimezone                  = "UTC"
	MaxTriggers                      = 100
	MaxKeyPrefixBytes                = 512
	maxCatchUp         time.Duration = 10 * 365 * 24 * time.Hour
)

// Topic is one event topic of the app.
type Topic struct {
	Name          string
	MaxEventBytes int64         // default 256KiB
	Retention     time.Duration // default 7d
	// Implicit is set on the dead-letter topic when the manifest does not
	// declare it.
	Implicit bool
	// Pos is where the topic is declared; zero when Implicit.
	Pos Position
}

// Registry returns the registry record of t.
func (t Topic) Registry() model.Topic {
	return model.Topic{Name: t.Name, MaxEventBytes: t.MaxEventBytes, RetentionMS: t.Retention.Milliseconds()}
}

// Bucket is one key-value bucket of the app.
type Bucket struct {
	Name          string
	TTL           time.Duration // 0: keys do not expire
	MaxValueBytes int64         // default 1MiB
	History       int           // default 1
	Pos           Position
}

// Registry returns the registry record of b.
func (b Bucket) Registry() model.Bucket {
	return model.Bucket{Name: b.Name, TTLMS: b.TTL.Milliseconds(), MaxValueBytes: b.MaxValueBytes, History: b.History}
}

// Trigger is one validated trigger of a function: exactly one of a topic,
// a cron schedule or a bucket (Kind), every default filled in.
type Trigger struct {
	// Name is the trigger's name as declared, or its default: "topic-<topic>",
	// "cron" or "bucket-<bucket>", with "-2", "-3"... for later triggers that
	// would get the same one.
	Name string
	Kind string // model.TriggerTopic, TriggerCron or TriggerBucket

	Topic  string
	Filter *model.EventFilter // nil: every event

	// Cron is the schedule in cron's canonical form, without CRON_TZ=.
	Cron     string
	Timezone string        // default UTC
	CatchUp  time.Duration // default cron.NoLimit; 0: never

	Bucket    string
	KeyPrefix string

	OrderingKey string

	MaxAttempts int           // default 5
	Backoff     time.Duration // default 1s
	MaxBackoff  time.Duration // default 5m, or Backoff if that is longer
	// DeadLetter is where a delivery goes after MaxAttempts failures:
	// default "dead-letter". "" only for a trigger on the dead-letter topic
	// itself, whose failures are logged and dropped.
	DeadLetter string

	// Pos is where the trigger is declared.
	Pos Position
}

// Registry returns the registry record of t.
func (t Trigger) Registry() model.Trigger {
	r := model.Trigger{
		Name: t.Name, Kind: t.Kind, Topic: t.Topic, Cron: t.Cron, Timezone: t.Timezone,
		Bucket: t.Bucket, KeyPrefix: t.KeyPrefix, OrderingKey: t.OrderingKey,
		MaxAttempts: t.MaxAttempts, BackoffMS: t.Backoff.Milliseconds(), MaxBackoffMS: t.MaxBackoff.Milliseconds(),
		DeadLetter: t.DeadLetter,
	}
	if t.Filter != nil {
		f := *t.Filter
		r.Filter = &f
	}
	if t.Kind == model.TriggerCron {
		r.CatchUpMS = t.CatchUp.Milliseconds()
		if t.CatchUp == cron.NoLimit {
			r.CatchUpMS = model.CatchUpNoLimit
		}
	}
	return r
}

// RegistryTopics returns the app's topics as registry records, sorted by
// name.
func (m *Manifest) RegistryTopics() []model.Topic {
	var out []model.Topic
	for _, t := range m.Topics {
		out = append(out, t.Registry())
	}
	slices.SortFunc(out, func(a, b model.Topic) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// RegistryBuckets returns the app's buckets as registry records, sorted by
// name.
func (m *Manifest) RegistryBuckets() []model.Bucket {
	var out []model.Bucket
	for _, b := range m.Buckets {
		out = append(out, b.Registry())
	}
	slices.SortFunc(out, func(a, b model.Bucket) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// namedMap returns the entries of a top-level map of names (topics,
// buckets). A list of names gets an error but its names still count as
// declared, so one mistake does not cascade into an error per use.
func (p *parser) namedMap(key, n *yaml.Node, path, what, example string) ([]pair, []string) {
	switch {
	case isNull(n):
		return nil, nil
	case n.Kind == yaml.SequenceNode:
		p.errorf(n, path, "must be a map of %s name to options, such as %s, not a list", what, example)
		var names []string
		for _, item := range n.Content {
			if item = deref(item); item.Kind == yaml.ScalarNode && model.ValidName(item.Value) {
				names = append(names, item.Value)
			}
		}
		return nil, names
	case n.Kind != yaml.MappingNode:
		p.errorf(valueOrKey(n, key), path, "must be a map of %s name to options, such as %s, not %s", what, example, describe(n))
		return nil, nil
	}
	kvs := p.pairs(n, path)
	var names []string
	for _, kv := range kvs {
		names = append(names, kv.key.Value)
	}
	return kvs, names
}

func (p *parser) topics(key, n *yaml.Node) []Topic {
	kvs, names := p.namedMap(key, n, "topics", "topic", "topics: {orders: {}}")
	p.topicNames = names
	var out []Topic
	for _, kv := range kvs {
		path := "topics." + kv.key.Value
		t := Topic{Name: kv.key.Value, MaxEventBytes: DefaultMaxEventBytes, Retention: DefaultRetention, Pos: p.pos(kv.key)}
		if t.Name == model.DeadLetterTopic {
			t.MaxEventBytes = MaxEventBytes // room for any event it receives
		}
		if !model.ValidName(t.Name) {
			p.errorf(kv.key, path, "%q is not a valid topic name: use 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'", t.Name)
			continue
		}
		if !p.options(kv, path, "topic", "{max_event_size: 64KiB}") {
			out = append(out, t)
			continue
		}
		fields := p.mapping(kv.value, path, topicFields)
		if f, ok := fields.get("max_event_size"); ok {
			if v, ok := p.size(f.value, path+".max_event_size", 1, uint64(MaxEventBytes), "64KiB"); ok {
				t.MaxEventBytes = int64(v)
			}
		}
		if f, ok := fields.get("retention"); ok {
			if d, ok := p.durationIn(f.value, path+".retention", MinRetention, MaxRetention, "7d"); ok {
				t.Retention = d
			}
		}
		out = append(out, t)
	}
	return out
}

func (p *parser) buckets(key, n *yaml.Node) []Bucket {
	kvs, names := p.namedMap(key, n, "buckets", "bucket", "buckets: {counts: {}}")
	p.bucketNames = names
	var out []Bucket
	for _, kv := range kvs {
		path := "buckets." + kv.key.Value
		b := Bucket{Name: kv.key.Value, MaxValueBytes: DefaultMaxValueBytes, History: DefaultHistory, Pos: p.pos(kv.key)}
		if !model.ValidName(b.Name) {
			p.errorf(kv.key, path, "%q is not a valid bucket name: use 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'", b.Name)
			continue
		}
		if !p.options(kv, path, "bucket", "{ttl: 1h}") {
			out = append(out, b)
			continue
		}
		fields := p.mapping(kv.value, path, bucketFields)
		if f, ok := fields.get("ttl"); ok {
			if d, ok := p.durationIn(f.value, path+".ttl", MinBucketTTL, MaxBucketTTL, "1h"); ok {
				if d%time.Second != 0 {
					p.errorf(f.value, path+".ttl", "%s is not a whole number of seconds: keys expire on second boundaries", f.value.Value)
				} else {
					b.TTL = d
				}
			}
		}
		if f, ok := fields.get("max_value_size"); ok {
			if v, ok := p.size(f.value, path+".max_value_size", 1, uint64(MaxValueBytes), "64KiB"); ok {
				b.MaxValueBytes = int64(v)
			}
		}
		if f, ok := fields.get("history"); ok {
			if v, ok := p.integer(f.value, path+".history", 1, MaxHistory); ok {
				b.History = v
			}
		}
		out = append(out, b)
	}
	return out
}

// options reports whether the value of a topic or bucket is a map of
// options to read; null ("orders:" or "orders: {}") means defaults.
func (p *parser) options(kv pair, path, what, example string) bool {
	if isNull(kv.value) {
		return false
	}
	if kv.value.Kind != yaml.MappingNode {
		p.errorf(kv.value, path, "a %s's value is a map of options, such as %s, or {} for the defaults, not %s", what, example, describe(kv.value))
		return false
	}
	return true
}

// allTopics is the topics a trigger may name: the declared ones and the
// implicit dead-letter topic.
func (p *parser) allTopics() []string {
	if slices.Contains(p.topicNames, model.DeadLetterTopic) {
		return p.topicNames
	}
	return append(slices.Clone(p.topicNames), model.DeadLetterTopic)
}

// parsedTrigger is a trigger with the nodes its checks across triggers need.
type parsedTrigger struct {
	t        Trigger
	node     *yaml.Node
	nameNode *yaml.Node // nil when the name is the default
	field    string
}

func (p *parser) triggers(key, n *yaml.Node, path string) []Trigger {
	if n.Kind != yaml.SequenceNode {
		if isNull(n) {
			return nil
		}
		p.errorf(valueOrKey(n, key), path, "must be a list of triggers, such as [{topic: orders}], not %s", describe(n))
		return nil
	}
	if len(n.Content) > MaxTriggers {
		p.errorf(n.Content[MaxTriggers], fmt.Sprintf("%s[%d]", path, MaxTriggers), "too many triggers: a function may have at most %d", MaxTriggers)
		return nil
	}
	var parsed []parsedTrigger
	for i, item := range n.Content {
		item = deref(item)
		field := fmt.Sprintf("%s[%d]", path, i)
		if pt, ok := p.trigger(item, field); ok {
			parsed = append(parsed, pt)
		}
	}
	// Two triggers that subscribe to the same thing the same way would
	// invoke the function twice per event.
	var kept []parsedTrigger
	for _, pt := range parsed {
		dup := false
		for _, q := range kept {
			a, b := pt.t, q.t
			a.Name, b.Name, a.Pos, b.Pos = "", "", Position{}, Position{}
			if reflect.DeepEqual(a, b) {
				p.errorf(pt.node, pt.field, "duplicate trigger: the same as %s (line %d), so the function would run twice for everything it matches; remove one", q.field, q.node.Line)
				dup = true
				break
			}
		}
		if !dup {
			kept = append(kept, pt)
		}
	}
	// Names: declared ones first, then defaults that avoid them.
	taken := map[string]parsedTrigger{}
	for _, pt := range kept {
		if pt.nameNode == nil {
			continue
		}
		if q, dup := taken[pt.t.Name]; dup {
			p.errorf(pt.nameNode, pt.field+".name", "trigger name %q is already used by %s (line %d): names identify triggers, so they must differ", pt.t.Name, q.field, q.node.Line)
			continue
		}
		taken[pt.t.Name] = pt
	}
	var out []Trigger
	for _, pt := range kept {
		if pt.nameNode == nil {
			base := pt.t.Kind + "-" + pt.t.Topic + pt.t.Bucket
			if pt.t.Kind == model.TriggerCron {
				base = model.TriggerCron
			}
			name := base
			for i := 2; ; i++ {
				if _, used := taken[name]; !used {
					break
				}
				name = fmt.Sprintf("%s-%d", base, i)
			}
			pt.t.Name = name
			taken[name] = pt
		}
		out = append(out, pt.t)
	}
	return out
}

// kindsOf names the trigger kinds that have field, for "applies to" errors.
func kindsOf(field string) string {
	var kinds []string
	for i, fields := range [][]string{topicTriggerFields, cronTriggerFields, bucketTriggerFields} {
		if slices.Contains(fields, field) {
			kinds = append(kinds, triggerKinds[i])
		}
	}
	return strings.Join(kinds, " and ")
}

func (p *parser) trigger(n *yaml.Node, field string) (parsedTrigger, bool) {
	pt := parsedTrigger{node: n, field: field}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, field, `a trigger is a map with one of topic, cron or bucket, such as {topic: orders} or {cron: "0 * * * *"}, not %s`, describe(n))
		return pt, false
	}
	var all []string
	for _, fs := range [][]string{topicTriggerFields, cronTriggerFields, bucketTriggerFields} {
		for _, f := range fs {
			if !slices.Contains(all, f) {
				all = append(all, f)
			}
		}
	}
	kvs := p.pairs(n, field)
	var kinds []pair
	for _, kv := range kvs {
		if slices.Contains(triggerKinds, kv.key.Value) {
			kinds = append(kinds, kv)
		}
	}
	switch {
	case len(kinds) == 0:
		typo := false
		for _, kv := range kvs {
			if !slices.Contains(all, kv.key.Value) {
				if s := p.unknownField(kv.key, field, all); slices.Contains(triggerKinds, s) {
					typo = true
				}
			}
		}
		if !typo {
			p.errorf(n, field, `a trigger needs one of topic, cron or bucket, such as {topic: orders} or {cron: "0 * * * *"}`)
		}
		return pt, false
	case len(kinds) > 1:
		p.errorf(kinds[1].key, join(field, kinds[1].key.Value), "a trigger has exactly one of topic, cron or bucket, and this one already has %s (line %d): make them two triggers", kinds[0].key.Value, kinds[0].key.Line)
		return pt, false
	}
	kind := kinds[0].key.Value
	allowed := map[string][]string{
		model.TriggerTopic: topicTriggerFields, model.TriggerCron: cronTriggerFields, model.TriggerBucket: bucketTriggerFields,
	}[kind]
	fields := fieldSet{fields: map[string]pair{}, suggested: map[string]bool{}}
	for _, kv := range kvs {
		k := kv.key.Value
		switch {
		case slices.Contains(allowed, k):
			fields.fields[k] = kv
		case slices.Contains(all, k):
			p.errorf(kv.key, join(field, k), "%s does not apply to a %s trigger, only to %s triggers (allowed: %s)", k, kind, kindsOf(k), strings.Join(allowed, ", "))
		default:
			p.unknownField(kv.key, field, allowed)
		}
	}

	t := &pt.t
	*t = Trigger{Kind: kind, MaxAttempts: DefaultMaxAttempts, Backoff: DefaultBackoff, MaxBackoff: DefaultMaxBackoff,
		DeadLetter: model.DeadLetterTopic, Pos: p.pos(n)}
	before := len(p.errs)
	kv := kinds[0]
	switch kind {
	case model.TriggerTopic:
		if s, ok := p.str(kv.value, field+".topic"); ok && p.declared(kv.value, field+".topic", "topic", s, p.allTopics(), "") {
			t.Topic = s
		}
		if f, ok := fields.get("filter"); ok {
			t.Filter = p.filter(f.key, f.value, field+".filter")
		}
	case model.TriggerCron:
		p.cronTrigger(kv, fields, field, t)
	case model.TriggerBucket:
		if s, ok := p.str(kv.value, field+".bucket"); ok && p.declared(kv.value, field+".bucket", "bucket", s, p.bucketNames, "") {
			t.Bucket = s
		}
		if f, ok := fields.get("key_prefix"); ok {
			if s, ok := p.str(f.value, field+".key_prefix"); ok {
				if msg := checkKeyPrefix(s); msg != "" {
					p.errorf(f.value, field+".key_prefix", "%s", msg)
				} else {
					t.KeyPrefix = s
				}
			}
		}
	}
	if f, ok := fields.get("name"); ok {
		pt.nameNode = f.value
		if s, ok := p.str(f.value, field+".name"); ok {
			if !model.ValidName(s) {
				p.errorf(f.value, field+".name", "%q is not a valid trigger name: use 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'", s)
			}
			t.Name = s
		}
	}
	if f, ok := fields.get("ordering_key"); ok {
		if s, ok := p.str(f.value, field+".ordering_key"); ok {
			if k, err := EventKey(s); err != nil {
				p.errorf(f.value, field+".ordering_key", "%s", err.Error())
			} else {
				t.OrderingKey = k
			}
		}
	}
	p.retry(fields, field, t)
	return pt, len(p.errs) == before
}

// retry reads the delivery settings every trigger kind has.
func (p *parser) retry(fields fieldSet, field string, t *Trigger) {
	if f, ok := fields.get("max_attempts"); ok {
		if v, ok := p.integer(f.value, field+".max_attempts", 1, MaxMaxAttempts); ok {
			t.MaxAttempts = v
		}
	}
	if f, ok := fields.get("backoff"); ok {
		if d, ok := p.durationIn(f.value, field+".backoff", MinBackoff, MaxBackoff, "1s"); ok {
			t.Backoff = d
		}
	}
	t.MaxBackoff = max(DefaultMaxBackoff, t.Backoff)
	if f, ok := fields.get("max_backoff"); ok {
		if d, ok := p.durationIn(f.value, field+".max_backoff", MinBackoff, MaxMaxBackoff, "5m"); ok {
			if d < t.Backoff {
				p.errorf(f.value, field+".max_backoff", "%s is shorter than backoff %s: retries start at backoff and double up to max_backoff, so raise it or lower backoff", f.value.Value, FormatDuration(t.Backoff))
			} else {
				t.MaxBackoff = d
			}
		}
	}
	if t.Topic == model.DeadLetterTopic {
		t.DeadLetter = "" // failures of dead-letter handlers are logged, not dead-lettered again
	}
	if f, ok := fields.get("dead_letter"); ok {
		if s, ok := p.str(f.value, field+".dead_letter"); ok && p.declared(f.value, field+".dead_letter", "topic", s, p.allTopics(), "") {
			if s == t.Topic {
				p.errorf(f.value, field+".dead_letter", "%q is the topic this trigger reads: a failed event would come back to it forever; name another topic", s)
			} else {
				t.DeadLetter = s
			}
		}
	}
}

func (p *parser) filter(key, n *yaml.Node, path string) *model.EventFilter {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(valueOrKey(n, key), path, "must be a map with any of type, source and subject_prefix, such as {type: order.created}, not %s", describe(n))
		return nil
	}
	var f model.EventFilter
	fields := p.mapping(n, path, filterFields)
	for _, c := range []struct {
		name string
		dst  *string
	}{{"type", &f.Type}, {"source", &f.Source}, {"subject_prefix", &f.SubjectPrefix}} {
		kv, ok := fields.get(c.name)
		if !ok {
			continue
		}
		if s, ok := p.str(kv.value, path+"."+c.name); ok {
			if s == "" {
				p.errorf(kv.value, path+"."+c.name, "must not be empty: omit it to match every event")
				continue
			}
			*c.dst = s
		}
	}
	if f == (model.EventFilter{}) {
		return nil
	}
	return &f
}

func (p *parser) cronTrigger(kv pair, fields fieldSet, field string, t *Trigger) {
	t.CatchUp = cron.NoLimit
	tz := ""
	tzOK := true
	if f, ok := fields.get("timezone"); ok {
		tzOK = false
		if s, ok := p.str(f.value, field+".timezone"); ok {
			if _, err := cron.Parse("@hourly", s); err != nil {
				msg := err.Error()
				if pe, ok := err.(*cron.ParseError); ok {
					msg = pe.Msg
				}
				p.errorf(f.value, field+".timezone", "%q: %s", s, msg)
			} else {
				tz, tzOK = s, true
			}
		}
	}
	spec := kv.value
	if spec.Kind != yaml.ScalarNode || spec.Tag != "!!str" {
		p.errorf(valueOrKey(spec, kv.key), field+".cron", `must be a cron schedule in quotes, such as "*/5 * * * *" or "@hourly", not %s`, describe(spec))
	} else if tzOK {
		s, err := cron.Parse(spec.Value, tz)
		if err != nil {
			p.errorf(spec, field+".cron", "%s", err.Error())
		} else {
			t.Timezone = s.Location().String()
			t.Cron = strings.TrimPrefix(s.String(), "CRON_TZ="+t.Timezone+" ")
		}
	}
	if f, ok := fields.get("catch_up"); ok {
		if d, ok := p.catchUp(f.value, field+".catch_up"); ok {
			t.CatchUp = d
		}
	}
}

// catchUp reads a cron catch-up window: always, never (or 0), or a duration
// of at least cron.Grace.
func (p *parser) catchUp(n *yaml.Node, field string) (time.Duration, bool) {
	const forms = "always (the default: the latest missed tick fires once, however old), never (or 0: only ticks on time fire), or a duration of at least 1m, such as 1h"
	if n.Kind == yaml.ScalarNode {
		switch {
		case n.Tag == "!!str" && n.Value == "always":
			return cron.NoLimit, true
		case n.Tag == "!!str" && n.Value == "never", n.Tag == "!!int" && n.Value == "0", n.Tag == "!!str" && n.Value == "0":
			return 0, true
		case n.Tag == "!!str" && daysOrDuration(n.Value):
			d, err := ParseDuration(n.Value)
			if err != nil {
				p.errorf(n, field, "%s", err.Error())
				return 0, false
			}
			if d == 0 {
				return 0, true
			}
			if d < cron.Grace || d > maxCatchUp {
				p.errorf(n, field, "%s is out of range: a tick up to 1m late always fires, so use never (0), a duration from 1m to %s, or always", n.Value, FormatDuration(maxCatchUp))
				return 0, false
			}
			return d, true
		}
	}
	p.errorf(n, field, "must be %s, not %s", forms, describe(n))
	return 0, false
}

// daysOrDuration reports whether s looks like a duration (starts with a
// digit or '.'), so the error can be about its form rather than its kind.
func daysOrDuration(s string) bool {
	return s != "" && (s[0] >= '0' && s[0] <= '9' || s[0] == '.')
}

// checkKeyPrefix checks a bucket trigger's key prefix against the key
// syntax of package state (keys are [-/_=.a-zA-Z0-9], no leading '.', no
// "..", not starting with "_kv"). It returns what is wrong, or "".
func checkKeyPrefix(s string) string {
	switch {
	case s == "":
		return "must not be empty: omit key_prefix to get changes to every key"
	case len(s) > MaxKeyPrefixBytes:
		return fmt.Sprintf("is %d bytes, longer than a key may be (%d)", len(s), MaxKeyPrefixBytes)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-/_=.", c) >= 0) {
			return fmt.Sprintf("%q contains %q: keys use only letters, digits and - / _ = .", s, string(rune(c)))
		}
	}
	switch {
	case s[0] == '.':
		return fmt.Sprintf("%q starts with '.': keys never do", s)
	case strings.Contains(s, ".."):
		return fmt.Sprintf("%q contains '..': keys never do ('.' separates non-empty tokens)", s)
	case strings.HasPrefix(s, "_kv"):
		return fmt.Sprintf("%q starts with _kv, which JetStream reserves: keys never do", s)
	}
	return ""
}

// async reads a function's async retry policy: the retry fields of a
// trigger, with the same defaults and ranges.
func (p *parser) async(key, n *yaml.Node, path string) *model.AsyncPolicy {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(valueOrKey(n, key), path, "must be a map with any of %s, not %s", strings.Join(asyncFields, ", "), describe(n))
		return nil
	}
	t := Trigger{MaxAttempts: DefaultMaxAttempts, Backoff: DefaultBackoff, MaxBackoff: DefaultMaxBackoff}
	p.retry(p.mapping(n, path, asyncFields), path, &t)
	return &model.AsyncPolicy{MaxAttempts: t.MaxAttempts, BackoffMS: t.Backoff.Milliseconds(), MaxBackoffMS: t.MaxBackoff.Milliseconds()}
}

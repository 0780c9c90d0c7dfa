package wire

// Import name of the publish host function.
const FuncPublish = "publish"

// CodeNoTopic: the app declares no topic of that name (publish). It shares
// its value with CodeNoBucket: "the named resource does not exist".
const CodeNoTopic int32 = 8

// Limits of publish's arguments.
const (
	// PublishMaxTopicLen caps a topic name.
	PublishMaxTopicLen = 63
	// PublishMaxEventLen caps the JSON of one event, whatever the topic's
	// own max_event_size allows.
	PublishMaxEventLen = 1 << 20
)

// PublishOutSize is the size of publish's out area: flags u32, reserved u32.
const PublishOutSize = 8

// PublishDuplicate is the flag of publish's out area meaning an event with
// the same source and id was already accepted within the topic's duplicate
// window: it was not stored again.
const PublishDuplicate uint32 = 1

// DeadLetterTopic is the topic Nimbus writes failed deliveries to; no guest
// may publish to it, whatever it is granted.
const DeadLetterTopic = "dead-letter"

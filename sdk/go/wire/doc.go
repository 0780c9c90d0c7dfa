// Package wire is the Nimbus guest ABI, version 1: how a host hands one HTTP
// request to a WebAssembly guest and gets one response back. It holds the
// encoder and decoder of the two messages and, in this comment, the
// specification an SDK in another language implements. It has no
// dependencies beyond the standard library and builds both for the host and
// for GOOS=wasip1.
//
// # Module shape
//
// A Nimbus SDK guest is a WASI preview 1 reactor (no _start). It exports:
//
//	memory                                     its linear memory
//	_initialize()                              optional; run once at instantiation
//	nimbus_abi_v1()                            marker: "I speak this ABI"; never called
//	nimbus_alloc(size i32) -> i32              returns a pointer to size writable bytes
//	nimbus_handle(ptr i32, len i32) -> i64     serves one request
//	nimbus_reuse_request_buffer()              optional marker; never called
//
// and may import WASI preview 1 (module "wasi_snapshot_preview1") and the
// Nimbus host functions (module "nimbus"). Nothing else links.
//
// # One request
//
//  1. The host encodes the request (EncodeRequest) into n bytes.
//  2. It calls nimbus_alloc(n) and writes the bytes at the returned pointer.
//     The buffer belongs to the guest; it stays valid until nimbus_handle
//     returns. A return of 0 for n > 0 is an allocation failure.
//  3. It calls nimbus_handle(ptr, n). The guest decodes, serves, encodes the
//     response (EncodeResponse) into memory it keeps alive until its next
//     call, and returns (respPtr << 32) | respLen as an unsigned 64-bit value.
//  4. The host bounds-checks respPtr and respLen against the guest's memory
//     and its response limit, copies the bytes out and decodes them. Anything
//     out of range, or undecodable, is a guest failure, never a host crash.
//
// A guest that exports nimbus_reuse_request_buffer promises more: the
// buffer nimbus_alloc(n) returned stays valid, and is read by nimbus_handle,
// for every later request of at most n bytes, until the next nimbus_alloc
// call; the guest keeps no reference into it after nimbus_handle returns.
// Its host then makes one guest call per request: it writes each request
// that fits into the last buffer and calls nimbus_alloc only for a larger
// one (asking for at least 4KiB, so small requests never need it). A host
// that does not know the marker calls nimbus_alloc every time, which such
// a guest also serves (the Go SDK returns the same buffer while it fits).
//
// An instance serves requests one at a time, in turn, for as long as the host
// keeps it. Guests must not rely on being kept or on being reused.
//
// # Encoding
//
// Integers are unsigned LEB128 varints (encoding/binary Uvarint). A string or
// a byte string is a varint length followed by that many bytes. A header
// list is a varint count followed by count (name, value) string pairs; a
// header with several values appears once per value, in order. A parameter
// list has the same shape. There are no optional fields and no trailing
// bytes.
//
//	request  = 0x01 method path raw_query host remote_addr route
//	           invocation_id traceparent headers params body
//	response = 0x02 status error headers body
//
// status is the HTTP status (0 means 200; otherwise 100..999). error is empty
// on success; a guest that failed to serve the request (a recovered panic,
// no handler registered) puts its reason there, and the host reports the
// request as failed with that reason instead of sending a response.
//
// # Host functions
//
// Host functions live in the "nimbus" import module. Each returns an i32
// status code first: 0 ok, 1 denied (the function's capability is not
// granted to this function in nimbus.yaml), 2 bad argument (for example a
// pointer outside memory), 3 too large, 4 unavailable, 5 internal, for the
// kv functions 6 not found, 7 revision mismatch, 8 no such bucket, and for
// publish 8 no such topic. A
// denied call never traps. Version 1 defines:
//
//	log(level i32, ptr i32, len i32) -> i32    capability "log"
//	    level: 0 debug, 1 info, 2 warn, 3 error. The message is the UTF-8
//	    bytes at [ptr, ptr+len); the host truncates long messages.
//
// # Key-value host functions
//
// The kv functions reach the buckets of the calling function's app. Their
// capability is scoped per bucket: "kv:NAME" allows every function on bucket
// NAME, "kv:NAME:read" only kv_get and kv_list. Every string or byte
// argument is a (ptr i32, len i32) pair in the guest's memory; an out
// argument is a pointer to an area the host writes, little-endian. The host
// checks every pointer and length before doing anything: an area outside
// memory is 2 (bad argument) and nothing happens.
//
//	kv_get(bucket_ptr, bucket_len, key_ptr, key_len,
//	       buf_ptr, buf_cap, out_ptr i32) -> i32
//	    out (12 bytes): revision u64, value length u32.
//	    0: the value is at [buf_ptr, buf_ptr+length).
//	    3: the value is longer than buf_cap; nothing was copied, out holds
//	       its length and revision: call again with a buffer that large
//	       (the value may have changed meanwhile; repeat while 3).
//	    6: no such key.
//
//	kv_put(bucket_ptr, bucket_len, key_ptr, key_len, val_ptr, val_len i32,
//	       ttl_ms i64, if_revision i64, out_ptr i32) -> i32
//	    ttl_ms: 0 no TTL; otherwise the key expires after it (rounded up to
//	    whole seconds, at least one). if_revision: -1 write unconditionally;
//	    0 only if the key does not exist; n only if the key's current
//	    revision is n (compare-and-swap). out (8 bytes): revision u64.
//	    0: written and durable; out is the new revision.
//	    7: if_revision did not match; out is the current revision (0: no key).
//	    3: the value is over the bucket's limit.
//
//	kv_delete(bucket_ptr, bucket_len, key_ptr, key_len i32,
//	          if_revision i64, out_ptr i32) -> i32
//	    if_revision as for kv_put (0: succeed only if there is no key).
//	    Deleting a missing key is 0. out (8 bytes): on 7, the current
//	    revision.
//
//	kv_list(bucket_ptr, bucket_len, prefix_ptr, prefix_len,
//	        after_ptr, after_len, limit i32, buf_ptr, buf_cap, out_ptr i32) -> i32
//	    The keys starting with prefix that sort after the key "after" (none:
//	    an empty after), sorted, at most limit (0 or above 1000: 1000).
//	    out (8 bytes): encoded length u32, flags u32 (bit 0: more keys
//	    follow; list again after the last key returned).
//	    0: the keys are at [buf_ptr, buf_ptr+length), encoded as a varint
//	       count followed by that many strings (AppendKeys, DecodeKeys).
//	    3: buf_cap is too small; out holds the length: call again.
//
// In every kv function 8 means the app has no bucket of that name (declare
// it in nimbus.yaml) and 4 that the store is unavailable. Limits: a bucket
// name is at most 63 bytes, a key, prefix or cursor at most 512, a value at
// most 1MiB (and the bucket's own limit). A key is made of
// [-/_=.a-zA-Z0-9], does not start or end with '.', has no ".." and does
// not start with "_kv" (reserved by JetStream);
// anything else is 2.
//
// # Publishing events
//
//	publish(topic_ptr, topic_len, event_ptr, event_len, out_ptr i32) -> i32
//	    capability "publish:TOPIC"
//
// publish appends one event to a topic of the calling function's app. The
// topic is a name (1 to 63 bytes of [a-z0-9-], starting with a letter, not
// ending with '-'); anything else is 2. The event is one CloudEvents 1.0
// event in the JSON event format (application/cloudevents+json), at most
// 1MiB; over that is 3, and nothing is read. The host validates it as
// HTTP ingress does (specversion "1.0", id, type, a URI-reference source,
// extension names of [a-z0-9], ...); an invalid event is 2, and the reason
// goes to the function's log (one warning per topic and invocation). The
// host fills in:
//
//   - source, when absent (or empty): "/nimbus/APP/FUNCTION";
//   - the traceparent extension, when absent and the invocation has a trace:
//     a new span of the invocation's trace, so the trace runs on to every
//     subscriber.
//
// The id is required: an SDK makes a random one when its user gives none.
// out (8 bytes): flags u32 (bit 0: duplicate, an event with the same
// source and id was already accepted within the topic's duplicate window
// and was not stored again), reserved u32.
//
//	0: the event is durably stored (fsynced) and will be delivered to every
//	   matching trigger, at least once.
//	1: the function is not granted "publish:TOPIC", or TOPIC is
//	   "dead-letter", which only Nimbus writes, whatever the grants.
//	3: the event is over 1MiB or the topic's max_event_size.
//	4: no event store (or it failed; the host logs why).
//	8: the app declares no topic of that name.
//
// A publish is not transactional with the invocation: the event stays
// published if the function fails after the call returns, and a retried
// invocation publishes again (a fixed id makes the second copy a
// duplicate). Publishes that commit with a workflow step are a later
// feature.
//
// # Workflows
//
// A function of kind workflow is activated like any request: the host
// calls nimbus_handle with a request that carries the header
// Nimbus-Workflow-Run (HeaderRun) set to the run id, whose body is the
// run's input. The guest runs its workflow function from the start every
// time it is activated; each durable operation has a position (0, 1, 2,
// ... in the order the code reaches them, per activation) and a name, and
// the host answers from the run's journal what it already recorded, so the
// code replays up to where it stopped and goes on from there. The guest
// answers with the header Nimbus-Workflow-Outcome (HeaderOutcome):
// "completed" with the result as the body, "failed" with the error message
// as the body, "cancelled" (see Cancellation below), or "suspended"
// (empty body) after a call returned 21. A
// trap, a timeout or any other answer is an activation failure: the host
// activates the run again later (it replays).
//
//	wf_step_begin(pos i32, name_ptr, name_len, buf_ptr, buf_cap, out_ptr i32) -> i32
//	    out (16 bytes): length u32, flags u32, attempt u32, reserved u32.
//	    0: the step completed before; its recorded outcome is at
//	       [buf_ptr, buf_ptr+length): the result, or with flags bit 0 the
//	       message of the error it failed with for good. Do not run it.
//	    3: buf_cap is too small; out holds the length: call again.
//	    20: run the step now; out.attempt is its attempt number (from 1).
//
//	wf_step_end(pos i32, name_ptr, name_len, val_ptr, val_len, flags i32,
//	            retry_ms i64) -> i32
//	    Records the outcome of the attempt wf_step_begin allowed. flags bit
//	    0: the attempt failed and val is the error message; bit 1: the
//	    error is not retryable. retry_ms: for a failure, the delay before
//	    the next attempt, or -1 when the failure is final (the SDK applies
//	    the step's retry policy). A result must be JSON (anything else is
//	    2). A success or a final failure is recorded
//	    durably (fsynced) before the call returns.
//	    0: recorded; go on (with a final failure: the step's error).
//	    20: run the step again now (the next attempt).
//	    21: the retry is far off: suspended; unwind.
//
//	wf_step_effects(pos i32) -> i32
//	    Called after wf_step_begin answered 20 for the step at pos: the
//	    KV writes (kv_put, kv_delete) and publishes of this attempt and of
//	    the step's later attempts are journaled: buffered by the host, committed with
//	    the step's wf_step_end (a success; a failed attempt's writes are
//	    dropped) and applied once after that commit, before wf_step_end
//	    returns. Inside such a step kv_put answers revision 0, publish
//	    answers "not a duplicate", kv_get sees the step's own writes,
//	    and a compare-and-swap is 2. A write the apply could not make (an
//	    undeclared bucket or topic, too large, over a quota) is refused by
//	    the kv_put, kv_delete or publish that makes it. The Go SDK calls
//	    it for every step but one given ImmediateEffects.
//	    0: done. 2: no step runs at pos.
//
//	wf_sleep(pos i32, until_ms i64) -> i32
//	    A durable timer at Unix time until_ms (milliseconds). The first
//	    activation to reach pos records it; replays use the recorded time,
//	    whatever until_ms they pass.
//	    0: the time has come; go on. 21: suspended until then; unwind.
//
//	wf_wait(pos i32, name_ptr, name_len i32, timeout_ms i64, buf_ptr,
//	        buf_cap, out_ptr i32) -> i32
//	    A durable wait for the next signal called name sent to the run
//	    (signals of a name are taken in the order they arrived, each by
//	    one wait). timeout_ms counts from the first activation that
//	    reaches pos (0 or less: no deadline); replays use the recorded
//	    deadline. out (8 bytes): length u32, flags u32.
//	    0: the outcome: the signal's payload (JSON) at [buf_ptr,
//	       buf_ptr+length), or with flags bit 0 (WaitTimedOut) a timeout
//	       and no payload.
//	    3: buf_cap is too small; out holds the length: call again.
//	    21: no signal yet: the run waits (holding no instance); unwind.
//
// Waiting for a topic event.
//
//	wf_wait_topic(pos i32, spec_ptr, spec_len i32, timeout_ms i64,
//	              buf_ptr, buf_cap, out_ptr i32) -> i32
//	    A durable wait for the first event of a topic of the run's app
//	    stored after the wait began that matches a filter. spec is JSON:
//	    {"topic": "<topic>", "filter": {"<key>": <JSON value>, ...}}; a
//	    key is a CloudEvents attribute ("type", "source", "subject",
//	    "id", an extension) or "data.<field>" (a top-level field of a
//	    JSON data), and matches when the event's value is equal (as
//	    JSON). The function needs the grant "subscribe:<topic>". Answers
//	    as wf_wait, with the event in the CloudEvents JSON format as the
//	    payload; 1: not granted; 2: a bad spec or an undeclared topic.
//	    The engine delivers the event as the signal
//	    "nimbus.topic:<pos>", journaled with the run.
//
// Cancellation. wf_step_begin, wf_sleep and wf_wait may answer 24
// (CodeCancelled): the run was cancelled and the operation at pos did not
// happen. The guest stops its workflow code, runs its compensations as
// steps from position pos+1 on, named with the prefix
// "nimbus.compensate:" (only such steps still run; a replay meets the
// cut at the same position and replays the compensations recorded), and
// answers the outcome "cancelled" (HeaderOutcome) with a message as the
// body. The Go SDK also runs those compensations, in reverse order of
// registration, before it answers "failed".
//
// Every workflow function may also answer 21 (suspended: the host
// unwinds an activation whose time is running out, and activates it again
// at once), 22 (non-determinism: the step at pos has another name or kind
// in the journal; the run has failed, with an error naming both), 23 (not
// called by a run's activation), 2 (bad argument: a position that skips
// one, a name over 256 bytes, an area outside memory) and 3 (a value over
// 1MiB). After 21 or 22 every further call answers the same; the guest
// must not run further steps.
//
// # Calling (workflows)
//
// Two host functions are made inside a step, between the wf_step_begin
// that answered 20 and its wf_step_end; the step's result journals what
// they answer, so a replay does not call again. Outside a step they
// answer 2.
//
//	wf_call(fn_ptr, fn_len, body_ptr, body_len, key_ptr, key_len, buf_ptr,
//	        buf_cap, out_ptr i32) -> i32
//	    Invokes the function fn of the run's app (not a workflow) with a
//	    POST whose body is the bytes at body (JSON, at most 1MiB) and whose
//	    Idempotency-Key header is key (the step's idempotency key; empty:
//	    none). out (8 bytes): length u32, HTTP status u32.
//	    0: the answer's body is at [buf_ptr, buf_ptr+length).
//	    3: buf_cap is too small; call again with the same fn and a buffer
//	       of length: the answer is kept, the function is not invoked
//	       again.
//	    6: the app has no function fn. 2: fn is a workflow, or the call
//	       is outside a step. 4: the invocation failed (a trap, a
//	       timeout): retry the step.
//	    The Go SDK (Call) fails the step for good on a status of 300 to
//	    499 and retries it on 500 and more.
//
//	wf_start_child(wf_ptr, wf_len, input_ptr, input_len, buf_ptr, buf_cap,
//	               out_ptr i32) -> i32
//	    Starts a run of the app's workflow wf with input (JSON) as a child
//	    of the calling run, and answers its id, which is derived from the
//	    calling run's id and the step's position ("<run>-<pos>", hashed
//	    when over 128 bytes): starting it again from the same step (a
//	    replay after a crash) answers the same id and starts nothing.
//	    out (4 bytes): the id's length.
//	    0: the id is at [buf_ptr, buf_ptr+length). 3: buf_cap is too
//	    small; call again. 6: the app has no workflow wf. 2: the input is
//	    not JSON, or the call is outside a step.
//	    When the child ends, the signal "nimbus.child:<child id>" is
//	    journaled in the parent's run (in the same commit as the child's
//	    end) with the payload {"run_id", "state", "result", "error"}:
//	    the guest awaits it with wf_wait after the step, like any signal.
//	    The API refuses to send signals whose names start with
//	    "nimbus.child:".
//	    The child is cancelled or terminated with the calling run, unless
//	    the step's name starts with "nimbus.detached:" (then it runs on).
//
// Names starting with "nimbus." are the SDK's own: the Go SDK records
// Now, UUID and Random as steps named nimbus.now, nimbus.uuid and
// nimbus.random, calls as nimbus.call:<function>, child starts as
// nimbus.child:<workflow> (nimbus.detached:<workflow> for a detached
// child). An external effect made in a step should carry the
// step's idempotency key, "<run>/<pos>/<name>", which is stable across
// attempts and activations.
//
// # Outbound HTTP
//
//	fetch(req_ptr, req_len, err_ptr, err_cap, out_ptr i32) -> i32
//	    capability "http:[METHODS ][SCHEME://]HOST[:PORT]"
//	fetch_take(handle, buf_ptr, buf_cap, out_ptr i32) -> i32
//
// The request is EncodeFetchRequest's (method, absolute URL, headers, body,
// timeout in ms or 0, response cap in bytes or 0), at most 16MiB. fetch
// makes the request, following redirects, and writes out (12 bytes):
// handle u32, response length u32, error length u32. On 0 the encoded
// response (EncodeFetchResponse: status, headers, body) is kept under
// handle until fetch_take copies it into [buf_ptr, buf_ptr+buf_cap) (out,
// 4 bytes: its length; 3 if buf_cap is too small, 6 for an unknown
// handle) or the invocation ends. On any other code the host's reason is
// at [err_ptr, err_ptr+error length), cut at err_cap. Codes: 1 not
// granted (the reason names the grant), 2 bad URL, method or header, 3 a
// body or the request count over its limit, 4 connection failed, 9 the
// network guard refused the address, 10 timed out.
//
// # Secrets
//
//	secret_get(name_ptr, name_len, buf_ptr, buf_cap, out_ptr i32) -> i32
//	    capability "secret:NAME"
//
// out (4 bytes): the value's length. 0: the value is at [buf_ptr,
// buf_ptr+length). 3: buf_cap is too small; call again with length. 6:
// the secret is not set. 2: not a secret name.
package wire

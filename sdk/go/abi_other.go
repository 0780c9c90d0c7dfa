//go:build !wasip1

package nimbus

import (
	"fmt"
	"os"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// hostLog outside WebAssembly writes to standard error, so handlers can be
// run and tested as ordinary Go code.
func hostLog(level int32, msg string) int32 {
	fmt.Fprintf(os.Stderr, "nimbus: %s: %s\n", Level(level), msg)
	return 0
}

// Outside WebAssembly there is no host: key-value calls fail with
// ErrUnavailable.

func hostKVGet(string, string, []byte, *[wire.KVGetOutSize]byte) int32 { return wire.CodeUnavailable }

func hostKVPut(string, string, []byte, int64, int64, *[wire.KVPutOutSize]byte) int32 {
	return wire.CodeUnavailable
}

func hostKVDelete(string, string, int64, *[wire.KVPutOutSize]byte) int32 {
	return wire.CodeUnavailable
}

func hostKVList(string, string, string, int32, []byte, *[wire.KVListOutSize]byte) int32 {
	return wire.CodeUnavailable
}

func hostPublish(string, []byte, *[wire.PublishOutSize]byte) int32 { return wire.CodeUnavailable }

// Outside WebAssembly there is no workflow host: workflow calls fail
// with ErrUnavailable (the workflow function unwinds).

func hostStepBegin(int32, string, []byte, *[wire.StepBeginOutSize]byte) int32 {
	return wire.CodeUnavailable
}

func hostStepEnd(int32, string, []byte, int32, int64) int32 { return wire.CodeUnavailable }

func hostSleep(int32, int64) int32 { return wire.CodeUnavailable }

func hostStepEffects(int32) int32 { return wire.CodeUnavailable }

func hostFetch([]byte, []byte, *[wire.FetchOutSize]byte) int32 { return wire.CodeUnavailable }

func hostFetchTake(uint32, []byte, *[wire.FetchTakeOutSize]byte) int32 { return wire.CodeUnavailable }

func hostSecretGet(string, []byte, *[wire.SecretOutSize]byte) int32 { return wire.CodeUnavailable }

func hostWait(int32, string, int64, []byte, *[wire.WaitOutSize]byte) int32 {
	return wire.CodeUnavailable
}

func hostWaitTopic(int32, []byte, int64, []byte, *[wire.WaitOutSize]byte) int32 {
	return wire.CodeUnavailable
}

func hostCall(string, []byte, string, []byte, *[wire.CallOutSize]byte) int32 {
	return wire.CodeUnavailable
}

func hostStartChild(string, []byte, []byte, *[wire.StartChildOutSize]byte) int32 {
	return wire.CodeUnavailable
}

//go:build !wasip1

package nimbus

import (
	"fmt"
	"os"
)

// hostLog outside WebAssembly writes to standard error, so handlers can be
// run and tested as ordinary Go code.
func hostLog(level int32, msg string) int32 {
	fmt.Fprintf(os.Stderr, "nimbus: %s: %s\n", Level(level), msg)
	return 0
}

package sandboxinit

import (
	"reflect"
	"testing"
)

// TestConfigRoundTrip: what the node writes (Argv, Claim) is what the
// helper reads, and a damaged claim is refused.
func TestConfigRoundTrip(t *testing.T) {
	c := Config{
		Root: "/r", System: []string{"/usr", "/etc/ssl"}, Binds: [][2]string{{"/sys/fs/cgroup/memory/x", "/sys/fs/cgroup/memory"}},
		TmpBytes: 1 << 20, UID: 1000000001, CgroupNS: true,
		App: "/data/fn", AppDir: "/app", Path: "/app/server", Dir: "/app", Args: []string{"./server", "-v", ""},
		Env: []string{"PORT=8080", "A=b=c"},
	}
	got, err := parse(c.Argv()[1:])
	if err != nil {
		t.Fatal(err)
	}
	if err := parseClaim(&got, c.Claim()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
	}
	for _, bad := range []string{"", "/a\x00/app\x00/p\x00/d\x00", "/a\x00/app\x00/p\x00/d\x001\x00x", "/a\x00/app\x00/p\x00/d\x00x\x00y\x00"} {
		var c Config
		if err := parseClaim(&c, []byte(bad)); err == nil {
			t.Errorf("claim %q accepted", bad)
		}
	}
}

package kernel

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// kernelBTF builds a kernel BTF holding the functions fns, each with the
// parameters named in its entry.
func kernelBTF(t *testing.T, fns map[string][]string) *btf.Spec {
	t.Helper()
	long := &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}
	var types []btf.Type
	for name, params := range fns {
		proto := &btf.FuncProto{Return: long}
		for _, p := range params {
			proto.Params = append(proto.Params, btf.FuncParam{Name: p, Type: long})
		}
		types = append(types, &btf.Func{Name: name, Type: proto, Linkage: btf.GlobalFunc})
	}
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// wrappers is every syscall's wrapper, as a kernel whose BTF has them all.
func wrappers() map[string][]string {
	fns := map[string][]string{}
	for _, sc := range syscallHooks() {
		for _, choice := range sc.choices {
			for _, c := range choice {
				if c.wrapper {
					fns[c.target] = []string{"regs"}
				}
			}
		}
	}
	return fns
}

func targets(plan []functionHook) map[string]string {
	m := map[string]string{}
	for _, h := range plan {
		m[h.enter] = h.target
	}
	return m
}

func TestPlanFunctionHooks(t *testing.T) {
	w := "__x64_sys_"
	if runtime.GOARCH == "arm64" {
		w = "__arm64_sys_"
	}

	t.Run("wrappers only", func(t *testing.T) {
		plan, skipped, err := planFunctionHooks(kernelBTF(t, wrappers()))
		if err != nil || len(skipped) != 0 {
			t.Fatalf("plan: %v, skipped %v", err, skipped)
		}
		got := targets(plan)
		if got["enter_connect"] != w+"connect" || got["enter_accept"] != w+"accept" || got["enter_accept4"] != w+"accept4" {
			t.Fatalf("socket calls not hooked through their wrappers: %v", got)
		}
	})

	t.Run("socket calls through __sys_*", func(t *testing.T) {
		// As Debian's 6.1: the socket calls' wrappers are not in BTF, or
		// only as the not-implemented stubs' ("__unused").
		fns := wrappers()
		for _, c := range []string{"connect", "bind", "listen", "shutdown", "accept", "accept4"} {
			delete(fns, w+c)
		}
		fns[w+"connect"] = []string{"__unused"}
		fns[w+"execveat"] = []string{"__unused"}
		fns["__sys_connect"] = []string{"fd", "uservaddr", "addrlen"}
		fns["__sys_bind"] = []string{"fd", "umyaddr", "addrlen"}
		fns["__sys_listen"] = []string{"fd", "backlog"}
		fns["__sys_shutdown"] = []string{"fd", "how"}
		fns["__sys_accept4"] = []string{"fd", "upeer_sockaddr", "upeer_addrlen", "flags"}
		plan, skipped, err := planFunctionHooks(kernelBTF(t, fns))
		if err != nil {
			t.Fatal(err)
		}
		if len(skipped) != 1 || skipped[0] != "execveat" {
			t.Errorf("skipped %v, want the execveat stub left out", skipped)
		}
		got := targets(plan)
		for enter, target := range map[string]string{
			"enter_sys_connect": "__sys_connect", "enter_sys_accept4": "__sys_accept4",
			"enter_sys_shutdown": "__sys_shutdown", "enter_close": w + "close",
		} {
			if got[enter] != target {
				t.Errorf("%s on %q, want %q (plan %v)", enter, got[enter], target, got)
			}
		}
		if _, ok := got["enter_accept"]; ok {
			t.Errorf("accept hooked twice: %v", got)
		}
	})

	t.Run("a needed call missing", func(t *testing.T) {
		fns := wrappers()
		delete(fns, w+"close")
		fns["__sys_listen"] = []string{"fd"} // not the arguments the programs read
		delete(fns, w+"listen")
		_, _, err := planFunctionHooks(kernelBTF(t, fns))
		if err == nil || !strings.Contains(err.Error(), "close(2)") {
			t.Fatalf("got %v, want an error naming close(2)", err)
		}
		delete(fns, "__sys_listen")
		fns[w+"close"] = []string{"regs"}
		_, _, err = planFunctionHooks(kernelBTF(t, fns))
		if err == nil || !strings.Contains(err.Error(), "listen(2)") {
			t.Fatalf("got %v, want an error naming listen(2)", err)
		}
	})
}

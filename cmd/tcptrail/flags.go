package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// newFlagSet returns a command's flag set: errors are returned, --help
// prints usage and then the flags, both to stderr.
func newFlagSet(name, usage string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fmt.Fprint(stderr, fs.FlagUsages())
	}
	return fs
}

// portList is a pflag.Value for --port: comma-separated or repeated ports,
// each 1-65535.
type portList struct {
	ports []uint16
}

func (p *portList) String() string {
	s := make([]string, len(p.ports))
	for i, v := range p.ports {
		s[i] = strconv.Itoa(int(v))
	}
	return strings.Join(s, ",")
}

func (p *portList) Set(value string) error {
	for _, part := range strings.Split(value, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return fmt.Errorf("empty port in %q", value)
		}
		n, err := strconv.Atoi(part)
		if err != nil {
			return fmt.Errorf("%q is not a port number", part)
		}
		if n < 1 || n > 65535 {
			return fmt.Errorf("port %d is out of range (1-65535)", n)
		}
		p.add(uint16(n))
	}
	return nil
}

func (p *portList) add(v uint16) {
	i := sort.Search(len(p.ports), func(i int) bool { return p.ports[i] >= v })
	if i < len(p.ports) && p.ports[i] == v {
		return
	}
	p.ports = append(p.ports, 0)
	copy(p.ports[i+1:], p.ports[i:])
	p.ports[i] = v
}

func (p *portList) Type() string { return "ports" }

// byteSize is a pflag.Value for sizes such as 8M, 256K or 4096.
type byteSize int

func (b *byteSize) String() string {
	switch n := int(*b); {
	case n > 0 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "M"
	case n > 0 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + "K"
	default:
		return strconv.Itoa(n)
	}
}

func (b *byteSize) Set(value string) error {
	mult := 1
	v := strings.TrimSuffix(strings.ToUpper(value), "IB")
	v = strings.TrimSuffix(v, "B")
	switch {
	case strings.HasSuffix(v, "K"):
		mult, v = 1<<10, strings.TrimSuffix(v, "K")
	case strings.HasSuffix(v, "M"):
		mult, v = 1<<20, strings.TrimSuffix(v, "M")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a size (e.g. 8M, 512K)", value)
	}
	*b = byteSize(n * mult)
	return nil
}

func (b *byteSize) Type() string { return "size" }

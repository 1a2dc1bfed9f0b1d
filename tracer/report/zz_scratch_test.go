package report

import (
	"os"
	"testing"
)

func TestScratch(t *testing.T) {
	f, _ := os.Open(os.Getenv("IN"))
	c, err := Load(f)
	if err != nil {
		t.Log(err)
	}
	sel, _ := c.Select(Filter{})
	WriteText(os.Stdout, c, sel, "story.jsonl")
	out, _ := os.Create("/tmp/story.html")
	WriteHTML(out, c, sel, "story.jsonl", HTMLOptions{})
	out.Close()
}

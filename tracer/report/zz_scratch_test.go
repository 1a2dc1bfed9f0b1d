package report

import (
	"os"
	"testing"
)

func TestScratch(t *testing.T) {
	f, _ := os.Open("testdata/story.jsonl")
	c, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	sel, _ := c.Select(Filter{})
	WriteText(os.Stdout, c, sel, "story.jsonl")
}

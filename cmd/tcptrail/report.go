package main

import (
	"context"
	"io"
)

// runReport is 'tcptrail report'.
func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return usageErrorf("report: not implemented yet")
}
